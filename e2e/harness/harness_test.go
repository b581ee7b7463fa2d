package harness_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/testenv"
)

// TestBootWithoutSpotroot runs the harness with testinit standing in for
// spotroot as the image's /sbin/init: it checks the plumbing (images, sim
// world, QEMU with guestfwd, instance lifecycle) independently of spotroot.
func TestBootWithoutSpotroot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "requires root")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		testenv.Skip(t, "qemu not installed (e2e/setup.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "stand-in")
	if err := images.GoBuild(ctx, bin, "./e2e/cmd/testinit"); err != nil {
		t.Fatal(err)
	}
	env, err := harness.Prepare(ctx, filepath.Join(dir, "env"),
		harness.PrepareOpts{SpotrootBin: filepath.Join(bin, "testinit")})
	if err != nil {
		t.Fatal(err)
	}
	w, err := harness.NewWorld(ctx, env, filepath.Join(dir, "world"), harness.WorldOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for n := 1; n <= 2; n++ {
		r, err := w.Boot(ctx, harness.BootOpts{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("boot %d: %s in %v", n, r.TestinitLine, r.Elapsed.Round(time.Millisecond))
		// Each instance gets a fresh copy of the AMI: the counter restarts.
		if r.Kind != "image" || r.Counter != 1 || r.PID != 1 || r.ShutdownReason != "guest-shutdown" {
			t.Errorf("boot %d: %+v", n, r)
		}
		if i, ok := w.Sim.Instance(r.InstanceID); !ok || i.State != sim.InstanceTerminated {
			t.Errorf("instance %s state %q, want terminated", r.InstanceID, i.State)
		}
	}
	// The world persisted: a reload sees the volume and both instances.
	sw, err := sim.Load(filepath.Join(w.Dir, "world.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sw.Volume(w.VolumeID); !ok {
		t.Errorf("volume %s not in the saved world", w.VolumeID)
	}
	sw.View(func(sw *sim.World) {
		if len(sw.Instances) != 2 {
			t.Errorf("%d instances in the saved world, want 2", len(sw.Instances))
		}
	})
}
