package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/initramfs"
)

// The initramfs world: an AMI whose /sbin/init is its own (testinit
// kind=image, no spotroot on it) and spotroot's initramfs for the kernel.
var (
	irOnce          sync.Once
	irAMI, irInitrd string
	irErr           error
)

func initramfsEnv(t *testing.T) (ami, initrd string) {
	t.Helper()
	e := sharedEnv(t)
	irOnce.Do(func() {
		dir := filepath.Join(e.Dir, "initramfs-mode")
		if irErr = os.MkdirAll(dir, 0o755); irErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		irAMI = filepath.Join(dir, "ami-own-init.img")
		if irErr = images.BuildAMI(ctx, images.AMIOpts{Out: irAMI, TestinitBin: e.TestinitBin, Kernel: e.Kernel, Files: e.CAFiles()}); irErr != nil {
			return
		}
		var res *initramfs.Result
		res, irErr = initramfs.Build(ctx, initramfs.Options{Spotroot: e.SpotrootBin, ModulesDir: e.Kernel.ModulesDir,
			// The target root's bundle (the AMI's): EC2 is verified
			// against it before that root is mounted.
			CABundle: e.CABundle})
		if irErr != nil {
			return
		}
		irInitrd = filepath.Join(dir, "initramfs.img")
		irErr = os.WriteFile(irInitrd, res.Data, 0o644)
		t.Logf("initramfs: %d bytes (cpio %d), %d modules", len(res.Data), res.Uncompressed, len(res.Modules))
	})
	if irErr != nil {
		t.Fatal(irErr)
	}
	return irAMI, irInitrd
}

func bootInitramfs(t *testing.T, w *harness.World) *harness.BootResult {
	t.Helper()
	ami, initrd := initramfsEnv(t)
	return bootInitrd(t, w, ami, initrd)
}

func bootInitrd(t *testing.T, w *harness.World, ami, initrd string) *harness.BootResult {
	t.Helper()
	r, err := w.Boot(context.Background(), harness.BootOpts{AMI: ami, Initrd: initrd})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %v: %s", r.InstanceID, r.Elapsed.Round(time.Millisecond), r.TestinitLine)
	for _, l := range r.Timeline {
		t.Log("  " + l)
	}
	return r
}

// testInitramfsRoot: spotroot runs as the initramfs's /init, claims the
// volume and switches from rootfs into it (MS_MOVE + chroot); the volume's
// init runs as PID 1 with the hot-plugged disk as root.
func testInitramfsRoot(t *testing.T) {
	w := newWorld(t, harness.WorldOpts{})
	r := bootInitramfs(t, w)
	checkPersistent(t, r, 1)
	if !hasLine(r.Timeline, regexp.MustCompile(`CA roots bundle=/etc/ssl/certs/ca-certificates.crt certificates=[1-9]`)) {
		t.Errorf("spotroot did not load the initramfs's CA bundle\n%s", r.Console)
	}
	if !hasLine(r.Timeline, regexp.MustCompile(`^spotroot: start pid=1 `)) {
		t.Errorf("spotroot did not start as PID 1 from the initramfs\n%s", r.Console)
	}
	if !hasLine(r.Timeline, regexp.MustCompile(`^spotroot: switch ok in `)) {
		t.Errorf("no switch phase\n%s", r.Console)
	}
}

// testInitramfsFallback: no volume is found; spotroot mounts root= (the AMI
// disk, /dev/nvme0n1) itself, switches to it and execs its /sbin/init.
func testInitramfsFallback(t *testing.T) {
	w := newWorld(t, harness.WorldOpts{NoVolume: true})
	r := bootInitramfs(t, w)
	fail := func(f string, a ...any) {
		t.Helper()
		t.Errorf(f+"\n--- console ---\n%s---", append(a, r.Console)...)
	}
	if r.Kind != "image" {
		fail("kind = %q, want image (the AMI's own init)", r.Kind)
	}
	if r.PID != 1 {
		fail("testinit pid = %d, want 1", r.PID)
	}
	if r.Root != "/dev/nvme0n1" {
		fail("root = %q, want /dev/nvme0n1 (root= on the command line)", r.Root)
	}
	if r.Counter != 1 {
		fail("counter = %d, want 1", r.Counter)
	}
	if r.Net != "none" {
		fail("net = %q, want none (spotroot tears its network down before exec)", r.Net)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`^spotroot: FAILED claim: .*` + regexp.QuoteMeta(harness.VolumeName)),
		regexp.MustCompile(`^spotroot: image-root ok in `),
		regexp.MustCompile(`^spotroot: switch ok in `),
		regexp.MustCompile(`^spotroot: exec image init /sbin/init `),
	} {
		if !hasLine(r.Timeline, re) {
			fail("no console line matching %q", re)
		}
	}
	if strings.Contains(r.Console, "FAILED image root") {
		fail("the image root could not be reached")
	}
	if r.ShutdownReason != "guest-shutdown" {
		fail("shutdown reason %q, want guest-shutdown", r.ShutdownReason)
	}
}

// testInitramfsNoCARoots: an initramfs built without CA roots cannot
// verify EC2: one FAILED line naming what is missing, nothing sent to EC2,
// and the image's root boots.
func testInitramfsNoCARoots(t *testing.T) {
	e := sharedEnv(t)
	ami, _ := initramfsEnv(t)
	res, err := initramfs.Build(context.Background(), initramfs.Options{Spotroot: e.SpotrootBin,
		ModulesDir: e.Kernel.ModulesDir, CABundle: initramfs.NoCABundle})
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initramfs-no-ca.img")
	if err := os.WriteFile(initrd, res.Data, 0o644); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, harness.WorldOpts{})
	r := bootInitrd(t, w, ami, initrd)
	if r.Kind != "image" || r.Root != "/dev/nvme0n1" {
		t.Errorf("kind=%s root=%s, want the image's init from root= (/dev/nvme0n1)\n%s", r.Kind, r.Root, r.Console)
	}
	failed := regexp.MustCompile(`^spotroot: FAILED claim: no CA roots to verify EC2's TLS certificate: none of /etc/ssl/certs/ca-certificates.crt`)
	n := 0
	for _, l := range r.Timeline {
		if strings.Contains(l, "FAILED") {
			n++
		}
	}
	if !hasLine(r.Timeline, failed) || n != 1 {
		t.Errorf("want exactly one FAILED line, matching %q (got %d)\n%s", failed, n, r.Console)
	}
	// Nothing reached EC2 (the failed-boot tag may try a handshake, which
	// cannot verify either).
	if r.EC2HTTPS != 0 {
		t.Errorf("%d EC2 requests got through without CA roots", r.EC2HTTPS)
	}
	if v, _ := w.Sim.Volume(w.VolumeID); v.State != sim.VolumeAvailable {
		t.Errorf("volume %s is %s, want untouched", w.VolumeID, v.State)
	}
}

func hasLine(lines []string, re *regexp.Regexp) bool {
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
