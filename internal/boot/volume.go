package boot

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/blockdev"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/fsutil"
	"github.com/spotroot/spotroot/internal/sysroot"
)

var errNoTool = fsutil.ErrNoTool

// findFilesystem picks the filesystem on disk and returns its device node.
func (b *booter) findFilesystem(ctx context.Context, sys blockdev.Sys, uev *blockdev.Listener, disk string, v config.Volume) (string, blockdev.FS, error) {
	node, err := sys.Node(disk)
	if err != nil {
		return "", blockdev.FS{}, err
	}
	f, err := os.Open(node)
	if err != nil {
		return "", blockdev.FS{}, fmt.Errorf("open %s: %w", node, err)
	}
	defer f.Close()
	sector := 512
	if s, err := os.ReadFile(filepath.Join(sys.SysBlock, disk, "queue", "logical_block_size")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(s))); err == nil && n > 0 {
			sector = n
		}
	}
	choice, err := blockdev.Choose(f, sector, v.Partition)
	if err != nil {
		return "", blockdev.FS{}, fmt.Errorf("%s (%s): %w", node, v.Describe(), err)
	}
	if choice.Partition == 0 {
		b.slog.Info("filesystem", "device", node, "fs", choice.FS.String())
		return node, choice.FS, nil
	}
	part, err := sys.WaitPartition(ctx, uev, disk, choice.Partition)
	if err != nil {
		return "", blockdev.FS{}, err
	}
	pnode, err := sys.Node(part)
	if err != nil {
		return "", blockdev.FS{}, err
	}
	b.slog.Info("filesystem", "device", pnode, "partition", choice.Partition, "label", choice.Label, "fs", choice.FS.String())
	return pnode, choice.FS, nil
}

// fixIdentityClash gives the volume a fresh filesystem UUID when it carries
// the image root's (a volume made from the AMI's snapshot): two disks with
// one UUID make UUID= lookups ambiguous for the real init.
func (b *booter) fixIdentityClash(ctx context.Context, dev string, fs *blockdev.FS) error {
	img, ok := imageRootFS()
	if !ok || fs.UUID == "" || img.UUID != fs.UUID {
		return nil
	}
	b.slog.Warn("the volume has the image root's filesystem UUID (made from the AMI snapshot?): giving it a new one", "device", dev, "uuid", fs.UUID)
	if err := b.tools.NewUUID(ctx, dev, fs.Type); err != nil {
		return fmt.Errorf("filesystem UUID %s clashes with the image root's and could not be changed: %w", fs.UUID, err)
	}
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	if nfs, ok := blockdev.Probe(f, 0); ok {
		b.slog.Info("new filesystem UUID", "device", dev, "uuid", nfs.UUID)
		*fs = nfs
	}
	return nil
}

// fixDiskIdentity gives the volume's disk a new GPT disk GUID and new
// PARTUUIDs where they equal the image disk's (a volume made from the AMI's
// snapshot; images boot with root=PARTUUID=). Crash-safe and repeatable:
// see blockdev.RenewClashingGPT. Must run before any partition is used.
func (b *booter) fixDiskIdentity(sys blockdev.Sys, disk string) error {
	img, ok := imageDiskGPT()
	if !ok {
		return nil
	}
	node, err := sys.Node(disk)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(node, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s to check its GPT identity: %w", node, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("size of %s: %w", node, err)
	}
	sector := 512
	if s, err := os.ReadFile(filepath.Join(sys.SysBlock, disk, "queue", "logical_block_size")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(s))); err == nil && n > 0 {
			sector = n
		}
	}
	changed, err := blockdev.RenewClashingGPT(f, size, sector, img)
	if err != nil {
		return fmt.Errorf("%s has the image disk's GPT identity and it could not be changed: %w", node, err)
	}
	if len(changed) == 0 {
		return nil
	}
	b.slog.Warn("the volume's GPT had the image disk's identity (made from the AMI snapshot?): new GUIDs written", "device", node, "changed", strings.Join(changed, ", "))
	return blockdev.RereadPartitions(f)
}

// imageDiskGPT reads the GPT identity of the disk holding the running root.
func imageDiskGPT() (blockdev.GPTIdentity, bool) {
	dev, ok := rootDevNumber()
	if !ok {
		return blockdev.GPTIdentity{}, false
	}
	sysdir, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return blockdev.GPTIdentity{}, false
	}
	if _, err := os.Stat(filepath.Join(sysdir, "partition")); err != nil {
		return blockdev.GPTIdentity{}, false // a whole-disk root has no GPT
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(sysdir), "dev"))
	if err != nil {
		return blockdev.GPTIdentity{}, false
	}
	var maj, min uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err != nil {
		return blockdev.GPTIdentity{}, false
	}
	node := filepath.Join("/dev", "spotroot-imagedisk")
	_ = unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min)))
	defer os.Remove(node)
	f, err := os.Open(node)
	if err != nil {
		return blockdev.GPTIdentity{}, false
	}
	defer f.Close()
	return blockdev.ReadGPTIdentity(f, 512)
}

// imageRootFS identifies the filesystem of the running root ("/").
func imageRootFS() (blockdev.FS, bool) {
	dev, ok := rootDevNumber()
	if !ok {
		return blockdev.FS{}, false
	}
	node := filepath.Join("/dev", "spotroot-imageroot")
	_ = unix.Mknod(node, unix.S_IFBLK|0o600, int(dev))
	defer os.Remove(node)
	f, err := os.Open(node)
	if err != nil {
		return blockdev.FS{}, false
	}
	defer f.Close()
	return blockdev.Probe(f, 0)
}

// rootDevNumber reads the device of "/" from mountinfo (the kernel names a
// root it mounted /dev/root, so the name is useless; the number is not).
func rootDevNumber() (uint64, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && fields[4] == "/" {
			var maj, min uint32
			if _, err := fmt.Sscanf(fields[2], "%d:%d", &maj, &min); err == nil && maj != 0 {
				return unix.Mkdev(maj, min), true
			}
		}
	}
	return 0, false
}

// fixModules lends the image's kernel modules to a persistent root that has
// none for the running kernel: the AMI's kernel is what boots, whatever the
// volume's packages say.
func (b *booter) fixModules() {
	if b.initramfs {
		// The image root is not mounted: the initramfs's few modules are
		// freed with it, so there is nothing worth lending.
		return
	}
	rel := kernelRelease()
	want := filepath.Join(b.paths.NewRoot, "lib/modules", rel)
	// modules.dep, not the directory: an earlier boot left the directory
	// behind as its mount point.
	if _, err := os.Stat(filepath.Join(want, "modules.dep")); err == nil {
		return
	}
	src := filepath.Join("/lib/modules", rel)
	if _, err := os.Stat(src); err != nil {
		b.slog.Warn("neither the volume nor the image has modules for the running kernel", "kernel", rel)
		return
	}
	if err := mkdirOnRO(want); err != nil {
		b.slog.Warn("cannot lend the image's kernel modules to the volume", "kernel", rel, "error", err)
		return
	}
	if err := unix.Mount(src, want, "", unix.MS_BIND, ""); err != nil {
		b.slog.Warn("cannot lend the image's kernel modules to the volume", "kernel", rel, "error", err)
		return
	}
	_ = unix.Mount("", want, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
	b.slog.Warn("the volume has no modules for the running kernel: the image's are bind-mounted read-only; install the kernel's modules on the volume", "kernel", rel, "at", "/lib/modules/"+rel)
}

// findInit resolves the init to exec on the persistent root. A volume made
// from this image carries spotroot as its /sbin/init: running it again would
// loop, so the image init configured (or the usual ones) is used instead.
func (b *booter) findInit(root config.Volume) (string, error) {
	init, err := sysroot.Check(b.paths.NewRoot, b.cfg.Init)
	if err != nil {
		return "", err
	}
	if !isSpotroot(filepath.Join(b.paths.NewRoot, init)) {
		return init, nil
	}
	candidates := config.ImageInitCandidates
	if b.cfg.ImageInit != "" {
		candidates = append([]string{b.cfg.ImageInit}, candidates...)
	}
	for _, c := range candidates {
		if alt, err := sysroot.Check(b.paths.NewRoot, c); err == nil && !isSpotroot(filepath.Join(b.paths.NewRoot, alt)) {
			b.slog.Info("the volume's init is spotroot itself (a copy of this image): using its image init", "init", alt)
			return alt, nil
		}
	}
	return "", fmt.Errorf("init %s on %s is spotroot itself and the volume has none of %s", init, root.Describe(), strings.Join(candidates, ", "))
}

// Marker is a string every spotroot binary contains, to recognise one.
var Marker = "spotroot-binary-marker:8f3c1e"

// writeTimeline leaves the boot record in /run (bound into the new root) for
// the real init's logs and `spotroot status`.
func (b *booter) writeTimeline() {
	lines := append(b.log.Lines(), b.record...)
	_ = os.MkdirAll(filepath.Dir(b.paths.Timeline), 0o755)
	_ = os.WriteFile(b.paths.Timeline, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
