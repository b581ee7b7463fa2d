package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/sim"
)

// Crashes, a bare start and chaos in QEMU. The fault-injection build of
// spotroot (-tags spotroot_faults) reads spotroot_test.fault=phase:point:kind
// from the kernel command line; product builds have no such seam
// (internal/boot/fault_off.go).

var (
	faultOnce sync.Once
	faultAMI  string // AMI whose /sbin/init is the fault build
	noDevAMI  string // AMI with an empty /dev (product build)
	faultErr  error
)

func faultEnv(t *testing.T) (faultImage, noDevImage string) {
	t.Helper()
	e := sharedEnv(t)
	faultOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		bin, err := images.BuildFaultSpotroot(ctx, filepath.Join(e.Dir, "bin"))
		if err != nil {
			faultErr = err
			return
		}
		faultAMI = filepath.Join(e.Dir, "ami-faults.img")
		if faultErr = images.BuildAMI(ctx, images.AMIOpts{Out: faultAMI, SpotrootBin: bin,
			TestinitBin: e.TestinitBin, Kernel: e.Kernel, Files: e.CAFiles()}); faultErr != nil {
			return
		}
		noDevAMI = filepath.Join(e.Dir, "ami-nodev.img")
		faultErr = images.BuildAMI(ctx, images.AMIOpts{Out: noDevAMI, SpotrootBin: e.SpotrootBin,
			TestinitBin: e.TestinitBin, Kernel: e.Kernel, NoDevNodes: true, Files: e.CAFiles()})
	})
	if faultErr != nil {
		t.Fatal(faultErr)
	}
	return faultAMI, noDevAMI
}

// privateCopy copies an image for a guest that writes it directly
// (RootDirect), so what the guest writes survives into the next boot.
func privateCopy(t *testing.T, img string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(img))
	if out, err := exec.Command("cp", "--sparse=always", img, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return dst
}

var failedLine = regexp.MustCompile(`^spotroot: FAILED ([a-z-]+): `)

// expectFallback: the image's init ran after exactly one FAILED line, which
// names phase, and the hand-over to it was clean.
func expectFallback(t *testing.T, r *harness.BootResult, phase string, o ...handoffOpts) {
	t.Helper()
	var failed []string
	for _, l := range r.Timeline {
		if m := failedLine.FindStringSubmatch(l); m != nil {
			failed = append(failed, m[1])
		}
	}
	if r.Kind != "image" || r.PID != 1 {
		t.Errorf("TESTINIT kind=%s pid=%d, want the image's init as PID 1", r.Kind, r.PID)
	}
	if len(failed) != 1 || failed[0] != phase {
		t.Errorf("FAILED lines name %q, want exactly one naming %s", failed, phase)
	}
	checkHandoff(t, r, o...)
	if t.Failed() {
		t.Logf("console:\n%s", r.Console)
	}
}

// TestCrash: a panic in a goroutine is recovered into the fallback; a Go
// runtime fatal error (unrecoverable: PID 1 dies, the kernel panics) makes
// the kernel reboot (kernel.panic set by spotroot; panic=0 here is
// Debian's default of hanging forever) and the next boot of the same
// instance goes straight to the image's init; the one after that tries
// spotroot again.
func TestCrash(t *testing.T) {
	t.Run("goroutine-panic", func(t *testing.T) {
		ami, _ := faultEnv(t)
		w := newWorld(t, harness.WorldOpts{})
		r := bootOpts(t, w, harness.BootOpts{AMI: ami, Timeout: 2 * time.Minute,
			KernelArgs: []string{"spotroot_test.fault=claim:start:goroutine-panic"}})
		t.Logf("goroutine panic → image init in %v", r.Elapsed.Round(time.Millisecond))
		expectFallback(t, r, "claim")
		if !strings.Contains(strings.Join(r.Timeline, "\n"), "FAILED claim: panic in injected goroutine: injected panic") {
			t.Errorf("the FAILED line does not carry the panic")
		}
	})
	t.Run("fatal-error", func(t *testing.T) {
		ami, _ := faultEnv(t)
		ami = privateCopy(t, ami)
		w := newWorld(t, harness.WorldOpts{})
		start := time.Now()
		crash, err := w.Boot(context.Background(), harness.BootOpts{AMI: ami, RootDirect: true, Keep: true,
			Timeout:         2 * time.Minute,
			KernelArgs:      []string{"panic=0", "spotroot_test.fault=claim:start:fatal"},
			Until:           regexp.MustCompile(`Rebooting in \d+ seconds`),
			PowerOffTimeout: 40 * time.Second,
		})
		if err != nil {
			t.Fatalf("crash boot: %v", err)
		}
		for _, want := range []string{"fatal error: sync: unlock of unlocked mutex", "Attempted to kill init"} {
			if !strings.Contains(crash.Console, want) {
				t.Errorf("crash boot: console lacks %q\n%s", want, crash.Console)
			}
		}
		for _, l := range strings.Split(crash.Console, "\n") {
			if strings.Contains(l, "fatal error") || strings.Contains(l, "Kernel panic") || strings.Contains(l, "Rebooting in") {
				t.Log("crash boot: " + strings.TrimSpace(l))
			}
		}
		if crash.ShutdownReason != "guest-reset" {
			t.Fatalf("crash boot ended with %q, want guest-reset (the kernel rebooting after its panic)\n%s", crash.ShutdownReason, crash.Console)
		}
		next := bootOpts(t, w, harness.BootOpts{AMI: ami, RootDirect: true, Keep: true, InstanceID: crash.InstanceID})
		t.Logf("fatal error → reboot → image init: %v (crash boot %v, next boot %v)",
			time.Since(start).Round(time.Millisecond), crash.Elapsed.Round(time.Millisecond), next.Elapsed.Round(time.Millisecond))
		expectFallback(t, next, "previous-boot")
		for _, l := range next.Timeline {
			if strings.Contains(l, "FAILED") {
				t.Log("next boot: " + l)
			}
		}
		after := bootOpts(t, w, harness.BootOpts{AMI: ami, RootDirect: true, InstanceID: crash.InstanceID})
		expect(t, after, "persistent", execPersistent)
	})
}

// TestStartFromNothing: an image with an empty /dev (no console, no null
// node) on a kernel without DEVTMPFS_MOUNT (Debian's cloud kernel).
func TestStartFromNothing(t *testing.T) {
	t.Run("no-dev-nodes", func(t *testing.T) {
		_, ami := faultEnv(t)
		w := newWorld(t, harness.WorldOpts{})
		r := bootOpts(t, w, harness.BootOpts{AMI: ami})
		checkPersistent(t, r, 1)
	})
	t.Run("no-console", func(t *testing.T) {
		// No console device at all (console= names one that does not
		// exist): the kernel hands PID 1 no fds 0-2. The image has /dev/null
		// (spotroot install puts it there: Go's runtime needs it before
		// main), but no /dev/console. testinit writes to ttyS0 itself and
		// copies spotroot's kernel-log records there.
		w := newWorld(t, harness.WorldOpts{})
		r := bootOpts(t, w, harness.BootOpts{KernelArgs: []string{"console=hvc0"}})
		if !strings.Contains(r.Console, "KMSG spotroot: ") {
			t.Errorf("no spotroot records copied from the kernel log\n%s", r.Console)
		}
		// The state under test: the kernel started PID 1 without fds.
		if !strings.Contains(r.Console, "KMSG Warning: unable to open an initial console.") {
			t.Errorf("the kernel did not report starting init without a console\n%s", r.Console)
		}
		for _, l := range strings.Split(r.Console, "\n") {
			if strings.HasPrefix(l, "KMSG ") && (strings.Contains(l, "console") || strings.Contains(l, "exec")) {
				t.Log(strings.TrimSpace(l))
			}
		}
		if r.Kind != "persistent" || r.Counter != 1 {
			t.Errorf("kind %s counter %d, want persistent 1\n%s", r.Kind, r.Counter, r.Console)
		}
		checkHandoff(t, r, handoffOpts{NoConsole: true})
	})
}

// TestChaosBoot: a handful of seeded boots, each with one fault at a random
// point of a random phase; every one must end in an init, with exactly one
// FAILED line naming the phase. SPOTROOT_CHAOS_SEED picks the first seed.
func TestChaosBoot(t *testing.T) {
	const seeds = 4
	base := uint64(time.Now().UnixNano())
	if s := os.Getenv("SPOTROOT_CHAOS_SEED"); s != "" {
		base, _ = strconv.ParseUint(s, 10, 64)
	}
	phases := []string{"mounts", "modules", "network", "imds", "config", "claim", "device", "filesystem", "mount", "init", "network-down"}
	kinds := []string{"error", "panic", "goroutine-panic", "sim-fault"}
	for i := range seeds {
		seed := base + uint64(i)
		rng := rand.New(rand.NewPCG(seed, 0xc4a05))
		phase, kind := phases[rng.IntN(len(phases))], kinds[rng.IntN(len(kinds))]
		point := []string{"start", "end"}[rng.IntN(2)]
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			ami, _ := faultEnv(t)
			w := newWorld(t, harness.WorldOpts{})
			o := harness.BootOpts{AMI: ami, Timeout: 3 * time.Minute}
			if kind == "sim-fault" {
				phase = "claim"
				action := []string{"DescribeVolumes", "AttachVolume"}[rng.IntN(2)]
				w.Sim.SetFault(action, sim.Fault{Code: "UnauthorizedOperation", Status: 403, Times: -1})
				t.Logf("seed %d: %s UnauthorizedOperation", seed, action)
			} else {
				o.KernelArgs = []string{"spotroot_test.fault=" + phase + ":" + point + ":" + kind}
				t.Logf("seed %d: %s at %s of %s", seed, kind, point, phase)
			}
			r := bootOpts(t, w, o)
			expectFallback(t, r, phase)
		})
	}
	t.Logf("chaos in QEMU: %d seeds from %d", seeds, base)
}
