// Tests that a distribution's own initramfs builders carry spotroot with the
// integrations in this directory: initramfs-tools (mkinitramfs) with
// initramfs-tools/hooks/spotroot, and dracut with dracut/99spotroot.
//
// The builders run against the e2e cloud kernel's modules, never the host's
// boot files: mkinitramfs reads /lib/modules and /boot only, so it runs in a
// private mount namespace where an overlay on /usr/lib and a tmpfs on /boot
// provide them; dracut takes --kmoddir and a private copy of its modules
// directory. The tools come from Debian packages (initramfs-tools-core,
// dracut-core: e2e/setup.sh installs them); without them the tests skip.
package initramfs_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/kernel"
	"github.com/spotroot/spotroot/internal/initramfs"
	"github.com/spotroot/spotroot/internal/testenv"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds whole initramfs images (-short)")
	}
	if os.Geteuid() != 0 {
		testenv.Skip(t, "requires root (private mount namespace)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, tool+" not installed (e2e/setup.sh installs initramfs-tools-core and dracut-core)")
		}
	}
}

// prepare builds spotroot and finds the cloud kernel (cached by the e2e
// harness; downloaded with apt-get if absent).
func prepare(t *testing.T) (spotroot string, k kernel.Kernel) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := kernel.Ensure(ctx, "")
	if err != nil {
		testenv.Skip(t, "no cloud kernel: "+err.Error())
	}
	spotroot = filepath.Join(t.TempDir(), "spotroot")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", spotroot, "../cmd/spotroot")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build spotroot: %v\n%s", err, out)
	}
	return spotroot, k
}

// checkImage asserts spotroot is /init, the builder's init is kept as
// /init.real, the NIC and filesystem modules are in with their index, and
// the root's CA bundle is.
func checkImage(t *testing.T, img, spotroot string, stripped bool, k kernel.Kernel, extra ...string) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := initramfs.ReadInitramfs(b)
	if err != nil {
		t.Fatalf("read %s: %v", img, err)
	}
	files := map[string]initramfs.Record{}
	for _, r := range recs {
		files[strings.TrimPrefix(r.Name, "./")] = r
	}
	// dracut strips binaries (a no-op for the code of a Go binary built with
	// -s -w, a few hundred bytes of section data go): compare with its copy.
	bin, _ := os.ReadFile(spotroot)
	if stripped {
		bin = files["usr/sbin/spotroot"].Data
	}
	if r, ok := files["init"]; !ok || !bytes.Equal(r.Data, bin) || !bytes.HasPrefix(r.Data, []byte("\x7fELF")) {
		t.Errorf("/init is not spotroot (%d bytes, spotroot has %d)", len(r.Data), len(bin))
	}
	if r, ok := files["init.real"]; !ok || len(r.Data) == 0 && r.Link == "" {
		t.Errorf("the builder's own init is not kept as /init.real")
	}
	mods := "usr/lib/modules/" + k.Version + "/"
	if _, ok := files[mods+"modules.dep"]; !ok {
		mods = "lib/modules/" + k.Version + "/"
	}
	for _, f := range append([]string{"usr/sbin/spotroot", mods + "modules.dep", mods + "modules.alias",
		mods + "kernel/drivers/net/virtio_net.ko", mods + "kernel/fs/xfs/xfs.ko"}, extra...) {
		if _, ok := files[f]; !ok {
			t.Errorf("%s: no %s", filepath.Base(img), f)
		}
	}
	// The root's CA bundle (the host is the target root here), where
	// spotroot looks first.
	if want, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err != nil {
		testenv.Skip(t, "no CA bundle on the host (e2e/setup.sh installs ca-certificates): "+err.Error())
	} else if r := files["etc/ssl/certs/ca-certificates.crt"]; !bytes.Equal(r.Data, want) {
		t.Errorf("%s: etc/ssl/certs/ca-certificates.crt (%d bytes) is not the root's CA bundle (%d bytes)", filepath.Base(img), len(r.Data), len(want))
	}
	t.Logf("%s: %d bytes, %d entries", filepath.Base(img), len(b), len(recs))
}

func TestInitramfsToolsHook(t *testing.T) {
	need(t, "mkinitramfs", "unshare")
	spotroot, k := prepare(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	for _, d := range []string{"hooks", "scripts/init-top", "up", "work"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(conf, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cp(t, "initramfs-tools/hooks/spotroot", filepath.Join(conf, "hooks/spotroot"))
	cp(t, "initramfs-tools/scripts/init-top/spotroot", filepath.Join(conf, "scripts/init-top/spotroot"))
	write(t, filepath.Join(conf, "initramfs.conf"), "MODULES=list\nBUSYBOX=n\nCOMPRESS=gzip\n")
	write(t, filepath.Join(conf, "modules"), "")
	kroot := filepath.Dir(filepath.Dir(filepath.Dir(k.ModulesDir))) // …/root
	out := filepath.Join(dir, "initrd.img")
	script := `set -e
mount -t overlay overlay -o lowerdir=/usr/lib,upperdir="$D/up",workdir="$D/work" /usr/lib
mkdir -p "/usr/lib/modules/$KVER"
mount --bind "$KMOD" "/usr/lib/modules/$KVER"
mount -t tmpfs tmpfs /boot
cp "$KROOT/boot/config-$KVER" /boot/
mkinitramfs -d "$CONF" -o "$OUT" "$KVER"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "D="+dir, "KVER="+k.Version, "KMOD="+k.ModulesDir, "KROOT="+kroot,
		"CONF="+conf, "OUT="+out, "SPOTROOT_BIN="+spotroot)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkinitramfs: %v\n%s", err, b)
	}
	checkImage(t, out, spotroot, false, k, "scripts/init-top/spotroot")
}

func TestDracutModule(t *testing.T) {
	need(t, "dracut")
	spotroot, k := prepare(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "dracut")
	if b, err := exec.Command("cp", "-a", "/usr/lib/dracut", base).CombinedOutput(); err != nil {
		t.Fatalf("copy dracut: %v\n%s", err, b)
	}
	if b, err := exec.Command("cp", "-r", "dracut/99spotroot", filepath.Join(base, "modules.d/")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	for _, d := range []string{"conf.d", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(dir, "dracut.conf"), "")
	out := filepath.Join(dir, "initrd.img")
	cmd := exec.Command("dracut", "--quiet", "--force", "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode",
		"--reproducible", "--conf", filepath.Join(dir, "dracut.conf"), "--confdir", filepath.Join(dir, "conf.d"),
		"--tmpdir", filepath.Join(dir, "tmp"), "--kmoddir", k.ModulesDir, "--kver", k.Version,
		"-m", "base spotroot", "--compress", "gzip", out)
	cmd.Env = append(os.Environ(), "dracutbasedir="+base, "SPOTROOT_BIN="+spotroot)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dracut: %v\n%s", err, b)
	}
	checkImage(t, out, spotroot, true, k)
}

func cp(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
