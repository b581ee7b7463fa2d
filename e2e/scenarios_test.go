package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/qemu"
	"github.com/spotroot/spotroot/e2e/sim"

	"github.com/spotroot/spotroot/internal/testenv"
)

var (
	envOnce sync.Once
	env     *harness.Env
	envErr  error
	envDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if envDir != "" {
		os.RemoveAll(envDir)
	}
	os.Exit(code)
}

// skip skips, or fails when CI is set (testenv.Skip).
var skip = testenv.Skip

// sharedEnv builds binaries, kernel and images once per test binary.
func sharedEnv(t *testing.T) *harness.Env {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "requires root (mknod, image ownership)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, "qemu not installed ("+tool+")")
		}
	}
	envOnce.Do(func() {
		envDir, envErr = os.MkdirTemp("", "spotroot-e2e-")
		if envErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		start := time.Now()
		env, envErr = harness.Prepare(ctx, envDir, harness.PrepareOpts{})
		if envErr == nil {
			t.Logf("prepared binaries, kernel %s and images in %v", env.Kernel.Version, time.Since(start).Round(time.Millisecond))
		}
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return env
}

func newWorld(t *testing.T, o harness.WorldOpts) *harness.World {
	t.Helper()
	e := sharedEnv(t)
	w, err := harness.NewWorld(context.Background(), e, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	// Every scenario runs under the hostile simulator (sim.DefaultHostile).
	t.Cleanup(func() {
		if t.Failed() {
			_, run, _ := strings.Cut(t.Name(), "/")
			t.Logf("hostile simulator seed %d: replay with make e2e SEED=%d RUN='%s'", w.Sim.HostileSeed(), w.Sim.HostileSeed(), run)
		}
	})
	return w
}

func boot(t *testing.T, w *harness.World) *harness.BootResult {
	t.Helper()
	r, err := w.Boot(context.Background(), harness.BootOpts{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %v: %s", r.InstanceID, r.Elapsed.Round(time.Millisecond), r.TestinitLine)
	for _, l := range r.Timeline {
		t.Log("  " + l)
	}
	return r
}

var hotplugRoot = regexp.MustCompile(`^/dev/nvme[1-9][0-9]*n1p1$`)

// checkPersistent checks a boot that should have ended on the volume.
func checkPersistent(t *testing.T, r *harness.BootResult, counter int) {
	t.Helper()
	fail := func(f string, a ...any) {
		t.Helper()
		t.Errorf(f+"\n--- console ---\n%s---", append(a, r.Console)...)
	}
	if r.Kind != "persistent" {
		fail("kind = %q, want persistent", r.Kind)
	}
	if r.PID != 1 {
		fail("testinit pid = %d, want 1", r.PID)
	}
	if !hotplugRoot.MatchString(r.Root) {
		fail("root = %q, want partition 1 of the hot-plugged NVMe disk (%s)", r.Root, hotplugRoot)
	}
	if r.Counter != counter {
		fail("counter = %d, want %d", r.Counter, counter)
	}
	if r.Net != "none" {
		fail("net = %q, want none (spotroot tears its network down before exec)", r.Net)
	}
	if len(r.Timeline) == 0 {
		fail("no spotroot: lines on the console")
	}
	if strings.Contains(r.Console, "FAILED") {
		fail("console has FAILED")
	}
	if r.ShutdownReason != "guest-shutdown" {
		fail("shutdown reason %q, want guest-shutdown", r.ShutdownReason)
	}
	// A lease like EC2's: a router and the DNS server it names.
	if !hasLine(r.Timeline, leaseRE) {
		fail("no line matching %q", leaseRE)
	}
	checkEC2ByName(t, r)
}

var leaseRE = regexp.MustCompile(`network up .*address=169\.254\.2\.15/16 router=` + regexp.QuoteMeta(qemu.DHCPRouter) + ` dns="?\[` + regexp.QuoteMeta(qemu.DefaultDNSAddr) + `\]`)

func TestScenarios(t *testing.T) {
	t.Run("first-boot", func(t *testing.T) {
		w := newWorld(t, harness.WorldOpts{})
		r := boot(t, w)
		checkPersistent(t, r, 1)
	})

	t.Run("replacement", func(t *testing.T) {
		w := newWorld(t, harness.WorldOpts{})
		first := boot(t, w)
		checkPersistent(t, first, 1)
		if i, ok := w.Sim.Instance(first.InstanceID); !ok || i.State != sim.InstanceTerminated {
			t.Fatalf("first instance %s: state %q, want terminated", first.InstanceID, i.State)
		}
		if v, _ := w.Sim.Volume(w.VolumeID); v.State != sim.VolumeAvailable {
			t.Fatalf("volume %s is %s after the first instance ended, want available", w.VolumeID, v.State)
		}
		second := boot(t, w)
		if second.InstanceID == first.InstanceID {
			t.Fatalf("replacement reused instance id %s", first.InstanceID)
		}
		checkPersistent(t, second, 2)
	})

	t.Run("interruption", func(t *testing.T) {
		testInterruption(t)
	})

	t.Run("no-volume", func(t *testing.T) {
		w := newWorld(t, harness.WorldOpts{NoVolume: true})
		r := boot(t, w)
		if r.Kind != "image" {
			t.Errorf("kind = %q, want image (fallback to the image's own init)\n%s", r.Kind, r.Console)
		}
		failed := regexp.MustCompile(`^spotroot: FAILED claim: .*` + regexp.QuoteMeta(harness.VolumeName))
		found := false
		for _, l := range r.Timeline {
			found = found || failed.MatchString(l)
		}
		if !found {
			t.Errorf("no line matching %q\n--- console ---\n%s---", failed, r.Console)
		}
		if r.ShutdownReason != "guest-shutdown" {
			t.Errorf("shutdown reason %q, want guest-shutdown", r.ShutdownReason)
		}
	})

	t.Run("initramfs-root", testInitramfsRoot)
	t.Run("initramfs-fallback", testInitramfsFallback)
	t.Run("initramfs-no-ca-roots", testInitramfsNoCARoots)
}

// testInterruption: the persistent root runs "spotroot watch"; the simulator
// posts a Spot terminate notice; the watcher runs a hook that records it and
// powers the guest off by itself; the volume's filesystem is clean; a
// replacement boot sees the hook's file.
func testInterruption(t *testing.T) {
	e := sharedEnv(t)
	const hookFile = "/var/lib/spotroot-test/hook-ran"
	w := newWorld(t, harness.WorldOpts{VolumeFiles: []images.File{
		{Path: "usr/sbin/spotroot", Src: e.SpotrootBin},
		{Path: "etc/spotroot-test/watch", Data: []byte("/usr/sbin/spotroot\n")},
		{Path: "etc/spotroot-test/report", Data: []byte(hookFile + "\n")},
		// testinit doubles as a hook when SPOTROOT_ACTION is set.
		{Path: "etc/spotroot/hooks.d/50-record", Link: "/sbin/init"},
	}})
	watching := regexp.MustCompile(`spotroot watch: watching http://169\.254\.169\.254`)
	r, err := w.Boot(context.Background(), harness.BootOpts{
		Timeout: 4 * time.Minute,
		WhileUp: func(ctx context.Context, vm *harness.Running) error {
			if _, err := vm.WaitFor(ctx, watching); err != nil {
				return err
			}
			w.Server.PostSpotAction(vm.InstanceID, "terminate", time.Now().Add(2*time.Minute))
			return nil
		},
		PowerOffTimeout: 90 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s; powered off %v after boot", r.InstanceID, r.TestinitLine, r.Elapsed.Round(time.Millisecond))
	fail := func(f string, a ...any) {
		t.Helper()
		t.Fatalf(f+"\n--- console ---\n%s---", append(a, r.Console)...)
	}
	if r.Kind != "persistent" || r.Counter != 1 {
		fail("first boot: kind %q counter %d, want persistent 1", r.Kind, r.Counter)
	}
	for _, want := range []string{
		"TESTINIT-REPORT " + hookFile + " missing",
		"spotroot watch: spot notice: action=terminate",
		"spotroot watch: hook 50-record: ok",
		"spotroot watch: powering off for the spot terminate",
	} {
		if !strings.Contains(r.Console, want) {
			fail("console lacks %q", want)
		}
	}
	if n := strings.Count(r.Console, "spot notice: action=terminate"); n != 1 {
		fail("the notice was logged %d times, want once", n)
	}
	if strings.Contains(r.Console, "TESTINIT error") {
		fail("testinit reported an error (the watcher should have powered off)")
	}
	if r.ShutdownReason != "guest-shutdown" {
		fail("shutdown reason %q, want guest-shutdown (the guest powers itself off)", r.ShutdownReason)
	}

	v, _ := w.Sim.Volume(w.VolumeID)
	fsckPartition(t, v.ImagePath)

	second, err := w.Boot(context.Background(), harness.BootOpts{KernelArgs: []string{"spotroot_test.watch=0"}})
	if err != nil {
		t.Fatal(err)
	}
	if second.InstanceID == r.InstanceID || second.Counter != 2 {
		t.Fatalf("replacement: %s counter %d, want a new instance and counter 2", second.InstanceID, second.Counter)
	}
	want := "TESTINIT-REPORT " + hookFile + " kind=spot action=terminate time="
	if !strings.Contains(second.Console, want) {
		t.Fatalf("replacement boot does not see the hook's file: no %q\n--- console ---\n%s---", want, second.Console)
	}
}

// fsckPartition runs e2fsck -fn on partition 1 (1 MiB in) of a volume image.
func fsckPartition(t *testing.T, img string) {
	t.Helper()
	part := filepath.Join(t.TempDir(), "part.img")
	out, err := exec.Command("dd", "if="+img, "of="+part, "bs=1M", "skip=1", "count=62", "conv=sparse", "status=none").CombinedOutput()
	if err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	out, err = exec.Command("e2fsck", "-fn", part).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn on the volume after the interruption: %v\n%s", err, out)
	}
	t.Logf("e2fsck -fn: clean\n%s", out)
}
