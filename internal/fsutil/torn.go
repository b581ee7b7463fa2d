package fsutil

import (
	"encoding/binary"
	"hash/crc32"
	"os"
)

// More ext4 superblock fields (include/linux/ext4.h, struct ext4_super_block).
const (
	sbFirstDataBlock = 0x14  // __le32 s_first_data_block
	sbLogBlockSize   = 0x18  // __le32 s_log_block_size: 1024 << n
	sbBlocksPerGroup = 0x20  // __le32 s_blocks_per_group
	sbCompat         = 0x5C  // __le32 s_feature_compat
	sbBackupBGs      = 0x24C // __le32 s_backup_bgs[2] (sparse_super2)
	sbChecksum       = 0x3FC // __le32 s_checksum

	compatSparseSuper2  = 0x200 // EXT4_FEATURE_COMPAT_SPARSE_SUPER2
	roCompatMetadataCsm = 0x400 // EXT4_FEATURE_RO_COMPAT_METADATA_CSUM
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// tornSuperblock reports whether sb (the primary superblock) carries a
// metadata checksum that does not match its contents. e2fsck and tune2fs
// rewrite only the byte ranges of the superblock that changed, each with its
// own write, the checksum last (e2fsprogs lib/ext2fs/closefs.c,
// write_primary_superblock): a tool cut between two of them (an instance
// stopped mid-check) leaves this. The kernel then refuses the mount and
// e2fsck -p refuses the filesystem (it tries the backup superblocks only
// when it may ask, e2fsck/unix.c).
//
// The kernel's checksum is crc32c seeded with ~0 over the bytes before
// s_checksum, without the final inversion (fs/ext4/super.c,
// ext4_superblock_csum): the complement of the standard CRC-32C.
func tornSuperblock(sb []byte) bool {
	if len(sb) < 1024 || binary.LittleEndian.Uint16(sb[sbMagic:]) != 0xEF53 ||
		binary.LittleEndian.Uint32(sb[sbROCompat:])&roCompatMetadataCsm == 0 {
		return false
	}
	return binary.LittleEndian.Uint32(sb[sbChecksum:]) != ^crc32.Checksum(sb[:sbChecksum], castagnoli)
}

// backupSuperblock is where e2fsck -b finds the first backup superblock and
// the block size to give it with -B, from the primary's geometry (fields
// e2fsck and tune2fs never rewrite): group 1's first block, or with
// sparse_super2 the first group s_backup_bgs names. ok is false when the
// geometry makes no sense or there is no backup.
func backupSuperblock(sb []byte) (block uint64, blockSize uint32, ok bool) {
	le32 := func(o int) uint32 { return binary.LittleEndian.Uint32(sb[o:]) }
	logSize, perGroup := le32(sbLogBlockSize), le32(sbBlocksPerGroup)
	if logSize > 6 || perGroup == 0 {
		return 0, 0, false
	}
	group := uint64(1)
	if le32(sbCompat)&compatSparseSuper2 != 0 {
		// Either entry may be 0 (none): mke2fs leaves the first one 0
		// when group 1 is also the last group.
		if group = uint64(le32(sbBackupBGs)); group == 0 {
			if group = uint64(le32(sbBackupBGs + 4)); group == 0 {
				return 0, 0, false
			}
		}
	}
	return uint64(le32(sbFirstDataBlock)) + group*uint64(perGroup), 1024 << logSize, true
}

// readSuperblock reads the primary ext2/3/4 superblock of dev.
func readSuperblock(dev string) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return nil, err
	}
	return sb, nil
}
