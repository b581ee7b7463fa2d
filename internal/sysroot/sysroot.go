// Package sysroot turns a mounted volume into the root filesystem and hands
// PID 1 over to its init: the API filesystems move along, the image's root is
// detached, and the real init starts as PID 1 as if the kernel had mounted
// the volume itself.
package sysroot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount mounts dev on target with fstype, read-only unless rw.
func Mount(dev, target, fstype string, rw bool, options string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create mount point %s: %w", target, err)
	}
	var flags uintptr
	if !rw {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(dev, target, fstype, flags, options); err != nil {
		hint := ""
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EUCLEAN) {
			hint = " (the filesystem is corrupt or not " + fstype + ")"
		} else if errors.Is(err, unix.ENODEV) {
			hint = " (the kernel has no " + fstype + " driver loaded)"
		}
		return fmt.Errorf("mount %s (%s) on %s: %w%s", dev, fstype, target, err, hint)
	}
	return nil
}

// APIMounts move from the old root to the new one; /run is bound, not moved,
// because the new root itself is mounted below /run.
var APIMounts = []string{"/dev", "/proc", "/sys"}

// Check verifies, before anything irreversible, that newRoot can take over:
// the directories the API filesystems move to exist, and init resolves
// inside newRoot to an executable for this machine.
func Check(newRoot, init string) (resolved string, err error) {
	for _, d := range append(APIMounts, "/run") {
		st, err := os.Stat(filepath.Join(newRoot, d))
		if err != nil || !st.IsDir() {
			return "", fmt.Errorf("the volume has no %s directory to move %s to; it is not a root filesystem", d, d)
		}
	}
	resolved, err = ResolveIn(newRoot, init)
	if err != nil {
		return "", fmt.Errorf("init %s on the volume: %w", init, err)
	}
	if err := checkExecutable(filepath.Join(newRoot, resolved)); err != nil {
		return "", fmt.Errorf("init %s on the volume: %w", init, err)
	}
	return resolved, nil
}

// ResolveIn follows symlinks of p as if root were "/" and returns the final
// path relative to root (starting with "/"). Absolute links stay inside root.
func ResolveIn(root, p string) (string, error) {
	cur := path.Clean("/" + p)
	for range 40 {
		var resolved string
		parts := strings.Split(strings.TrimPrefix(cur, "/"), "/")
		linked := false
		for i, part := range parts {
			next := path.Join("/", resolved, part)
			fi, err := os.Lstat(filepath.Join(root, next))
			if err != nil {
				return "", fmt.Errorf("%s: %w", next, errors.Unwrap(err))
			}
			if fi.Mode()&os.ModeSymlink == 0 {
				resolved = next
				continue
			}
			target, err := os.Readlink(filepath.Join(root, next))
			if err != nil {
				return "", err
			}
			if !path.IsAbs(target) {
				target = path.Join("/", resolved, target)
			}
			cur = path.Join(append([]string{target}, parts[i+1:]...)...)
			linked = true
			break
		}
		if !linked {
			return path.Clean("/" + resolved), nil
		}
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file (mode %v)", p, st.Mode())
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	// The ELF identification and e_type/e_machine are all the kernel's
	// execve looks at before loading; debug/elf would parse every section
	// header too and links ~120 KiB (DWARF, zlib, zstd) into PID 1.
	var h [20]byte
	n, _ := io.ReadFull(f, h[:])
	if n >= 2 && string(h[:2]) == "#!" {
		return nil // the kernel runs the script's interpreter
	}
	if n < len(h) || string(h[:4]) != "\x7fELF" {
		return fmt.Errorf("%s is neither an ELF binary nor a script", p)
	}
	var order binary.ByteOrder
	switch h[5] { // EI_DATA
	case 1:
		order = binary.LittleEndian
	case 2:
		order = binary.BigEndian
	default:
		return fmt.Errorf("%s is a corrupt ELF file (byte order %d)", p, h[5])
	}
	if t := order.Uint16(h[16:]); t != etExec && t != etDyn {
		return fmt.Errorf("%s is an ELF file but not an executable (e_type %d)", p, t)
	}
	if want, ok := machines[runtime.GOARCH]; ok {
		if got := order.Uint16(h[18:]); got != want {
			return fmt.Errorf("%s is built for %s, this machine is %s", p, machineName(got), runtime.GOARCH)
		}
	}
	return nil
}

// ELF e_type and e_machine values (the ELF spec; debug/elf's ET_*, EM_*).
const (
	etExec = 2
	etDyn  = 3
)

var machines = map[string]uint16{"386": 3, "arm": 40, "amd64": 62, "arm64": 183, "riscv64": 243, "ppc64le": 21, "s390x": 22}

func machineName(m uint16) string {
	for arch, v := range machines {
		if v == m {
			return arch
		}
	}
	return fmt.Sprintf("ELF machine %d", m)
}

// Switch makes newRoot the root: API filesystems move into it, /run is bound
// into it, then pivot_root; from an initramfs (rootfs cannot be pivoted) the
// new root is moved over / and chrooted into instead. The old root is
// detached. On return the process's root and cwd are the new root.
func Switch(newRoot string) error {
	// Decided before /proc moves away: only the kernel's own rootfs, under
	// PID 1, is ever emptied below.
	initramfs := os.Getpid() == 1 && IsInitramfs()
	// pivot_root and MS_MOVE refuse shared mounts.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	for _, m := range APIMounts {
		if err := unix.Mount(m, filepath.Join(newRoot, m), "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s: %w", m, filepath.Join(newRoot, m), err)
		}
	}
	// Non-recursive bind: the new root's own mount below /run is not copied.
	if err := unix.Mount("/run", filepath.Join(newRoot, "run"), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /run into %s: %w", newRoot, err)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("chdir %s: %w", newRoot, err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one; a lazy
	// unmount of "." then drops it, without needing a directory for it.
	err := unix.PivotRoot(".", ".")
	switch {
	case err == nil:
		if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach the old root: %w", err)
		}
	case errors.Is(err, unix.EINVAL):
		// rootfs (initramfs) cannot be pivoted: free its contents (nothing
		// could reach them again, and the memory is the instance's), then
		// move the new root over it, as switch_root does.
		if initramfs {
			_, _, _ = FreeTree("/")
		}
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to /: %w", newRoot, err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot: %w", err)
		}
	default:
		return fmt.Errorf("pivot_root %s: %w", newRoot, err)
	}
	return unix.Chdir("/")
}

// IsInitramfs reports whether / is the kernel's rootfs (an initramfs): a
// ramfs or tmpfs that /proc/self/mountinfo lists as "rootfs".
func IsInitramfs() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil || (st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC) {
		return false
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	fstype := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || f[4] != "/" {
			continue
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				fstype = f[i+1] // the last mount on / is the one in use
			}
		}
	}
	return fstype == "rootfs"
}

// FreeTree deletes everything below dir that is on dir's filesystem,
// without following symlinks or descending into other mounts (which are
// kept, with the directories leading to them), and returns how many
// entries and file bytes it removed. Errors are collected, not fatal: what
// cannot be removed stays.
func FreeTree(dir string) (entries int, bytes int64, err error) {
	var root unix.Stat_t
	if err := unix.Lstat(dir, &root); err != nil {
		return 0, 0, err
	}
	var errs []error
	var walk func(d string) bool // reports whether d is now empty
	walk = func(d string) bool {
		f, err := os.Open(d)
		if err != nil {
			errs = append(errs, err)
			return false
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			errs = append(errs, err)
			return false
		}
		empty := true
		for _, n := range names {
			p := filepath.Join(d, n)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				errs = append(errs, err)
				empty = false
				continue
			}
			if st.Dev != root.Dev {
				empty = false // a mount point: keep it and what is below
				continue
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if !walk(p) {
					empty = false
					continue
				}
				if err := unix.Rmdir(p); err != nil {
					errs = append(errs, err)
					empty = false
					continue
				}
				entries++
				continue
			}
			if err := unix.Unlink(p); err != nil {
				errs = append(errs, err)
				empty = false
				continue
			}
			entries++
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				bytes += st.Size
			}
		}
		return empty
	}
	walk(dir)
	return entries, bytes, errors.Join(errs...)
}

// Exec replaces this process with init. argv[0] becomes init; the rest of
// argv and env are passed on unchanged (the kernel's own).
func Exec(init string, argv, env []string) error {
	args := append([]string{init}, argv[min(1, len(argv)):]...)
	return fmt.Errorf("exec %s: %w", init, unix.Exec(init, args, env))
}
