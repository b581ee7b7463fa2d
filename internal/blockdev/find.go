package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Sys locates sysfs and /dev; tests point them at fake trees.
type Sys struct {
	SysBlock string // "/sys/block"
	Dev      string // "/dev"

	open func(path string) error // tests: opening a device node (nil = open(2))
}

// DefaultSys is the running system.
var DefaultSys = Sys{SysBlock: "/sys/block", Dev: "/dev"}

// Target says how to recognise one attached EBS volume.
type Target struct {
	VolumeID string // vol-0123…
	Device   string // the API device name, /dev/sdf
	// Exclude are device names never to match (the instance-store
	// mappings IMDS lists: sdb, /dev/sdc); instance-store NVMe disks are
	// excluded whatever this says.
	Exclude []string
}

// Serial is what Nitro (and our QEMU) put in the NVMe controller serial:
// the volume id without its dash.
func (t Target) Serial() string { return strings.Replace(t.VolumeID, "-", "", 1) }

// xenNames are the names a Xen instance gives the API device /dev/sdX.
func (t Target) xenNames() []string {
	name := strings.TrimPrefix(t.Device, "/dev/")
	if name == "" {
		return nil
	}
	if rest, ok := strings.CutPrefix(name, "sd"); ok {
		return []string{name, "xvd" + rest}
	}
	if rest, ok := strings.CutPrefix(name, "xvd"); ok {
		return []string{name, "sd" + rest}
	}
	return []string{name}
}

// Match returns the /sys/block name of the disk for t, or "" when absent.
// NVMe and virtio disks match by serial; Xen disks by name.
func (s Sys) Match(t Target) (string, error) {
	entries, err := os.ReadDir(s.SysBlock)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", s.SysBlock, err)
	}
	want := t.Serial()
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		if s.excluded(t, name) {
			continue
		}
		switch {
		case strings.HasPrefix(name, "nvme"):
			if s.readTrim(name, "device", "serial") == want {
				return name, nil
			}
		case strings.HasPrefix(name, "vd"):
			if s.readTrim(name, "serial") == want {
				return name, nil
			}
		}
	}
	for _, xn := range t.xenNames() {
		for _, name := range names {
			if name == xn && !s.excluded(t, name) {
				return name, nil
			}
		}
	}
	// An NVMe disk without a serial: EBS also names the API device in
	// the controller's vendor-specific Identify data.
	for _, name := range names {
		if !strings.HasPrefix(name, "nvme") || s.readTrim(name, "device", "serial") != "" || s.excluded(t, name) {
			continue
		}
		vn, err := nvmeVendorName(filepath.Join(s.Dev, name))
		if err != nil || vn == "" {
			continue
		}
		for _, xn := range t.xenNames() {
			if vn == xn {
				return name, nil
			}
		}
	}
	return "", nil
}

func (s Sys) readTrim(parts ...string) string {
	b, err := os.ReadFile(filepath.Join(append([]string{s.SysBlock}, parts...)...))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// WaitDisk waits, event-driven, for t's disk to appear and open, and
// returns its /sys/block name. l must have been opened before the volume
// was attached.
func (s Sys) WaitDisk(ctx context.Context, l *Listener, t Target) (string, error) {
	found, err := s.waitOpen(ctx, l, func() (string, error) { return s.Match(t) })
	if err != nil {
		return "", fmt.Errorf("wait for the block device of %s (NVMe serial %s, or %s): %w", t.VolumeID, t.Serial(), strings.Join(t.xenNames(), "/"), err)
	}
	return found, nil
}

// waitOpen waits, event-driven, until find names a device ("" = none yet)
// whose node opens; a timeout says which device did not open, if one was
// found.
func (s Sys) waitOpen(ctx context.Context, l *Listener, find func() (string, error)) (string, error) {
	var found string
	var notYet error
	err := l.WaitFor(ctx, func() (bool, error) {
		var err error
		if found, err = find(); found == "" || err != nil {
			return false, err
		}
		notYet = s.notOpenYet(found)
		return notYet == nil, nil
	})
	if err != nil && notYet != nil {
		err = fmt.Errorf("%w: %w", notYet, err)
	}
	return found, err
}

// notOpenYet is non-nil while name's device node refuses to open with
// ENXIO. The kernel shows a disk or a partition in sysfs and devtmpfs
// (device_add) before it registers its block device (bdev_add): in
// between, opening the node fails with ENXIO (Linux block/genhd.c
// device_add_disk, block/partitions/core.c add_partition). The ADD uevent
// comes after both, so a waiter that sees ENXIO is woken again when the
// device opens. Other failures are left to the caller's own open, which
// names them.
func (s Sys) notOpenYet(name string) error {
	p, err := s.Node(name)
	if err != nil {
		return nil
	}
	open := s.open
	if open == nil {
		open = openNode
	}
	if err := open(p); errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("%s is in %s but %s does not open yet (%w)", name, s.SysBlock, p, err)
	}
	return nil
}

func openNode(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// Partitions lists the partition block devices of disk by number.
func (s Sys) Partitions(disk string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir(filepath.Join(s.SysBlock, disk))
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), disk) {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(s.readTrim(disk, e.Name(), "partition"), "%d", &n); err == nil {
			out[n] = e.Name()
		}
	}
	return out
}

// WaitPartition waits for partition number n of disk to appear and open.
func (s Sys) WaitPartition(ctx context.Context, l *Listener, disk string, n int) (string, error) {
	found, err := s.waitOpen(ctx, l, func() (string, error) { return s.Partitions(disk)[n], nil })
	if err != nil {
		return "", fmt.Errorf("wait for partition %d of %s: %w", n, disk, err)
	}
	return found, nil
}

// Node returns a usable device node path for a /sys/block name, creating it
// under dir when devtmpfs has not (or is not mounted).
func (s Sys) Node(name string) (string, error) {
	p := filepath.Join(s.Dev, name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	dev := s.readTrim(name, "dev")
	if dev == "" { // a partition: /sys/block/<disk>/<part>/dev
		matches, _ := filepath.Glob(filepath.Join(s.SysBlock, "*", name, "dev"))
		if len(matches) > 0 {
			b, _ := os.ReadFile(matches[0])
			dev = strings.TrimSpace(string(b))
		}
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(dev, "%d:%d", &major, &minor); err != nil {
		return "", fmt.Errorf("device node for %s: no %s and no major:minor in sysfs", name, p)
	}
	if err := mknodBlock(p, major, minor); err != nil {
		return "", fmt.Errorf("create device node %s (%d:%d): %w", p, major, minor, err)
	}
	return p, nil
}
