package exeprefetch

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"reflect"
	"testing"
)

// The test binary's own segments, found from its auxiliary vector as PID 1
// finds them, are its PT_LOAD segments on disk, page-aligned, and hold this
// function's code and a variable's address.
func TestSegmentsOfThisExecutable(t *testing.T) {
	segs := Segments(runtimeAuxv(), readPhdrs)
	if len(segs) == 0 {
		t.Fatal("no segments from the auxiliary vector")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var loads int
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Filesz > 0 {
			loads++
		}
	}
	if len(segs) != loads {
		t.Fatalf("%d segments, want the file's %d PT_LOAD with file data: %+v", len(segs), loads, segs)
	}
	code := reflect.ValueOf(TestSegmentsOfThisExecutable).Pointer()
	inside := false
	for _, s := range segs {
		if s.Addr%pageSize != 0 {
			t.Errorf("segment %+v not page-aligned", s)
		}
		if code >= s.Addr && code < s.Addr+s.Len {
			inside = true
		}
	}
	if !inside {
		t.Errorf("this function's code (%#x) is in no segment: %+v", code, segs)
	}
}

// Synthetic headers: a position-independent executable's segments are
// shifted by its load bias; what is not PT_LOAD, or has no file data
// (bss only), is left out; a vector without the headers gives nothing.
func TestSegments(t *testing.T) {
	phdr := func(typ uint32, vaddr, filesz uint64) []byte {
		b := make([]byte, phdrSize)
		binary.LittleEndian.PutUint32(b[0:], typ)
		binary.LittleEndian.PutUint64(b[16:], vaddr)
		binary.LittleEndian.PutUint64(b[32:], filesz)
		return b
	}
	var hdrs []byte
	hdrs = append(hdrs, phdr(ptPHDR, 0x40, 3*phdrSize)...)
	hdrs = append(hdrs, phdr(ptLOAD, 0x0, 0x1234)...)
	hdrs = append(hdrs, phdr(ptLOAD, 0x3100, 0)...)
	hdrs = append(hdrs, phdr(ptLOAD, 0x5100, 0x80)...)
	const base = 0x7f0000000000
	read := func(addr uintptr, n int) []byte {
		if addr != base+0x40 || n != len(hdrs) {
			t.Fatalf("read(%#x, %d)", addr, n)
		}
		return hdrs
	}
	got := Segments([]uintptr{atPHENT, phdrSize, atPHNUM, 4, atPHDR, base + 0x40, 0, 0}, read)
	want := []Segment{{base, 0x1234}, {base + 0x5000, 0x180}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("segments = %+v, want %+v", got, want)
	}
	for _, auxv := range [][]uintptr{nil, {atPHDR, base + 0x40, atPHNUM, 4}, {atPHDR, base, atPHENT, 32, atPHNUM, 4}} {
		if got := Segments(auxv, read); got != nil {
			t.Errorf("Segments(%v) = %+v, want none", auxv, got)
		}
	}
}
