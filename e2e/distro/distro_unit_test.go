package distro

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostSources(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Placeholder hosts (RFC 2606); the real ones come from the host at run time.
	write("sources.list", "# comment\ndeb [signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"+
		"deb-src http://mirror.example/debian bookworm main\n"+
		"deb http://mirror.example/debian bookworm-backports main\n")
	write("sources.list.d/debian.sources", `Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no
`)
	write("sources.list.d/other.sources", "Types: deb\nURIs: https://vendor.example/apt\nSuites: nodistro\nComponents: main\n")
	write("sources.list.d/other.list", "deb https://vendor.example/apt cloud-sdk-bookworm main\n")
	got, err := hostSources(dir, "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	want := `Types: deb
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
Signed-By: /k.gpg

Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if _, err := hostSources(t.TempDir(), "bookworm"); err == nil || !strings.Contains(err.Error(), "no apt source") {
		t.Errorf("empty apt dir: err = %v", err)
	}
}

func TestParseReport(t *testing.T) {
	console := "[  5.1] random kernel line\n" +
		"DISTRO state=degraded\r\n" +
		"DISTRO failed=foo.service\n" +
		"DISTRO   | foo failed: bar=baz\n" +
		"[  6.0] kernel: x DISTRO findmnt=/dev/nvme1n1p1 ext4 rw,relatime\n" +
		"DISTRO failed=bar.service\n" +
		"DISTRO ci| 2026 - util.py[WARNING]: x=y\n" +
		"DISTRO done\n"
	r := ParseReport(console)
	if r.Values["state"] != "degraded" || r.Values["findmnt"] != "/dev/nvme1n1p1 ext4 rw,relatime" {
		t.Errorf("values = %v", r.Values)
	}
	if strings.Join(r.Failed, ",") != "foo.service,bar.service" {
		t.Errorf("failed = %v", r.Failed)
	}
	if len(r.Lines) != 7 || !ReportDone.MatchString(r.Lines[6]) {
		t.Errorf("lines = %q", r.Lines)
	}
	if _, ok := r.Values["DISTRO   | foo failed: bar"]; ok {
		t.Errorf("journal line parsed as a value")
	}
}

func TestKeyChangesWithPackages(t *testing.T) {
	k := Key()
	old := Packages
	defer func() { Packages = old }()
	Packages = append(append([]string{}, old...), "less")
	if Key() == k {
		t.Error("adding a package does not change the cache key")
	}
	Packages = old
	if Key() != k {
		t.Error("the key is not stable")
	}
}
