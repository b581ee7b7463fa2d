//go:build !kmod_nouserdecompress

package kmod

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// userDecompress reports whether xz and zstd are decompressed in userspace.
const userDecompress = true

// userDecompressor handles xz and zstd modules for kernels that cannot
// decompress them. Build with -tags kmod_nouserdecompress to drop both
// libraries (~0.8 MB) when every target kernel decompresses in-kernel or
// ships plain .ko (Debian 12's cloud kernel does).
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
