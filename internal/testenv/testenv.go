// Package testenv holds what tests share about their environment.
package testenv

import (
	"os"
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
