package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/testenv"
)

// untouched fails the test unless root is as image() made it.
func untouched(t *testing.T, root string) {
	t.Helper()
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); tgt != "/usr/lib/systemd/systemd" {
		t.Errorf("/sbin/init → %q, want the image's own init", tgt)
	}
	for _, p := range []string{"usr/sbin/init.real", "usr/sbin/spotroot"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists after a refused install", p)
		}
	}
}

// The package's fully commented example config (it mentions "spotroot:"
// in a comment) used to make install fail after /sbin/init had already
// been moved: the image was left half-switched.
func TestInstallWithShippedExampleConfig(t *testing.T) {
	root, bin := image(t)
	example, err := os.ReadFile("../../packaging/config.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "etc/spotroot"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/spotroot/config.yaml"), example, 0o644)
	o := Opts{Root: root, Method: "sbin-init", Source: bin}
	if err := Install(o); err != nil {
		t.Fatal(err)
	}
	got := read(t, filepath.Join(root, "etc/spotroot/config.yaml"))
	if !strings.HasPrefix(got, string(example)) {
		t.Fatalf("the operator's text was changed:\n%s", got)
	}
	cfg, err := config.Load([]byte(got), []byte("#cloud-config\nspotroot:\n  volume: {tag: {Name: x}}\n"), "")
	if err != nil || cfg.ImageInit != RealInit {
		t.Fatalf("config.Load: %+v %v\n%s", cfg, err, got)
	}
	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "etc/spotroot/config.yaml")); got != string(example) {
		t.Fatalf("after uninstall:\n%s", got)
	}
	untouched(t, root)
}

// Every check runs before the first change: a config spotroot cannot edit
// is refused with the image exactly as it was.
func TestInstallChecksBeforeChanging(t *testing.T) {
	for name, cfg := range map[string]string{
		"flow mapping":        "spotroot: {log_level: debug}\n",
		"other image_init":    "spotroot:\n  image_init: /lib/systemd/systemd\n",
		"broken yaml":         "spotroot:\n  volume: [\n",
		"not a mapping":       "- a\n- b\n",
		"unwritable location": "",
	} {
		t.Run(name, func(t *testing.T) {
			root, bin := image(t)
			o := Opts{Root: root, Method: "sbin-init", Source: bin}
			if name == "unwritable location" {
				o.Source = filepath.Join(root, "no-such-binary")
			} else {
				os.MkdirAll(filepath.Join(root, "etc/spotroot"), 0o755)
				os.WriteFile(filepath.Join(root, "etc/spotroot/config.yaml"), []byte(cfg), 0o644)
			}
			err := Install(o)
			if err == nil {
				t.Fatal("install accepted it")
			}
			t.Log(err)
			untouched(t, root)
			if cfg != "" && read(t, filepath.Join(root, "etc/spotroot/config.yaml")) != cfg {
				t.Error("config changed by a refused install")
			}
		})
	}
}

// The Packer example writes image_init: /sbin/init.real itself; install
// used to refuse that as a conflict although it is the very value.
func TestInstallSameImageInitIsNoConflict(t *testing.T) {
	root, bin := image(t)
	cfg := "spotroot:\n  volume:\n    tag: {Name: home-root}\n  image_init: /sbin/init.real\n"
	os.MkdirAll(filepath.Join(root, "etc/spotroot"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/spotroot/config.yaml"), []byte(cfg), 0o644)
	if err := Install(Opts{Root: root, Method: "sbin-init", Source: bin}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "etc/spotroot/config.yaml")); got != cfg {
		t.Fatalf("config rewritten:\n%s", got)
	}
}

// Uninstall finds the installed method itself: asking for the wrong one
// used to delete the binary and leave /sbin/init dangling.
func TestUninstallDetectsMethod(t *testing.T) {
	root, bin := image(t)
	if err := Install(Opts{Root: root, Method: "sbin-init", Source: bin}); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(Opts{Root: root, Method: "init-arg"}); err != nil {
		t.Fatal(err)
	}
	untouched(t, root)
	if _, err := identifyInit(root, SbinInit); err != nil {
		t.Fatalf("/sbin/init after uninstall: %v", err)
	}
	root2, bin2 := image(t)
	if err := Install(Opts{Root: root2, Method: "init-arg", Source: bin2}); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(Opts{Root: root2, Method: "sbin-init"}); err != nil {
		t.Fatal(err)
	}
	if g := read(t, filepath.Join(root2, "etc/default/grub")); strings.Contains(g, InitArg) {
		t.Fatalf("grub still boots spotroot after uninstall:\n%s", g)
	}
	untouched(t, root2)
}

// dpkgRoot is image() plus an empty dpkg database and /lib → usr/lib.
func dpkgRoot(t *testing.T) (root, bin string) {
	t.Helper()
	for _, tool := range []string{"dpkg", "dpkg-divert", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, tool+" not installed")
		}
	}
	root, bin = image(t)
	os.Symlink("usr/lib", filepath.Join(root, "lib"))
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		os.WriteFile(filepath.Join(root, f), nil, 0o644)
	}
	return root, bin
}

// fakeSysv builds a package that ships /sbin/init, as systemd-sysv does.
func fakeSysv(t *testing.T, version, target string) string {
	t.Helper()
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(d, "sbin"), 0o755)
	os.Symlink(target, filepath.Join(d, "sbin/init"))
	os.WriteFile(filepath.Join(d, "DEBIAN/control"), []byte("Package: fake-systemd-sysv\nVersion: "+version+
		"\nArchitecture: all\nMaintainer: test <test@example.invalid>\nDescription: ships /sbin/init\n"), 0o644)
	deb := filepath.Join(t.TempDir(), "fake.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-b", d, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v %s", err, out)
	}
	return deb
}

func dpkgInstall(t *testing.T, root, deb string) {
	t.Helper()
	if out, err := exec.Command("dpkg", "--root="+root, "--force-script-chrootless", "--log=/dev/null", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
}

// An upgrade of the package that owns /sbin/init used to put it back over
// spotroot's link; with the diversion dpkg installs it as /sbin/init.real.
func TestSbinInitSurvivesSysvUpgrade(t *testing.T) {
	root, bin := dpkgRoot(t)
	dpkgInstall(t, root, fakeSysv(t, "1", "../lib/systemd/systemd"))
	if err := Install(Opts{Root: root, Method: "sbin-init", Source: bin}); err != nil {
		t.Fatal(err)
	}
	if d := read(t, filepath.Join(root, "var/lib/dpkg/diversions")); !strings.Contains(d, "/sbin/init\n/sbin/init.real\n") {
		t.Fatalf("no diversion recorded:\n%s", d)
	}
	// The upgrade: a new /sbin/init pointing somewhere new.
	os.WriteFile(filepath.Join(root, "usr/lib/systemd/systemd-v2"), []byte("\x7fELF systemd 2"), 0o755)
	dpkgInstall(t, root, fakeSysv(t, "2", "../lib/systemd/systemd-v2"))
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); tgt != Binary {
		t.Fatalf("after the upgrade /sbin/init → %q, want %s", tgt, Binary)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init.real")); tgt != "../lib/systemd/systemd-v2" {
		t.Fatalf("after the upgrade /sbin/init.real → %q, want the upgraded init", tgt)
	}
	if err := Uninstall(Opts{Root: root}); err != nil {
		t.Fatal(err)
	}
	if tgt, _ := os.Readlink(filepath.Join(root, "usr/sbin/init")); tgt != "../lib/systemd/systemd-v2" {
		t.Fatalf("after uninstall /sbin/init → %q", tgt)
	}
	if d, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/diversions")); strings.Contains(string(d), "/sbin/init") {
		t.Fatalf("diversion left behind:\n%s", d)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/sbin/init.real")); !os.IsNotExist(err) {
		t.Fatal("/sbin/init.real left behind")
	}
}
