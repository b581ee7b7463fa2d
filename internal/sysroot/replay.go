package sysroot

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ReplayLog mounts a journaling filesystem read-write and unmounts it again,
// so the kernel replays its log: the normal end of a Spot instance is an
// unclean shutdown, and XFS's checker refuses a dirty log ("xfs_repair -n"
// exits non-zero and asks for a mount) while a mount simply replays it;
// btrfs replays its log tree on mount too. XFS is mounted with nouuid: a
// volume made from the image's snapshot has the image root's UUID, and XFS
// refuses to mount a second filesystem with a UUID in use. ext4 needs none
// of this (e2fsck replays its journal). dir is a writable scratch directory.
func ReplayLog(dev, fstype, dir string) error {
	var opts string
	switch fstype {
	case "xfs":
		opts = "nouuid"
	case "btrfs":
	default:
		return nil
	}
	mnt, err := os.MkdirTemp(dir, "spotroot-replay-")
	if err != nil {
		return fmt.Errorf("replay the %s log of %s: %w", fstype, dev, err)
	}
	defer os.Remove(mnt)
	if err := Mount(dev, mnt, fstype, true, opts); err != nil {
		return fmt.Errorf("replay the %s log: %w", fstype, err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		return fmt.Errorf("replay the %s log of %s: unmount %s: %w", fstype, dev, mnt, err)
	}
	return nil
}
