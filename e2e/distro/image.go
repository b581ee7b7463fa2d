package distro

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/kernel"
)

// File is a file to add to an image (the e2e images' own type).
type File = images.File

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
	if err := images.AddFiles(stage, files); err != nil {
		return err
	}
	size := int64(o.SizeMiB) << 20
	switch o.Layout {
	case "whole":
		return images.Mkfs(ctx, stage, o.Out, size, o.FSLabel)
	case "gpt":
		return gptDisk(ctx, stage, o.Out, size, o.PartLabel, o.FSLabel)
	default:
		return fmt.Errorf("BuildImage: layout %q (want whole or gpt)", o.Layout)
	}
}

// BuildDataDisk writes a whole-disk ext4 image labelled label holding files,
// e.g. a disk that carries a binary into a guest.
func BuildDataDisk(ctx context.Context, out, label string, sizeMiB int, files []File) error {
	stage, err := os.MkdirTemp(filepath.Dir(out), ".data-stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := images.AddFiles(stage, files); err != nil {
		return err
	}
	return images.Mkfs(ctx, stage, out, int64(sizeMiB)<<20, label)
}

// PartitionOffset is where gpt images put their filesystem.
const PartitionOffset = images.PartitionOffset

func gptDisk(ctx context.Context, stage, out string, size int64, partLabel, fsLabel string) error {
	if size < 4*PartitionOffset {
		return fmt.Errorf("%d bytes is too small for GPT", size)
	}
	fsImg := out + ".fs.tmp"
	defer os.Remove(fsImg)
	if err := images.Mkfs(ctx, stage, fsImg, size-2*PartitionOffset, fsLabel); err != nil {
		return err
	}
	return images.WrapGPT(fsImg, out, size, partLabel)
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
		err = images.CopySparseAt(out, in, 0)
	}
	if err == nil {
		err = out.Truncate(st.Size())
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
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
	if err := images.CopySparseAt(out, in, 0); err != nil {
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
