// Command testinit is the init of the e2e guests' root filesystems.
//
// As PID 1 it mounts the API filesystems it needs, increments a persistent
// boot counter on its root filesystem and prints one line to the console:
//
//	TESTINIT kind=<kind> pid=<pid> root=<source of /> counter=<n> net=<ipv4,...|none>
//
// then syncs, remounts / read-only and powers the machine off. On any error
// it prints "TESTINIT error: ..." and still powers off. It never exits, since
// PID 1 exiting panics the kernel. Run as any other PID it refuses to touch
// the system.
//
// Optional modes, for the interruption scenario:
//   - /etc/spotroot-test/report lists paths; before its line testinit prints
//     "TESTINIT-REPORT <path> <content>" (or "missing") for each.
//   - /etc/spotroot-test/watch names the spotroot binary (default
//     /usr/sbin/spotroot): after its line testinit configures the first
//     ethernet link statically (169.254.2.15/16, the slirp address), runs
//     "spotroot watch" with its output on the console and waits; the
//     watcher powers the machine off itself. If the watcher exits, testinit
//     powers off as usual. The kernel argument spotroot_test.watch=0 skips
//     this mode for one boot.
//   - Run as a spotroot hook (not PID 1, SPOTROOT_ACTION set) it records the
//     notice durably in /var/lib/spotroot-test/hook-ran and exits 0.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	kindFile      = "/etc/spotroot-test/kind"
	writeFileConf = "/etc/spotroot-test/write-file"
	reportConf    = "/etc/spotroot-test/report"
	watchConf     = "/etc/spotroot-test/watch"
	hookRanFile   = "/var/lib/spotroot-test/hook-ran"
	counterDir    = "/var/lib/spotroot-test"
	counterFile   = counterDir + "/counter"
)

func main() {
	if os.Getpid() != 1 && os.Getenv("SPOTROOT_ACTION") != "" {
		os.Exit(hook())
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "TESTINIT error: not PID 1; refusing to remount / and power off")
		os.Exit(1)
	}
	inherit = readInherited() // before anything here opens or mounts
	line, err := run()
	if err != nil {
		line = "TESTINIT error: " + err.Error()
	}
	say(line)
	if err == nil {
		watchMode()
	}
	unix.Sync()
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	unix.Sync()
	for {
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
			say("TESTINIT error: power off: " + err.Error())
		}
		time.Sleep(time.Hour)
	}
}

// inherit is what this init was handed (hygiene.go).
var inherit inherited

func run() (string, error) {
	self, err := mountAPI()
	if err != nil {
		return "", err
	}
	say(recordHygiene(inherit, self))
	kindB, err := os.ReadFile(kindFile)
	if err != nil {
		return "", fmt.Errorf("read kind: %w", err)
	}
	kind := strings.TrimSpace(string(kindB))
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT, ""); err != nil {
		return "", fmt.Errorf("remount / read-write: %w", err)
	}
	n, err := bumpCounter()
	if err != nil {
		return "", err
	}
	// Report first: a file written by an earlier boot shows what survived.
	report()
	if b, err := os.ReadFile(writeFileConf); err == nil {
		if p := strings.TrimSpace(string(b)); p != "" {
			if err := writeDurably(p, fmt.Appendf(nil, "kind=%s counter=%d\n", kind, n)); err != nil {
				return "", fmt.Errorf("write-file %s: %w", p, err)
			}
		}
	}
	root, err := rootSource()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("TESTINIT kind=%s pid=%d root=%s counter=%d net=%s",
		kind, os.Getpid(), root, n, addrs()), nil
}

// mountAPI mounts /proc, /sys and /dev unless they already are mounted,
// and returns what it mounted.
func mountAPI() (map[string]bool, error) {
	self := map[string]bool{}
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		if err := mount("proc", "/proc", "proc"); err != nil {
			return nil, err
		}
		self["/proc"] = true
	}
	mounted, err := mountPoints()
	if err != nil {
		return nil, err
	}
	for _, m := range []struct{ src, dir, fstype string }{
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if mounted[m.dir] {
			continue
		}
		if err := mount(m.src, m.dir, m.fstype); err != nil {
			return nil, err
		}
		self[m.dir] = true
	}
	return self, nil
}

func mount(src, dir, fstype string) error {
	_ = os.MkdirAll(dir, 0o755)
	err := unix.Mount(src, dir, fstype, unix.MS_NOSUID|unix.MS_NOEXEC, "")
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount %s on %s: %w", fstype, dir, err)
	}
	return nil
}

type mountInfo struct{ point, source string }

func readMountInfo() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 2 {
			continue
		}
		out = append(out, mountInfo{point: unescape(a[4]), source: unescape(b[1])})
	}
	return out, sc.Err()
}

func mountPoints() (map[string]bool, error) {
	ms, err := readMountInfo()
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, x := range ms {
		m[x.point] = true
	}
	return m, nil
}

// rootSource is the source of the topmost mount on /.
func rootSource() (string, error) {
	ms, err := readMountInfo()
	if err != nil {
		return "", err
	}
	src := ""
	for _, m := range ms {
		if m.point == "/" {
			src = m.source
		}
	}
	if src == "" {
		return "", errors.New("no / in /proc/self/mountinfo")
	}
	return src, nil
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func bumpCounter() (int, error) {
	if err := os.MkdirAll(counterDir, 0o755); err != nil {
		return 0, fmt.Errorf("counter: %w", err)
	}
	n := 0
	b, err := os.ReadFile(counterFile)
	switch {
	case err == nil:
		n, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 0, fmt.Errorf("counter %s: %w", counterFile, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return 0, fmt.Errorf("counter: %w", err)
	}
	n++
	if err := writeDurably(counterFile, []byte(strconv.Itoa(n)+"\n")); err != nil {
		return 0, fmt.Errorf("counter: %w", err)
	}
	return n, nil
}

// writeDurably replaces path with data via a temporary file, fsyncing the
// file and its directory.
func writeDurably(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// addrs lists the IPv4 addresses on non-loopback interfaces.
func addrs() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "error(" + err.Error() + ")"
	}
	var out []string
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				out = append(out, ipn.IP.String())
			}
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// say writes line to /dev/console and to stdout, once if they are the same
// device.
func say(line string) {
	line += "\n"
	var cst, ost unix.Stat_t
	c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		// No console device registered (console= names none): the
		// first serial port is still where the harness listens, and
		// spotroot's timeline is only in the kernel log: copy it over.
		c, err = os.OpenFile("/dev/ttyS0", os.O_WRONLY|unix.O_NOCTTY, 0)
		if err == nil && !kmsgCopied {
			kmsgCopied = true
			for _, l := range kmsgSpotroot() {
				_, _ = c.WriteString("KMSG " + l + "\n")
			}
		}
	}
	if err == nil {
		defer c.Close()
		_, _ = c.WriteString(line)
	}
	if err == nil && unix.Fstat(int(c.Fd()), &cst) == nil && unix.Fstat(1, &ost) == nil &&
		ost.Mode&unix.S_IFMT == unix.S_IFCHR && ost.Rdev == cst.Rdev {
		return
	}
	_, _ = os.Stdout.WriteString(line)
}

var kmsgCopied bool

// kmsgSpotroot returns the kernel log's spotroot records.
func kmsgSpotroot() []string {
	// Raw syscalls: through os.File a non-blocking read would park in the
	// poller at the end of the log instead of returning EAGAIN.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var out []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			if errors.Is(err, unix.EPIPE) {
				continue // overwritten records
			}
			return out
		}
		_, msg, _ := strings.Cut(string(buf[:n]), ";")
		msg, _, _ = strings.Cut(msg, "\n")
		if strings.HasPrefix(msg, "spotroot: ") || strings.Contains(msg, "initial console") {
			out = append(out, msg)
		}
	}
}

// hook records a spotroot watch notice (testinit installed as a hook).
func hook() int {
	rec := fmt.Sprintf("kind=%s action=%s time=%s\n", os.Getenv("SPOTROOT_KIND"), os.Getenv("SPOTROOT_ACTION"), os.Getenv("SPOTROOT_TIME"))
	if err := writeDurably(hookRanFile, []byte(rec)); err != nil {
		fmt.Fprintln(os.Stderr, "TESTINIT hook error:", err)
		return 1
	}
	fmt.Print("recorded " + rec)
	return 0
}

// report prints the files listed in reportConf.
func report() {
	b, err := os.ReadFile(reportConf)
	if err != nil {
		return
	}
	for _, p := range strings.Fields(string(b)) {
		c, err := os.ReadFile(p)
		v := strings.TrimSpace(string(c))
		if err != nil {
			v = "missing"
		}
		say("TESTINIT-REPORT " + p + " " + v)
	}
}

// watchMode runs "spotroot watch" when watchConf exists; it returns only if
// the watcher ends without powering the machine off.
func watchMode() {
	b, err := os.ReadFile(watchConf)
	if err != nil {
		return
	}
	if cl, _ := os.ReadFile("/proc/cmdline"); slices.Contains(strings.Fields(string(cl)), "spotroot_test.watch=0") {
		return
	}
	bin := strings.TrimSpace(string(b))
	if bin == "" {
		bin = "/usr/sbin/spotroot"
	}
	if err := netUp(); err != nil {
		say("TESTINIT error: watch: network: " + err.Error())
		return
	}
	con, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		say("TESTINIT error: watch: console: " + err.Error())
		return
	}
	defer con.Close()
	say("TESTINIT watch: starting " + bin + " watch")
	cmd := exec.Command(bin, "watch", "--interval", "2s", "--hook-timeout", "20s")
	cmd.Stdout, cmd.Stderr = con, con
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	err = cmd.Run()
	say(fmt.Sprintf("TESTINIT error: watch: %s exited: %v", bin, err))
}

// netUp gives the first ethernet link the slirp address, so the watcher
// reaches IMDS at 169.254.169.254 (spotroot removed its DHCP lease).
func netUp() error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	for _, l := range links {
		if l.Type() != "device" || l.Attrs().Name == "lo" || l.Attrs().HardwareAddr == nil {
			continue
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
		}
		a, _ := netlink.ParseAddr("169.254.2.15/16")
		if err := netlink.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s to %s: %w", a, l.Attrs().Name, err)
		}
		return nil
	}
	return errors.New("no ethernet link")
}
