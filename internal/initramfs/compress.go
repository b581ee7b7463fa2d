package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compressions the kernel can unpack (CONFIG_RD_GZIP/XZ/ZSTD) that Compress
// writes. All are deterministic: same input, same bytes.
var Compressions = []string{"zstd", "xz", "gzip", "none"}

// Compress compresses an archive with method (zstd, xz, gzip or none).
func Compress(method string, data []byte) ([]byte, error) {
	var b bytes.Buffer
	switch method {
	case "none", "":
		return data, nil
	case "gzip":
		// No name, no mtime in the header: gzip.Writer leaves both zero.
		w, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	case "xz":
		// The kernel's XZ decoder supports CRC32 and no BCJ filters by
		// default; CRC32 is what `xz --check=crc32` (the kernel's
		// documented setting) writes.
		cfg := xz.WriterConfig{CheckSum: xz.CRC32, DictCap: 8 << 20}
		w, err := cfg.NewWriter(&b)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	case "zstd":
		// One goroutine and a fixed level keep the output reproducible; an
		// 8 MiB window stays within what the kernel's decoder allocates.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(8<<20), zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, err
		}
		out := enc.EncodeAll(data, nil)
		enc.Close()
		return out, nil
	default:
		return nil, fmt.Errorf("initramfs: unknown compression %q (want one of %v)", method, Compressions)
	}
	return b.Bytes(), nil
}

// Decompress detects the compression by its magic and returns the
// uncompressed bytes; uncompressed archives are returned as they are.
func Decompress(data []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		r, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return d.DecodeAll(data, nil)
	}
	return data, nil
}
