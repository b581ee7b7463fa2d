package fsutil

import (
	"encoding/binary"
	"fmt"
	"time"
)

// ext2/3/4 superblock fields (offsets from the superblock's start, 1024
// bytes into the device; include/linux/ext4.h, struct ext4_super_block).
const (
	sbMntCount      = 0x34 // __le16 s_mnt_count
	sbMaxMntCount   = 0x36 // __le16 s_max_mnt_count (signed)
	sbMagic         = 0x38 // __le16 0xEF53
	sbState         = 0x3A // __le16 s_state
	sbLastCheck     = 0x40 // __le32 s_lastcheck
	sbCheckInterval = 0x44 // __le32 s_checkinterval
	sbIncompat      = 0x60 // __le32 s_feature_incompat
	sbROCompat      = 0x64 // __le32 s_feature_ro_compat
	sbLastOrphan    = 0xE8 // __le32 s_last_orphan
	sbErrorCount    = 0x194

	stateValid = 0x1 // EXT2_VALID_FS: unmounted cleanly
	stateError = 0x2 // EXT2_ERROR_FS: the kernel saw errors

	incompatRecover       = 0x4     // EXT3_FEATURE_INCOMPAT_RECOVER: the journal needs replay
	incompatJournalDev    = 0x8     // an external journal device: leave it to e2fsck
	roCompatOrphanPresent = 0x10000 // EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT: orphan file has entries
)

// NeedsCheck reports whether the checker must run on dev before it is
// mounted, and why. For ext2/3/4 it reads the superblock and answers as
// e2fsck -p itself would before its "clean, skipping" (e2fsprogs
// e2fsck/unix.c, check_if_skip, after the journal replay and orphan
// processing of main): a check is needed when the filesystem was not
// cleanly unmounted (s_state lacks VALID), has errors recorded, has a
// journal to replay (RECOVER: an ext4 mounted with a journal keeps s_state
// VALID and sets RECOVER instead — the normal state after a Spot
// interruption), orphan inodes to release, an external journal, or its
// mount count or check interval is due (or its last check lies in the
// future). Only a superblock that says all is well skips the exec of
// e2fsck, which costs a process start from the image under a slow CPU; the
// real init's own fsck still runs on every boot.
//
// Other filesystems (XFS: the log is replayed by a mount anyway) and any
// error reading the superblock answer true: when unsure, check.
func NeedsCheck(dev, fstype string, now time.Time) (bool, string) {
	switch fstype {
	case "ext2", "ext3", "ext4":
	default:
		return true, fstype + ": no clean flag to read"
	}
	sb, err := readSuperblock(dev)
	if err != nil {
		return true, fmt.Sprintf("cannot read the superblock: %v", err)
	}
	return ext4NeedsCheck(sb, now)
}

func ext4NeedsCheck(sb []byte, now time.Time) (bool, string) {
	le16 := func(o int) uint16 { return binary.LittleEndian.Uint16(sb[o:]) }
	le32 := func(o int) uint32 { return binary.LittleEndian.Uint32(sb[o:]) }
	if le16(sbMagic) != 0xEF53 {
		return true, "no ext2/3/4 superblock"
	}
	state := le16(sbState)
	incompat, roCompat := le32(sbIncompat), le32(sbROCompat)
	maxMnt := int16(le16(sbMaxMntCount))
	last, interval := int64(le32(sbLastCheck)), int64(le32(sbCheckInterval))
	switch {
	case tornSuperblock(sb):
		return true, "the superblock's checksum does not match it (a write to it was cut)"
	case state&stateError != 0 || le32(sbErrorCount) != 0:
		return true, "the filesystem has errors recorded"
	case state&stateValid == 0:
		return true, "not cleanly unmounted"
	case incompat&incompatRecover != 0:
		return true, "the journal needs replay"
	case incompat&incompatJournalDev != 0:
		return true, "external journal device"
	case le32(sbLastOrphan) != 0 || roCompat&roCompatOrphanPresent != 0:
		return true, "orphan inodes to release"
	case maxMnt > 0 && int(le16(sbMntCount)) >= int(maxMnt):
		return true, fmt.Sprintf("mounted %d times without a check", le16(sbMntCount))
	case interval > 0 && now.Unix() < last:
		return true, "last checked in the future"
	case interval > 0 && now.Unix()-last >= interval:
		return true, "check interval passed"
	}
	return false, "superblock: cleanly unmounted, no errors, no journal to replay"
}
