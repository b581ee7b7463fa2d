package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spotroot/spotroot/e2e/images"
)

// addSizeGoal builds the PID 1 binary with the compiled-in CA roots too
// (-tags fallbackroots) and records it beside its goal, ≤ 10 MiB CA roots
// and all (issue 16): a ✔/✘ line, and an error at the end of the run when
// it is exceeded.
func addSizeGoal(ctx context.Context, rep *Report, root, work string) error {
	bin := filepath.Join(work, "bin", "spotroot-fallbackroots")
	cmd := exec.CommandContext(ctx, "go", append(images.PID1BuildArgs("fallbackroots"), "-o", bin, "./cmd/spotroot")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -tags fallbackroots ./cmd/spotroot: %v\n%s", err, b)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}
	rep.Add("binary and memory", "spotroot", "PID 1 binary size with CA roots (+fallbackroots)", "B", float64(fi.Size()))
	mark := "✔"
	if fi.Size() > images.PID1Budget {
		mark = "✘"
		sizeGoalFailed = true
	}
	rep.Note("%s PID 1 binary ≤ 10 MiB (%d B), CA roots and all: %d B (%.2f MiB); make size-report shows where the bytes go",
		mark, images.PID1Budget, fi.Size(), float64(fi.Size())/(1<<20))
	return nil
}

// sizeGoalFailed makes make bench exit non-zero after printing everything.
var sizeGoalFailed bool
