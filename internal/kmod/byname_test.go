package kmod

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadFilesystem(t *testing.T) {
	ft := newFakeTree(t)
	mdir := filepath.Join(ft.root, "lib/modules", rel)
	write(t, filepath.Join(mdir, "modules.dep"), fakeDep+
		"kernel/lib/libcrc32c.ko:\nkernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\n")
	write(t, filepath.Join(mdir, "kernel/lib/libcrc32c.ko"), "\x7fELF")
	write(t, filepath.Join(mdir, "kernel/fs/xfs/xfs.ko"), "\x7fELF")
	write(t, filepath.Join(ft.root, "proc/filesystems"), "nodev\tsysfs\nnodev\ttmpfs\n\text4\n")
	k := &kernel{ft: ft}
	l := ft.loader(k)

	got, err := l.LoadFilesystem("ext4")
	if err != nil || len(got) != 0 || len(k.order) != 0 {
		t.Fatalf("ext4 is in /proc/filesystems: loaded %v, %v", got, err)
	}
	got, err = l.LoadFilesystem("xfs")
	if err != nil || !reflect.DeepEqual(got, []string{"libcrc32c", "xfs"}) {
		t.Fatalf("xfs: loaded %v, %v", got, err)
	}
	_, err = l.LoadFilesystem("btrfs")
	if err == nil || !strings.Contains(err.Error(), "has no btrfs module") {
		t.Fatalf("btrfs err = %v", err)
	}
}
