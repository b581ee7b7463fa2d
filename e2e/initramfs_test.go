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

func hasLine(lines []string, re *regexp.Regexp) bool {
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
