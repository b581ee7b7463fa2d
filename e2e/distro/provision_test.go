//go:build e2e_distro

package distro_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/distro"
	"github.com/spotroot/spotroot/e2e/images"
)

// buildDeb builds the .deb as `make deb` does, around bin.
func buildDeb(t *testing.T, bin string) string {
	t.Helper()
	root, err := images.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "packaging/deb/build.sh"), bin, "amd64", "0.1.0~e2e", out)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	return filepath.Join(out, "spotroot_0.1.0~e2e_amd64.deb")
}

// inChroot runs script with sh inside root (proc and dev mounted, in a
// private mount namespace).
func inChroot(t *testing.T, root, script string, env ...string) (string, error) {
	t.Helper()
	wrap := `set -e
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@" sh -c "$SCRIPT"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", wrap, "sh"}, env...)...)
	cmd.Env = append(os.Environ(), "R="+root, "SCRIPT="+script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPackerProvision runs the Packer template's provisioning script
// (packaging/examples/packer/provision.sh, the file the template calls)
// in a chroot of the Debian root the distro scenarios boot: the real
// apt-get, dpkg, dpkg-divert and spotroot. No QEMU.
func TestPackerProvision(t *testing.T) {
	if os.Geteuid() != 0 {
		skip(t, "requires root (chroot, mounts)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rootfs, err := distro.EnsureRootfs(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(root, 0o755)
	if out, err := exec.Command("tar", "-xf", rootfs.Tar, "-C", root, "--numeric-owner").CombinedOutput(); err != nil {
		t.Fatalf("extract the root: %v\n%s", err, out)
	}
	bin := filepath.Join(t.TempDir(), "spotroot")
	mod, _ := images.ModuleRoot()
	build := exec.Command("go", append(images.PID1BuildArgs(""), "-o", bin, "./cmd/spotroot")...)
	build.Dir, build.Env = mod, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build spotroot: %v\n%s", err, out)
	}
	deb := buildDeb(t, bin)
	for src, dst := range map[string]string{deb: "tmp/spotroot.deb", filepath.Join(mod, "packaging/examples/packer/provision.sh"): "tmp/provision.sh"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, dst), b, 0o644)
	}
	start := time.Now()
	out, err := inChroot(t, root, "sh /tmp/provision.sh", "DEB=/tmp/spotroot.deb", "VOLUME_TAG=home-root")
	t.Logf("provision.sh in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("provision.sh: %v", err)
	}
	// Look at the effects on the root, not at the script's output.
	status, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	if !strings.Contains(string(status), "Package: spotroot\nStatus: install ok installed") {
		t.Error("the package is not configured in the root's dpkg database")
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); tgt != "/usr/sbin/spotroot" {
		t.Errorf("/sbin/init → %q, want /usr/sbin/spotroot", tgt)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init.real")); !strings.HasSuffix(tgt, "lib/systemd/systemd") {
		t.Errorf("/sbin/init.real → %q, want systemd", tgt)
	}
	div, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/diversions"))
	if !strings.Contains(string(div), "/sbin/init\n/sbin/init.real\n:\n") {
		t.Errorf("no local diversion of /sbin/init:\n%s", div)
	}
	cfg, _ := os.ReadFile(filepath.Join(root, "etc/spotroot/config.yaml"))
	if !strings.Contains(string(cfg), "tag: {Name: home-root}") || !strings.Contains(string(cfg), "image_init: /sbin/init.real") {
		t.Errorf("config.yaml:\n%s", cfg)
	}
	// apt remove while the image boots through spotroot: refused by prerm.
	out, err = inChroot(t, root, "dpkg -r spotroot")
	if err == nil || !strings.Contains(out, "spotroot install --uninstall") {
		t.Errorf("dpkg -r with /sbin/init → spotroot: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/spotroot")); err != nil {
		t.Fatal("the refused removal deleted the binary")
	}
	// Undo, then the removal goes through and systemd is /sbin/init again.
	if out, err := inChroot(t, root, "spotroot install --uninstall && dpkg -r spotroot"); err != nil {
		t.Fatalf("uninstall and remove: %v\n%s", err, out)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); !strings.HasSuffix(tgt, "lib/systemd/systemd") {
		t.Errorf("after uninstall /sbin/init → %q, want systemd", tgt)
	}
}
