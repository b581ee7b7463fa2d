package readahead

import (
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the pages of the file in the page cache (mincore(2) of
// a mapping, which itself reads nothing).
func resident(t *testing.T, path string) (in, all int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	// x/sys/unix has no wrapper for mincore.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	for _, v := range vec {
		in += int(v & 1)
	}
	return in, len(vec)
}

// evicted writes a file of size bytes to disk and drops it from the page
// cache, as a file of a freshly booted disk is.
func evicted(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if in, _ := resident(t, p); in > 0 {
		t.Fatalf("%d pages of %s stay cached after FADV_DONTNEED: the test needs a disk-backed TMPDIR, not tmpfs", in, p)
	}
	return p
}

// TestFilesReadsWholeFiles: every window is read, not only the first
// (the kernel clamps each advice to one window), and a missing file or a
// directory among the paths is skipped.
func TestFilesReadsWholeFiles(t *testing.T) {
	a, b := evicted(t, 1<<20+5000), evicted(t, 3*window)
	Files(filepath.Join(t.TempDir(), "missing"), a, t.TempDir(), b)
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range []string{a, b} {
		for {
			in, all := resident(t, p)
			if in == all {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d pages in the page cache after Files, want all", p, in, all)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
