package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/qemu"
	"github.com/spotroot/spotroot/e2e/sim"
)

// stamper timestamps console lines on the host as they arrive.
type stamper struct {
	mu    sync.Mutex
	part  string
	lines []stamped
}

type stamped struct {
	t    time.Time
	line string
}

func (s *stamper) Write(p []byte) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.part += string(p)
	for {
		i := strings.IndexByte(s.part, '\n')
		if i < 0 {
			break
		}
		s.lines = append(s.lines, stamped{now, strings.TrimRight(s.part[:i], "\r")})
		s.part = s.part[i+1:]
	}
	return len(p), nil
}

// first returns the first line containing marker and when it arrived.
func (s *stamper) first(marker string) (stamped, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l.line, marker) {
			return l, true
		}
	}
	return stamped{}, false
}

var (
	reUptime   = regexp.MustCompile(`uptime=([0-9.]+)s?`)
	rePhase    = regexp.MustCompile(`^spotroot: ([a-z0-9-]+) ok in ([0-9]+)ms`)
	reExec     = regexp.MustCompile(`^spotroot: exec (\S+) \(pid 1 start→exec ([0-9]+)ms, peak rss ([0-9]+)kB\)`)
	reBlockDev = regexp.MustCompile(`spotroot: block device .*disk=/dev/(nvme[0-9]+)n[0-9]+`)
	reKmsg     = regexp.MustCompile(`^BENCHKMSG ([0-9]+) (.*)$`)
	reStat     = regexp.MustCompile(`^BENCHSTAT ctxt=([0-9]+) loc=([0-9]+) majflt=([0-9]+) pgpgin=([0-9]+)$`)
)

// addSchedCounters reports the context switches, local timer interrupts,
// major page faults and KiB read from disks from kernel start to the final
// init (BENCHSTAT, read by benchinit first
// thing): wake-ups are CPU time on a TCG guest, and unlike wall time these
// counts do not follow the host's speed much. Go's sysmon waking every
// 20 µs was found this way (internal/boot's BootTimerSlack).
func addSchedCounters(rep *Report, sec, config string, st *stamper) error {
	l, ok := st.first("BENCHSTAT ")
	if !ok {
		return fmt.Errorf("no BENCHSTAT line")
	}
	m := reStat.FindStringSubmatch(l.line)
	if m == nil {
		return fmt.Errorf("unreadable counters: %q", l.line)
	}
	ctxt, _ := strconv.ParseFloat(m[1], 64)
	loc, _ := strconv.ParseFloat(m[2], 64)
	rep.Add(sec, config, "context switches, kernel start → init (/proc/stat ctxt)", "events", ctxt)
	rep.Add(sec, config, "local timer interrupts, kernel start → init (/proc/interrupts LOC)", "events", loc)
	majflt, _ := strconv.ParseFloat(m[3], 64)
	pgpgin, _ := strconv.ParseFloat(m[4], 64)
	rep.Add(sec, config, "page faults that read the disk, kernel start → init (/proc/vmstat pgmajfault)", "faults", majflt)
	rep.Add(sec, config, "read from disks, kernel start → init (/proc/vmstat pgpgin)", "KiB", pgpgin)
	return nil
}

// uptimeOf parses "uptime=<s>" in the first line containing marker.
func uptimeOf(st *stamper, marker string) (float64, time.Time, error) {
	l, ok := st.first(marker)
	if !ok {
		return 0, time.Time{}, fmt.Errorf("no console line %q", marker)
	}
	m := reUptime.FindStringSubmatch(l.line)
	if m == nil {
		return 0, l.t, fmt.Errorf("no uptime in %q", l.line)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, l.t, err
}

// Bench holds what every QEMU run shares.
type Bench struct {
	Env     *harness.Env // AMI and volume template are the bench ones
	WorkDir string
	Rep     *Report
	Verbose bool
	// Profile is the simulator's cloud for the runs that call EC2: kind
	// or hostile (profiles.go).
	Profile string
	// Label, when set, prefixes the configuration's column: the -against
	// build's runs ("against, kind, attach 0s").
	Label string
	// counter numbers the run directories, seeds lists the hostile runs'
	// seeds; shared by the per-profile copies of a Bench.
	counter *int
	seeds   *[]uint64
}

const (
	secSpotroot = "boot timeline: spotroot as PID 1"
	secFloor    = "floor: the image's own init, no spotroot"
	secTwoBoot  = "two-boot flow (boot 1: image init + user-data attach + reboot; boot 2: shell-style switch)"
	secCompare  = "time to the persistent volume's init: spotroot vs two-boot"
)

// benchKernelArgs go on every bench boot: /dev/kmsg writes from user space
// are rate-limited to 10 lines per 5 s per open file by default, which
// drops most of spotroot's timeline from the kernel log (the console keeps
// it); the device-notice figure reads spotroot's record from there.
// no_timer_check: on a loaded 2-core host a TCG guest's IO-APIC timer check
// can time out ("IO-APIC + timer doesn't work!", a kernel panic before
// init); a VM's timer needs no such check (every boot gets it, floor too).
var benchKernelArgs = []string{"printk.devkmsg=on", "no_timer_check"}

func kargs(extra ...string) []string {
	a := append(append([]string{}, benchKernelArgs...), extra...)
	return append(a, strings.Fields(extraKargs)...)
}

// extraKargs is -kargs: more guest kernel arguments, e.g.
// spotroot.log_level=debug to see where a phase's time goes (every console
// line costs a TCG guest milliseconds: not for figures to keep).
var extraKargs string

// benchUserData is the harness's user-data with the volume's init pointed
// at the bench init.
var benchUserData = append(append([]byte{}, harness.DefaultUserData...), "  init: /sbin/benchinit\n"...)

func latName(d time.Duration) string { return "attach " + d.String() }

// colName is a configuration's column: the profile, then the latency.
func colName(profile string, d time.Duration) string { return profile + ", " + latName(d) }

func (b *Bench) world(ctx context.Context, name string, noVolume bool, latency time.Duration) (*harness.World, string, error) {
	if b.counter == nil {
		b.counter, b.seeds = new(int), new([]uint64)
	}
	*b.counter++
	dir := filepath.Join(b.WorkDir, "runs", fmt.Sprintf("%03d-%s", *b.counter, name))
	_ = os.RemoveAll(dir)
	w, err := harness.NewWorld(ctx, b.Env, dir, harness.WorldOpts{NoVolume: noVolume})
	if err != nil {
		return nil, "", err
	}
	if err := w.Sim.Update(func(sw *sim.World) error {
		sw.AttachLatency = latency
		return applyProfile(sw, b.Profile)
	}); err != nil {
		w.Close()
		return nil, "", err
	}
	if !noVolume && b.Profile != profileKind {
		*b.seeds = append(*b.seeds, w.Sim.HostileSeed())
	}
	return w, dir, nil
}

// cleanup drops a run's disk images (its console logs and sim.log stay).
func cleanup(dir string) {
	ms, _ := filepath.Glob(filepath.Join(dir, "*.img"))
	for _, m := range ms {
		os.Remove(m)
	}
}

// Floor boots the bench AMI with init=/sbin/benchinit: no spotroot at all.
func (b *Bench) Floor(ctx context.Context) error {
	w, dir, err := b.world(ctx, "floor", true, 0)
	if err != nil {
		return err
	}
	defer w.Close()
	st := &stamper{}
	res, err := w.Boot(ctx, harness.BootOpts{KernelArgs: kargs("init=/sbin/benchinit"), LazyRoot: lazyAMI,
		Until: regexp.MustCompile(`^BENCHINIT uptime=`), Log: st})
	if err != nil {
		return err
	}
	defer cleanup(dir)
	up, t, err := uptimeOf(st, "BENCHINIT uptime=")
	if err != nil {
		return err
	}
	if !strings.Contains(res.Line, "kind=image") {
		return fmt.Errorf("floor: init ran from the wrong root: %s", res.Line)
	}
	c := "image init"
	b.Rep.Add(secFloor, c, "kernel start → init", "s", up)
	b.Rep.Add(secFloor, c, "QEMU start → init (host clock)", "s", t.Sub(res.Started).Seconds())
	b.Rep.Add(secFloor, c, "QEMU start → kernel clock starts (QEMU, firmware, kernel load; est.)", "s", t.Sub(res.Started).Seconds()-up)
	b.Rep.Add(secFloor, c, "QEMU start → power-off", "s", res.Elapsed.Seconds())
	if err := addSchedCounters(b.Rep, secFloor, c, st); err != nil {
		b.Rep.Note("warning: floor run %d: %v", *b.counter, err)
	}
	b.Rep.Add(secCompare, "image init (floor)", "QEMU start → init (host clock)", "s", t.Sub(res.Started).Seconds())
	b.Rep.Add(secCompare, "image init (floor)", "kernel time (sum of uptimes)", "s", up)
	return nil
}

// Spotroot boots the bench AMI (/sbin/init = spotroot) onto the volume,
// whose init is /sbin/benchinit.
func (b *Bench) Spotroot(ctx context.Context, latency time.Duration) error {
	w, dir, err := b.world(ctx, "spotroot", false, latency)
	if err != nil {
		return err
	}
	defer w.Close()
	st := &stamper{}
	res, err := w.Boot(ctx, harness.BootOpts{UserData: benchUserData, KernelArgs: kargs(), LazyRoot: lazyAMI,
		Until: regexp.MustCompile(`^BENCHINIT uptime=`), Log: st})
	if err != nil {
		return err
	}
	defer cleanup(dir)
	if !strings.Contains(res.Line, "kind=persistent") {
		return fmt.Errorf("spotroot: init ran from the wrong root: %s\n%s", res.Line, strings.Join(res.Timeline, "\n"))
	}
	c := colName(b.Profile, latency)
	if b.Label != "" {
		c = b.Label + ", " + c
	}
	start, _, err := uptimeOf(st, "spotroot: start pid=1")
	if err != nil {
		return err
	}
	b.Rep.Add(secSpotroot, c, "kernel start → spotroot start", "s", start)
	var execMS float64
	for _, l := range res.Timeline {
		if m := rePhase.FindStringSubmatch(l); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			b.Rep.Add(secSpotroot, c, "phase "+m[1], "ms", v)
		}
		if m := reExec.FindStringSubmatch(l); m != nil {
			execMS, _ = strconv.ParseFloat(m[2], 64)
			rss, _ := strconv.ParseFloat(m[3], 64)
			b.Rep.Add(secSpotroot, c, "spotroot start → exec of the volume's init", "ms", execMS)
			b.Rep.Add(secSpotroot, c, "kernel start → exec (start uptime + start→exec)", "s", start+execMS/1000)
			b.Rep.Add(secSpotroot, c, "peak RSS of PID 1 at exec (VmHWM)", "kB", rss)
		}
	}
	if execMS == 0 {
		return fmt.Errorf("spotroot: no exec line in\n%s", strings.Join(res.Timeline, "\n"))
	}
	up, t, err := uptimeOf(st, "BENCHINIT uptime=")
	if err != nil {
		return err
	}
	wall := t.Sub(res.Started).Seconds()
	b.Rep.Add(secSpotroot, c, "kernel start → persistent init running", "s", up)
	b.Rep.Add(secSpotroot, c, "QEMU start → persistent init (host clock)", "s", wall)
	b.Rep.Add(secSpotroot, c, "QEMU start → power-off", "s", res.Elapsed.Seconds())
	if err := addSchedCounters(b.Rep, secSpotroot, c, st); err != nil {
		b.Rep.Note("warning: %s run %d: %v", c, *b.counter, err)
	}
	// Device notice, on the kernel's printk clock: the partition scan line
	// (" nvme1n1: p1", logged by add_disk just before the block uevent) vs
	// spotroot's own "block device" record in /dev/kmsg.
	if err := b.deviceLatency(st, c); err != nil {
		b.Rep.Note("warning: %s run %d: %v", c, *b.counter, err)
	}
	if b.Label == "" {
		b.Rep.Add(secCompare, "spotroot, "+c, "QEMU start → init (host clock)", "s", wall)
		b.Rep.Add(secCompare, "spotroot, "+c, "kernel time (sum of uptimes)", "s", up)
	}
	return nil
}

func (b *Bench) deviceLatency(st *stamper, config string) error {
	var ctrl string
	var seen, added, pci float64 = -1, -1, -1
	st.mu.Lock()
	var recs [][2]string
	for _, l := range st.lines {
		if m := reKmsg.FindStringSubmatch(l.line); m != nil {
			recs = append(recs, [2]string{m[1], m[2]})
		}
	}
	st.mu.Unlock()
	for _, r := range recs {
		if m := reBlockDev.FindStringSubmatch(r[1]); m != nil {
			ctrl = m[1]
			seen, _ = strconv.ParseFloat(r[0], 64)
		}
	}
	if ctrl == "" {
		return fmt.Errorf("no spotroot block device record in /dev/kmsg (%d records)", len(recs))
	}
	// The kernel logs nothing at the moment the disk's sysfs entry appears:
	// the controller's last record before it (namespace identification) is
	// just before device_add_disk, the partition scan record just after.
	disk := regexp.MustCompile(`^\s*` + ctrl + `n[0-9]+: `)
	ctrlRec := "nvme " + ctrl + ": "
	var scanned, lastCtrl float64 = -1, -1
	for _, r := range recs {
		ts, _ := strconv.ParseFloat(r[0], 64)
		switch {
		case scanned < 0 && disk.MatchString(r[1]):
			scanned = ts
		case scanned < 0 && strings.HasPrefix(r[1], ctrlRec):
			lastCtrl = ts
		case pci < 0 && strings.Contains(r[1], "[1b36:0010]") && !strings.Contains(r[1], "0000:00:"):
			pci = ts
		}
	}
	if scanned < 0 || lastCtrl < 0 {
		return fmt.Errorf("no kernel records of %s adding its disk", ctrl)
	}
	added = lastCtrl
	b.Rep.Add(secSpotroot, config, "kernel adds the disk (last controller record before it) → spotroot notices it", "ms", (seen-added)/1000)
	b.Rep.Add(secSpotroot, config, "partition scan logged (just after the disk appears) → spotroot notices it", "ms", (seen-scanned)/1000)
	if pci >= 0 {
		b.Rep.Add(secSpotroot, config, "kernel sees the hot-plugged NVMe function → disk being added", "ms", (added-pci)/1000)
	}
	return nil
}

// TwoBoot emulates the older tools: boot 1 runs the image's own init with
// a user-data-like step that attaches the volume and reboots; boot 2 (the
// same instance, the volume still attached, the same root disk) runs a
// shell-style init that pivots into the volume.
func (b *Bench) TwoBoot(ctx context.Context, latency time.Duration) error {
	w, dir, err := b.world(ctx, "twoboot", false, latency)
	if err != nil {
		return err
	}
	defer w.Close()
	// The instance keeps its root disk across the reboot: boot a private
	// copy of the AMI directly so boot 1's writes reach boot 2.
	root := filepath.Join(dir, "root.img")
	if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", b.Env.AMI, root).CombinedOutput(); err != nil {
		return fmt.Errorf("copy AMI: %v: %s", err, out)
	}
	defer cleanup(dir)
	c := colName(b.Profile, latency)
	st1 := &stamper{}
	r1, err := w.Boot(ctx, harness.BootOpts{UserData: benchUserData, AMI: root, RootDirect: true, Keep: true,
		KernelArgs: kargs("init=/sbin/bench-userdata"),
		Until:      regexp.MustCompile(`^BENCHUSERDATA (reboot|error)`), Log: st1})
	if err != nil {
		return err
	}
	end1 := r1.Started.Add(r1.Elapsed) // ≤ when Boot saw QEMU gone
	if ended := time.Now(); ended.Before(end1) {
		end1 = ended
	}
	if !strings.HasPrefix(r1.Line, "BENCHUSERDATA reboot") || r1.ShutdownReason != "guest-reset" {
		return fmt.Errorf("two-boot boot 1: %q, shutdown %q\n%s", r1.Line, r1.ShutdownReason, r1.Console)
	}
	u1start, _, err := uptimeOf(st1, "BENCHUSERDATA start")
	if err != nil {
		return err
	}
	u1att, _, err := uptimeOf(st1, "BENCHUSERDATA attached")
	if err != nil {
		return err
	}
	u1reboot, t1reboot, err := uptimeOf(st1, "BENCHUSERDATA reboot")
	if err != nil {
		return err
	}
	v, ok := w.Sim.Volume(w.VolumeID)
	if !ok || len(v.Attachments) != 1 || v.Attachments[0].InstanceID != r1.InstanceID || v.Attachments[0].State != sim.AttachAttached {
		return fmt.Errorf("two-boot: after boot 1 the volume is %+v", v)
	}
	// Boot 2: the attached volume is there from power-on, as after an EC2
	// reboot (NVMe, serial = volume id, on the first hot-plug port).
	node, dev := "node-"+v.ID, "dev-"+v.ID
	st2 := &stamper{}
	r2, err := w.Boot(ctx, harness.BootOpts{InstanceID: r1.InstanceID, AMI: root, RootDirect: true,
		KernelArgs: kargs("init=/sbin/bench-switch"),
		ExtraArgs: []string{
			"-blockdev", "driver=raw,node-name=" + node + ",file.driver=file,file.filename=" + v.ImagePath,
			"-device", "nvme,id=" + dev + ",bus=rp1,drive=" + node + ",serial=" + qemu.NVMeSerial(v.ID),
		},
		Until: regexp.MustCompile(`^BENCHINIT uptime=`), Log: st2})
	if err != nil {
		return err
	}
	if !strings.Contains(r2.Line, "kind=persistent") {
		return fmt.Errorf("two-boot boot 2: init ran from the wrong root: %s\n%s", r2.Line, r2.Console)
	}
	u2switch, t2switch, err := uptimeOf(st2, "BENCHSWITCH start")
	if err != nil {
		return err
	}
	u2exec, _, err := uptimeOf(st2, "BENCHSWITCH exec")
	if err != nil {
		return err
	}
	u2init, t2init, err := uptimeOf(st2, "BENCHINIT uptime=")
	if err != nil {
		return err
	}
	boot1 := end1.Sub(r1.Started).Seconds()
	boot2 := t2init.Sub(r2.Started).Seconds()
	kernel2 := t2switch.Add(-time.Duration(u2switch * float64(time.Second))) // boot 2's kernel start, host clock
	b.Rep.Add(secTwoBoot, c, "boot 1: kernel start → image init (user-data step starts)", "s", u1start)
	b.Rep.Add(secTwoBoot, c, "boot 1: user-data step: NIC, DHCP, IMDS, attach, attached", "s", u1att-u1start)
	b.Rep.Add(secTwoBoot, c, "boot 1: kernel start → reboot requested", "s", u1reboot)
	b.Rep.Add(secTwoBoot, c, "boot 1: QEMU start → QEMU exit (reset)", "s", boot1)
	b.Rep.Add(secTwoBoot, c, "reboot: request → boot 2 kernel start (excl. harness gap)", "s",
		end1.Sub(t1reboot).Seconds()+kernel2.Sub(r2.Started).Seconds())
	b.Rep.Add(secTwoBoot, c, "boot 2: kernel start → switch init", "s", u2switch)
	b.Rep.Add(secTwoBoot, c, "boot 2: switch init (find disk, mount, pivot) → exec", "ms", (u2exec-u2switch)*1000)
	b.Rep.Add(secTwoBoot, c, "boot 2: kernel start → persistent init running", "s", u2init)
	b.Rep.Add(secTwoBoot, c, "boot 2: QEMU start → persistent init", "s", boot2)
	b.Rep.Add(secTwoBoot, c, "both boots: QEMU start → persistent init (excl. harness gap)", "s", boot1+boot2)
	b.Rep.Add(secCompare, "two-boot, "+c, "QEMU start → init (host clock)", "s", boot1+boot2)
	b.Rep.Add(secCompare, "two-boot, "+c, "kernel time (sum of uptimes)", "s", u1reboot+u2init)
	return nil
}
