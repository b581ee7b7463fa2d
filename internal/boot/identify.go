package boot

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
)

// spotrootMainPath is the main package every spotroot binary is built from;
// a Go binary records it in its build info (runtime/debug.BuildInfo.Path).
const spotrootMainPath = "github.com/spotroot/spotroot/cmd/spotroot"

// isSpotroot reports whether the file is a spotroot binary. A Go binary
// says what it is in its .go.buildinfo section (a few hundred bytes, found
// through the ELF section headers); an ELF binary without that section
// (systemd, a C init) is not spotroot. Only what that reading cannot
// decide (no section headers, a 32-bit or packed binary, a script) is
// searched whole for Marker: reading a 10 MB init through to its end costs
// a small instance most of a second.
func isSpotroot(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if goBinary, ours := goBuildInfo(f); goBinary {
		return ours
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false
	}
	return containsMarker(f)
}

// goBuildInfo reads an ELF64 file's .go.buildinfo section. decided is false
// when the file cannot be read that way; otherwise ours says whether its
// main package is spotroot's. An ELF file whose section headers list no
// .go.buildinfo is decided: not a Go binary.
func goBuildInfo(f io.ReaderAt) (decided, ours bool) {
	var h [64]byte
	if _, err := f.ReadAt(h[:], 0); err != nil || string(h[:4]) != "\x7fELF" || h[4] != 2 /* ELFCLASS64 */ {
		return false, false
	}
	var bo binary.ByteOrder
	switch h[5] {
	case 1:
		bo = binary.LittleEndian
	case 2:
		bo = binary.BigEndian
	default:
		return false, false
	}
	shoff, shentsize, shnum, shstrndx := bo.Uint64(h[0x28:]), int(bo.Uint16(h[0x3a:])), int(bo.Uint16(h[0x3c:])), int(bo.Uint16(h[0x3e:]))
	if shoff == 0 || shnum == 0 || shentsize < 64 || shnum > 4096 || shstrndx >= shnum {
		return false, false // no section headers (stripped to the bone, packed)
	}
	sh := make([]byte, shnum*shentsize)
	if _, err := f.ReadAt(sh, int64(shoff)); err != nil {
		return false, false
	}
	section := func(i int) (name uint32, off, size uint64) {
		s := sh[i*shentsize:]
		return bo.Uint32(s[0:]), bo.Uint64(s[0x18:]), bo.Uint64(s[0x20:])
	}
	_, stroff, strsize := section(shstrndx)
	if strsize > 1<<16 {
		return false, false
	}
	names := make([]byte, strsize)
	if _, err := f.ReadAt(names, int64(stroff)); err != nil {
		return false, false
	}
	for i := range shnum {
		name, off, size := section(i)
		if int(name) >= len(names) || !bytes.HasPrefix(names[name:], []byte(".go.buildinfo\x00")) {
			continue
		}
		// The header (16 bytes of magic and sizes, padded to 32) and, since
		// Go 1.18, the version and module strings inline after it.
		buf := make([]byte, min(size, 1<<16))
		n, _ := f.ReadAt(buf, int64(off))
		buf = buf[:n]
		if !bytes.HasPrefix(buf, []byte("\xff Go buildinf:")) {
			return false, false
		}
		return true, bytes.Contains(buf, []byte("path\t"+spotrootMainPath+"\n"))
	}
	return true, false
}

// containsMarker searches the whole file for Marker.
func containsMarker(r io.Reader) bool {
	needle := []byte(Marker)
	buf := make([]byte, 1<<20)
	carry := 0
	for {
		n, err := r.Read(buf[carry:])
		if bytes.Contains(buf[:carry+n], needle) {
			return true
		}
		if err != nil || n == 0 {
			return false
		}
		// Keep a tail so a marker across reads is found.
		keep := min(len(needle)-1, carry+n)
		copy(buf, buf[carry+n-keep:carry+n])
		carry = keep
	}
}
