// Package testenv holds what tests share about their environment.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Skip skips the test, or fails it when CI is set: make test installs every
// tool and fetches the kernel the tests need, so in CI a missing one is a
// broken set-up, not a reason to test nothing.
func Skip(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so this is a failure)", why)
	}
	t.Skip(why)
}

// RequireRoot skips a test that needs root (loop devices, mounts, mount
// namespaces), or fails it when CI is set: CI runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "requires root (loop devices, mounts, mount namespaces)")
	}
}

// RequireTools skips the test (fails it under CI, whose set-up installs
// them) unless every tool is on PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Skip(t, "requires "+tool+" (make test installs it): not on PATH")
		}
	}
}

// Run runs a command and returns its combined output; an error fails the
// test with the command and its output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// LoopDevice attaches the image file to a free loop device, detached when
// the test ends.
func LoopDevice(t testing.TB, img string) string {
	t.Helper()
	loop := strings.TrimSpace(Run(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	return loop
}
