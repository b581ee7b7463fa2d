//go:build e2e_arm64

package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/qemu"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/initramfs"
)

// The arm64 (Graviton) tier, `make e2e-arm64`: Debian's arm64 cloud kernel
// in qemu-system-aarch64 (TCG, virt machine, Neoverse-N1 like Graviton2,
// PCIe root ports for the NVMe hot-plug), the arm64 PID 1 build as the
// AMI's /sbin/init and as an initramfs's /init. TCG emulates another
// instruction set here, so the tier runs the scenarios that prove the
// architecture (boot, replacement, initramfs, one fault) rather than the
// whole matrix, which is the same Go code as on amd64.

var (
	a64Once sync.Once
	a64Env  *harness.Env
	a64Err  error
)

func arm64Env(t *testing.T) *harness.Env {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "requires root (mknod, image ownership)")
	}
	for _, tool := range []string{qemu.Binary(qemu.ARM64), "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, "qemu not installed ("+tool+"; apt-get install qemu-system-arm)")
		}
	}
	a64Once.Do(func() {
		dir, err := os.MkdirTemp("", "spotroot-e2e-arm64-")
		if err != nil {
			a64Err = err
			return
		}
		extraEnvDirs = append(extraEnvDirs, dir)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		start := time.Now()
		a64Env, a64Err = harness.Prepare(ctx, dir, harness.PrepareOpts{Arch: qemu.ARM64})
		if a64Err == nil {
			t.Logf("prepared arm64 binaries, kernel %s and images in %v", a64Env.Kernel.Version, time.Since(start).Round(time.Millisecond))
		}
	})
	if a64Err != nil {
		t.Fatal(a64Err)
	}
	return a64Env
}

func arm64World(t *testing.T, o harness.WorldOpts) *harness.World {
	t.Helper()
	w, err := harness.NewWorld(context.Background(), arm64Env(t), t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// arm64Boot boots one instance; the timeout allows for TCG's slower
// emulation of another architecture.
func arm64Boot(t *testing.T, w *harness.World, o harness.BootOpts) *harness.BootResult {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 4 * time.Minute
	}
	if o.InstanceType == "" {
		o.InstanceType = "m7g.medium" // Graviton3; the sim treats it like any type
	}
	r, err := w.Boot(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %v: %s", r.InstanceID, r.Elapsed.Round(time.Millisecond), r.TestinitLine)
	for _, l := range r.Timeline {
		t.Log("  " + l)
	}
	checkArm64(t, r)
	return r
}

// checkArm64 proves the guest was arm64: the final init (an arm64 build;
// an amd64 one would not even exec) saw an aarch64 kernel.
func checkArm64(t *testing.T, r *harness.BootResult) {
	t.Helper()
	if r.Machine != "aarch64" {
		t.Errorf("TESTINIT machine=%q, want aarch64\n%s", r.Machine, r.Console)
	}
}

func TestArm64(t *testing.T) {
	t.Run("first-boot", func(t *testing.T) {
		w := arm64World(t, harness.WorldOpts{})
		r := arm64Boot(t, w, harness.BootOpts{})
		checkPersistent(t, r, 1)
	})

	t.Run("replacement", func(t *testing.T) {
		w := arm64World(t, harness.WorldOpts{})
		first := arm64Boot(t, w, harness.BootOpts{})
		checkPersistent(t, first, 1)
		if i, ok := w.Sim.Instance(first.InstanceID); !ok || i.State != sim.InstanceTerminated {
			t.Fatalf("first instance %s: state %q, want terminated", first.InstanceID, i.State)
		}
		second := arm64Boot(t, w, harness.BootOpts{})
		if second.InstanceID == first.InstanceID {
			t.Fatalf("replacement reused instance id %s", first.InstanceID)
		}
		checkPersistent(t, second, 2)
	})

	t.Run("initramfs-root", func(t *testing.T) {
		e := arm64Env(t)
		dir := t.TempDir()
		ctx := context.Background()
		ami := filepath.Join(dir, "ami-own-init.img")
		if err := images.BuildAMI(ctx, images.AMIOpts{Out: ami, TestinitBin: e.TestinitBin, Kernel: e.Kernel,
			HostTools: e.HostTools(), Files: e.CAFiles()}); err != nil {
			t.Fatal(err)
		}
		res, err := initramfs.Build(ctx, initramfs.Options{Spotroot: e.SpotrootBin, ModulesDir: e.Kernel.ModulesDir,
			CABundle: e.CABundle})
		if err != nil {
			t.Fatal(err)
		}
		initrd := filepath.Join(dir, "initramfs.img")
		if err := os.WriteFile(initrd, res.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("arm64 initramfs: %d bytes, modules %v", len(res.Data), res.Modules)
		w := arm64World(t, harness.WorldOpts{})
		r := arm64Boot(t, w, harness.BootOpts{AMI: ami, Initrd: initrd})
		checkPersistent(t, r, 1)
		if !hasLine(r.Timeline, regexp.MustCompile(`^spotroot: switch ok in `)) {
			t.Errorf("no switch phase\n%s", r.Console)
		}
	})

	// A NIC that is not on PCI (like a Xen instance's vif on the xen bus):
	// virtio-net on the virt machine's virtio-mmio transport, a platform
	// device from the device tree. spotroot finds its drivers through the
	// platform and virtio buses' modaliases.
	t.Run("nic-off-pci", func(t *testing.T) {
		w := arm64World(t, harness.WorldOpts{})
		r := arm64Boot(t, w, harness.BootOpts{NIC: "virtio-net-device"})
		checkPersistent(t, r, 1)
	})

	// The fault: the volume is still attached to the previous instance,
	// which EC2 is still terminating; spotroot waits for the detach.
	t.Run("attached-to-terminated", func(t *testing.T) {
		w := arm64World(t, harness.WorldOpts{})
		prev := otherInstance(t, w, "shutting-down", w.VolumeID)
		terminateLater(t, w, prev)
		r := arm64Boot(t, w, harness.BootOpts{UserData: userData(tagRoot + "  timeouts: {detach: 90s}\n")})
		expect(t, r, "persistent", execPersistent, `volume still attached to a dead instance; waiting for the detach .*instance=`+prev+` state=shutting-down`)
	})
}
