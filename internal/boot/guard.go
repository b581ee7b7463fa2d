package boot

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/apifs"
	"github.com/spotroot/spotroot/internal/bootlog"
	"github.com/spotroot/spotroot/internal/safego"
	"github.com/spotroot/spotroot/internal/sysroot"
)

// PanicRebootSeconds is what kernel.panic is set to when it is 0 (hang
// forever, Debian's CONFIG_PANIC_TIMEOUT=0): a crash of PID 1 that Go cannot
// recover (a runtime fatal error, a panic in a goroutine spotroot did not
// start) or an oops reboots the instance instead of leaving it hung.
const PanicRebootSeconds = 10

// exitSignals are the signals a console or the kernel may send PID 1.
// They are caught, not ignored: SIG_IGN survives execve, so an ignored
// SIGTERM or SIGPIPE would reach the real init and every child it starts;
// a caught signal is reset to SIG_DFL by the kernel at exec.
var exitSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2}

// execve replaces PID 1, reboot restarts the machine (seams: the
// in-process chaos tests record them instead).
var (
	execve      = sysroot.Exec
	reboot      = unix.Reboot
	rebootDelay = PanicRebootSeconds * time.Second
)

// guard runs body as PID 1's main: signals are caught, a panic anywhere
// (this goroutine, or one started through safego) becomes the one FAILED
// line and the image's init.
func (b *booter) guard(body func()) {
	// Buffered and never read: signals are dropped, PID 1 does not die.
	signal.Notify(make(chan os.Signal, 1), exitSignals...)
	safego.SetHandler(func(name string, v any, stack []byte) {
		b.crashed(fmt.Sprintf("panic in %s: %v", name, v), stack)
	})
	defer func() {
		if r := recover(); r != nil {
			b.crashedMain(fmt.Sprintf("panic: %v", r), debug.Stack())
		}
	}()
	body()
}

// crashedMain is a panic of the main sequence. Once that sequence owns the
// hand-over (it is switching root), only it can finish it.
func (b *booter) crashedMain(what string, stack []byte) {
	if !b.mainOwns.Load() {
		b.crashed(what, stack)
		return
	}
	b.savePanic(what, stack)
	if b.switching.Load() {
		b.switchFailed(errors.New(what))
	}
	phase := b.log.Current()
	if phase == "" {
		phase = "boot"
	}
	b.failNow(&bootlog.PhaseError{Phase: phase, Err: errors.New(what)})
}

func (b *booter) savePanic(what string, stack []byte) {
	if b.paths.PanicLog != "" {
		_ = os.MkdirAll(filepath.Dir(b.paths.PanicLog), 0o755)
		_ = os.WriteFile(b.paths.PanicLog, fmt.Appendf(nil, "%s\n%s", what, stack), 0o644)
	}
}

// crashed reports a recovered panic against the phase that was running and
// boots the image's init. The stack goes to /run for the operator.
func (b *booter) crashed(what string, stack []byte) {
	phase := b.log.Current()
	if phase == "" {
		phase = "boot"
	}
	b.savePanic(what, stack)
	if b.mainOwns.Load() {
		b.log.Printf("warning: %s while handing over; the hand-over goes on", what)
	}
	b.fail(&bootlog.PhaseError{Phase: phase, Err: errors.New(what)})
}

// ending makes the hand-over happen once: the first path to reach it (the
// main sequence's exec, a failure, a panic in a goroutine) proceeds; any
// later one waits for the exec that ends this process.
func (b *booter) ending() {
	if b.ended.CompareAndSwap(false, true) {
		return
	}
	for {
		time.Sleep(time.Hour)
	}
}

// endingMain is ending for the main sequence, which then owns the hand-over.
func (b *booter) endingMain() {
	b.ending()
	b.mainOwns.Store(true)
}

// switchFailed: the switch broke half way and the old root may be gone;
// there is no safe way back in this boot.
func (b *booter) switchFailed(err error) {
	b.log.Printf("FAILED switch: %v — the image root is no longer reachable; rebooting in %s into the image's own init", err, rebootDelay)
	b.rebootToImage()
}

// armPanicReboot makes a kernel panic (PID 1 dying included) and an oops
// reboot the instance after PanicRebootSeconds. An operator's own panic=
// (non-zero) is kept.
func armPanicReboot(log *bootlog.Log, procSys string) {
	p := filepath.Join(procSys, "kernel/panic")
	if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) == "0" {
		if err := os.WriteFile(p, []byte(strconv.Itoa(PanicRebootSeconds)), 0); err != nil {
			log.Printf("warning: kernel.panic: %v (a crash would hang the instance)", err)
		}
	}
	_ = os.WriteFile(filepath.Join(procSys, "kernel/panic_on_oops"), []byte("1"), 0)
}

// mountProc mounts /proc early, for the sysctls; the mounts phase keeps it.
func mountProc() {
	for _, m := range apifs.Standard {
		if m.Target == "/proc" {
			_ = apifs.MountAll("/", []apifs.Mount{m})
		}
	}
}

// ensureStdio gives fds 0–2 to the console, or /dev/null when there is no
// console, once devtmpfs is mounted. The kernel opens /dev/console for PID 1
// from its own rootfs; when no console device is registered PID 1 starts
// with none (then Go's runtime put the image's /dev/null there, if it has
// one). Either way the init exec'd later gets 0–2 on nodes of the devtmpfs
// that moves with it, and nothing that pins the image root.
func ensureStdio(console string) error {
	ok := true
	for fd := 0; fd <= 2; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev == unix.Mkdev(1, 3) {
			ok = false
		}
	}
	if ok {
		return nil
	}
	f, err := os.OpenFile(console, os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		null := filepath.Join(filepath.Dir(console), "null")
		if f, err = os.OpenFile(null, os.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("no console and no %s: %w", null, err)
		}
	}
	defer f.Close()
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("dup %s to fd %d: %w", f.Name(), fd, err)
		}
	}
	return nil
}

// handOver execs init as PID 1 in the state a kernel-started init has: no
// fd but 0–2 survives (close_range marks the rest close-on-exec, so the
// runtime's own stay usable until the exec), an empty signal mask, umask
// 0022, cwd /, the kernel's timer slack. Caught signals become SIG_DFL at exec by themselves.
func handOver(init string, argv, env []string) error {
	runtime.LockOSThread() // the mask below is per thread
	defer runtime.UnlockOSThread()
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		cloexecAll() // kernels before 5.11
	}
	var none unix.Sigset_t
	_ = unix.PthreadSigmask(unix.SIG_SETMASK, &none, nil)
	unix.Umask(0o022)
	_ = unix.Chdir("/")
	restoreTimerSlack() // per thread, like the mask
	return execve(init, argv, env)
}

func cloexecAll() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

// The crash-loop guard. A crash spotroot cannot recover (a runtime fatal
// error, a kernel panic) reboots the instance (armPanicReboot); the attempt
// marker, written on the image root before the risky work and removed just
// before the hand-over, tells the next boot that the last one never got
// there, and that boot goes straight to the image's own init. The kernel
// keeps nothing across a warm reboot on EC2 that spotroot could use instead
// (no ramoops region, no EFI variables on BIOS-booted AMIs, and
// reboot(2)'s command string goes to firmware, not to the next kernel).

// attemptState is what the marker says.
func readAttempt(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// writableMount returns the mount point of dir's filesystem when that is
// mounted read-only (the kernel mounts the root "ro" unless told "rw"),
// and "" when dir is writable as it is.
func writableMount(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", err
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return "", nil
	}
	mp := "/"
	if dir != "/" {
		// The marker lives on the image root; tests point it elsewhere.
		mp = dir
		for mp != "/" {
			if ok, _ := apifs.IsMountPoint(mp); ok {
				break
			}
			mp = filepath.Dir(mp)
		}
	}
	return mp, nil
}

// remountRW lifts a read-only mount for the marker.
func remountRW(mp string) error {
	if err := unix.Mount("", mp, "", unix.MS_REMOUNT, ""); err != nil {
		return fmt.Errorf("remount %s read-write: %w", mp, err)
	}
	return nil
}

// remountRO puts back the read-only mount remountRW lifted. The kernel's
// remount syncs the filesystem first, so what was written (or removed)
// while it was writable is on disk when this returns.
func remountRO(mp string) error {
	if err := unix.Mount("", mp, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", mp, err)
	}
	return nil
}

// armAttempt writes the marker durably (the file and its directory
// synced). A read-only image root is remounted read-write for it and left
// so until clearAttempt, which gets the mount point back as remounted
// ("" when nothing was remounted, also returned on error when that is so):
// one remount each way per boot rather than two. On a TCG guest each
// remount of the image root runs tens of milliseconds of ext4 and journal
// code, and the real init would see the same read-only root either way —
// every hand-over (the volume's init, the image's on any fallback) passes
// through clearAttempt first. A crash in between leaves an ext4/XFS
// journal that the next mount replays, as on any instance that crashes.
func armAttempt(path, what string) (remounted string, err error) {
	dir := filepath.Dir(path)
	mp, err := writableMount(nearestExisting(dir))
	if err != nil {
		return "", err
	}
	if mp != "" {
		if err := remountRW(mp); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return mp, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return mp, err
	}
	_, err = f.WriteString(what + "\n")
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return mp, err
	}
	return mp, syncDir(dir)
}

// clearAttempt removes the marker (nothing to do if it is not there) and
// remounts remounted (armAttempt's) read-only again, which makes the
// removal durable. With remounted "" (a marker left by an earlier boot, or
// a root that was writable all along) a read-only filesystem is lifted
// for the removal and put back.
func clearAttempt(path, remounted string) error {
	dir := filepath.Dir(path)
	mp := remounted
	if mp == "" {
		if _, err := os.Lstat(path); err != nil {
			return nil
		}
		var err error
		if mp, err = writableMount(dir); err != nil {
			return err
		}
		if mp != "" {
			if err := remountRW(mp); err != nil {
				return err
			}
		}
	}
	err := os.Remove(path)
	if os.IsNotExist(err) {
		err = nil
	}
	if mp != "" {
		if rerr := remountRO(mp); err == nil {
			err = rerr
		}
		return err
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

// syncDir makes a directory's entries durable (a file created or removed).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func nearestExisting(p string) string {
	for p != "/" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		p = filepath.Dir(p)
	}
	return "/"
}

// attemptRecord is the marker's content: enough for the next boot's line.
func attemptRecord() string {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return fmt.Sprintf("started=%s boot_id=%s", time.Now().UTC().Format(time.RFC3339), strings.TrimSpace(string(id)))
}

// rebootToImage is for a failure with no way back (the switch broke half
// way): the marker is written again, where the image root still is, and
// the instance reboots after PanicRebootSeconds into the image's own init.
func (b *booter) rebootToImage() {
	if !b.initramfs && b.paths.Attempt != "" {
		if mp, _ := armAttempt(b.paths.Attempt, attemptRecord()+" switch=failed"); mp != "" {
			_ = remountRO(mp)
		}
	}
	time.Sleep(rebootDelay)
	unix.Sync()
	_ = reboot(unix.LINUX_REBOOT_CMD_RESTART)
	waitForever(b.log)
}
