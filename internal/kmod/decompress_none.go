//go:build kmod_nouserdecompress

package kmod

import (
	"fmt"
	"io"
)

const userDecompress = false

func userDecompressor(_ io.Reader, comp string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("module compression %q needs in-kernel decompression (built with kmod_nouserdecompress)", comp)
}
