package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoadFilesystem makes sure the kernel can mount fstype: if
// /proc/filesystems lacks it, the module of that name is loaded with its
// dependencies (xfs and btrfs are modules in distribution kernels).
// It returns the modules inserted.
func (l *Loader) LoadFilesystem(fstype string) (loaded []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kmod: internal error: %v", r)
		}
	}()
	if hasFilesystem(filepath.Join(l.Root, "proc/filesystems"), fstype) {
		return nil, nil
	}
	l.init()
	if l.ix == nil {
		ix, err := loadIndex(filepath.Join(l.Root, "lib/modules", l.Release))
		if err != nil {
			return nil, fmt.Errorf("kmod: filesystem %s: %w", fstype, err)
		}
		l.ix = ix
	}
	before := len(l.loaded)
	name := normalize(fstype)
	_, ok, err := l.ix.dep(name)
	builtin, berr := l.ix.isBuiltin(name)
	if err != nil || berr != nil {
		return nil, fmt.Errorf("kmod: filesystem %s: %w", fstype, errors.Join(err, berr))
	}
	if !ok && !builtin {
		return nil, fmt.Errorf("kmod: the kernel has no %s filesystem and %s has no %s module; add it to the image (or initramfs)",
			fstype, filepath.Join(l.ix.dir, "modules.dep"), name)
	}
	if err := l.load(name, device{path: "filesystem", modalias: "fs-" + fstype}, 0); err != nil {
		return nil, err
	}
	return append([]string(nil), l.loaded[before:]...), nil
}

func hasFilesystem(procFilesystems, fstype string) bool {
	f, err := os.Open(procFilesystems)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 0 && fields[len(fields)-1] == fstype {
			return true
		}
	}
	return false
}
