package blockdev

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/partition"
)

// RootSpec is the kernel's root= argument: a device path (/dev/nvme0n1p1),
// MAJ:MIN, UUID=, LABEL=, PARTUUID= or PARTLABEL= (the /dev/disk/by-*
// links udev would make are understood as the matching key).
type RootSpec struct {
	Key   string // "path", "devnum", "UUID", "LABEL", "PARTUUID", "PARTLABEL"
	Value string // /sys/block name for "path", "MAJ:MIN" for "devnum"
}

func (r RootSpec) String() string {
	switch r.Key {
	case "path":
		return "/dev/" + r.Value
	case "devnum":
		return r.Value
	}
	return r.Key + "=" + r.Value
}

// ParseRoot parses a root= value.
func ParseRoot(s string) (RootSpec, error) {
	s = strings.TrimSpace(s)
	for _, k := range []string{"UUID", "LABEL", "PARTUUID", "PARTLABEL"} {
		if v, ok := strings.CutPrefix(s, k+"="); ok && v != "" {
			return RootSpec{Key: k, Value: v}, nil
		}
	}
	for dir, k := range map[string]string{"/dev/disk/by-uuid/": "UUID", "/dev/disk/by-label/": "LABEL",
		"/dev/disk/by-partuuid/": "PARTUUID", "/dev/disk/by-partlabel/": "PARTLABEL"} {
		if v, ok := strings.CutPrefix(s, dir); ok && v != "" {
			return RootSpec{Key: k, Value: v}, nil
		}
	}
	if v, ok := strings.CutPrefix(s, "/dev/"); ok && v != "" && !strings.Contains(v, "/") {
		return RootSpec{Key: "path", Value: v}, nil
	}
	if maj, min, ok := strings.Cut(s, ":"); ok {
		if _, err := strconv.ParseUint(maj, 10, 32); err == nil {
			if _, err := strconv.ParseUint(min, 10, 32); err == nil {
				return RootSpec{Key: "devnum", Value: s}, nil
			}
		}
	}
	if s == "" {
		return RootSpec{}, fmt.Errorf("no root= on the kernel command line")
	}
	return RootSpec{}, fmt.Errorf("root=%s: not understood (want /dev/NAME, MAJ:MIN, UUID=, LABEL=, PARTUUID= or PARTLABEL=)", s)
}

// BlockDevices lists every disk and partition under SysBlock by name.
func (s Sys) BlockDevices() []string {
	entries, _ := os.ReadDir(s.SysBlock)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
		parts := s.Partitions(e.Name())
		nums := make([]int, 0, len(parts))
		for n := range parts {
			nums = append(nums, n)
		}
		sort.Ints(nums)
		for _, n := range nums {
			out = append(out, parts[n])
		}
	}
	return out
}

// sysPath returns the sysfs directory of a disk or partition name.
func (s Sys) sysPath(name string) string {
	if _, err := os.Stat(filepath.Join(s.SysBlock, name)); err == nil {
		return filepath.Join(s.SysBlock, name)
	}
	if m, _ := filepath.Glob(filepath.Join(s.SysBlock, "*", name)); len(m) > 0 {
		return m[0]
	}
	return ""
}

// FindRoot returns the /sys/block name (disk or partition) matching r, or ""
// when none is there yet. UUID and LABEL are read from filesystem
// superblocks, PARTUUID and PARTLABEL from partition tables (GPT, and the
// MBR disk signature form SSSSSSSS-PP).
func (s Sys) FindRoot(r RootSpec) (string, error) {
	switch r.Key {
	case "path":
		if s.sysPath(r.Value) != "" {
			return r.Value, nil
		}
		return "", nil
	case "devnum":
		for _, n := range s.BlockDevices() {
			if b, err := os.ReadFile(filepath.Join(s.sysPath(n), "dev")); err == nil && strings.TrimSpace(string(b)) == r.Value {
				return n, nil
			}
		}
		return "", nil
	case "UUID", "LABEL":
		local := s.InstanceStoreDisks()
		for _, n := range s.BlockDevices() {
			if s.readSize(n) == 0 || onDisks(n, local) {
				continue // instance storage is never the image's root
			}
			node, err := s.Node(n)
			if err != nil {
				continue
			}
			f, err := os.Open(node)
			if err != nil {
				continue
			}
			fs, ok := Probe(f, 0)
			f.Close()
			if ok && ((r.Key == "UUID" && strings.EqualFold(fs.UUID, r.Value)) || (r.Key == "LABEL" && fs.Label == r.Value)) {
				return n, nil
			}
		}
		return "", nil
	case "PARTUUID", "PARTLABEL":
		disks, _ := os.ReadDir(s.SysBlock)
		for _, d := range disks {
			if s.IsInstanceStore(d.Name()) {
				continue
			}
			if n := s.findPartition(d.Name(), r); n != "" {
				return n, nil
			}
		}
		return "", nil
	}
	return "", fmt.Errorf("root spec %q not supported", r.Key)
}

// onDisks reports whether name is one of disks or a partition of one.
func onDisks(name string, disks []string) bool {
	for _, d := range disks {
		if name == d || (strings.HasPrefix(name, d) && strings.HasPrefix(name[len(d):], "p")) {
			return true
		}
	}
	return false
}

func (s Sys) readSize(name string) int64 {
	b, err := os.ReadFile(filepath.Join(s.sysPath(name), "size"))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (s Sys) findPartition(disk string, r RootSpec) string {
	parts := s.Partitions(disk)
	if len(parts) == 0 || s.readSize(disk) == 0 {
		return ""
	}
	node, err := s.Node(disk)
	if err != nil {
		return ""
	}
	f, err := os.Open(node)
	if err != nil {
		return ""
	}
	defer f.Close()
	sector := 512
	if b, err := os.ReadFile(filepath.Join(s.SysBlock, disk, "queue", "logical_block_size")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			sector = n
		}
	}
	want := strings.ToLower(r.Value)
	if r.Key == "PARTUUID" {
		// MBR: SSSSSSSS-PP, the disk signature at byte 440 and the number.
		var mbr [512]byte
		if _, err := f.ReadAt(mbr[:], 0); err == nil && mbr[510] == 0x55 && mbr[511] == 0xaa {
			sig := binary.LittleEndian.Uint32(mbr[440:])
			for n, name := range parts {
				if fmt.Sprintf("%08x-%02x", sig, n) == want {
					return name
				}
			}
		}
	}
	table, err := partition.Read(f, sector, sector)
	if err != nil {
		return ""
	}
	for _, p := range table.GetPartitions() {
		if p == nil || p.GetSize() == 0 {
			continue
		}
		var match bool
		if r.Key == "PARTUUID" {
			match = strings.ToLower(p.UUID()) == want
		} else {
			match = p.Label() == r.Value
		}
		if match {
			return parts[p.GetIndex()]
		}
	}
	return ""
}

// WaitRoot waits, event-driven, for the device r names to appear and open,
// and returns its /sys/block name. l must have been opened before the
// first look.
func (s Sys) WaitRoot(ctx context.Context, l *Listener, r RootSpec) (string, error) {
	found, err := s.waitOpen(ctx, l, func() (string, error) { return s.FindRoot(r) })
	if err != nil {
		return "", fmt.Errorf("wait for root=%s: %w", r, err)
	}
	return found, nil
}
