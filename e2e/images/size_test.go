package images

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPID1BinarySize holds the PID 1 build to its budget, CA roots and all
// (issue 16: ≤ 10 MiB). make size-report shows where the bytes go.
func TestPID1BinarySize(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "spotroot")
	cmd := exec.Command("go", append(PID1BuildArgs("fallbackroots"), "-o", bin, "./cmd/spotroot")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, b)
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PID 1 binary with CA roots: %d B (%.2f MiB), budget %d B", st.Size(), float64(st.Size())/(1<<20), PID1Budget)
	if st.Size() > PID1Budget {
		t.Errorf("PID 1 binary with CA roots is %d B, over its %d B (10 MiB) budget by %d B: make size-report shows where the bytes go",
			st.Size(), PID1Budget, st.Size()-PID1Budget)
	}
}
