// Package exeprefetch has PID 1 ask the kernel, from one of the first
// package initialisers to run, to read the rest of its own executable ahead.
//
// A static PID 1 of ~10 MB is paged in from the image's disk as it runs:
// each first touch of a window of it is a page fault that waits for one
// 128 KiB read. On EC2 an AMI's root volume also fetches every block from
// S3 the first time it is read ("Initialize Amazon EBS volumes",
// https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html),
// so those waits are dearer there than on a disk image. MADV_WILLNEED on
// the executable's loaded segments submits their reads at once, in large
// requests, while the other initialisers and main run.
//
// Imported for its initialiser (by the PID 1 build). It depends on syscall
// alone (and unsafe), so that Go's initialisation order (dependencies
// first, then the lexically smallest import path) runs it right after
// syscall's.
package exeprefetch

import (
	"syscall"
	"unsafe"
)

// runtimeAuxv is the ELF auxiliary vector the kernel passed (the runtime
// keeps it for golang.org/x/sys, which reads it the same way).
//
//go:linkname runtimeAuxv runtime.getAuxv
func runtimeAuxv() []uintptr

func init() {
	if syscall.Getpid() != 1 {
		return // an operator's command: paged in as usual
	}
	for _, s := range Segments(runtimeAuxv(), readPhdrs) {
		// One call per window: the kernel reads at most the larger of the
		// disk's largest request and the readahead window per call
		// (force_page_cache_ra), 128 KiB by default.
		for off := uintptr(0); off < s.Len; off += window {
			// Best effort: an error only means no read ahead.
			syscall.Syscall(syscall.SYS_MADVISE, s.Addr+off, min(window, s.Len-off), syscall.MADV_WILLNEED)
		}
	}
}

// window is the kernel's default readahead window (read_ahead_kb).
const window = 128 << 10

// Segment is a page-aligned range of the executable's loaded image.
type Segment struct{ Addr, Len uintptr }

// ELF constants (elf(5)).
const (
	atPHDR  = 3
	atPHENT = 4
	atPHNUM = 5
	ptLOAD  = 1
	ptPHDR  = 6
	// Elf64_Phdr: type, flags (4 bytes each), offset, vaddr, paddr,
	// filesz, memsz, align (8 bytes each).
	phdrSize = 56
	pageSize = 4096 // the smallest; madvise wants the start aligned to it
)

// Segments lists the file-backed parts of the executable's PT_LOAD
// segments, from the auxiliary vector (key, value pairs) and a reader of
// the n program headers at an address.
func Segments(auxv []uintptr, read func(addr uintptr, n int) []byte) []Segment {
	var phdr, phent, phnum uintptr
	for i := 0; i+1 < len(auxv); i += 2 {
		switch auxv[i] {
		case atPHDR:
			phdr = auxv[i+1]
		case atPHENT:
			phent = auxv[i+1]
		case atPHNUM:
			phnum = auxv[i+1]
		}
	}
	if phdr == 0 || phent != phdrSize || phnum == 0 || phnum > 64 {
		return nil
	}
	b := read(phdr, int(phnum*phent))
	// Little-endian: the architectures spotroot is built for (amd64, arm64).
	le := func(off int, n int) uintptr {
		var v uintptr
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uintptr(b[off+i])
		}
		return v
	}
	// A position-independent executable is loaded at a bias: the program
	// headers' own entry says where they were meant to be.
	var bias uintptr
	for i := 0; i < int(phnum); i++ {
		if o := i * phdrSize; le(o, 4) == ptPHDR {
			bias = phdr - le(o+16, 8)
		}
	}
	var segs []Segment
	for i := 0; i < int(phnum); i++ {
		o := i * phdrSize
		if le(o, 4) != ptLOAD || le(o+32, 8) == 0 {
			continue
		}
		start := bias + le(o+16, 8)
		end := start + le(o+32, 8)
		start &^= pageSize - 1
		segs = append(segs, Segment{Addr: start, Len: end - start})
	}
	return segs
}

// readPhdrs reads the program headers where the kernel mapped them (the
// executable's first page; never Go memory, so never moved).
func readPhdrs(addr uintptr, n int) []byte {
	return unsafe.Slice(*(**byte)(unsafe.Pointer(&addr)), n)
}
