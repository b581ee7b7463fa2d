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

	"github.com/spotroot/spotroot/internal/blockdev"
	"github.com/spotroot/spotroot/internal/bootlog"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/kmod"
	"github.com/spotroot/spotroot/internal/netup"
	"github.com/spotroot/spotroot/internal/sysroot"
)

func (b *booter) claimAndSwitch() error {
	early := b.early
	if err := b.log.Phase("modules", func() error {
		ctx, cancel := withTimeout(early.Timeouts.Network.D(), 20*time.Second)
		defer cancel()
		var u unix.Utsname
		_ = unix.Uname(&u)
		l := &kmod.Loader{Root: "/", Release: unix.ByteSliceToString(u.Release[:]), Logger: b.slog}
		loaded, err := l.LoadForClass(ctx, "0x02")
		if len(loaded) > 0 {
			b.slog.Info("loaded NIC modules", "modules", strings.Join(loaded, ","))
		}
		return err
	}); err != nil {
		return err
	}

	var handle *netup.Handle
	if err := b.log.Phase("network", func() error {
		ctx, cancel := withTimeout(early.Timeouts.Network.D(), 20*time.Second)
		defer cancel()
		h, err := netup.Up(ctx, netup.Config{
			Interface:   early.Interface,
			LinkTimeout: early.Timeouts.Network.D(),
			DHCPTimeout: early.Timeouts.Network.D(),
			Logger:      b.slog,
		})
		if err != nil {
			return err
		}
		handle, b.net = h, h
		return nil
	}); err != nil {
		return err
	}

	md := imds.New(imds.DefaultEndpoint, nil)
	var id imds.Identity
	var userData []byte
	if err := b.log.Phase("imds", func() error {
		ctx, cancel := withTimeout(early.Timeouts.IMDS.D(), 20*time.Second)
		defer cancel()
		var err error
		if id, err = md.Identity(ctx); err != nil {
			return err
		}
		userData, err = md.UserData(ctx)
		if err != nil {
			return err
		}
		b.slog.Info("instance", "id", id.InstanceID, "region", id.Region, "az", id.AZ, "user-data-bytes", len(userData))
		return nil
	}); err != nil {
		return err
	}

	if err := b.log.Phase("config", func() error {
		img, _ := os.ReadFile(b.paths.ImageConfig)
		cfg, err := config.Load(img, userData, b.cmdline)
		b.cfg = cfg
		return err
	}); err != nil {
		if errors.Is(err, config.ErrNotConfigured) {
			b.log.Printf("not configured: %v — booting the image's own init", err)
			b.bootImage()
		}
		return err
	}
	if b.cfg.Disabled {
		b.log.Printf("disabled by configuration — booting the image's own init")
		b.bootImage()
	}
	root, ok := b.cfg.Root()
	if !ok {
		return &bootlog.PhaseError{Phase: "config", Err: errors.New("no volume is mounted at / (data volumes need a root; this build pivots into one root volume)")}
	}
	cfg := b.cfg

	// Listen for uevents before asking EC2 to attach: the disk can appear
	// before the API reports the attachment.
	uev, err := blockdev.Listen()
	if err != nil {
		return &bootlog.PhaseError{Phase: "device", Err: err}
	}
	defer uev.Close()

	claimer := &claim.Claimer{
		EC2: claim.NewClient(claim.ClientOptions{
			Region: id.Region, Endpoint: cfg.EC2Endpoint, IMDS: md.SDK(), Resolver: handle.Resolver(),
		}),
		Instance: claim.Instance{ID: id.InstanceID, AZ: id.AZ},
		Log:      b.slog,
	}
	var cl claim.Claim
	if err := b.log.Phase("claim", func() error {
		ctx, cancel := withTimeout(cfg.Timeouts.Attach.D(), time.Minute)
		defer cancel()
		vol, err := claimer.Find(ctx, root)
		if err != nil {
			return err
		}
		cl, err = claimer.Attach(ctx, vol)
		return err
	}); err != nil {
		return err
	}

	// EC2's "attached" and the kernel's device arrive independently; wait for
	// both, the API in the background.
	attachStart := time.Now()
	attached := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				attached <- fmt.Errorf("panic: %v", r)
			}
		}()
		ctx, cancel := withTimeout(cfg.Timeouts.Attach.D(), time.Minute)
		defer cancel()
		if cl.AlreadyAttached {
			attached <- nil
			return
		}
		attached <- claimer.WaitAttached(ctx, cl.VolumeID)
	}()

	sys := blockdev.DefaultSys
	target := blockdev.Target{VolumeID: cl.VolumeID, Device: cl.Device}
	var disk string
	if err := b.log.Phase("device", func() error {
		ctx, cancel := withTimeout(cfg.Timeouts.Device.D(), 30*time.Second)
		defer cancel()
		var err error
		disk, err = sys.WaitDisk(ctx, uev, target)
		if err == nil {
			b.slog.Info("block device", "volume", cl.VolumeID, "disk", "/dev/"+disk, "uptime", uptime())
		}
		return err
	}); err != nil {
		return err
	}
	if err := <-attached; err != nil {
		return &bootlog.PhaseError{Phase: "attach", Err: err}
	}
	b.log.Printf("attach ok in %s", bootlog.MS(time.Since(attachStart)))

	var dev string
	var fs blockdev.FS
	if err := b.log.Phase("filesystem", func() error {
		ctx, cancel := withTimeout(cfg.Timeouts.Device.D(), 30*time.Second)
		defer cancel()
		var err error
		dev, fs, err = b.findFilesystem(ctx, sys, uev, disk, root)
		return err
	}); err != nil {
		return err
	}

	fstype := fs.Type
	if root.FSType != "" && root.FSType != "auto" {
		fstype = root.FSType
	}
	var init string
	if err := b.log.Phase("mount", func() error {
		if err := sysroot.Mount(dev, b.paths.NewRoot, fstype, kernelRW(b.cmdline), root.Options); err != nil {
			return err
		}
		var err error
		init, err = sysroot.Check(b.paths.NewRoot, cfg.Init)
		return err
	}); err != nil {
		return err
	}

	if err := b.log.Phase("network-down", handle.Down); err != nil {
		return err
	}
	b.net = nil
	b.writeTimeline(cl, dev, fs)
	if err := b.log.Phase("switch", func() error { return sysroot.Switch(b.paths.NewRoot) }); err != nil {
		// The old root may be half gone; there is no safe way back.
		b.log.Printf("FAILED switch: %v — the image root is no longer reachable", err)
		waitForever(b.log)
	}
	b.log.Printf("exec %s (pid 1 start→exec %s, peak rss %s)", init, bootlog.MS(time.Since(b.started)), peakRSS())
	signalReset()
	err = sysroot.Exec(init, os.Args, os.Environ())
	// exec failed after the switch: try the usual inits of the new root.
	for _, alt := range []string{"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
		b.log.Printf("warning: %v; trying %s", err, alt)
		err = sysroot.Exec(alt, os.Args, os.Environ())
	}
	b.log.Printf("FAILED exec: %v", err)
	waitForever(b.log)
	return nil
}

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

// writeTimeline leaves the boot record in /run (bound into the new root) for
// the real init's logs and `spotroot status`.
func (b *booter) writeTimeline(cl claim.Claim, dev string, fs blockdev.FS) {
	lines := append(b.log.Lines(), fmt.Sprintf("spotroot: volume=%s device=%s fs=%s", cl.VolumeID, dev, fs))
	_ = os.MkdirAll(filepath.Dir(b.paths.Timeline), 0o755)
	_ = os.WriteFile(b.paths.Timeline, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// kernelRW reports whether the command line asks for a read-write root; the
// kernel mounts root read-only by default and so does spotroot, leaving the
// remount to the real init as on any boot.
func kernelRW(cmdline string) bool {
	rw := false
	for _, f := range strings.Fields(cmdline) {
		switch f {
		case "rw":
			rw = true
		case "ro":
			rw = false
		}
	}
	return rw
}
