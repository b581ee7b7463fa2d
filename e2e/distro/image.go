package distro

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/spotroot/spotroot/e2e/kernel"
)

// File is a file to add to an image: the bytes Data, a copy of Src, or a
// symbolic link to Link. Path is relative to the image root.
type File struct {
	Path string
	Data []byte
	Src  string
	Link string
	Mode os.FileMode // 0 = 0o644 for Data, 0o755 for Src
}

// ImageOpts describes a disk made from a Rootfs.
type ImageOpts struct {
	Rootfs  Rootfs
	Out     string        // image file (replaced)
	Kernel  kernel.Kernel // its modules tree goes to /usr/lib/modules/<version>
	SizeMiB int           // whole disk
	// Layout "whole": the ext4 filesystem is the whole disk (like the e2e
	// AMI, root=/dev/nvme0n1); "gpt": one "Linux filesystem" partition
	// named PartLabel from 1 MiB to 1 MiB before the end (the volume).
	Layout    string
	PartLabel string
	FSLabel   string // ext4 label; /etc/fstab mounts / by it
	Files     []File // added last (may replace files of the root)
}

// BuildImage extracts the root, adds the kernel modules, an /etc/fstab that
// mounts / by LABEL= (device names differ between the AMI disk and a
// hot-plugged volume) and the extra files, and writes the disk without
// mounting anything (mkfs.ext4 -d). It needs root.
func BuildImage(ctx context.Context, o ImageOpts) error {
	if o.FSLabel == "" || len(o.FSLabel) > 16 {
		return fmt.Errorf("BuildImage: ext4 label %q: need 1 to 16 characters", o.FSLabel)
	}
	stage, err := os.MkdirTemp(filepath.Dir(o.Out), ".distro-stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if out, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
		"-xpf", o.Rootfs.Tar, "-C", stage).CombinedOutput(); err != nil {
		return fmt.Errorf("extracting %s: %w: %s", o.Rootfs.Tar, err, out)
	}
	if o.Kernel.ModulesDir != "" {
		dst := filepath.Join(stage, "usr/lib/modules")
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "cp", "-a", o.Kernel.ModulesDir, filepath.Join(dst, o.Kernel.Version)).CombinedOutput(); err != nil {
			return fmt.Errorf("copying kernel modules: %w: %s", err, out)
		}
	}
	fstab := fmt.Sprintf("# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\nLABEL=%s\t/\text4\trw,errors=remount-ro\t0\t1\n", o.FSLabel)
	files := append([]File{{Path: "etc/fstab", Data: []byte(fstab)}}, o.Files...)
	if err := addFiles(stage, files); err != nil {
		return err
	}
	size := int64(o.SizeMiB) << 20
	switch o.Layout {
	case "whole":
		return mkfs(ctx, stage, o.Out, size, o.FSLabel)
	case "gpt":
		return gptDisk(ctx, stage, o.Out, size, o.PartLabel, o.FSLabel)
	default:
		return fmt.Errorf("BuildImage: layout %q (want whole or gpt)", o.Layout)
	}
}

func addFiles(stage string, files []File) error {
	for _, f := range files {
		dst := filepath.Join(stage, filepath.Clean("/"+f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		var err error
		switch {
		case f.Link != "":
			err = os.Symlink(f.Link, dst)
		case f.Src != "":
			mode := f.Mode
			if mode == 0 {
				mode = 0o755
			}
			var b []byte
			if b, err = os.ReadFile(f.Src); err == nil {
				err = os.WriteFile(dst, b, mode)
			}
		default:
			mode := f.Mode
			if mode == 0 {
				mode = 0o644
			}
			if err = os.WriteFile(dst, f.Data, mode); err == nil {
				err = os.Chmod(dst, mode)
			}
		}
		if err != nil {
			return fmt.Errorf("adding %s: %w", f.Path, err)
		}
	}
	return nil
}

// BuildDataDisk writes a whole-disk ext4 image labelled label holding files,
// e.g. a disk that carries a binary into a guest.
func BuildDataDisk(ctx context.Context, out, label string, sizeMiB int, files []File) error {
	stage, err := os.MkdirTemp(filepath.Dir(out), ".data-stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := addFiles(stage, files); err != nil {
		return err
	}
	return mkfs(ctx, stage, out, int64(sizeMiB)<<20, label)
}

func mkfs(ctx context.Context, stage, out string, size int64, label string) error {
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// No lazy init: the guest would zero inode tables in the background.
	args := []string{"-q", "-F", "-t", "ext4", "-L", label, "-E", "lazy_itable_init=0,lazy_journal_init=0",
		"-d", stage, out, fmt.Sprintf("%dk", size>>10)}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// PartitionOffset is where gpt images put their filesystem.
const PartitionOffset = 1 << 20

func gptDisk(ctx context.Context, stage, out string, size int64, partLabel, fsLabel string) error {
	if size < 4*PartitionOffset {
		return fmt.Errorf("%d bytes is too small for GPT", size)
	}
	partStart, partEnd := int64(PartitionOffset), size-PartitionOffset
	fsImg := out + ".fs.tmp"
	defer os.Remove(fsImg)
	if err := mkfs(ctx, stage, fsImg, partEnd-partStart, fsLabel); err != nil {
		return err
	}
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	d, err := diskfs.Create(out, size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("go-diskfs create %s: %w", out, err)
	}
	table := &gpt.Table{
		LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{
			Index: 1, Start: uint64(partStart / 512), End: uint64(partEnd/512) - 1,
			Size: uint64(partEnd - partStart), Type: gpt.LinuxFilesystem, Name: partLabel,
		}},
	}
	if err := d.Partition(table); err != nil {
		d.Close()
		return fmt.Errorf("go-diskfs partition %s: %w", out, err)
	}
	if err := d.Close(); err != nil {
		return err
	}
	src, err := os.Open(fsImg)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := copySparse(dst, src, partStart); err != nil {
		dst.Close()
		return fmt.Errorf("writing filesystem into %s: %w", out, err)
	}
	return dst.Close()
}

// CopySparse copies the image src to the new file dst, keeping holes.
func CopySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	st, err := in.Stat()
	if err == nil {
		err = copySparse(out, in, 0)
	}
	if err == nil {
		err = out.Truncate(st.Size())
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func copySparse(dst, src *os.File, off int64) error {
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for {
		n, err := io.ReadFull(src, buf)
		for i := 0; i < n; i += 4096 {
			j := min(i+4096, n)
			if !bytes.Equal(buf[i:j], zero[i:j]) {
				if _, err := dst.WriteAt(buf[i:j], off+int64(i)); err != nil {
					return err
				}
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// FSState is what the ext4 superblock of an image says about how it was
// left, and whether e2fsck -fn finds it consistent.
type FSState struct {
	State         string // dumpe2fs "Filesystem state", e.g. "clean"
	NeedsRecovery bool   // journal not replayed: not cleanly unmounted
	FsckOK        bool
	Dumpe2fs      string // dumpe2fs -h output
	Fsck          string // e2fsck -fn output
}

// CheckFS inspects the ext4 filesystem at byte offset off of img (0 for a
// whole-disk filesystem). It copies the partition out when offset is
// non-zero, since the e2fsprogs tools want a device or a file.
func CheckFS(ctx context.Context, img string, off int64) (FSState, error) {
	var st FSState
	target := img
	if off != 0 {
		tmp, err := os.CreateTemp(filepath.Dir(img), ".fscheck-")
		if err != nil {
			return st, err
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if err := copyRange(img, tmp.Name(), off); err != nil {
			return st, err
		}
		target = tmp.Name()
	}
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", target).CombinedOutput()
	st.Dumpe2fs = string(out)
	if err != nil {
		return st, fmt.Errorf("dumpe2fs -h: %w: %s", err, out)
	}
	for _, l := range strings.Split(st.Dumpe2fs, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Filesystem state":
			st.State = strings.TrimSpace(v)
		case "Filesystem features":
			for _, f := range strings.Fields(v) {
				st.NeedsRecovery = st.NeedsRecovery || f == "needs_recovery"
			}
		}
	}
	out, err = exec.CommandContext(ctx, "e2fsck", "-fn", target).CombinedOutput()
	st.Fsck = string(out)
	st.FsckOK = err == nil
	return st, nil
}

func copyRange(src, dst string, off int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if _, err := in.Seek(off, io.SeekStart); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := copySparse(out, in, 0); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ReadFile returns the file at path inside the ext4 filesystem at byte
// offset off of img (debugfs, nothing is mounted).
func ReadFile(ctx context.Context, img string, off int64, path string) ([]byte, error) {
	target := img
	if off != 0 {
		tmp, err := os.CreateTemp(filepath.Dir(img), ".fsread-")
		if err != nil {
			return nil, err
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if err := copyRange(img, tmp.Name(), off); err != nil {
			return nil, err
		}
		target = tmp.Name()
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "cat "+path, target)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("debugfs cat %s: %w: %s", path, err, stderr.String())
	}
	if strings.Contains(stderr.String(), "File not found") {
		return nil, fmt.Errorf("%s: not found in %s", path, img)
	}
	return stdout.Bytes(), nil
}
