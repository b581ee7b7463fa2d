// Tests of the Debian package (packaging/deb/build.sh, as `make deb` runs
// it) and of the deployment examples.
package packaging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/testenv"
)

// conffiles are the package's conffiles (packaging/deb/build.sh).
var conffiles = map[string]bool{"/etc/default/spotroot-watch": true}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func spotrootBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "spotroot-deb-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "spotroot")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", binPath, "../cmd/spotroot")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = errors.New("build spotroot: " + err.Error() + "\n" + string(out))
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

const version = "0.1.0~test1"

// buildDeb runs packaging/deb/build.sh; unit "" = no watcher unit.
func buildDeb(t *testing.T, unit string) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		testenv.Skip(t, "dpkg-deb not installed (part of dpkg: apt-get install dpkg)")
	}
	out := t.TempDir()
	cmd := exec.Command("./deb/build.sh", spotrootBin(t), "amd64", version, out)
	if unit == "" {
		unit = filepath.Join(out, "no-such.service")
	}
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000", "SPOTROOT_UNIT="+unit)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	deb := filepath.Join(out, "spotroot_"+version+"_amd64.deb")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("no %s: %s", deb, b)
	}
	return deb
}

func TestDebContentsAndMetadata(t *testing.T) {
	deb := buildDeb(t, "")
	st, _ := os.Stat(deb)
	t.Logf("%s: %d bytes", filepath.Base(deb), st.Size())
	listing := testenv.Run(t, "dpkg-deb", "-c", deb)
	entries := map[string]string{} // path -> "mode owner"
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			continue
		}
		p := strings.TrimPrefix(f[5], ".")
		if p == "" {
			p = "/"
		}
		entries[p] = f[0] + " " + f[1]
	}
	for p, want := range map[string]string{
		"/":                           "drwxr-xr-x root/root",
		"/usr/sbin/spotroot":          "-rwxr-xr-x root/root",
		"/usr/bin/spotroot-initramfs": "-rwxr-xr-x root/root",
		"/etc/default/spotroot-watch": "-rw-r--r-- root/root",
		"/etc/spotroot/hooks.d/":      "drwxr-xr-x root/root",
		"/usr/share/bash-completion/completions/spotroot":                         "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/examples/config.yaml":                            "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/examples/hooks/50-webhook":                       "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/examples/cloud-init-bake.yaml":                   "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/examples/packer/provision.sh":                    "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/copyright":                                       "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/changelog.gz":                                    "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/README.md":                                       "-rw-r--r-- root/root",
		"/usr/share/man/man8/spotroot.8.gz":                                       "-rw-r--r-- root/root",
		"/usr/share/lintian/overrides/spotroot":                                   "-rw-r--r-- root/root",
		"/usr/share/doc/spotroot/README.initramfs.md":                             "-rw-r--r-- root/root",
		"/usr/share/spotroot/initramfs/dracut/99spotroot/module-setup.sh":         "-rwxr-xr-x root/root",
		"/usr/share/spotroot/initramfs/initramfs-tools/hooks/spotroot":            "-rwxr-xr-x root/root",
		"/usr/share/spotroot/initramfs/initramfs-tools/scripts/init-top/spotroot": "-rwxr-xr-x root/root",
	} {
		if got := entries[p]; got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	for p := range entries {
		if strings.HasPrefix(p, "/sbin/") || p == "/sbin/init" || strings.HasPrefix(p, "/lib/") || p == "/etc/spotroot/config.yaml" {
			t.Errorf("unexpected %s (no unit given, and the package must not ship an init)", p)
		}
	}
	fields := testenv.Run(t, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Section", "Maintainer", "Installed-Size")
	for _, want := range []string{"Package: spotroot", "Version: " + version, "Architecture: amd64", "Section: admin"} {
		if !strings.Contains(fields, want) {
			t.Errorf("control lacks %q:\n%s", want, fields)
		}
	}
	ctl := t.TempDir()
	testenv.Run(t, "dpkg-deb", "-e", deb, ctl)
	conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	// /etc/spotroot/config.yaml is no conffile: cloud-init's write_files
	// before the package install must not stop dpkg at a prompt.
	if strings.TrimSpace(string(conffiles)) != "/etc/default/spotroot-watch" {
		t.Errorf("conffiles = %q", conffiles)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		b, err := os.ReadFile(filepath.Join(ctl, s))
		if s != "postinst" && errors.Is(err, os.ErrNotExist) {
			continue // only with the watcher's unit
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "echo") || !strings.Contains(l, "init") {
				continue
			}
			for _, verb := range []string{"mv ", "ln ", "rm ", "cp ", "dpkg-divert", "install "} {
				if strings.Contains(l, verb) {
					t.Errorf("%s touches an init: %q", s, l)
				}
			}
		}
		if strings.Contains(string(b), "#SYSTEMD#") || strings.Contains(string(b), "deb-systemd-helper") {
			t.Errorf("%s: systemd snippet without a unit:\n%s", s, b)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctl, s)).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v %s", s, err, out)
		}
	}
	// The example configuration changes nothing at boot: it is all comments.
	x := t.TempDir()
	testenv.Run(t, "dpkg-deb", "-x", deb, x)
	conf, _ := os.ReadFile(filepath.Join(x, "usr/share/doc/spotroot/examples/config.yaml"))
	if _, err := config.Load(conf, nil, ""); !errors.Is(err, config.ErrNotConfigured) {
		t.Errorf("the shipped config.yaml configures something (err %v)", err)
	}
	bin, _ := os.ReadFile(spotrootBin(t))
	if got, _ := os.ReadFile(filepath.Join(x, "usr/sbin/spotroot")); !bytes.Equal(got, bin) {
		t.Error("/usr/sbin/spotroot is not the binary given")
	}
}

func TestDebWithWatcherUnit(t *testing.T) {
	unit := filepath.Join(t.TempDir(), "spotroot-watch.service")
	if err := os.WriteFile(unit, []byte("[Unit]\nDescription=spotroot watcher\nDocumentation=man:spotroot(8)\n\n[Service]\nExecStart=/usr/sbin/spotroot watch\n\n[Install]\nWantedBy=multi-user.target\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deb := buildDeb(t, unit)
	if l := testenv.Run(t, "dpkg-deb", "-c", deb); !strings.Contains(l, "./usr/lib/systemd/system/spotroot-watch.service") {
		t.Errorf("unit missing:\n%s", l)
	}
	ctl := t.TempDir()
	testenv.Run(t, "dpkg-deb", "-e", deb, ctl)
	post, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
	if !strings.Contains(string(post), "deb-systemd-helper enable 'spotroot-watch.service'") || strings.Contains(string(post), "deb-systemd-invoke start") {
		t.Errorf("postinst should enable the unit (not start it on the build instance):\n%s", post)
	}
	lintian(t, deb)
}

func TestDebReproducible(t *testing.T) {
	a, b := buildDeb(t, ""), buildDeb(t, "")
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if !bytes.Equal(x, y) {
		t.Fatalf("two builds differ (%d and %d bytes)", len(x), len(y))
	}
	lintian(t, a)
}

func lintian(t *testing.T, deb string) {
	t.Helper()
	if testing.Short() {
		return // lintian takes ~30 s a package
	}
	if _, err := exec.LookPath("lintian"); err != nil {
		testenv.Skip(t, "lintian not installed (e2e/setup.sh installs it)")
	}
	// --pedantic, failing on every tag: what remains is justified in
	// packaging/deb/lintian-overrides.
	out, err := exec.Command("lintian", "--pedantic", "--fail-on", "error,warning,info,pedantic", "--tag-display-limit", "0", deb).CombinedOutput()
	if err != nil {
		t.Errorf("lintian: %v\n%s", err, out)
	} else if len(bytes.TrimSpace(out)) > 0 {
		t.Logf("lintian (info/pedantic only):\n%s", out)
	}
}

func TestExamples(t *testing.T) {
	for _, f := range []string{"examples/cloud-init-bake.yaml", "examples/asg/pool-user-data.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("#cloud-config\n")) {
			t.Errorf("%s: not a #cloud-config", f)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	// The pool user-data is what spotroot reads at boot: it must load.
	ud, _ := os.ReadFile("examples/asg/pool-user-data.yaml")
	cfg, err := config.Load(nil, ud, "")
	if err != nil {
		t.Fatalf("pool user-data: %v", err)
	}
	// A pool, not a tag: several volumes share it and each instance takes one.
	if root, ok := cfg.Root(); !ok || root.Pool["spotroot:pool"] != "web" {
		t.Errorf("pool user-data must claim from the pool spotroot:pool=web, got %+v", root)
	}
	bake, _ := os.ReadFile("examples/cloud-init-bake.yaml")
	if !strings.Contains(string(bake), "[spotroot, install]") {
		t.Error("the bake example does not run `spotroot install`")
	}
	// Every file write_files puts down must not be a conffile of the
	// package: dpkg would stop at its prompt with no terminal.
	var ci struct {
		WriteFiles []struct{ Path string } `yaml:"write_files"`
	}
	yaml.Unmarshal(bake, &ci)
	for _, wf := range ci.WriteFiles {
		if conffiles[wf.Path] {
			t.Errorf("the bake example writes %s, a conffile of the package, before installing it", wf.Path)
		}
	}
	var lt map[string]any
	b, _ := os.ReadFile("examples/asg/launch-template.json")
	if err := json.Unmarshal(b, &lt); err != nil {
		t.Errorf("launch-template.json: %v", err)
	}
	hcl, _ := os.ReadFile("examples/packer/spotroot.pkr.hcl")
	for _, want := range []string{`source "amazon-ebs" "spotroot"`, `script          = "${path.root}/provision.sh"`, `http_tokens                 = "required"`} {
		if !strings.Contains(string(hcl), want) {
			t.Errorf("packer template lacks %q", want)
		}
	}
	if strings.Count(string(hcl), "{") != strings.Count(string(hcl), "}") {
		t.Error("packer template: unbalanced braces")
	}
}
