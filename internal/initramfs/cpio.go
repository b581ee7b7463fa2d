// Package initramfs builds spotroot's initramfs: a reproducible cpio
// ("newc") archive holding spotroot as /init, the kernel modules it needs
// with their depmod index, and optionally the image configuration, then
// compressed the way the kernel can unpack it.
package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Entry is one file of the archive. Names are relative ("init",
// "lib/modules/…"), without a leading slash, as the kernel expects them.
type Entry struct {
	Name         string
	Mode         fs.FileMode // type bits and permissions
	Data         []byte      // regular files
	Link         string      // symlink target
	Major, Minor uint32      // device nodes
}

// Archive collects entries; WriteTo emits them sorted by name, parents
// first, with every field that could vary between builds fixed: mtime,
// uid/gid 0, inode numbers assigned in output order, nlink 1 (2 for
// directories), no device numbers for the archive itself.
type Archive struct {
	entries map[string]Entry
	// MTime is the modification time of every entry (seconds since the
	// epoch); 0 unless set, e.g. from SOURCE_DATE_EPOCH.
	MTime int64
}

// NewArchive returns an empty archive.
func NewArchive() *Archive { return &Archive{entries: map[string]Entry{}} }

func clean(name string) (string, error) {
	n := strings.TrimPrefix(path.Clean("/"+name), "/")
	if n == "" || n == "." {
		return "", fmt.Errorf("initramfs: invalid entry name %q", name)
	}
	return n, nil
}

// add stores e and creates its missing parent directories (0755).
func (a *Archive) add(e Entry) error {
	n, err := clean(e.Name)
	if err != nil {
		return err
	}
	e.Name = n
	if old, ok := a.entries[n]; ok {
		if old.Mode.IsDir() && e.Mode.IsDir() {
			a.entries[n] = e // a later explicit mode wins
			return nil
		}
		return fmt.Errorf("initramfs: %s added twice", n)
	}
	for d := path.Dir(n); d != "."; d = path.Dir(d) {
		if p, ok := a.entries[d]; ok {
			if !p.Mode.IsDir() {
				return fmt.Errorf("initramfs: %s: parent %s is not a directory", n, d)
			}
			continue
		}
		a.entries[d] = Entry{Name: d, Mode: fs.ModeDir | 0o755}
	}
	a.entries[n] = e
	return nil
}

// AddDir adds a directory.
func (a *Archive) AddDir(name string, perm fs.FileMode) error {
	return a.add(Entry{Name: name, Mode: fs.ModeDir | permBits(perm)})
}

// AddFile adds a regular file with the given permissions.
func (a *Archive) AddFile(name string, perm fs.FileMode, data []byte) error {
	return a.add(Entry{Name: name, Mode: permBits(perm), Data: data})
}

func permBits(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// AddSymlink adds a symbolic link.
func (a *Archive) AddSymlink(name, target string) error {
	return a.add(Entry{Name: name, Mode: fs.ModeSymlink | 0o777, Link: target})
}

// AddCharDev adds a character device node (no mknod needed: the kernel
// creates it when it unpacks the archive).
func (a *Archive) AddCharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return a.add(Entry{Name: name, Mode: fs.ModeDevice | fs.ModeCharDevice | perm.Perm(), Major: major, Minor: minor})
}

// Names returns the entry names in archive order.
func (a *Archive) Names() []string {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names) // "a" < "a/b": parents come before their children
	return names
}

// newc mode bits (from <linux/stat.h>).
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	switch {
	case m.IsDir():
		u |= sIFDIR
	case m&fs.ModeSymlink != 0:
		u |= sIFLNK
	case m&fs.ModeCharDevice != 0:
		u |= sIFCHR
	case m&fs.ModeDevice != 0:
		u |= sIFBLK
	case m&fs.ModeNamedPipe != 0:
		u |= sIFIFO
	case m&fs.ModeSocket != 0:
		u |= sIFSOCK
	default:
		u |= sIFREG
	}
	return u
}

func fileMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch u & sIFMT {
	case sIFDIR:
		m |= fs.ModeDir
	case sIFLNK:
		m |= fs.ModeSymlink
	case sIFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		m |= fs.ModeDevice
	case sIFIFO:
		m |= fs.ModeNamedPipe
	case sIFSOCK:
		m |= fs.ModeSocket
	}
	return m
}

const trailer = "TRAILER!!!"

// WriteTo writes the uncompressed newc archive, ending with the trailer.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	ino := uint32(0)
	for _, n := range a.Names() {
		e := a.entries[n]
		ino++
		nlink := uint32(1)
		if e.Mode.IsDir() {
			nlink = 2
		}
		data := e.Data
		if e.Mode&fs.ModeSymlink != 0 {
			data = []byte(e.Link)
		}
		if err := writeRecord(cw, n, ino, unixMode(e.Mode), nlink, uint32(a.MTime), data, e.Major, e.Minor); err != nil {
			return cw.n, err
		}
	}
	err := writeRecord(cw, trailer, 0, 0, 1, 0, nil, 0, 0)
	return cw.n, err
}

// Bytes returns the uncompressed archive.
func (a *Archive) Bytes() []byte {
	var b bytes.Buffer
	_, _ = a.WriteTo(&b)
	return b.Bytes()
}

func writeRecord(w io.Writer, name string, ino, mode, nlink, mtime uint32, data []byte, rmajor, rminor uint32) error {
	// 110-byte header: magic + 13 eight-digit hex fields.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	pad4(&b, b.Len())
	b.Write(data)
	pad4(&b, len(data))
	_, err := w.Write(b.Bytes())
	return err
}

func pad4(b *bytes.Buffer, n int) {
	for ; n%4 != 0; n++ {
		b.WriteByte(0)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Record is one entry read back from an archive, with its raw header
// fields, for listings and tests.
type Record struct {
	Entry
	Ino, UID, GID, NLink uint32
	MTime                int64
}

// ReadArchive parses an uncompressed newc archive (several concatenated
// archives too, as the kernel accepts) up to the end of the data. Padding
// zeros between archives are skipped.
func ReadArchive(b []byte) ([]Record, error) {
	var out []Record
	for {
		for len(b) > 0 && b[0] == 0 {
			b = b[1:]
		}
		if len(b) == 0 {
			return out, nil
		}
		recs, end, err := readOne(b)
		out = append(out, recs...)
		if err != nil {
			return out, err
		}
		b = b[end:]
	}
}

// readOne parses one archive up to and including its trailer and returns
// the offset after it.
func readOne(b []byte) ([]Record, int, error) {
	var out []Record
	off := 0
	for {
		if len(b)-off < 110 {
			if off >= len(b) {
				return out, off, nil // no trailer: the data simply ends
			}
			return out, off, fmt.Errorf("cpio: truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" && string(h[:6]) != "070702" {
			return out, off, fmt.Errorf("cpio: bad magic %q at %d (not newc)", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return out, off, fmt.Errorf("cpio: bad header field at %d: %w", off, err)
			}
			f[i] = uint32(v)
		}
		namesize, filesize := int(f[11]), int(f[6])
		p := off + 110
		if p+namesize > len(b) || namesize == 0 {
			return out, off, errors.New("cpio: truncated name")
		}
		name := string(b[p : p+namesize-1])
		p = align4(p + namesize)
		if p+filesize > len(b) {
			return out, off, fmt.Errorf("cpio: %s: truncated data", name)
		}
		data := b[p : p+filesize]
		off = min(align4(p+filesize), len(b))
		if name == trailer {
			return out, off, nil
		}
		r := Record{Entry: Entry{Name: name, Mode: fileMode(f[1]), Major: f[9], Minor: f[10]},
			Ino: f[0], UID: f[2], GID: f[3], NLink: f[4], MTime: int64(f[5])}
		if r.Mode&fs.ModeSymlink != 0 {
			r.Link = string(data)
		} else {
			r.Data = data
		}
		out = append(out, r)
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// ReadInitramfs reads an initramfs the way the kernel unpacks it: any
// number of uncompressed newc archives (early microcode, …) followed by a
// compressed one (gzip, xz or zstd). Hard links (same inode, nlink > 1)
// get the data of the member that carries it.
func ReadInitramfs(b []byte) ([]Record, error) {
	var out []Record
	for len(b) > 0 {
		for len(b) > 0 && b[0] == 0 {
			b = b[1:]
		}
		if len(b) == 0 {
			break
		}
		if !bytes.HasPrefix(b, []byte("07070")) {
			raw, err := Decompress(b)
			if err != nil {
				return out, err
			}
			if bytes.Equal(raw, b) {
				return out, errors.New("initramfs: neither cpio nor a known compression")
			}
			b = raw
			continue
		}
		// One uncompressed archive, up to and including its trailer.
		recs, end, err := readOne(b)
		if err != nil {
			return out, err
		}
		data := map[uint32][]byte{}
		for _, r := range recs {
			if r.NLink > 1 && len(r.Data) > 0 {
				data[r.Ino] = r.Data
			}
		}
		for i, r := range recs {
			if r.NLink > 1 && len(r.Data) == 0 && r.Mode.IsRegular() {
				recs[i].Data = data[r.Ino]
			}
		}
		out = append(out, recs...)
		b = b[end:]
	}
	return out, nil
}
