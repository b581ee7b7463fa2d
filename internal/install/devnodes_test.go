package install

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/testenv"
)

func TestDevNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mknod needs root")
	}
	root, bin := image(t)
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if err := Install(Opts{Root: root, Method: "sbin-init", Source: bin}); err != nil {
		t.Fatal(err)
	}
	for _, n := range devNodes {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, "dev", n.name), &st); err != nil {
			t.Fatalf("/dev/%s: %v", n.name, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(n.major, n.minor) {
			t.Errorf("/dev/%s: mode %o rdev %d:%d, want character device %d:%d", n.name, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), n.major, n.minor)
		}
	}
	// Below a mount on /dev (devtmpfs on a running system): the nodes go
	// on the root's own filesystem, not into the mount.
	root2, bin2 := image(t)
	dev := filepath.Join(root2, "dev")
	os.MkdirAll(dev, 0o755)
	if err := unix.Mount("tmpfs", dev, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dev, unix.MNT_DETACH)
	if err := Install(Opts{Root: root2, Method: "init-arg", Source: bin2}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dev, "null")); err == nil {
		t.Errorf("/dev/null was created in the filesystem mounted on /dev")
	}
	unix.Unmount(dev, unix.MNT_DETACH)
	if _, err := os.Lstat(filepath.Join(dev, "null")); err != nil {
		t.Errorf("no /dev/null below the mount: %v", err)
	}
}
