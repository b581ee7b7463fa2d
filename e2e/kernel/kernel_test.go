package kernel

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/internal/testenv"
)

func TestEnsure(t *testing.T) {
	ci := os.Getenv("CI") != ""
	if _, err := exec.LookPath("apt-get"); err != nil {
		testenv.Skip(t, "apt-get not installed")
	}
	// CI always checks the cache it relies on; elsewhere it may download.
	if os.Getenv("SPOTROOT_KERNEL_TEST") == "" && !ci {
		t.Skip("set SPOTROOT_KERNEL_TEST=1 to download/verify the kernel cache")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	k, err := Ensure(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v in %v", k, time.Since(start))
	start = time.Now()
	k2, err := Ensure(ctx, "")
	if err != nil || k2 != k {
		t.Fatalf("second Ensure: %+v %v", k2, err)
	}
	t.Logf("cached in %v", time.Since(start))
}

// TestEnsureArm64 fetches Debian's arm64 cloud kernel (a foreign-architecture
// package, pkg:arm64) like the amd64 one: the kernel of the arm64 tier.
func TestEnsureArm64(t *testing.T) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		testenv.Skip(t, "apt-get not installed")
	}
	if os.Getenv("SPOTROOT_KERNEL_TEST") == "" && os.Getenv("CI") == "" {
		t.Skip("set SPOTROOT_KERNEL_TEST=1 to download/verify the kernel cache")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := EnsureArch(ctx, "", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(k.Version, "-cloud-arm64") {
		t.Fatalf("arm64 kernel version %q", k.Version)
	}
	b, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	// The arm64 boot protocol's Image header: magic "ARM\x64" at 0x38
	// (Documentation/arch/arm64/booting.rst). Debian ships it uncompressed.
	if len(b) < 0x40 || string(b[0x38:0x3c]) != "ARM\x64" {
		t.Fatalf("%s is not an arm64 Image", k.Vmlinuz)
	}
	t.Logf("%+v", k)
}
