package sysroot

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/testenv"
)

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "lib/systemd"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "lib/systemd/systemd"), []byte("#!x"), 0o755))
	must(t, os.Symlink("/lib/systemd/systemd", filepath.Join(root, "usr/sbin/init"))) // absolute: inside root
	must(t, os.Symlink("usr/sbin", filepath.Join(root, "sbin")))                      // relative dir link
	must(t, os.Symlink("/loop", filepath.Join(root, "loop")))
	got, err := ResolveIn(root, "/sbin/init")
	if err != nil || got != "/lib/systemd/systemd" {
		t.Fatalf("ResolveIn = %q, %v", got, err)
	}
	if _, err := ResolveIn(root, "/loop"); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Fatalf("loop err = %v", err)
	}
	if _, err := ResolveIn(root, "/sbin/missing"); err == nil {
		t.Fatal("missing init resolved")
	}
}

func TestCheck(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"dev", "proc", "sys", "run", "sbin"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	self, err := os.Executable()
	must(t, err)
	b, err := os.ReadFile(self)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(root, "sbin/init"), b, 0o755))
	must(t, os.WriteFile(filepath.Join(root, "sbin/text"), []byte("hello"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "sbin/noexec"), b, 0o644))
	// An ELF executable for another machine: self's header with e_machine
	// swapped (amd64 <-> arm64), and a relocatable object (e_type 1).
	other := slices.Clone(b)
	other[18], other[19] = 62, 0 // EM_X86_64
	if runtime.GOARCH == "amd64" {
		other[18] = 183 // EM_AARCH64
	}
	must(t, os.WriteFile(filepath.Join(root, "sbin/foreign"), other, 0o755))
	obj := slices.Clone(b)
	obj[16], obj[17] = 1, 0 // ET_REL
	must(t, os.WriteFile(filepath.Join(root, "sbin/object"), obj, 0o755))
	must(t, os.WriteFile(filepath.Join(root, "sbin/script"), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	if got, err := Check(root, "/sbin/script"); err != nil || got != "/sbin/script" {
		t.Errorf("Check(script) = %q, %v", got, err)
	}
	if got, err := Check(root, "/sbin/init"); err != nil || got != "/sbin/init" {
		t.Fatalf("Check = %q, %v", got, err)
	}
	for init, want := range map[string]string{
		"/sbin/text":    "neither an ELF binary nor a script",
		"/sbin/noexec":  "not an executable file",
		"/sbin/none":    "no such file",
		"/sbin/foreign": "is built for ",
		"/sbin/object":  "not an executable (e_type 1)",
	} {
		if _, err := Check(root, init); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%s) err = %v, want %q", init, err, want)
		}
	}
	must(t, os.Remove(filepath.Join(root, "run")))
	if _, err := Check(root, "/sbin/init"); err == nil || !strings.Contains(err.Error(), "no /run directory") {
		t.Errorf("missing /run: err = %v", err)
	}
}

// TestSwitchIntegration mounts a loop-backed ext4 volume in a private mount
// and PID namespace, switches into it and execs its init, which reports what
// it sees. The host's mounts are never touched.
func TestSwitchIntegration(t *testing.T) {
	if os.Getenv("SPOTROOT_SWITCH_HELPER") == "1" {
		switchHelper()
		return
	}
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "mkfs.ext4", "losetup", "unshare")
	dir := t.TempDir()
	stage := filepath.Join(dir, "stage")
	for _, d := range []string{"dev", "proc", "sys", "run", "sbin"} {
		must(t, os.MkdirAll(filepath.Join(stage, d), 0o755))
	}
	build := exec.Command("go", "build", "-o", filepath.Join(stage, "sbin/init"), "./testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	img := filepath.Join(dir, "vol.img")
	testenv.Run(t, "truncate", "-s", "32M", img)
	testenv.Run(t, "mkfs.ext4", "-q", "-F", "-d", stage, img)
	loop := testenv.LoopDevice(t, img)

	self, err := os.Executable()
	must(t, err)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--pid", "--fork",
		self, "-test.run=^TestSwitchIntegration$")
	cmd.Env = append(os.Environ(), "SPOTROOT_SWITCH_HELPER=1", "LOOP="+loop, "OLD_ROOT_PROBE="+self)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	line := ""
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "PROBE ") {
			line = l
		}
	}
	want := "PROBE argv=/sbin/init,-test.run=^TestSwitchIntegration$ root=" + loop + " proc=true dev=true run=before-switch oldroot-visible=false"
	if line != want {
		t.Fatalf("after the switch:\n got  %q\n want %q\nfull output:\n%s", line, want, out)
	}
}

// switchHelper runs inside the private namespaces: it stands in for PID 1.
func switchHelper() {
	fail := func(err error) {
		os.Stdout.WriteString("HELPER ERROR " + err.Error() + "\n")
		os.Exit(3)
	}
	if err := exec.Command("mount", "-t", "tmpfs", "tmpfs", "/run").Run(); err != nil {
		fail(err)
	}
	if err := os.WriteFile("/run/marker", []byte("before-switch"), 0o644); err != nil {
		fail(err)
	}
	newRoot := "/run/spotroot/root"
	if err := Mount(os.Getenv("LOOP"), newRoot, "ext4", false, ""); err != nil {
		fail(err)
	}
	init, err := Check(newRoot, "/sbin/init")
	if err != nil {
		fail(err)
	}
	if err := Switch(newRoot); err != nil {
		fail(err)
	}
	fail(Exec(init, os.Args, os.Environ()))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFreeTree empties a directory on one filesystem and keeps a mount
// below it untouched; it runs in a private mount namespace so the host's
// mounts are never changed.
func TestFreeTree(t *testing.T) {
	if os.Getenv("SPOTROOT_FREETREE_HELPER") == "1" {
		freeTreeHelper()
		return
	}
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		testenv.Skip(t, "requires unshare")
	}
	dir := t.TempDir()
	for _, f := range []string{"init", "lib/modules/x/a.ko", "etc/spotroot/config.yaml", "deep/er/still/file"} {
		must(t, os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, f), []byte("12345"), 0o644))
	}
	must(t, os.Symlink("/etc", filepath.Join(dir, "link-out"))) // must not be followed
	must(t, os.MkdirAll(filepath.Join(dir, "run/spotroot/root"), 0o755))
	self, err := os.Executable()
	must(t, err)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", self, "-test.run=^TestFreeTree$")
	cmd.Env = append(os.Environ(), "SPOTROOT_FREETREE_HELPER=1", "DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	want := "FREED entries=13 bytes=20 kept=run/spotroot/root/kept"
	if !strings.Contains(string(out), want) {
		t.Fatalf("helper output lacks %q:\n%s", want, out)
	}
	if _, err := os.Stat("/etc"); err != nil {
		t.Fatal("the symlink was followed")
	}
}

// freeTreeHelper mounts a tmpfs at run/ (standing in for /run with the new
// root below it), frees the tree and reports what is left.
func freeTreeHelper() {
	dir := os.Getenv("DIR")
	fail := func(err error) {
		os.Stdout.WriteString("HELPER ERROR " + err.Error() + "\n")
		os.Exit(3)
	}
	run := filepath.Join(dir, "run")
	if err := exec.Command("mount", "-t", "tmpfs", "tmpfs", run).Run(); err != nil {
		fail(err)
	}
	if err := os.MkdirAll(filepath.Join(run, "spotroot/root"), 0o755); err != nil {
		fail(err)
	}
	if err := os.WriteFile(filepath.Join(run, "spotroot/root/kept"), []byte("x"), 0o644); err != nil {
		fail(err)
	}
	n, b, err := FreeTree(dir)
	if err != nil {
		fail(err)
	}
	var left []string
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			r, _ := filepath.Rel(dir, p)
			left = append(left, r)
		}
		return nil
	})
	os.Stdout.WriteString("FREED entries=" + itoa(n) + " bytes=" + itoa(int(b)) + " kept=" + strings.Join(left, ",") + "\n")
}

func itoa(n int) string { return strconv.Itoa(n) }
