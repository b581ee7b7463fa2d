package blockdev

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// FS is a filesystem identified by its superblock.
type FS struct {
	Type  string // ext4, xfs, btrfs
	UUID  string
	Label string
}

func (f FS) String() string {
	s := f.Type
	if f.Label != "" {
		s += " label=" + f.Label
	}
	if f.UUID != "" {
		s += " uuid=" + f.UUID
	}
	return s
}

// Probe reads the superblock at offset off of r. ok is false when no
// supported filesystem is there.
func Probe(r io.ReaderAt, off int64) (fs FS, ok bool) {
	var sb [4096]byte
	// ext2/3/4: superblock at 1024, magic 0xEF53 at +56. The ext4 driver
	// mounts all three.
	if n, _ := r.ReadAt(sb[:1024], off+1024); n == 1024 && binary.LittleEndian.Uint16(sb[56:]) == 0xEF53 {
		return FS{Type: "ext4", UUID: uuid(sb[104:120]), Label: cstr(sb[120:136])}, true
	}
	if n, _ := r.ReadAt(sb[:512], off); n == 512 && bytes.Equal(sb[0:4], []byte("XFSB")) {
		return FS{Type: "xfs", UUID: uuid(sb[32:48]), Label: cstr(sb[108:120])}, true
	}
	// btrfs: superblock at 64 KiB, magic "_BHRfS_M" at +64.
	if n, _ := r.ReadAt(sb[:1024], off+65536); n == 1024 && bytes.Equal(sb[64:72], []byte("_BHRfS_M")) {
		return FS{Type: "btrfs", UUID: uuid(sb[32:48]), Label: cstr(sb[299:555])}, true
	}
	return FS{}, false
}

func uuid(b []byte) string {
	h := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}
