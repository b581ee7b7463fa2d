package blockdev

import (
	"fmt"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"
)

// GPTIdentity is what names a GPT disk and its partitions: the disk GUID
// and the partition GUIDs (PARTUUID=).
type GPTIdentity struct {
	Disk  string
	Parts []string
}

// ReadGPTIdentity reads a disk's GPT identity; ok is false when the disk has
// no GPT.
func ReadGPTIdentity(f backend.File, sector int) (GPTIdentity, bool) {
	t, err := gpt.Read(f, sector, sector)
	if err != nil {
		return GPTIdentity{}, false
	}
	id := GPTIdentity{Disk: strings.ToUpper(t.GUID)}
	for _, p := range t.Partitions {
		if p != nil && p.Type != gpt.Unused {
			id.Parts = append(id.Parts, strings.ToUpper(p.GUID))
		}
	}
	return id, true
}

// RenewClashingGPT gives the disk a new disk GUID and its partitions new
// GUIDs where they equal the image disk's (a volume made from the AMI's
// snapshot: the image boots with root=PARTUUID=, and two partitions with
// one PARTUUID make that ambiguous). It returns what it changed.
//
// It is safe to cut at any point: go-diskfs writes the backup GPT (array,
// then header, each synced) before the primary, so the disk always has one
// valid table, old or new; both the kernel and go-diskfs fall back to the
// backup when the primary's CRC fails. A cut before the primary header
// leaves the old identity visible, and the next boot does it again.
func RenewClashingGPT(f backend.WritableFile, size int64, sector int, image GPTIdentity) ([]string, error) {
	t, err := gpt.Read(f, sector, sector)
	if err != nil {
		return nil, nil // no GPT: nothing to clash
	}
	imageParts := map[string]bool{}
	for _, g := range image.Parts {
		imageParts[strings.ToUpper(g)] = true
	}
	var changed []string
	if image.Disk != "" && strings.EqualFold(t.GUID, image.Disk) {
		changed = append(changed, "disk GUID "+t.GUID)
		t.GUID = "" // go-diskfs generates a random one
	}
	for _, p := range t.Partitions {
		if p != nil && p.Type != gpt.Unused && imageParts[strings.ToUpper(p.GUID)] {
			changed = append(changed, fmt.Sprintf("partition %d PARTUUID %s", p.Index, p.GUID))
			p.GUID = ""
		}
	}
	if len(changed) == 0 {
		return nil, nil
	}
	if t.GUID != "" {
		// Renew the disk GUID with any partition GUID: tools key on it.
		changed = append(changed, "disk GUID "+t.GUID)
		t.GUID = ""
	}
	if err := t.Write(f, size); err != nil {
		return nil, fmt.Errorf("rewrite the GPT with new GUIDs: %w", err)
	}
	return changed, nil
}

// RereadPartitions asks the kernel to read a disk's partition table again
// (BLKRRPART); none of its partitions may be in use.
func RereadPartitions(f *os.File) error {
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("re-read the partition table of %s: %w", f.Name(), err)
	}
	return nil
}
