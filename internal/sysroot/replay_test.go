package sysroot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReplayLogMakesADirtyXFSCheckable: an XFS filesystem shut down with
// its log dirty (what a Spot termination leaves) is refused by
// xfs_repair -n; after ReplayLog it checks clean and keeps the data written
// before the cut. Mounting it with its UUID already in use (the image root)
// must work too: the replay mounts with nouuid.
func TestReplayLogMakesADirtyXFSCheckable(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"mkfs.xfs", "xfs_repair", "xfs_io", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	run(t, "truncate", "-s", "320M", img)
	run(t, "mkfs.xfs", "-q", "-f", img)
	loop := strings.TrimSpace(run(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	mnt := filepath.Join(dir, "mnt")
	must(t, Mount(loop, mnt, "xfs", true, ""))
	must(t, os.WriteFile(filepath.Join(mnt, "state"), []byte("written before the cut"), 0o644))
	unix.Sync()
	// The cut: the log is left dirty as by a power loss.
	run(t, "xfs_io", "-x", "-c", "shutdown -f", mnt)
	must(t, unix.Unmount(mnt, 0))
	if err := exec.Command("xfs_repair", "-n", loop).Run(); err == nil {
		t.Fatal("xfs_repair -n accepted a dirty log: the test does not make one")
	}
	// A second filesystem with the same UUID mounted elsewhere (the image
	// root made from the same snapshot).
	twin := filepath.Join(dir, "twin.img")
	b, err := os.ReadFile(img)
	must(t, err)
	must(t, os.WriteFile(twin, b, 0o644))
	tloop := strings.TrimSpace(run(t, "losetup", "--find", "--show", twin))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", tloop).Run() })
	tmnt := filepath.Join(dir, "twin")
	must(t, Mount(tloop, tmnt, "xfs", false, "nouuid"))
	t.Cleanup(func() { _ = unix.Unmount(tmnt, 0) })

	must(t, ReplayLog(loop, "xfs", dir))
	if out, err := exec.Command("xfs_repair", "-n", loop).CombinedOutput(); err != nil {
		t.Fatalf("xfs_repair -n after the replay: %v\n%s", err, out)
	}
	must(t, Mount(loop, mnt, "xfs", false, "nouuid"))
	defer unix.Unmount(mnt, 0)
	if got, err := os.ReadFile(filepath.Join(mnt, "state")); err != nil || string(got) != "written before the cut" {
		t.Fatalf("data after the replay: %q, %v", got, err)
	}
}
