// Package readahead asks the kernel to start reading files PID 1 will need
// soon (the module index, the NIC driver and its dependencies, the CA
// bundle) into the page cache, so their reads are in flight while PID 1
// computes instead of each first read waiting for the disk.
//
// On EC2 that wait is a fetch from S3: a root volume made from an AMI
// loads each block the first time it is read ("Initialize Amazon EBS
// volumes", https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html).
// On a RAM-backed root (an initramfs) the files are in memory already and
// the advice does nothing.
package readahead

import (
	"os"

	"golang.org/x/sys/unix"
)

// window is the kernel's default readahead window (read_ahead_kb): one
// POSIX_FADV_WILLNEED reads at most the larger of it and the disk's largest
// request (force_page_cache_ra), so a file is advised window by window.
// internal/exeprefetch does the same for the executable.
const window = 128 << 10

// Files submits the reads of the named files and returns without waiting
// for them. Best effort: a file that is missing or unreadable is skipped
// (the code that needs it reports that, with its own context).
func Files(paths ...string) {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			advise(int(f.Fd()), st.Size())
		}
		f.Close()
	}
}

// advise issues one WILLNEED per window of the file's size bytes.
func advise(fd int, size int64) {
	for off := int64(0); off < size; off += window {
		if unix.Fadvise(fd, off, min(window, size-off), unix.FADV_WILLNEED) != nil {
			return
		}
	}
}
