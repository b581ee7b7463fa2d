//go:build !pid1

package kmod

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// userDecompressor handles xz and zstd modules for kernels that cannot
// decompress them, in process. The PID 1 build (decompress_pid1.go) runs
// the image's own xz or zstd instead: these two libraries cost PID 1
// ~340 KB of its 10 MiB budget (README: "Where the PID 1 binary's bytes
// go").
func userDecompressor(r io.Reader, comp string) (io.ReadCloser, error) {
	switch comp {
	case "xz":
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(x), nil
	case "zst":
		// One goroutine, low memory: modules are small and PID 1 is frugal.
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil // Close stops the decoder's goroutine
	}
	return nil, fmt.Errorf("unsupported module compression %q", comp)
}
