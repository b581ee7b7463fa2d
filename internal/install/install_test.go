package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/config"
)

// image makes a root with /sbin → usr/sbin (merged /usr), /sbin/init → the
// systemd binary, and a GRUB default file.
func image(t *testing.T) (root, bin string) {
	t.Helper()
	root = t.TempDir()
	for _, d := range []string{"usr/sbin", "usr/lib/systemd", "etc/default"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.Symlink("usr/sbin", filepath.Join(root, "sbin"))
	os.WriteFile(filepath.Join(root, "usr/lib/systemd/systemd"), []byte("\x7fELF systemd"), 0o755)
	os.Symlink("/usr/lib/systemd/systemd", filepath.Join(root, "usr/sbin/init"))
	os.WriteFile(filepath.Join(root, "etc/default/grub"), []byte("GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=ttyS0 quiet\"\n"), 0o644)
	bin = filepath.Join(t.TempDir(), "spotroot")
	os.WriteFile(bin, []byte("\x7fELF spotroot"), 0o755)
	return root, bin
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSbinInit(t *testing.T) {
	root, bin := image(t)
	o := Opts{Root: root, Method: "sbin-init", Source: bin}
	for range 2 { // idempotent
		if err := Install(o); err != nil {
			t.Fatal(err)
		}
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); tgt != Binary {
		t.Fatalf("/sbin/init → %q, want %s", tgt, Binary)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init.real")); tgt != "/usr/lib/systemd/systemd" {
		t.Fatalf("/sbin/init.real → %q", tgt)
	}
	if read(t, filepath.Join(root, "usr/sbin/spotroot")) != "\x7fELF spotroot" {
		t.Fatal("binary not installed")
	}
	cfgText := read(t, filepath.Join(root, "etc/spotroot/config.yaml"))
	if strings.Count(cfgText, "image_init") != 1 {
		t.Fatalf("config after two installs:\n%s", cfgText)
	}
	// The boot path's own parser reads what install wrote.
	cfg, err := config.Load([]byte(cfgText), []byte("#cloud-config\nspotroot:\n  volume: {tag: {Name: x}}\n"), "")
	if err != nil || cfg.ImageInit != RealInit {
		t.Fatalf("config.Load: %+v %v\n%s", cfg, err, cfgText)
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); tgt != "/usr/lib/systemd/systemd" {
		t.Fatalf("after uninstall /sbin/init → %q", tgt)
	}
	for _, p := range []string{"usr/sbin/init.real", "usr/sbin/spotroot", "etc/spotroot/config.yaml"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("%s still there after uninstall", p)
		}
	}
}

func TestSbinInitKeepsOtherConfig(t *testing.T) {
	root, bin := image(t)
	os.MkdirAll(filepath.Join(root, "etc/spotroot"), 0o755)
	orig := "spotroot:\n  log_level: debug\n"
	os.WriteFile(filepath.Join(root, "etc/spotroot/config.yaml"), []byte(orig), 0o644)
	o := Opts{Root: root, Method: "sbin-init", Source: bin}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	if s := read(t, filepath.Join(root, "etc/spotroot/config.yaml")); !strings.Contains(s, "log_level: debug") || !strings.Contains(s, "image_init: /sbin/init.real") {
		t.Fatalf("config:\n%s", s)
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if s := read(t, filepath.Join(root, "etc/spotroot/config.yaml")); s != orig {
		t.Fatalf("config after uninstall %q, want %q", s, orig)
	}
}

func TestInitArg(t *testing.T) {
	root, bin := image(t)
	o := Opts{Root: root, Method: "init-arg", Source: bin}
	for range 2 {
		if err := Install(o); err != nil {
			t.Fatal(err)
		}
	}
	g := read(t, filepath.Join(root, "etc/default/grub"))
	if !strings.Contains(g, `GRUB_CMDLINE_LINUX="console=ttyS0 quiet init=/usr/sbin/spotroot"`) || strings.Count(g, "init=") != 1 {
		t.Fatalf("grub:\n%s", g)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); tgt != "/usr/lib/systemd/systemd" {
		t.Fatal("init-arg touched /sbin/init")
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if g := read(t, filepath.Join(root, "etc/default/grub")); !strings.Contains(g, `GRUB_CMDLINE_LINUX="console=ttyS0 quiet"`) {
		t.Fatalf("grub after uninstall:\n%s", g)
	}
}

func TestRefusals(t *testing.T) {
	root, bin := image(t)
	os.Remove(filepath.Join(root, "usr/lib/systemd/systemd")) // dangling /sbin/init
	for _, m := range []string{"sbin-init", "init-arg"} {
		err := Install(Opts{Root: root, Method: m, Source: bin})
		if err == nil || !strings.Contains(err.Error(), "cannot identify the image's init") {
			t.Fatalf("%s into a root with a dangling init: %v", m, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/sbin/init.real")); !os.IsNotExist(err) {
		t.Fatal("refused install still moved the init")
	}
	root2, _ := image(t)
	os.WriteFile(filepath.Join(root2, "etc/default/grub"), []byte("GRUB_CMDLINE_LINUX=\"init=/bin/bash\"\n"), 0o644)
	if err := Install(Opts{Root: root2, Method: "init-arg", Source: bin}); err == nil || !strings.Contains(err.Error(), "init=/bin/bash") {
		t.Fatalf("existing init= not refused: %v", err)
	}
	if err := Install(Opts{Root: root2, Method: "magic", Source: bin}); err == nil {
		t.Fatal("unknown method accepted")
	}
}
