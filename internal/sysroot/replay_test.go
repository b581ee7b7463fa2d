package sysroot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/testenv"
)

// TestReplayLogMakesADirtyXFSCheckable: an XFS filesystem shut down with
// its log dirty (what a Spot termination leaves) is refused by
// xfs_repair -n; after ReplayLog it checks clean and keeps the data written
// before the cut. Mounting it with its UUID already in use (the image root)
// must work too: the replay mounts with nouuid.
func TestReplayLogMakesADirtyXFSCheckable(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "mkfs.xfs", "xfs_repair", "xfs_io", "losetup")
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	testenv.Run(t, "truncate", "-s", "320M", img)
	testenv.Run(t, "mkfs.xfs", "-q", "-f", img)
	loop := testenv.LoopDevice(t, img)
	mnt := filepath.Join(dir, "mnt")
	must(t, Mount(loop, mnt, "xfs", true, ""))
	must(t, os.WriteFile(filepath.Join(mnt, "state"), []byte("written before the cut"), 0o644))
	unix.Sync()
	// The cut: the log is left dirty as by a power loss.
	testenv.Run(t, "xfs_io", "-x", "-c", "shutdown -f", mnt)
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
	tloop := testenv.LoopDevice(t, twin)
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

// TestReplayLogBtrfs: a btrfs image cut after an fsync (the data lives
// only in the log tree, log_root set) has its log replayed by ReplayLog:
// log_root is cleared and the fsync'd file is there.
func TestReplayLogBtrfs(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "mkfs.btrfs", "btrfs", "losetup")
	dir := t.TempDir()
	img := filepath.Join(dir, "btrfs.img")
	testenv.Run(t, "truncate", "-s", "300M", img)
	testenv.Run(t, "mkfs.btrfs", "-q", "-f", img)
	loop := testenv.LoopDevice(t, img)
	mnt := filepath.Join(dir, "mnt")
	// A long commit interval: the fsync below goes to the log tree only.
	must(t, Mount(loop, mnt, "btrfs", true, "commit=300"))
	unix.Sync()
	f, err := os.Create(filepath.Join(mnt, "state"))
	must(t, err)
	_, err = f.WriteString("written before the cut")
	must(t, err)
	must(t, f.Sync())
	f.Close()
	// The cut: the disk as it is now, taken while still mounted.
	cut := filepath.Join(dir, "cut.img")
	b, err := os.ReadFile(img)
	must(t, err)
	must(t, os.WriteFile(cut, b, 0o644))
	must(t, unix.Unmount(mnt, 0))
	logRoot := func(dev string) string {
		for _, l := range strings.Split(testenv.Run(t, "btrfs", "inspect-internal", "dump-super", dev), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "log_root" {
				return f[1]
			}
		}
		return "?"
	}
	if logRoot(cut) == "0" {
		t.Fatal("the cut image has no log tree: the test would prove nothing")
	}
	cloop := testenv.LoopDevice(t, cut)
	must(t, ReplayLog(cloop, "btrfs", dir))
	if lr := logRoot(cloop); lr != "0" {
		t.Fatalf("log_root after the replay = %s, want 0", lr)
	}
	if out, err := exec.Command("btrfs", "check", "--readonly", cloop).CombinedOutput(); err != nil {
		t.Fatalf("btrfs check after the replay: %v\n%s", err, out)
	}
	must(t, Mount(cloop, mnt, "btrfs", false, ""))
	defer unix.Unmount(mnt, 0)
	if got, err := os.ReadFile(filepath.Join(mnt, "state")); err != nil || string(got) != "written before the cut" {
		t.Fatalf("data after the replay: %q, %v", got, err)
	}
}
