package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/apifs"
	"github.com/spotroot/spotroot/internal/blockdev"
	"github.com/spotroot/spotroot/internal/bootlog"
	"github.com/spotroot/spotroot/internal/kmod"
	"github.com/spotroot/spotroot/internal/sysroot"
)

// DistroInit is where a distribution's initramfs that carries spotroot (the
// dracut module, the initramfs-tools hook) keeps its own /init. When it is
// there, the fallback hands over to it: it mounts root= with everything the
// distribution supports (LVM, LUKS, …).
const DistroInit = "/init.real"

// kernelInits are tried, after init= and the configured image_init, in the
// kernel's own order.
var kernelInits = []string{"/sbin/init", "/etc/init", "/bin/init", "/bin/sh"}

// switchToImageRoot mounts the image's own root (root= on the kernel command
// line) and switches to it, for the fallback from an initramfs. On success
// it execs the image root's init and does not return; it returns nil when
// the switch succeeded but no init there could be exec'd (the caller then
// tries the usual image inits), and an error when the image root could not
// be reached.
func (b *booter) switchToImageRoot() error {
	if b.slog == nil { // failed before the mounts phase ended
		b.slog = b.log.Slog(&b.level)
	}
	if st, err := os.Stat(DistroInit); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		b.downNetwork()
		// Leave the initramfs as the kernel gave it: the distribution's init
		// mounts the API filesystems itself.
		for _, m := range []string{"/run", "/sys", "/proc", "/dev"} {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
		b.log.Printf("exec the initramfs's own init %s", DistroInit)
		err := handOver(DistroInit, os.Args, os.Environ())
		b.log.Printf("warning: %v; mounting root= myself", err)
		_ = apifs.MountAll("/", apifs.Standard)
	}
	// A volume mounted before the claim failed must not hide the image root.
	for range 8 {
		if unix.Unmount(b.paths.NewRoot, unix.MNT_DETACH) != nil {
			break
		}
	}
	args := parseRootArgs(b.cmdline)
	var init string
	if err := b.log.Phase("image-root", func() error {
		dev, fstype, err := b.mountImageRoot(args)
		if err != nil {
			return err
		}
		init, err = b.imageInit(args)
		if err != nil {
			_ = unix.Unmount(b.paths.NewRoot, unix.MNT_DETACH)
			return err
		}
		b.slog.Info("image root", "device", dev, "fs", fstype, "init", init)
		lines := append(b.log.Lines(), fmt.Sprintf("spotroot: image root=%s device=%s fs=%s", args.root, dev, fstype))
		_ = os.MkdirAll(filepath.Dir(b.paths.Timeline), 0o755)
		_ = os.WriteFile(b.paths.Timeline, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
		return nil
	}); err != nil {
		return err
	}
	b.downNetwork()
	if err := b.log.Phase("switch", func() error { return sysroot.Switch(b.paths.NewRoot) }); err != nil {
		return err
	}
	b.log.Printf("exec image init %s (pid 1 start→exec %s, peak rss %s)", init, bootlog.MS(time.Since(b.started)), peakRSS())
	err := handOver(init, os.Args, os.Environ())
	b.log.Printf("warning: %v", err)
	return nil
}

func (b *booter) downNetwork() {
	if b.net == nil {
		return
	}
	if err := b.net.Down(); err != nil {
		b.log.Printf("warning: network teardown: %v", err)
	}
	b.net = nil
}

// rootArgs are the kernel command line's root options.
type rootArgs struct {
	root      string   // root=
	fstypes   []string // rootfstype=, comma-separated
	flags     string   // rootflags=
	rw        bool     // rw / ro (last wins; read-only by default)
	init      string   // init=
	wait      time.Duration
	waitForev bool // rootwait without a bound
}

func parseRootArgs(cmdline string) rootArgs {
	a := rootArgs{rw: kernelRW(cmdline)}
	for _, f := range strings.Fields(cmdline) {
		k, v, hasV := strings.Cut(f, "=")
		v = strings.Trim(v, `"`)
		switch k {
		case "root":
			a.root = v
		case "rootfstype":
			a.fstypes = nil
			for _, t := range strings.Split(v, ",") {
				if t != "" {
					a.fstypes = append(a.fstypes, t)
				}
			}
		case "rootflags":
			a.flags = v
		case "init":
			a.init = v
		case "rootwait":
			a.waitForev = !hasV
			if hasV {
				if n, err := strconv.Atoi(v); err == nil && n > 0 {
					a.wait = time.Duration(n) * time.Second
				}
			}
		case "rootdelay":
			if n, err := strconv.Atoi(v); err == nil && n > 0 && !a.waitForev {
				a.wait = time.Duration(n) * time.Second
			}
		}
	}
	return a
}

// mountImageRoot waits for root= and mounts it on NewRoot.
func (b *booter) mountImageRoot(a rootArgs) (dev, fstype string, err error) {
	spec, err := blockdev.ParseRoot(a.root)
	if err != nil {
		return "", "", err
	}
	// Listen before the first look, so a disk added in between is seen.
	uev, err := blockdev.Listen()
	if err != nil {
		return "", "", err
	}
	defer uev.Close()
	var u unix.Utsname
	_ = unix.Uname(&u)
	release := unix.ByteSliceToString(u.Release[:])
	// Storage drivers, if modular (PCI class 01: NVMe, virtio-blk, SCSI).
	// Built-in ones need nothing; a failure here shows as the wait below.
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		l := &kmod.Loader{Root: "/", Release: release, Logger: b.slog}
		loaded, err := l.LoadForClass(ctx, "0x01")
		if len(loaded) > 0 {
			b.slog.Info("loaded storage modules", "modules", strings.Join(loaded, ","))
		}
		if err != nil {
			b.slog.Warn("storage modules", "error", err)
		}
	}()

	ctx := context.Background()
	cancel := func() {}
	switch {
	case a.wait > 0:
		ctx, cancel = context.WithTimeout(ctx, a.wait)
	case !a.waitForev:
		var d time.Duration
		if b.early != nil {
			d = b.early.Timeouts.Device.D()
		}
		ctx, cancel = withTimeout(d, 30*time.Second)
	}
	defer cancel()
	sys := blockdev.DefaultSys
	name, err := sys.WaitRoot(ctx, uev, spec)
	if err != nil {
		return "", "", err
	}
	dev, err = sys.Node(name)
	if err != nil {
		return "", "", err
	}
	types := a.fstypes
	if len(types) == 0 {
		f, err := os.Open(dev)
		if err != nil {
			return "", "", err
		}
		fs, ok := blockdev.Probe(f, 0)
		f.Close()
		if !ok {
			return "", "", fmt.Errorf("root=%s (%s): no ext4, xfs or btrfs filesystem found; set rootfstype=", a.root, dev)
		}
		types = []string{fs.Type}
	}
	var errs []error
	for _, t := range types {
		if err := loadFilesystem(release, t); err != nil {
			b.slog.Warn("filesystem module", "fs", t, "error", err)
		}
		if err := sysroot.Mount(dev, b.paths.NewRoot, t, a.rw, a.flags); err != nil {
			errs = append(errs, err)
			continue
		}
		return dev, t, nil
	}
	return "", "", errors.Join(errs...)
}

// imageInit picks the init of the mounted image root: image_init if
// configured, else init=, else the kernel's list.
func (b *booter) imageInit(a rootArgs) (string, error) {
	var candidates []string
	for _, c := range []string{b.configuredImageInit(), a.init} {
		if c != "" {
			candidates = append(candidates, c)
		}
	}
	candidates = append(candidates, kernelInits...)
	var errs []error
	for _, c := range candidates {
		resolved, err := sysroot.Check(b.paths.NewRoot, c)
		if err == nil {
			return resolved, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("no init on the image root: %w", errors.Join(errs...))
}

func (b *booter) configuredImageInit() string {
	if b.cfg != nil && b.cfg.ImageInit != "" {
		return b.cfg.ImageInit
	}
	if b.early != nil {
		return b.early.ImageInit
	}
	return ""
}

// loadFilesystem inserts the module of filesystem fstype (and its
// dependencies, from modules.dep) unless the kernel already knows it.
func loadFilesystem(release, fstype string) error {
	if fsKnown(fstype) {
		return nil
	}
	dir := filepath.Join("/lib/modules", release)
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return err
	}
	deps := map[string][]string{}
	for _, l := range strings.Split(string(dep), "\n") {
		p, rest, ok := strings.Cut(l, ":")
		if ok {
			deps[moduleName(p)] = append([]string{p}, strings.Fields(rest)...)
		}
	}
	d, ok := deps[strings.ReplaceAll(fstype, "-", "_")]
	if !ok {
		return fmt.Errorf("no module for %s in %s/modules.dep", fstype, dir)
	}
	// modules.dep lists the whole closure, deepest last: load it backwards.
	var errs []error
	for i := len(d) - 1; i >= 0; i-- {
		if err := insmod(filepath.Join(dir, d[i])); err != nil {
			errs = append(errs, err)
		}
	}
	if !fsKnown(fstype) {
		return fmt.Errorf("%s still unknown to the kernel: %w", fstype, errors.Join(errs...))
	}
	return nil
}

func moduleName(p string) string {
	n := filepath.Base(p)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

func insmod(path string) error {
	if p := filepath.Join("/sys/module", moduleName(path)); fileExists(p) {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(path, ".ko") {
		flags = 4 // MODULE_INIT_COMPRESSED_FILE: the kernel decompresses
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

func fsKnown(fstype string) bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	return false
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
