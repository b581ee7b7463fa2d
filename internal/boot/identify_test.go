package boot

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/spotroot/spotroot/internal/testenv"
)

// isSpotroot tells a spotroot binary from every other init without reading
// them whole: the spotroot build (stripped, as shipped), another Go binary,
// a C binary, a script that only mentions the marker and one that is
// spotroot in disguise (no ELF sections to read: the marker decides).
func TestIsSpotroot(t *testing.T) {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		testenv.Skip(t, "needs the go command to build spotroot")
	}
	dir := t.TempDir()
	sr := filepath.Join(dir, "spotroot")
	cmd := exec.Command(gocmd, "build", "-trimpath", "-ldflags=-s -w", "-o", sr, "github.com/spotroot/spotroot/cmd/spotroot")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if _, here, _, _ := runtime.Caller(0); filepath.IsAbs(here) {
		cmd.Dir = filepath.Dir(here) // another test of the package may have changed the directory
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build spotroot: %v\n%s", err, out)
	}
	otherGo, _ := os.Executable() // this test binary: Go, another main package
	cInit, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n# "+Marker+"\nexec /sbin/init.real\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\nexec /sbin/init.real\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// spotroot with its section headers gone (e_shoff = 0): undecidable
	// from the sections, so the marker search finds it.
	b, err := os.ReadFile(sr)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0x28; i < 0x30; i++ {
		b[i] = 0
	}
	noSections := filepath.Join(dir, "no-sections")
	if err := os.WriteFile(noSections, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want bool
	}{{sr, true}, {noSections, true}, {script, true}, {otherGo, false}, {cInit, false}, {plain, false}, {filepath.Join(dir, "missing"), false}} {
		if got := isSpotroot(c.path); got != c.want {
			t.Errorf("isSpotroot(%s) = %v, want %v", filepath.Base(c.path), got, c.want)
		}
	}
	if decided, ours := goBuildInfo(mustOpen(t, sr)); !decided || !ours {
		t.Errorf("spotroot: build info decided=%v ours=%v: the fast path is not taken", decided, ours)
	}
	if decided, _ := goBuildInfo(mustOpen(t, cInit)); !decided && runtime.GOOS == "linux" {
		t.Errorf("%s: a C binary's sections were not read", cInit)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
