package boot

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/testenv"
)

func threadSlack(t *testing.T, tid string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", tid, "timerslack_ns"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Every thread of the process gets the boot's slack, including threads
// started afterwards; the thread that execs gets the old one back.
func TestTimerSlackForEveryThreadAndBackAtTheExec(t *testing.T) {
	testenv.RequireRoot(t) // another thread's timerslack_ns needs CAP_SYS_NICE
	const boot = 3 * time.Millisecond
	prev, err := slowTimers("/proc", boot)
	if err != nil {
		t.Fatal(err)
	}
	defer slowTimers("/proc", time.Duration(prev))
	if prev <= 0 || prev == int64(boot) {
		t.Fatalf("previous slack %d: want the process's own, not the boot's", prev)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks {
		if got := threadSlack(t, tk.Name()); got != int64(boot) {
			t.Errorf("thread %s: slack %d ns, want %d", tk.Name(), got, boot)
		}
	}
	// New threads: a goroutine locked to its thread while the others are
	// busy forces the runtime to clone more.
	tids := make(chan int, 8)
	release := make(chan struct{})
	for range cap(tids) {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			<-release
		}()
	}
	for range cap(tids) {
		tid := strconv.Itoa(<-tids)
		if got := threadSlack(t, tid); got != int64(boot) {
			t.Errorf("thread %s started after: slack %d ns, want %d (inherited)", tid, got, boot)
		}
	}
	close(release)

	saved := kernelTimerSlack
	defer func() { kernelTimerSlack = saved }()
	kernelTimerSlack = prev
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	restoreTimerSlack()
	if got := threadSlack(t, strconv.Itoa(unix.Gettid())); got != prev {
		t.Errorf("after restoreTimerSlack: slack %d ns, want %d (what the kernel gave)", got, prev)
	}
}

// Without /proc nothing changes, and the error names the file.
func TestTimerSlackWithoutProc(t *testing.T) {
	dir := t.TempDir()
	prev, err := slowTimers(dir, time.Millisecond)
	if err == nil || prev != 0 || !strings.Contains(err.Error(), filepath.Join(dir, "self/timerslack_ns")) {
		t.Fatalf("slowTimers on an empty directory: %d, %v; want 0 and an error naming self/timerslack_ns", prev, err)
	}
}
