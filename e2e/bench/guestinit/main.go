// Command guestinit is the init the benchmark guests end in, and the
// shell-style switcher of the two-boot flow. Its mode is the name it is
// installed under (/proc/self/exe), since spotroot execs inits with its own
// argv:
//
//   - benchinit (the "real" init, on the image for the floor and on the
//     persistent volume otherwise): its first act is reading CLOCK_BOOTTIME;
//     it prints
//     "BENCHINIT uptime=<s> kind=<image|persistent> root=<source of /> pid=<n>",
//     "BENCHSTAT ctxt=<context switches> loc=<local timer interrupts>
//     majflt=<major page faults> pgpgin=<KiB read>" (since boot),
//     then the kernel log records that matter to the benchmark (NVMe and
//     hot-plug records and spotroot's own, read back from /dev/kmsg with the
//     kernel's timestamps) as "BENCHKMSG <µs> <text>", "BENCHINIT done", and
//     powers the VM off;
//   - bench-switch (boot 2 of the two-boot flow, as the image's init): what
//     the older tools' init script does: mount /proc, /sys, /dev, wait for
//     the volume's disk by NVMe serial (the id boot 1 left in
//     /etc/bench/volume), mount its partition 1 (ext4) on /mnt, move the API
//     filesystems into it, pivot_root, exec /sbin/benchinit.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	up := uptime()
	exe := "benchinit"
	mountAPI() // /proc first: the mode comes from /proc/self/exe
	if p, err := os.Readlink("/proc/self/exe"); err == nil {
		exe = filepath.Base(p)
	}
	if exe == "bench-switch" {
		err := switchRoot(up)
		say("BENCHSWITCH error: " + err.Error())
		powerOff()
	}
	final(up)
}

func final(up float64) {
	kind := "?"
	if b, err := os.ReadFile("/etc/spotroot-test/kind"); err == nil {
		kind = strings.TrimSpace(string(b))
	}
	ctxt, loc := schedCounters()
	majflt, pgpgin := pagingCounters()
	say(fmt.Sprintf("BENCHINIT uptime=%.6f kind=%s root=%s pid=%d", up, kind, rootSource(), os.Getpid()))
	say(fmt.Sprintf("BENCHSTAT ctxt=%d loc=%d majflt=%d pgpgin=%d", ctxt, loc, majflt, pgpgin))
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		fmt.Fprintf(f, "<5>benchinit: start uptime=%.6f\n", up)
		f.Close()
	}
	dumpKmsg()
	say("BENCHINIT done")
	powerOff()
}

// schedCounters reads, since boot, the context switches (/proc/stat ctxt)
// and local timer interrupts (/proc/interrupts LOC, every CPU): what a
// boot's threads cost in wake-ups, which on a TCG guest is CPU time. -1
// when unreadable.
func schedCounters() (ctxt, loc int64) {
	ctxt, loc = -1, -1
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "ctxt "); ok {
				ctxt, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	if b, err := os.ReadFile("/proc/interrupts"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 || f[0] != "LOC:" {
				continue
			}
			loc = 0
			for _, c := range f[1:] {
				n, err := strconv.ParseInt(c, 10, 64)
				if err != nil {
					break // the description
				}
				loc += n
			}
		}
	}
	return ctxt, loc
}

// pagingCounters reads, since boot, the page faults that waited for the
// disk (/proc/vmstat pgmajfault) and the KiB read from block devices
// (pgpgin): what executing a larger binary from a cold disk costs. -1
// when unreadable.
func pagingCounters() (majflt, pgpgin int64) {
	majflt, pgpgin = -1, -1
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "pgmajfault "); ok {
			majflt, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(l, "pgpgin "); ok {
			pgpgin, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return
}

// dumpKmsg prints the kernel log records the benchmark reads, with their
// kernel timestamps (µs since boot, the printk clock).
func dumpKmsg() {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		say("BENCHINIT kmsg: " + err.Error())
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	var out []string
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // overwritten records: go on with the next
		}
		if err != nil || n <= 0 {
			break
		}
		rec := string(buf[:n])
		head, text, ok := strings.Cut(rec, ";")
		if !ok {
			continue
		}
		text, _, _ = strings.Cut(text, "\n") // continuation lines follow
		f := strings.Split(head, ",")
		if len(f) < 3 {
			continue
		}
		if strings.Contains(text, "nvme") || strings.Contains(text, "[1b36:0010]") ||
			strings.HasPrefix(text, "spotroot: block device") || strings.HasPrefix(text, "benchinit:") ||
			strings.HasPrefix(text, "Run /") {
			out = append(out, "BENCHKMSG "+f[2]+" "+text)
		}
	}
	say(strings.Join(out, "\n"))
}

func switchRoot(up float64) error {
	say(fmt.Sprintf("BENCHSWITCH start uptime=%.6f", up))
	b, err := os.ReadFile("/etc/bench/volume")
	if err != nil {
		return err
	}
	serial := strings.Replace(strings.TrimSpace(string(b)), "-", "", 1)
	var disk string
	for deadline := time.Now().Add(30 * time.Second); disk == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no NVMe disk with serial %s", serial)
		}
		ms, _ := filepath.Glob("/sys/block/nvme*/device/serial")
		for _, m := range ms {
			if s, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(s)) == serial {
				disk = filepath.Base(filepath.Dir(filepath.Dir(m)))
			}
		}
	}
	part := "/dev/" + disk + "p1"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(part); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear", part)
		}
	}
	if err := unix.Mount(part, "/mnt", "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount %s: %w", part, err)
	}
	_ = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		if err := unix.Mount(m, "/mnt"+m, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", m, err)
		}
	}
	if err := unix.Chdir("/mnt"); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	say(fmt.Sprintf("BENCHSWITCH exec /sbin/benchinit uptime=%.6f disk=%s", uptime(), disk))
	return unix.Exec("/sbin/benchinit", []string{"/sbin/init"}, os.Environ())
}

func uptime() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return float64(ts.Nano()) / 1e9
}

func mountAPI() {
	for _, m := range []struct{ src, dir, fs, probe string }{
		{"proc", "/proc", "proc", "/proc/self"},
		{"sysfs", "/sys", "sysfs", "/sys/block"},
		{"devtmpfs", "/dev", "devtmpfs", "/dev/kmsg"},
	} {
		if _, err := os.Stat(m.probe); err == nil {
			continue
		}
		_ = unix.Mount(m.src, m.dir, m.fs, unix.MS_NOSUID, "")
	}
}

func rootSource() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "?"
	}
	defer f.Close()
	src := "?"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if ok && len(a) >= 5 && len(b) >= 2 && a[4] == "/" {
			src = b[1]
		}
	}
	return src
}

// say writes to the console (the kernel's, or the one inherited).
func say(s string) {
	if s == "" {
		return
	}
	s += "\n"
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		_, _ = c.WriteString(s)
		c.Close()
		return
	}
	_, _ = os.Stdout.WriteString(s)
}

func powerOff() {
	unix.Sync()
	for {
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		time.Sleep(time.Second)
	}
}
