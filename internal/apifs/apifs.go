// Package apifs mounts the kernel's API filesystems (/proc, /sys, /dev, /run)
// that PID 1 needs before it can do anything else.
package apifs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Mount describes one API filesystem.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// Standard is what spotroot mounts, in order. /dev uses devtmpfs so the kernel
// creates nodes for hot-plugged disks by itself (no udev here).
var Standard = []Mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// MountAll mounts each filesystem under root ("/" in production). A target
// that is already a mount point is kept: the kernel may have mounted devtmpfs
// itself (CONFIG_DEVTMPFS_MOUNT), which shows as EBUSY.
func MountAll(root string, ms []Mount) error {
	for _, m := range ms {
		target := filepath.Join(root, m.Target)
		if err := os.MkdirAll(target, 0o755); err != nil && !errors.Is(err, unix.EROFS) && !os.IsExist(err) {
			return fmt.Errorf("create %s: %w", target, err)
		}
		if mounted, _ := IsMountPoint(target); mounted {
			continue
		}
		err := unix.Mount(m.Source, target, m.FSType, m.Flags, m.Data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.FSType, target, err)
		}
	}
	return nil
}

// IsMountPoint reports whether path is a mount point, by comparing its device
// with its parent's (works before /proc is mounted; bind mounts of the same
// filesystem are not detected, which is fine for API filesystems).
func IsMountPoint(path string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Join(path, ".."), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino, nil
}
