// Package boot is spotroot's PID 1 sequence: API filesystems, NIC driver,
// DHCP, IMDS, configuration, claim, block device, mount, switch root, exec.
// Any failure ends in the image's own init; PID 1 never returns.
package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/apifs"
	"github.com/spotroot/spotroot/internal/bootlog"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/fsutil"
	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/kmod"
	"github.com/spotroot/spotroot/internal/readahead"
	"github.com/spotroot/spotroot/internal/safego"
)

// Paths the boot uses; fixed in production, overridable in tests.
type Paths struct {
	ImageConfig string // config file baked into the image
	Cmdline     string
	Kmsg        string
	Console     string
	NewRoot     string // where the volume is mounted before the switch
	Timeline    string // the boot timeline, kept for the real init's logs
	PanicLog    string // a recovered panic's stack, for the operator
	// Attempt is the crash-loop guard's marker on the image root: present
	// at boot, the last boot never handed over (see guard.go).
	Attempt string
	ProcSys string
}

// DefaultPaths are the production paths.
var DefaultPaths = Paths{
	ImageConfig: "/etc/spotroot/config.yaml",
	Cmdline:     "/proc/cmdline",
	Kmsg:        "/dev/kmsg",
	Console:     "/dev/console",
	NewRoot:     "/run/spotroot/root",
	Timeline:    "/run/spotroot/timeline.log",
	PanicLog:    "/run/spotroot/panic.log",
	Attempt:     "/var/lib/spotroot/boot-attempt",
	ProcSys:     "/proc/sys",
}

// Run is PID 1's main. It does not return: it execs the persistent root's
// init, or the image's own init, or (when even that is impossible) waits
// forever rather than let the kernel panic.
func Run() {
	log := bootlog.New(os.Stderr)
	// First, before anything can go wrong: a crash Go cannot recover
	// reboots the instance instead of hanging it.
	mountProc()
	armPanicReboot(log, DefaultPaths.ProcSys)
	bootTimers(log.Printf)
	b := &booter{log: log, paths: DefaultPaths, started: time.Now(), initramfs: inInitramfs(),
		tools: fsutil.DefaultTools, mountedDevs: map[string]bool{}}
	installFaults(b)
	b.guard(b.run)
}

type booter struct {
	log     *bootlog.Log
	slog    *slog.Logger
	level   slog.LevelVar // log_level: image file and command line, then user-data
	paths   Paths
	started time.Time
	early   *config.Config // image file + command line, before user-data
	cfg     *config.Config
	net     netDown
	cmdline string
	// initramfs is true when PID 1 runs from the kernel's rootfs: the
	// image's root is not mounted yet and the fallback must mount it.
	initramfs bool
	imds      *imds.Client
	tools     fsutil.Tools
	ca        caRootsLoad
	kmod      *kmod.Loader
	// mounted lists what spotroot mounted, undone before a fallback;
	// mountedDevs guards against mounting one device twice.
	mounted     []string
	mountedDevs map[string]bool
	record      []string    // volume lines for the timeline file
	ended       atomic.Bool // the hand-over has begun (see ending)
	mainOwns    atomic.Bool // ... by the main sequence (endingMain)
	switching   atomic.Bool // the root switch has begun: no way back
	armed       atomic.Bool // this boot wrote the attempt marker
	// arming is closed when checkAttempt's marker write ends (armErr its
	// result); armOnce turns that into armed once, for whoever asks first.
	arming  chan struct{}
	armErr  error
	armOnce sync.Once
	// remounted is the image root's mount point while the marker write
	// keeps it read-write (armAttempt), "" otherwise.
	remounted string
	// failTag marks a failed boot on the instance (failtag.go); nil until
	// the instance's identity and the network are there.
	failTag func(phase string)
	// userData is the raw user-data, for failTag's endpoint when the
	// configuration itself failed.
	userData []byte
}

// netDown is what the network phase leaves to undo before the handoff.
type netDown interface{ Down() error }

func (b *booter) run() {
	b.log.Printf("start pid=%d uptime=%s", os.Getpid(), uptime())
	// In the background: opening them may itself wait for the disk (their
	// directories), which on EC2's lazily loaded AMI volume is a fetch.
	safego.Go("read ahead", func() { readahead.Files(earlyFiles()...) })
	if err := b.log.Phase("mounts", b.mountAPI); err != nil {
		b.fail(err)
	}
	b.slog = b.log.Slog(&b.level)
	b.readEarlyConfig()
	b.setLogLevel(b.early)
	if b.early != nil && b.early.Disabled {
		b.log.Printf("disabled on the kernel command line — booting the image's own init")
		b.bootImage()
	}
	b.checkAttempt()
	err := b.claimAndSwitch()
	if err != nil && b.policy() == "retry-then-image-init" {
		b.log.Printf("attempt 1 failed: %v — undoing it and retrying once", err)
		b.undo()
		b.cfg = nil
		err = b.claimAndSwitch()
	}
	if err != nil {
		b.fail(err)
	}
}

// policy is the configured on_failure, from user-data once read.
func (b *booter) policy() string {
	for _, c := range []*config.Config{b.cfg, b.early} {
		if c != nil && c.OnFailure != "" {
			return c.OnFailure
		}
	}
	return "image-init"
}

// undo tears down the network and unmounts what spotroot mounted.
func (b *booter) undo() {
	if b.net != nil {
		if err := b.net.Down(); err != nil {
			b.log.Printf("warning: network teardown: %v", err)
		}
		b.net = nil
	}
	for i := len(b.mounted) - 1; i >= 0; i-- {
		_ = unix.Unmount(b.mounted[i], unix.MNT_DETACH)
	}
	b.mounted, b.mountedDevs = nil, map[string]bool{}
}

func (b *booter) mountAPI() error {
	if err := apifs.MountAll("/", apifs.Standard); err != nil {
		return err
	}
	b.log.AttachKmsg(b.paths.Kmsg)
	// Without a console PID 1 has no fds 0–2 (or the image's /dev/null, put
	// there by Go's runtime): now devtmpfs has the nodes.
	if err := ensureStdio(b.paths.Console); err != nil {
		b.log.Printf("warning: standard fds: %v", err)
	}
	return nil
}

// checkAttempt is the crash-loop guard (guard.go): a marker left by the
// last boot means it crashed before handing over, so this boot goes to the
// image's init (and removes the marker: the next boot tries again);
// otherwise the marker is written for this boot. From an initramfs the
// image root is not mounted yet and there is nowhere to keep it.
func (b *booter) checkAttempt() {
	if b.initramfs || b.paths.Attempt == "" {
		return
	}
	if rec, ok := readAttempt(b.paths.Attempt); ok {
		if err := clearAttempt(b.paths.Attempt, ""); err != nil {
			b.log.Printf("warning: crash-loop marker %s: %v", b.paths.Attempt, err)
		}
		b.fail(&bootlog.PhaseError{Phase: "previous-boot", Err: fmt.Errorf(
			"the last boot (%s) crashed before handing over (its marker %s is still there); this boot skips spotroot once, the next one tries again", rec, b.paths.Attempt)})
	}
	// The write (a read-write remount and an fsync; the read-only remount
	// waits for disarm) runs beside the NIC driver and the network: a
	// crash there would crash the image's own init as well, which loads
	// the same drivers. Everything that touches a volume waits for it
	// (armWait).
	done := make(chan struct{})
	b.arming = done
	safego.Go("crash-loop marker", func() {
		defer close(done)
		b.remounted, b.armErr = armAttempt(b.paths.Attempt, attemptRecord())
	})
}

// armWait waits for the marker write checkAttempt started.
func (b *booter) armWait() {
	if b.arming == nil {
		return
	}
	b.armOnce.Do(func() {
		<-b.arming
		if b.armErr != nil {
			b.log.Printf("warning: crash-loop marker %s: %v (a crash-reboot would try spotroot again)", b.paths.Attempt, b.armErr)
			return
		}
		b.armed.Store(true)
	})
}

// disarm removes this boot's marker and puts the image root back
// read-only: the hand-over is about to happen.
func (b *booter) disarm() {
	b.armWait()
	remounted := b.remounted
	b.remounted = ""
	// A write that failed half way may have left a partial marker, which
	// would send the next boot to the image's init: it is removed too.
	if !b.armed.Swap(false) && remounted == "" {
		return
	}
	if err := clearAttempt(b.paths.Attempt, remounted); err != nil {
		b.log.Printf("warning: crash-loop marker %s: %v (the next boot will start the image's init)", b.paths.Attempt, err)
	}
}

func (b *booter) readEarlyConfig() {
	cl, _ := os.ReadFile(b.paths.Cmdline)
	b.cmdline = strings.TrimSpace(string(cl))
	img, _ := os.ReadFile(b.paths.ImageConfig)
	cfg, err := config.Load(img, nil, b.cmdline)
	if err != nil && !errors.Is(err, config.ErrNotConfigured) {
		// Not fatal yet: user-data may still configure spotroot, and the
		// fallback needs only the image init, which has defaults.
		b.slog.Warn("early configuration ignored", "error", err)
		cfg, _ = config.Load(nil, nil, "")
	}
	b.early = cfg
}

// setLogLevel applies a configuration's log_level (validated by config).
func (b *booter) setLogLevel(c *config.Config) {
	if c == nil {
		return
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.LogLevel)); err == nil {
		b.level.Set(lv)
	}
}

// fail logs the one FAILED line and boots the image's own init.
func (b *booter) fail(err error) {
	b.ending()
	b.failNow(err)
}

// failNow is fail for the caller that already owns the hand-over.
func (b *booter) failNow(err error) {
	phase := "boot"
	var pe *bootlog.PhaseError
	if errors.As(err, &pe) {
		phase, err = pe.Phase, pe.Err
	}
	if b.policy() == "poweroff" {
		b.log.Printf("FAILED %s: %v — powering off (on_failure: poweroff)", phase, err)
		b.markFailed(phase)
		b.disarm()
		b.undo()
		unix.Sync()
		_ = reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		waitForever(b.log)
	}
	b.log.Printf("FAILED %s: %v — booting the image's own init", phase, err)
	b.markFailed(phase)
	b.bootImage()
}

// bootImage tears down what spotroot set up and execs the image's init. From
// an initramfs the image's root must first be mounted and switched to.
func (b *booter) bootImage() {
	b.ended.Store(true) // not ending(): fail already holds it, or no one does
	b.disarm()
	if b.initramfs {
		if err := b.switchToImageRoot(); err != nil {
			b.log.Printf("FAILED image root: %v", err)
			waitForever(b.log)
		}
	}
	fallback(b.log, b.paths, b.cfg, b.net, b.mounted)
}

// inInitramfs reports whether / is the kernel's rootfs (ramfs or tmpfs).
func inInitramfs() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false
	}
	return st.Type == unix.RAMFS_MAGIC || st.Type == unix.TMPFS_MAGIC
}

// peakRSS is the process's peak resident set (VmHWM), for the timeline.
// getrusage, not /proc/self/status: the kernel's status formatter is a
// long path a TCG guest translates just for this figure, and PID 1's
// ru_maxrss is its own (the kernel thread it was exec'd from had no mm).
func peakRSS() string {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil || ru.Maxrss <= 0 {
		return "?"
	}
	return strconv.FormatInt(ru.Maxrss, 10) + "kB"
}

func fallback(log *bootlog.Log, paths Paths, cfg *config.Config, net netDown, mounted []string) {
	defer func() {
		if r := recover(); r != nil {
			log.Printf("FAILED fallback: panic: %v", r)
			waitForever(log)
		}
	}()
	if net != nil {
		if err := net.Down(); err != nil {
			log.Printf("warning: network teardown: %v", err)
		}
	}
	for i := len(mounted) - 1; i >= 0; i-- {
		_ = unix.Unmount(mounted[i], unix.MNT_DETACH)
	}
	_ = unix.Unmount(paths.NewRoot, unix.MNT_DETACH)
	var candidates []string
	if cfg != nil && cfg.ImageInit != "" {
		candidates = append(candidates, cfg.ImageInit)
	}
	candidates = append(candidates, config.ImageInitCandidates...)
	self, _ := os.Stat("/proc/self/exe")
	for _, init := range candidates {
		st, err := os.Stat(init)
		if err != nil || (self != nil && os.SameFile(st, self)) {
			continue
		}
		log.Printf("exec image init %s", init)
		err = handOver(init, os.Args, os.Environ())
		log.Printf("warning: %v", err)
	}
	log.Printf("FAILED fallback: no image init found (tried %s); set spotroot.image_init", strings.Join(candidates, ", "))
	waitForever(log)
}

// waitForever keeps PID 1 alive (reaping orphans) when there is nothing to
// exec: a kernel panic would hide the console message from the operator.
func waitForever(log *bootlog.Log) {
	for {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(-1, &ws, 0, nil); err != nil {
			time.Sleep(time.Minute)
		}
	}
}

func uptime() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return "?"
	}
	return fmt.Sprintf("%.3fs", time.Duration(ts.Nano()).Seconds())
}

// withTimeout is context.WithTimeout that treats 0 as "use def".
func withTimeout(d, def time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = def
	}
	return context.WithTimeout(context.Background(), d)
}
