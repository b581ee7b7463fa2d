package boot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/internal/bootlog"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/safego"
)

// chaosPhases are the boot's phases in order, as the timeline names them
// (TestChaosPhasesAreReal keeps this list true to the code).
var chaosPhases = []string{"mounts", "modules", "network", "imds", "config", "claim", "device",
	"attach", "filesystem", "mount", "init", "network-down", "switch"}

// chaosKinds: what one seed injects. The first group must end in the
// image's init with exactly one FAILED line naming the phase; the last two
// are survivable and must end in the persistent init with none.
var chaosKinds = []string{"error", "panic", "goroutine-panic", "killed-helper", "read-only-root", "crash-reboot",
	"full-run", "ro-marker"}

// safegoMu: safego's handler is process-wide; seeds run one at a time.
var safegoMu sync.Mutex

type execRecord struct{ init string }

// chaosBoot drives PID 1's orchestration (guard, Phase, fail, the
// crash-loop marker, fallback, handOver) through the real phase names with
// fake phase bodies, and returns the console and the init exec'd.
func chaosBoot(t *testing.T, seed uint64) (phase, kind, console, init string, markerLeft bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5b07))
	phase = chaosPhases[rng.IntN(len(chaosPhases))]
	kind = chaosKinds[rng.IntN(len(chaosKinds))]
	point := []string{"start", "end"}[rng.IntN(2)]
	dir, err := os.MkdirTemp("", "spotroot-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	imageInit := filepath.Join(dir, "sbin/init.real")
	if err := os.MkdirAll(filepath.Dir(imageInit), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(imageInit, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	b := &booter{log: bootlog.New(&out), started: time.Now(), mountedDevs: map[string]bool{},
		paths: Paths{
			NewRoot:  filepath.Join(dir, "newroot"),
			Timeline: filepath.Join(dir, "run/spotroot/timeline.log"),
			PanicLog: filepath.Join(dir, "run/spotroot/panic.log"),
			Attempt:  filepath.Join(dir, "var/lib/spotroot/boot-attempt"),
		},
		cfg: &config.Config{ImageInit: imageInit}}
	switch kind {
	case "full-run":
		b.paths.Timeline = "/dev/full" // ENOSPC on every write
		b.paths.PanicLog = "/dev/full"
	case "ro-marker", "read-only-root":
		// The marker's directory cannot be created: writes fail as on a
		// read-only root.
		b.paths.Attempt = "/proc/version/spotroot/boot-attempt"
	case "crash-reboot":
		if _, err := armAttempt(b.paths.Attempt, "started=earlier boot_id=x"); err != nil {
			t.Fatal(err)
		}
		phase = "previous-boot"
	}
	injectKind := map[string]string{"error": "error", "panic": "panic", "goroutine-panic": "goroutine-panic"}[kind]
	if injectKind != "" {
		b.log.Fault = Fault(phase, point, injectKind)
	}

	execd := make(chan execRecord, 4)
	execve = func(init string, argv, env []string) error {
		execd <- execRecord{init}
		runtime.Goexit() // an exec does not return
		return nil
	}
	reboot = func(cmd int) error {
		execd <- execRecord{"reboot"}
		runtime.Goexit()
		return nil
	}
	rebootDelay = 0
	t.Cleanup(func() { execve, reboot = nil, nil })

	// In a test an exec does not end the other goroutines: the body goes
	// on after an injected goroutine's panic exec'd the image's init, and
	// writes below dir until it parks in fail (where, in PID 1, the exec
	// has already replaced it). The seed waits a moment for it, and dir's
	// removal retries.
	bodyDone := make(chan struct{})
	body := func() {
		defer close(bodyDone)
		if err := b.log.Phase("mounts", func() error { return fakeWork(kind, phase, "mounts") }); err != nil {
			b.fail(err)
		}
		b.checkAttempt()
		for _, p := range chaosPhases[1:] {
			if p == "switch" {
				b.writeTimeline()
				b.endingMain()
				b.disarm()
				b.switching.Store(true)
			}
			if err := b.log.Phase(p, func() error { return fakeWork(kind, phase, p) }); err != nil {
				if p == "switch" {
					b.switchFailed(err)
				}
				b.fail(err)
			}
		}
		b.log.Printf("exec /sbin/init (pid 1 start→exec %s)", bootlog.MS(time.Since(b.started)))
		_ = handOver("/sbin/init", []string{"/sbin/init"}, nil)
	}
	safegoMu.Lock()
	defer safegoMu.Unlock()
	go b.guard(body)
	select {
	case r := <-execd:
		init = r.init
	case <-time.After(20 * time.Second):
		t.Fatalf("seed %d (%s %s): no init exec'd in 20s; console:\n%s", seed, kind, phase, out.String())
	}
	select {
	case r := <-execd:
		t.Errorf("seed %d: a second exec (%s)", seed, r.init)
	case <-time.After(20 * time.Millisecond):
	}
	select {
	case <-bodyDone:
	case <-time.After(200 * time.Millisecond):
	}
	safego.SetHandler(nil)
	_, err = os.Lstat(b.paths.Attempt)
	return phase, kind, out.String(), init, err == nil
}

// fakeWork is a phase body: it fails like the real one would for the
// faults that are not injected through the Fault hook.
func fakeWork(kind, phase, p string) error {
	if p != phase {
		return nil
	}
	switch kind {
	case "killed-helper":
		// fsck, mkfs, tune2fs: a helper that is killed mid-run.
		err := exec.Command("sh", "-c", "kill -KILL $$").Run()
		return fmt.Errorf("e2fsck -p /dev/nvme1n1p1: %w", err)
	case "read-only-root":
		return &os.PathError{Op: "mkdir", Path: "/mnt/data", Err: errors.New("read-only file system")}
	}
	return nil
}

func TestChaos(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 20
	}
	base := uint64(time.Now().UnixNano())
	if s := os.Getenv("SPOTROOT_CHAOS_SEED"); s != "" {
		fmt.Sscan(s, &base)
		seeds = 1
	}
	failedRE := regexp.MustCompile(`(?m)^spotroot: FAILED ([a-z-]+): .* — (booting the image's own init|the image root is no longer reachable; rebooting in 0s into the image's own init)$`)
	counts := map[string]int{}
	for i := range seeds {
		seed := base + uint64(i)
		phase, kind, console, init, markerLeft := chaosBoot(t, seed)
		counts[kind]++
		fail := func(f string, a ...any) {
			t.Helper()
			t.Errorf("seed %d (SPOTROOT_CHAOS_SEED=%d), %s in %s: "+f+"\n--- console ---\n%s", append(append([]any{seed, seed, kind, phase}, a...), console)...)
		}
		failed := failedRE.FindAllStringSubmatch(console, -1)
		// A goroutine's panic once the switch has begun cannot stop it.
		survivable := kind == "full-run" || kind == "ro-marker" || kind == "goroutine-panic" && phase == "switch"
		switch {
		case survivable:
			if init != "/sbin/init" || strings.Contains(console, "FAILED") {
				fail("ended in %s, want the persistent init and no FAILED line", init)
			}
		case phase == "switch":
			// No way back in this boot: a reboot, the marker in place.
			if init != "reboot" || !markerLeft && kind != "read-only-root" {
				fail("ended in %s (marker left: %v), want a reboot with the marker in place", init, markerLeft)
			}
			if n := strings.Count(console, "FAILED"); n != 1 || len(failed) != 1 || failed[0][1] != "switch" {
				fail("%d FAILED lines, want exactly one naming switch", n)
			}
			continue
		default:
			if !strings.HasSuffix(init, "/sbin/init.real") {
				fail("ended in %s, want the image's init", init)
			}
			if n := strings.Count(console, "FAILED"); n != 1 || len(failed) != 1 {
				fail("%d FAILED lines, want exactly one of the form %q", n, failedRE)
			} else if failed[0][1] != phase {
				fail("the FAILED line names %q, want %q", failed[0][1], phase)
			}
		}
		if markerLeft {
			fail("the crash-loop marker is still there after the hand-over")
		}
	}
	msg := fmt.Sprintf("chaos: %d seeds from %d, every boot ended in exactly one init (kinds: %v)", seeds, base, counts)
	t.Log(msg)
	fmt.Println(msg)
}

// TestChaosPhasesAreReal: every phase the chaos test names is one the boot
// code reports.
func TestChaosPhasesAreReal(t *testing.T) {
	var src []byte
	_, self, _, _ := runtime.Caller(0)
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(self), "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	for _, p := range chaosPhases {
		if !bytes.Contains(src, []byte(`"`+p+`"`)) {
			t.Errorf("phase %q does not appear in the boot code", p)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
