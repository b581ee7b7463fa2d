// Package fsutil runs the image's own filesystem tools (fsck, mkfs, UUID
// changes) on a volume before spotroot mounts it. spotroot carries none of
// its own: the image's tools match the filesystems its distribution makes.
package fsutil

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Tools finds programs in the image root (Root "" or "/" = this root).
type Tools struct {
	Root string
	// Dirs are searched in order.
	Dirs []string
}

// DefaultTools searches the usual sbin/bin directories of the running root.
var DefaultTools = Tools{Dirs: []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"}}

// ErrNoTool means the image lacks the program.
var ErrNoTool = errors.New("not in the image")

// Find returns the path of a program.
func (t Tools) Find(name string) (string, error) {
	for _, d := range t.Dirs {
		p := filepath.Join(t.Root, d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, ErrNoTool)
}

// run runs a tool to completion. ctx only decides whether it starts: a
// checker or a UUID rewrite killed mid-write is what corrupts a filesystem,
// so a budget that runs out is noticed between steps, never inside one.
func (t Tools) run(ctx context.Context, name string, args ...string) (int, string, error) {
	p, err := t.Find(name)
	if err != nil {
		return -1, "", err
	}
	if err := ctx.Err(); err != nil {
		return -1, "", fmt.Errorf("not starting %s %s: the budget for filesystem checks and fixes ran out (timeouts.fsck): %w", name, strings.Join(args, " "), err)
	}
	cmd := exec.Command(p, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/sbin:/sbin:/usr/bin:/bin"}
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code, err = ee.ExitCode(), nil
	}
	return code, lastLines(out.String(), 3), err
}

// Check runs the image's checker on an unmounted filesystem, repairing
// what is safe to repair (e2fsck -p), and fails on what is not.
// Filesystems without a safe unattended checker (btrfs) are skipped.
func (t Tools) Check(ctx context.Context, dev, fstype string) (string, error) {
	switch fstype {
	case "ext4", "ext3", "ext2":
		args := []string{"-p", dev}
		code, out, err := t.run(ctx, "e2fsck", args...)
		if err == nil && code&8 != 0 {
			// A primary superblock whose checksum no longer matches (a
			// check or UUID change cut mid-write): e2fsck -p will not open
			// it, e2fsck's own advice is a backup superblock, and -p still
			// repairs only what is safe (a journal the backup does not
			// flag is replayed anyway: "Recovery flag not set in backup
			// superblock, so running journal anyway").
			if sb, rerr := readSuperblock(dev); rerr == nil && tornSuperblock(sb) {
				if block, size, ok := backupSuperblock(sb); ok {
					args = []string{"-p", "-b", strconv.FormatUint(block, 10), "-B", strconv.FormatUint(uint64(size), 10), dev}
					code, out, err = t.run(ctx, "e2fsck", args...)
					out = fmt.Sprintf("the primary superblock's checksum did not match; checked from the backup at block %d: %s", block, out)
				}
			}
		}
		switch {
		case err != nil:
			return "", err
		case code == 0:
			return "clean", nil
		case code == 1 || code == 2:
			return "errors corrected: " + out, nil
		}
		return "", fmt.Errorf("e2fsck %s exited %d (uncorrected errors): %s; repair it from another instance with e2fsck -f", strings.Join(args, " "), code, out)
	case "xfs":
		code, out, err := t.run(ctx, "xfs_repair", "-n", dev)
		switch {
		case err != nil:
			return "", err
		case code == 0:
			return "clean", nil
		}
		return "", fmt.Errorf("xfs_repair -n %s exited %d (corruption found): %s; repair it from another instance with xfs_repair", dev, code, out)
	}
	return "", fmt.Errorf("%s: %w", fstype, ErrNoTool)
}

// Format makes a new filesystem on an empty volume.
func (t Tools) Format(ctx context.Context, dev, fstype, label string) error {
	var args []string
	switch fstype {
	case "ext4":
		args = []string{"-q", "-F"}
	case "xfs":
		args = []string{"-q", "-f"}
	case "btrfs":
		args = []string{"-q", "-f"}
	default:
		return fmt.Errorf("format %s: unsupported filesystem %q", dev, fstype)
	}
	if label != "" {
		args = append(args, "-L", label)
	}
	code, out, err := t.run(ctx, "mkfs."+fstype, append(args, dev)...)
	if err != nil {
		return fmt.Errorf("format %s as %s: %w", dev, fstype, err)
	}
	if code != 0 {
		return fmt.Errorf("format %s as %s: mkfs.%s exited %d: %s", dev, fstype, fstype, code, out)
	}
	return nil
}

// NewUUID gives the filesystem a fresh random UUID.
func (t Tools) NewUUID(ctx context.Context, dev, fstype string) error {
	var name string
	var args []string
	switch fstype {
	case "ext4", "ext3", "ext2":
		feat, err := ext4Features(dev)
		if err != nil {
			return fmt.Errorf("new UUID for %s: %w", dev, err)
		}
		switch {
		case feat.metadataCsum:
			// With metadata_csum, a new UUID without a stored checksum
			// seed rewrites the checksum of every metadata block: minutes
			// on a lazily loaded EBS volume, and a cut half-way leaves a
			// filesystem no kernel mounts. metadata_csum_seed keeps the
			// seed in the superblock, so the UUID change (and adding the
			// seed, if missing) is a superblock write.
			name, args = "tune2fs", []string{"-U", "random", dev}
			if !feat.csumSeed {
				args = []string{"-O", "metadata_csum_seed", "-U", "random", dev}
			}
		default:
			// Group descriptor checksums (uninit_bg) are rewritten; tune2fs
			// wants a checked filesystem for that.
			if code, out, err := t.run(ctx, "e2fsck", "-f", "-p", dev); err != nil || code > 2 {
				return fmt.Errorf("new UUID for %s: e2fsck -f -p exited %d: %s %v", dev, code, out, err)
			}
			name, args = "tune2fs", []string{"-U", "random", dev}
		}
	case "xfs":
		name, args = "xfs_admin", []string{"-U", "generate", dev}
	case "btrfs":
		// -m changes only the superblock's fsid (metadata_uuid); -u would
		// rewrite every metadata block.
		name, args = "btrfstune", []string{"-m", dev}
	default:
		return fmt.Errorf("new UUID for %s: unsupported filesystem %q", dev, fstype)
	}
	code, out, err := t.run(ctx, name, args...)
	if err != nil {
		return fmt.Errorf("new UUID for %s: %w", dev, err)
	}
	if code != 0 {
		return fmt.Errorf("new UUID for %s: %s exited %d: %s", dev, name, code, out)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

type ext4Feat struct{ metadataCsum, csumSeed bool }

// ext4Features reads the checksum features from the superblock.
func ext4Features(dev string) (ext4Feat, error) {
	f, err := os.Open(dev)
	if err != nil {
		return ext4Feat{}, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return ext4Feat{}, fmt.Errorf("read the superblock: %w", err)
	}
	if sb[56] != 0x53 || sb[57] != 0xef {
		return ext4Feat{}, fmt.Errorf("no ext2/3/4 superblock")
	}
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	roCompat := binary.LittleEndian.Uint32(sb[0x64:])
	return ext4Feat{metadataCsum: roCompat&0x400 != 0, csumSeed: incompat&0x2000 != 0}, nil
}
