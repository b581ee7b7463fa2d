// Package images builds the disk images of the e2e world without mounting
// anything: filesystems are populated by `mkfs.ext4 -d` from a staging
// directory, partition tables are written with go-diskfs. It must run as root
// (files in the images are owned by the caller, device nodes need mknod).
package images

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/e2e/kernel"
)

// DefaultModules is the virtio_net chain, in load order.
var DefaultModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
	"virtio_pci", "failover", "net_failover", "virtio_net",
	// A NIC on the virtio-mmio transport (a platform device, not PCI).
	"virtio_mmio",
	// Filesystems that are modules in the cloud kernel, loaded by spotroot
	// before mounting a volume that holds them.
	"xfs", "btrfs",
}

// AMIOpts describes an image ("AMI") root disk.
type AMIOpts struct {
	Out         string        // image file to write (replaced)
	SpotrootBin string        // installed as /sbin/init; "" = testinit is /sbin/init (initramfs mode)
	TestinitBin string        // installed as /sbin/init.real
	Kernel      kernel.Kernel // modules come from here
	Modules     []string      // module names, dependencies added; nil = DefaultModules
	ImageConfig []byte        // optional /etc/spotroot/config.yaml
	SizeMiB     int           // 0 = 64
	// HostTools are host programs copied in with their shared libraries
	// (nil = DefaultHostTools), as a real AMI has e2fsprogs.
	HostTools []string
	// UUID, if set, is the root filesystem's UUID.
	UUID string
	// Files are extra files, added after the defaults.
	Files []File
	// NoDevNodes leaves /dev empty (no console, no null), as a root made
	// by a tool that does not create device nodes; booted without an
	// initramfs on a kernel without DEVTMPFS_MOUNT, PID 1 finds no /dev.
	NoDevNodes bool
}

// DefaultHostTools are the filesystem tools spotroot runs from the image.
var DefaultHostTools = []string{"e2fsck", "tune2fs", "mkfs.ext4"}

// BuildAMI writes a whole-disk ext4 image: /sbin/init = spotroot,
// /sbin/init.real = testinit, /etc/spotroot-test/kind = image, and the chosen
// kernel modules' files under the kernel's whole depmod index (stageModules).
func BuildAMI(ctx context.Context, o AMIOpts) error {
	if o.SizeMiB == 0 {
		o.SizeMiB = 64
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	stage, err := os.MkdirTemp(filepath.Dir(o.Out), ".ami-stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := baseTree(stage, "proc", "sys", "dev", "run", "tmp", "mnt", "etc", "var"); err != nil {
		return err
	}
	if o.NoDevNodes {
		for _, n := range []string{"dev/console", "dev/null"} {
			if err := os.Remove(filepath.Join(stage, n)); err != nil {
				return err
			}
		}
	}
	if o.SpotrootBin == "" {
		// An image booted through spotroot's initramfs: its own init is
		// /sbin/init, as on any distribution.
		if err := installFile(o.TestinitBin, filepath.Join(stage, "sbin/init"), 0o755); err != nil {
			return err
		}
	} else {
		if err := installFile(o.SpotrootBin, filepath.Join(stage, "sbin/init"), 0o755); err != nil {
			return err
		}
		if err := installFile(o.TestinitBin, filepath.Join(stage, "sbin/init.real"), 0o755); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(stage, "etc/spotroot-test/kind"), []byte("image\n")); err != nil {
		return err
	}
	if o.ImageConfig != nil {
		if err := writeFile(filepath.Join(stage, "etc/spotroot/config.yaml"), o.ImageConfig); err != nil {
			return err
		}
	}
	if err := stageModules(stage, o.Kernel, o.Modules); err != nil {
		return err
	}
	if o.HostTools == nil {
		o.HostTools = DefaultHostTools
	}
	if err := copyHostTools(ctx, stage, o.HostTools); err != nil {
		return err
	}
	if err := AddFiles(stage, o.Files); err != nil {
		return fmt.Errorf("BuildAMI: extra files: %w", err)
	}
	return Mkfs(ctx, stage, o.Out, int64(o.SizeMiB)<<20, "ami-root", uuidArgs(o.UUID)...)
}

// VolumeOpts describes a persistent (EBS) volume image.
type VolumeOpts struct {
	Out         string // image file to write (replaced)
	TestinitBin string // installed as /sbin/init
	SizeMiB     int    // whole disk; 0 = 64
	FS          string // "" or "ext4"
	Layout      string // "gpt" (default) or "whole"
	PartLabel   string // GPT partition name; "" = "root"
	Files       []File // extra files, added after the defaults
	// UUID, if set, is the filesystem's UUID (e.g. the AMI root's, to
	// stand for a volume made from the AMI snapshot).
	UUID string
	// Corrupt damages the filesystem so that e2fsck -p cannot repair it.
	Corrupt bool
	// Unclean marks the filesystem not cleanly unmounted: spotroot runs
	// the checker on it (a clean one needs none).
	Unclean bool
	// NoInit leaves /sbin/init out.
	NoInit bool
	// Kernel, if set, puts these of its modules on the volume (nil =
	// DefaultModules), as a volume made from the image's snapshot has them.
	Kernel  *kernel.Kernel
	Modules []string
}

// File is an extra file for an image: a copy of Src, the bytes Data, or a
// symbolic link to Link. Path is relative to the image root.
type File struct {
	Path string
	Src  string
	Data []byte
	Link string
	Mode os.FileMode // 0 = 0o755 for Src, 0o644 for Data
}

// AddFiles writes files into a staging tree, replacing what is there.
func AddFiles(stage string, files []File) error {
	for _, f := range files {
		dst := filepath.Join(stage, filepath.Clean("/"+f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		switch {
		case f.Link != "":
			if err := os.Symlink(f.Link, dst); err != nil {
				return err
			}
		case f.Src != "":
			mode := f.Mode
			if mode == 0 {
				mode = 0o755
			}
			if err := installFile(f.Src, dst, mode); err != nil {
				return err
			}
		default:
			mode := f.Mode
			if mode == 0 {
				mode = 0o644
			}
			if err := os.WriteFile(dst, f.Data, mode); err != nil {
				return err
			}
		}
	}
	return nil
}

// BuildVolume writes a volume image whose root filesystem holds testinit as
// /sbin/init and /etc/spotroot-test/kind = persistent. With Layout "gpt" the
// disk has one "Linux filesystem" partition from 1 MiB to 1 MiB before the
// end; with "whole" the filesystem is the whole disk.
func BuildVolume(ctx context.Context, o VolumeOpts) error {
	if o.SizeMiB == 0 {
		o.SizeMiB = 64
	}
	if o.FS != "" && o.FS != "ext4" {
		return fmt.Errorf("BuildVolume: filesystem %q not supported (only ext4)", o.FS)
	}
	if o.Layout == "" {
		o.Layout = "gpt"
	}
	if o.PartLabel == "" {
		o.PartLabel = "root"
	}
	stage, err := os.MkdirTemp(filepath.Dir(o.Out), ".vol-stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := baseTree(stage, "proc", "sys", "dev", "run", "tmp", "etc", "var/lib/spotroot-test"); err != nil {
		return err
	}
	if !o.NoInit {
		if err := installFile(o.TestinitBin, filepath.Join(stage, "sbin/init"), 0o755); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(stage, "etc/spotroot-test/kind"), []byte("persistent\n")); err != nil {
		return err
	}
	if o.Kernel != nil {
		mods := o.Modules
		if mods == nil {
			mods = DefaultModules
		}
		if err := stageModules(stage, *o.Kernel, mods); err != nil {
			return err
		}
	}
	if err := AddFiles(stage, o.Files); err != nil {
		return fmt.Errorf("BuildVolume: extra files: %w", err)
	}
	size := int64(o.SizeMiB) << 20
	switch o.Layout {
	case "whole":
		if err := Mkfs(ctx, stage, o.Out, size, "persistent", uuidArgs(o.UUID)...); err != nil {
			return err
		}
		if o.Corrupt {
			return corrupt(ctx, o.Out)
		}
		if o.Unclean {
			return unclean(ctx, o.Out)
		}
		return nil
	case "gpt":
		return gptVolume(ctx, stage, o.Out, size, o.PartLabel, o.UUID, o.Corrupt, o.Unclean)
	default:
		return fmt.Errorf("BuildVolume: layout %q not supported (gpt or whole)", o.Layout)
	}
}

func gptVolume(ctx context.Context, stage, out string, size int64, label, uuid string, damage, dirty bool) error {
	const mib = 1 << 20
	if size < 4*mib {
		return fmt.Errorf("BuildVolume: %d bytes is too small for GPT", size)
	}
	partStart, partEnd := int64(mib), size-mib // bytes, [start, end)
	fsImg := out + ".fs.tmp"
	defer os.Remove(fsImg)
	if err := Mkfs(ctx, stage, fsImg, partEnd-partStart, "persistent", uuidArgs(uuid)...); err != nil {
		return err
	}
	if damage {
		if err := corrupt(ctx, fsImg); err != nil {
			return err
		}
	}
	if dirty {
		if err := unclean(ctx, fsImg); err != nil {
			return err
		}
	}
	return WrapGPT(fsImg, out, size, label)
}

// PartitionOffset is where GPT volumes put their one partition.
const PartitionOffset = 1 << 20

// WrapGPT writes out: a GPT disk of size bytes with one "Linux filesystem"
// partition named label, from 1 MiB to 1 MiB before the end, holding the
// filesystem image fsImg (copied sparse).
func WrapGPT(fsImg, out string, size int64, label string) error {
	partStart, partEnd := int64(PartitionOffset), size-PartitionOffset
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	d, err := diskfs.Create(out, size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("go-diskfs create %s: %w", out, err)
	}
	table := &gpt.Table{
		LogicalSectorSize:  512,
		PhysicalSectorSize: 512,
		ProtectiveMBR:      true,
		Partitions: []*gpt.Partition{{
			Index: 1,
			Start: uint64(partStart / 512),
			End:   uint64(partEnd/512) - 1,
			Size:  uint64(partEnd - partStart),
			Type:  gpt.LinuxFilesystem,
			Name:  label,
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
	if err := CopySparseAt(dst, src, partStart); err != nil {
		dst.Close()
		return fmt.Errorf("writing filesystem into %s: %w", out, err)
	}
	return dst.Close()
}

// CopySparseAt copies src into dst at offset off, skipping all-zero blocks
// (the destination is a fresh sparse file).
func CopySparseAt(dst, src *os.File, off int64) error {
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			for i := 0; i < n; i += 4096 {
				j := min(i+4096, n)
				if !bytes.Equal(buf[i:j], zero[i:j]) {
					if _, err := dst.WriteAt(buf[i:j], off+int64(i)); err != nil {
						return err
					}
				}
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// baseTree creates dirs and the /dev/console and /dev/null nodes.
func baseTree(stage string, dirs ...string) error {
	for _, d := range append(dirs, "sbin", "dev") {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(stage, "tmp"), 0o1777); err != nil {
		return err
	}
	for _, n := range []struct {
		name         string
		mode         uint32
		major, minor uint32
	}{
		{"console", 0o600, 5, 1},
		{"null", 0o666, 1, 3},
	} {
		p := filepath.Join(stage, "dev", n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|n.mode, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("mknod %s (needs root): %w", p, err)
		}
	}
	return nil
}

func installFile(src, dst string, mode os.FileMode) error {
	if src == "" {
		return fmt.Errorf("no source for %s", dst)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

func writeFile(dst string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// ResolveModules returns the module files (relative to the modules dir) for
// names and all their dependencies, dependencies first, per modules.dep.
func ResolveModules(modulesDir string, names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(modulesDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("%w (run depmod)", err)
	}
	defer f.Close()
	deps := map[string][]string{} // module name -> [own path, deps...]
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		path, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[modName(path)] = append([]string{path}, strings.Fields(rest)...)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	var add func(path string)
	add = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		// modules.dep lists the full dependency closure, deepest last.
		d := deps[modName(path)]
		for i := len(d) - 1; i >= 1; i-- {
			add(d[i])
		}
		out = append(out, path)
	}
	for _, n := range names {
		d, ok := deps[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("module %q not in %s/modules.dep (built in, or not built at all?)", n, modulesDir)
		}
		add(d[0])
	}
	return out, nil
}

func modName(path string) string {
	b := filepath.Base(path)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

func stageModules(stage string, k kernel.Kernel, names []string) error {
	if len(names) == 0 {
		return nil
	}
	files, err := ResolveModules(k.ModulesDir, names)
	if err != nil {
		return err
	}
	root := filepath.Join(stage, "lib", "modules", k.Version)
	for _, rel := range files {
		if err := installFile(filepath.Join(k.ModulesDir, rel), filepath.Join(root, rel), 0o644); err != nil {
			return err
		}
	}
	// The kernel's own depmod output (every modules.* file of its tree),
	// not an index made for the chosen modules: a real root carries every
	// module, and PID 1 looks its NIC driver up in that index (a Debian
	// cloud kernel's 1,121 modules and 2,404 aliases, not the staged 15).
	idx, err := filepath.Glob(filepath.Join(k.ModulesDir, "modules.*"))
	if err != nil {
		return err
	}
	if len(idx) == 0 {
		return fmt.Errorf("no modules.* index in %s (run depmod)", k.ModulesDir)
	}
	for _, f := range idx {
		if err := installFile(f, filepath.Join(root, filepath.Base(f)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Mkfs makes an ext4 image of size bytes populated from stage (mkfs.ext4 -d).
func Mkfs(ctx context.Context, stage, out string, size int64, label string, extra ...string) error {
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// No lazy init: the guest kernel would otherwise zero inode tables in
	// the background while tests run.
	args := append([]string{"-q", "-F", "-t", "ext4", "-L", label, "-E", "lazy_itable_init=0,lazy_journal_init=0"}, extra...)
	args = append(args, "-d", stage, out, fmt.Sprintf("%dk", size>>10))
	cmd := exec.CommandContext(ctx, "mkfs.ext4", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("mkfs.ext4 not installed (apt-get install e2fsprogs): %w", err)
		}
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ModuleRoot returns the directory of the spotroot module: the current
// module if the working directory is inside it, else the source tree this
// package was compiled from.
func ModuleRoot() (string, error) {
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		gomod := strings.TrimSpace(string(out))
		if isSpotroot(gomod) {
			return filepath.Dir(gomod), nil
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if isSpotroot(filepath.Join(root, "go.mod")) {
			return filepath.Clean(root), nil
		}
	}
	return "", errors.New("cannot find the spotroot module (run from inside it)")
}

func isSpotroot(gomod string) bool {
	b, err := os.ReadFile(gomod)
	return err == nil && bytes.HasPrefix(b, []byte("module github.com/spotroot/spotroot\n"))
}

// BuildBinaries builds static spotroot and testinit binaries into outDir.
func BuildBinaries(ctx context.Context, outDir string) (spotroot, testinit string, err error) {
	return BuildBinariesArch(ctx, outDir, "amd64")
}

// BuildBinariesArch is BuildBinaries for GOARCH arch (amd64, arm64).
func BuildBinariesArch(ctx context.Context, outDir, arch string) (spotroot, testinit string, err error) {
	if err := GoBuildArch(ctx, outDir, arch, "./cmd/spotroot", "./e2e/cmd/testinit"); err != nil {
		return "", "", err
	}
	return filepath.Join(outDir, "spotroot"), filepath.Join(outDir, "testinit"), nil
}

// GoBuild builds packages of the spotroot module (paths relative to its
// root, e.g. ./e2e/cmd/testinit) as static, stripped binaries into outDir.
func GoBuild(ctx context.Context, outDir string, pkgs ...string) error {
	return GoBuildArch(ctx, outDir, "amd64", pkgs...)
}

// GoBuildArch is GoBuild for GOARCH arch.
func GoBuildArch(ctx context.Context, outDir, arch string, pkgs ...string) error {
	if arch == "" {
		arch = "amd64"
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	abs, err := filepath.Abs(outDir)
	if err != nil {
		return err
	}
	var product, e2e []string
	for _, p := range pkgs {
		if strings.HasPrefix(p, "./e2e/") {
			e2e = append(e2e, p)
		} else {
			product = append(product, p)
		}
	}
	if len(product) > 0 {
		if err := goBuild(ctx, root, abs+string(filepath.Separator), arch, PID1Tags, "-s -w", product...); err != nil {
			return err
		}
	}
	if len(e2e) > 0 {
		// testinit reads the signal state it inherited from the runtime's
		// own record of it (go:linkname, tag e2e_linkname), which the
		// linker only allows with its check off; product binaries never.
		return goBuild(ctx, root, abs+string(filepath.Separator), arch, PID1Tags+",e2e_linkname", "-s -w -checklinkname=0", e2e...)
	}
	return nil
}

// BuildFaultSpotroot builds the fault-injection test build of spotroot
// (-tags spotroot_faults: it honours spotroot_test.fault= on the kernel
// command line) as outDir/spotroot-faults.
func BuildFaultSpotroot(ctx context.Context, outDir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out, err := filepath.Abs(filepath.Join(outDir, "spotroot-faults"))
	if err != nil {
		return "", err
	}
	return out, goBuild(ctx, root, out, "amd64", PID1Tags+",spotroot_faults", "-s -w", "./cmd/spotroot")
}

// The PID 1 build, as the Makefile's PID1_TAGS makes it (README: "Where
// the PID 1 binary's bytes go"): -tags pid1 leaves out the operator code,
// nethttpomithttp2 net/http's HTTP/2 (EC2's Query API is HTTP/1.1), and
// PID1GCFlags compile everything outside the standard library without
// inlining (cold code: the SDK's middleware, YAML, DHCP, netlink, ours;
// ~0.6 MB less), while the runtime, crypto and net keep it. PID1Budget is
// its size goal, with -tags fallbackroots added: CA roots and all.
const (
	PID1Tags   = "pid1,nethttpomithttp2"
	PID1Budget = 10 << 20
)

// PID1GCFlags: the last pattern a package matches wins.
var PID1GCFlags = []string{"-gcflags=all=-l", "-gcflags=std="}

// PID1BuildArgs are the go build arguments of the PID 1 build (plus any
// extra tags), before -o.
func PID1BuildArgs(extraTags string) []string { return pid1BuildArgs(extraTags, "-s -w") }

// PID1BuildArgsWithSymbols are PID1BuildArgs without -s -w: the same code
// at the same addresses, with the symbol table kept.
func PID1BuildArgsWithSymbols(extraTags string) []string { return pid1BuildArgs(extraTags, "") }

func pid1BuildArgs(extraTags, ldflags string) []string {
	tags := PID1Tags
	if extraTags != "" {
		tags += "," + extraTags
	}
	args := append([]string{"build", "-tags", tags}, PID1GCFlags...)
	return append(args, "-trimpath", "-ldflags="+ldflags)
}

func goBuild(ctx context.Context, root, out, arch, tags, ldflags string, pkgs ...string) error {
	args := append([]string{"build", "-tags", tags}, PID1GCFlags...)
	args = append(append(args, "-trimpath", "-ldflags="+ldflags, "-o", out), pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), root, err, out)
	}
	return nil
}
