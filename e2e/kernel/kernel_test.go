package kernel

import (
	"context"
	"os"
	"os/exec"
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
