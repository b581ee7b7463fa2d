package blockdev

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/partition"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Choice is where the filesystem to mount lives.
type Choice struct {
	Partition int // 0 = the whole disk
	FS        FS
	Label     string // GPT partition name
	PartUUID  string
}

// gpt type GUIDs that never hold the root filesystem.
var notRoot = map[string]bool{
	strings.ToUpper(string(gpt.EFISystemPartition)): true,
	strings.ToUpper(string(gpt.BIOSBoot)):           true,
	strings.ToUpper(string(gpt.LinuxSwap)):          true,
}

// Choose finds the filesystem on a disk: the one selected by spec
// ("", "N", "label:NAME", "partuuid:UUID"), otherwise a filesystem on the
// whole disk, otherwise the first partition holding a supported filesystem
// (boot, EFI and swap partitions skipped).
func Choose(disk backend.File, sectorSize int, spec string) (Choice, error) {
	if spec == "" {
		if fs, ok := Probe(disk, 0); ok {
			return Choice{FS: fs}, nil
		}
	}
	table, err := partition.Read(disk, sectorSize, sectorSize)
	if err != nil {
		if spec != "" {
			return Choice{}, fmt.Errorf("partition %q requested, but the disk has no GPT or MBR partition table", spec)
		}
		return Choice{}, fmt.Errorf("no filesystem on the disk and no partition table: the volume is empty or corrupt (supported: ext4, xfs, btrfs)")
	}
	parts := table.GetPartitions()
	var tried []string
	for _, p := range parts {
		if p == nil || p.GetSize() == 0 {
			continue
		}
		c := Choice{Partition: p.GetIndex(), Label: p.Label(), PartUUID: p.UUID()}
		if !selected(spec, c) {
			continue
		}
		if gp, ok := p.(*gpt.Partition); ok && spec == "" && notRoot[strings.ToUpper(string(gp.Type))] {
			continue
		}
		fs, ok := Probe(io.NewSectionReader(disk, p.GetStart(), p.GetSize()), 0)
		if !ok {
			tried = append(tried, strconv.Itoa(c.Partition))
			if spec != "" {
				return Choice{}, fmt.Errorf("partition %s (%d) holds no supported filesystem (ext4, xfs, btrfs)", spec, c.Partition)
			}
			continue
		}
		c.FS = fs
		return c, nil
	}
	if spec != "" {
		return Choice{}, fmt.Errorf("no partition matches %q in the %s table", spec, table.Type())
	}
	return Choice{}, fmt.Errorf("no supported filesystem (ext4, xfs, btrfs) on any of the %s partitions (tried %s)", table.Type(), strings.Join(tried, ", "))
}

func selected(spec string, c Choice) bool {
	switch {
	case spec == "":
		return true
	case strings.HasPrefix(spec, "label:"):
		return c.Label == strings.TrimPrefix(spec, "label:")
	case strings.HasPrefix(spec, "partuuid:"):
		return strings.EqualFold(c.PartUUID, strings.TrimPrefix(spec, "partuuid:"))
	}
	n, err := strconv.Atoi(spec)
	return err == nil && n == c.Partition
}
