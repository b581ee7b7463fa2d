package boot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// BootTimerSlack is the timer slack of PID 1's threads until the hand-over.
//
// Why: Go's sysmon thread sleeps 20 µs between rounds for as long as it
// keeps finding a P held by a thread in a system call, and with one CPU it
// finds one on nearly every round (finit_module, mount, fsync, sysfs
// reads). Each round is a nanosleep, a timer interrupt and two context
// switches, stolen from the one CPU the boot runs on. Measured on the
// bench's one-CPU TCG guest with the kernel's 50 µs: sysmon woke ~3,700
// times and used ~0.43 s of CPU before the exec; the kernel counted
// ~7,500 context switches and ~3,400 timer interrupts. The kernel may defer
// a sleeping thread's timer by its slack (prctl(2), PR_SET_TIMERSLACK), so
// sysmon's 20 µs sleeps end with the next timer due within the slack: with
// 1 ms it woke ~670 times, with 4 ms ~370 (context switches 3,700 → 3,000
// in a paired run). Every other timer of PID 1 (retry back-offs of 50 ms
// and more, deadlines, poll ticks of 20 ms and more) is at most 4 ms late;
// sysmon's own longest sleep is 10 ms.
const BootTimerSlack = 4 * time.Millisecond

// kernelTimerSlack is PID 1's timer slack as the kernel set it (50 µs),
// read before slowTimers changes it; handOver gives it back to the thread
// that execs. 0: unknown, left alone (tests, a kernel without the file).
var kernelTimerSlack int64

// slowTimers gives every thread of this process the timer slack slack and
// returns the slack the main thread had. /proc/<tid>/timerslack_ns sets
// another thread's (Linux 4.6, CAP_SYS_NICE); the threads Go starts later
// inherit it from the thread that clones them. The task list is read until
// no thread is new: one may be cloned, with the old value, while we write.
func slowTimers(proc string, slack time.Duration) (int64, error) {
	old, err := os.ReadFile(filepath.Join(proc, "self/timerslack_ns"))
	if err != nil {
		return 0, fmt.Errorf("read timer slack: %w", err)
	}
	prev, err := strconv.ParseInt(string(bytes.TrimSpace(old)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read timer slack: %q: %w", old, err)
	}
	v := []byte(strconv.FormatInt(int64(slack), 10))
	done := map[string]bool{}
	for range 4 {
		tasks, err := os.ReadDir(filepath.Join(proc, "self/task"))
		if err != nil {
			return prev, fmt.Errorf("list threads: %w", err)
		}
		fresh := false
		var errs []error
		for _, t := range tasks {
			if done[t.Name()] {
				continue
			}
			done[t.Name()], fresh = true, true
			// A thread that exited meanwhile is gone from /proc: ENOENT/ESRCH.
			if err := os.WriteFile(filepath.Join(proc, t.Name(), "timerslack_ns"), v, 0); err != nil &&
				!errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("set timer slack of thread %s: %w", t.Name(), err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return prev, err
		}
		if !fresh {
			break
		}
	}
	return prev, nil
}

// bootTimers applies BootTimerSlack to PID 1 and remembers the kernel's
// value for the hand-over. A failure only costs speed.
func bootTimers(warn func(format string, a ...any)) {
	prev, err := slowTimers("/proc", BootTimerSlack)
	if prev > 0 {
		kernelTimerSlack = prev
	}
	if err != nil {
		warn("warning: timer slack: %v (booting with the kernel's)", err)
	}
}

// restoreTimerSlack gives the calling thread (the one about to exec) the
// slack the kernel gave PID 1, so the next init starts with the kernel's.
// What no interface can reset is the thread's default slack (the value a
// prctl(PR_SET_TIMERSLACK, 0) returns to): for a thread the runtime started
// after bootTimers it is the boot's 4 ms. Only an init that resets its own
// slack to "default" would see it; its children get the current 50 µs.
func restoreTimerSlack() {
	if kernelTimerSlack > 0 {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(kernelTimerSlack), 0, 0, 0)
	}
}
