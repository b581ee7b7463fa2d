package main

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// A binary of another architecture as /init would make the kernel panic
// on exec: refused before anything is written.
func TestCheckArch(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkArch(exe, runtime.GOARCH); err != nil {
		t.Fatalf("own architecture refused: %v", err)
	}
	other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH]
	err = checkArch(exe, other)
	if err == nil || !strings.Contains(err.Error(), "GOARCH="+other) {
		t.Fatalf("checkArch(%s) = %v, want a refusal naming GOARCH=%s", other, err, other)
	}
	if err := checkArch(exe, "mips"); err == nil {
		t.Fatal("unsupported architecture accepted")
	}
}
