package sim

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// makeImage creates dst as a sparse file of size bytes, filled from src
// when src is not empty (snapshot → volume, volume → snapshot). Copies stay
// sparse: a fresh 8 GiB volume costs nothing.
func makeImage(src, dst string, size int64) (err error) {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("make image %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("make image %s: %w", dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if src != "" {
		in, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("make image %s from %s: %w", dst, src, err)
		}
		defer in.Close()
		n, err := copySparse(out, in)
		if err != nil {
			return fmt.Errorf("make image %s from %s: %w", dst, src, err)
		}
		size = max(size, n)
	}
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("make image %s: %w", dst, err)
	}
	return nil
}

// copySparse copies the data extents of in (SEEK_DATA/SEEK_HOLE), leaving
// holes as holes, and returns in's size.
func copySparse(out, in *os.File) (int64, error) {
	st, err := in.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return 0, fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return 0, fmt.Errorf("seek hole: %w", err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return 0, err
		}
		off = hole
	}
	return size, nil
}

func removeImage(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image: %w", err)
	}
	return nil
}
