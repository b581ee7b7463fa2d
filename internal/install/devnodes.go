package install

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// devNodes are the nodes the image root keeps below /dev. Go's runtime
// opens /dev/null for fds 0–2 before main when PID 1 starts without them
// (no console device) and aborts if it cannot; no Go code runs earlier, so
// the node has to be on the disk. /dev/console lets the kernel of an older
// (< 5.8) Linux give PID 1 its console.
var devNodes = []struct {
	name         string
	major, minor uint32
	mode         uint32
}{
	{"null", 1, 3, 0o666},
	{"console", 5, 1, 0o600},
}

// ensureDevNodes creates the missing devNodes in the root's own /dev, below
// whatever is mounted there (devtmpfs on a running system, reached through
// a private bind mount of the root). A failure is reported, not fatal:
// most images have the nodes already.
func ensureDevNodes(root string, out io.Writer) {
	if err := makeDevNodes(root); err != nil {
		fmt.Fprintf(out, "warning: %s/dev: %v; the image needs /dev/null on disk for a boot without a console\n", root, err)
	}
}

func makeDevNodes(root string) error {
	dev := filepath.Join(root, "dev")
	var st, rst unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return err
	}
	if err := unix.Stat(root, &rst); err != nil {
		return err
	}
	if st.Dev != rst.Dev {
		// Something is mounted on /dev: bind the root filesystem alone
		// (non-recursive) somewhere private to reach the directory below.
		tmp, err := os.MkdirTemp("", "spotroot-rootfs-")
		if err != nil {
			return err
		}
		defer os.Remove(tmp)
		if err := unix.Mount(root, tmp, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s to reach the directory below the /dev mount: %w", root, err)
		}
		defer unix.Unmount(tmp, unix.MNT_DETACH)
		dev = filepath.Join(tmp, "dev")
	}
	for _, n := range devNodes {
		p := filepath.Join(dev, n.name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := unix.Mknod(p, unix.S_IFCHR|n.mode, int(unix.Mkdev(n.major, n.minor))); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
	}
	return nil
}
