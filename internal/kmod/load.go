package kmod

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxModuleSize bounds a decompressed module (the largest in-tree modules
// are a few tens of MB with debug info; cloud kernels' are far smaller).
const maxModuleSize = 256 << 20

// sysModule is the kernel interface, swappable in tests.
type sysModule struct {
	finit func(fd int, params string, flags int) error
	init  func(image []byte, params string) error
}

var realSys = sysModule{finit: unix.FinitModule, init: unix.InitModule}

// loadModule is the default Loader.Load.
func loadModule(path, params string) error { return realSys.loadFile(path, params) }

// loadFile inserts a module file. Plain .ko goes through finit_module (the
// kernel reads the file, no copy). Compressed modules first ask the kernel
// to decompress (MODULE_INIT_COMPRESSED_FILE, Linux >= 5.17 with
// CONFIG_MODULE_DECOMPRESS); if it cannot, they are decompressed here and
// passed to init_module.
func (s sysModule) loadFile(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	comp := compression(path)
	flags := 0
	if comp != "" {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = s.finit(int(f.Fd()), params, flags)
	if err == nil || errors.Is(err, syscall.EEXIST) {
		return err
	}
	// EINVAL: flag unknown (< 5.17) or format not built in; EOPNOTSUPP: no
	// CONFIG_MODULE_DECOMPRESS; ENOSYS: no finit_module at all.
	if !errors.Is(err, syscall.ENOSYS) && (comp == "" || !(errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP))) {
		return fmt.Errorf("finit_module: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	image, err := readModule(f, comp)
	if err != nil {
		return err
	}
	if err := s.init(image, params); err != nil {
		return fmt.Errorf("init_module: %w", err)
	}
	return nil
}

// compression returns "xz", "zst", "gz" or "" from the file name.
func compression(path string) string {
	i := strings.LastIndex(path, ".ko.")
	if i < 0 {
		return ""
	}
	return path[i+len(".ko."):]
}

// readModule returns the uncompressed module image.
func readModule(r io.Reader, comp string) ([]byte, error) {
	var dr io.Reader
	var err error
	switch comp {
	case "":
		dr = r
	case "gz":
		var z *gzip.Reader
		if z, err = gzip.NewReader(r); err == nil {
			defer z.Close()
			dr = z
		}
	default:
		var rc io.ReadCloser
		if rc, err = userDecompressor(r, comp); err == nil {
			defer rc.Close()
			dr = rc
		}
	}
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", comp, err)
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(dr, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", comp, err)
	}
	if n > maxModuleSize {
		return nil, fmt.Errorf("decompress %s: module larger than %d bytes", comp, maxModuleSize)
	}
	return buf.Bytes(), nil
}
