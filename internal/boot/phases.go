package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/apifs"
	"github.com/spotroot/spotroot/internal/blockdev"
	"github.com/spotroot/spotroot/internal/bootlog"
	"github.com/spotroot/spotroot/internal/caroots"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/fsutil"
	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/kmod"
	"github.com/spotroot/spotroot/internal/netup"
	"github.com/spotroot/spotroot/internal/sysroot"

	"github.com/spotroot/spotroot/internal/safego"
)

// world is what the early phases learned, shared by the per-volume ones.
type world struct {
	id imds.Identity
	// instanceStore are the instance-store device names IMDS maps (sdb…).
	instanceStore []string
	// mapped are all the device names IMDS maps (mappedKnown: read).
	mapped      []string
	mappedKnown bool
	claimer     *claim.Claimer
	uev         *blockdev.Listener
	sys         blockdev.Sys
	handle      *netup.Handle
	// The EC2 client opened ahead (ec2client.go): its credentials, and
	// the endpoint and address family it was made for.
	creds       *aws.CredentialsCache
	ec2         *ec2.Client
	ec2Endpoint string
	ec2Dual     bool
}

func (b *booter) claimAndSwitch() error {
	w := &world{sys: blockdev.DefaultSys}
	err := b.bringUp(w)
	b.armFailTag(w)
	if err != nil {
		return err
	}
	b.armWait() // the crash-loop marker is on disk before any volume is touched
	cfg := b.cfg
	uev, err := blockdev.Listen()
	if err != nil {
		return &bootlog.PhaseError{Phase: "device", Err: err}
	}
	defer uev.Close()
	w.uev = uev
	var client *ec2.Client
	if err := b.log.Phase("ec2-client", func() error {
		var err error
		client, err = b.ec2Client(w, cfg.EC2Endpoint)
		return err
	}); err != nil {
		return &bootlog.PhaseError{Phase: "claim", Err: errors.Unwrap(err)}
	}
	w.claimer = &claim.Claimer{
		EC2:         client,
		Instance:    claim.Instance{ID: w.id.InstanceID, AZ: w.id.AZ},
		ImageID:     w.id.ImageID,
		ForceDetach: cfg.ForceDetach,
		CrossAZ:     cfg.CrossAZ,
		DeleteMoved: cfg.DeleteMoved,
		TagClaims:   cfg.TagClaims,
		WaitDetach:  cfg.Timeouts.Detach.D(),
		MoveBudget:  cfg.Timeouts.Move.D(),
		Log:         b.slog,
		// Never offer instance storage's names (nor a Xen instance's own
		// disks) to AttachVolume: DescribeInstances does not list them.
		Reserved:    append(append([]string{}, w.instanceStore...), w.sys.XenDiskNames()...),
		Mapped:      w.mapped,
		MappedKnown: w.mappedKnown,
		ClockOffset: b.imds.ClockOffset,
	}
	if local := w.sys.InstanceStoreDisks(); len(local) > 0 || len(w.instanceStore) > 0 {
		b.slog.Info("instance storage present; never chosen", "disks", strings.Join(local, ","), "mappings", strings.Join(w.instanceStore, ","))
	}

	root, hasRoot := cfg.Root()
	for _, v := range orderVolumes(cfg.Volumes) {
		target := v.Mount
		if hasRoot {
			target = joinRoot(b.paths.NewRoot, v.Mount)
		}
		if err := b.volume(w, v, target, v.Mount == "/"); err != nil {
			return err
		}
	}

	var init string
	if hasRoot {
		if err := b.log.Phase("init", func() error {
			b.fixModules()
			var err error
			init, err = b.findInit(root)
			return err
		}); err != nil {
			return err
		}
	}
	if err := b.log.Phase("network-down", w.handle.Down); err != nil {
		return err
	}
	b.net = nil
	b.writeTimeline()
	b.endingMain() // from here on, a panic elsewhere waits for this exec
	if !hasRoot {
		b.log.Printf("data volumes mounted (pid 1 start→exec %s) — booting the image's own init", bootlog.MS(time.Since(b.started)))
		b.mounted = nil // they stay: that is the point
		b.disarm()
		fallback(b.log, b.paths, b.cfg, nil, nil)
	}
	b.disarm() // the last moment the image root is reachable
	b.switching.Store(true)
	if err := b.log.Phase("switch", func() error { return sysroot.Switch(b.paths.NewRoot) }); err != nil {
		// A reboot with the marker back in place boots the image's init.
		b.switchFailed(err)
	}
	b.log.Printf("exec %s (pid 1 start→exec %s, peak rss %s)", init, bootlog.MS(time.Since(b.started)), peakRSS())
	err = handOver(init, os.Args, os.Environ())
	// exec failed after the switch: try the usual inits of the new root.
	for _, alt := range []string{"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
		b.log.Printf("warning: %v; trying %s", err, alt)
		err = handOver(alt, os.Args, os.Environ())
	}
	b.log.Printf("FAILED exec: %v", err)
	waitForever(b.log)
	return nil
}

// bringUp runs the phases before any volume: NIC driver, DHCP, IMDS, config.
func (b *booter) bringUp(w *world) error {
	early := b.early
	if err := b.log.Phase("modules", func() error {
		ctx, cancel := withTimeout(early.Timeouts.Network.D(), 20*time.Second)
		defer cancel()
		b.kmod = &kmod.Loader{Root: "/", Release: kernelRelease(), Logger: b.slog}
		loaded, err := b.kmod.LoadForClass(ctx, "0x02")
		if len(loaded) > 0 {
			b.slog.Info("loaded NIC modules", "modules", strings.Join(loaded, ","))
		}
		return err
	}); err != nil {
		return err
	}
	b.startCARoots()
	if err := b.log.Phase("network", func() error {
		ctx, cancel := withTimeout(early.Timeouts.Network.D(), 20*time.Second)
		defer cancel()
		h, err := netup.Up(ctx, netup.Config{
			Interface:   early.Interface,
			LinkTimeout: early.Timeouts.Network.D(),
			DHCPTimeout: early.Timeouts.Network.D(),
			Logger:      b.slog,
			// imds: ipv6 reaches the metadata service over IPv6 even where
			// DHCPv4 answers: IPv6 from the start, not after DHCPv4's grace.
			IPv6Now: early.IMDS == "ipv6",
		})
		if err != nil {
			return err
		}
		w.handle, b.net = h, h
		return nil
	}); err != nil {
		return err
	}
	var userData []byte
	if err := b.log.Phase("imds", func() error {
		ctx, cancel := withTimeout(early.Timeouts.IMDS.D(), 20*time.Second)
		defer cancel()
		// IPv4 169.254.169.254, or [fd00:ec2::254] when configured (imds:
		// ipv6), on an IPv6-only subnet, or when IPv4 IMDS does not answer.
		lease := w.handle.Lease()
		ep := imds.Choose(ctx, early.IMDS, imds.Network{IPv4: lease.HasIPv4(), IPv6: lease.HasIPv6()}, imds.DefaultProbe)
		if ep != imds.DefaultEndpoint {
			b.slog.Info("metadata service over IPv6", "endpoint", ep)
		}
		b.imds = imds.New(ep, nil)
		// The instance-profile credentials come from IMDS too: their fetch
		// starts now, beside the reads below. EC2 itself is not contacted
		// (not even its name looked up) before IMDSv2 has answered.
		b.credsAhead(w)
		// The three reads are independent: in parallel, each on its own
		// connection (the SDK fetches one token for all of them).
		var udErr, bdmErr error
		var wg sync.WaitGroup
		wg.Add(2)
		safego.Go("imds user-data", func() {
			defer wg.Done()
			userData, udErr = b.imds.UserData(ctx)
		})
		safego.Go("imds block-device-mapping", func() {
			defer wg.Done()
			// Instance-store mappings: their names are off limits. The
			// whole mapping lets the claim choose a device name without
			// asking DescribeInstances.
			m, err := b.imds.BlockDeviceMappings(ctx)
			if bdmErr = err; err == nil {
				w.instanceStore, w.mapped, w.mappedKnown = m.InstanceStores, m.Devices, true
			}
		})
		var err error
		w.id, err = b.imds.Identity(ctx)
		if err == nil {
			// With the region known, the claim's needs start now: the
			// instance-profile credentials and the TLS connection to EC2
			// (at the endpoint the image or command line names; user-data
			// naming another one gets its own client after the config).
			b.ec2Ahead(w, early.EC2Endpoint)
		}
		wg.Wait()
		if err != nil {
			return err
		}
		if udErr != nil {
			return udErr
		}
		b.userData = userData
		b.slog.Info("instance", "id", w.id.InstanceID, "region", w.id.Region, "az", w.id.AZ, "user-data-bytes", len(userData))
		// Best effort: the disks themselves are recognised without IMDS;
		// without the mappings the claim asks DescribeInstances.
		if bdmErr != nil {
			b.slog.Warn("cannot list the block-device mappings; relying on the disks' identity and DescribeInstances", "err", bdmErr)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := b.log.Phase("config", func() error {
		img, _ := os.ReadFile(b.paths.ImageConfig)
		cfg, err := config.Load(img, userData, b.cmdline)
		b.cfg = cfg
		b.setLogLevel(cfg)
		return err
	}); err != nil {
		if errors.Is(err, config.ErrNotConfigured) {
			b.log.Printf("not configured: %v — booting the image's own init", errors.Unwrap(err))
			b.bootImage()
		}
		return err
	}
	if b.cfg.Disabled {
		b.log.Printf("disabled by configuration — booting the image's own init")
		b.bootImage()
	}
	return nil
}

// volume claims one volume and mounts it at target: phases claim, device,
// attach, filesystem, mount (suffixed with the mount point for data volumes).
func (b *booter) volume(w *world, v config.Volume, target string, isRoot bool) error {
	cfg := b.cfg
	suffix := ""
	if !isRoot {
		suffix = " " + v.Mount
	}
	var cl claim.Claim
	if err := b.log.Phase("claim"+suffix, func() error {
		timeout := cfg.Timeouts.Attach.D()
		if v.Create != nil || cfg.CrossAZ != "fail" {
			timeout = max(timeout, cfg.Timeouts.Create.D()) // a copy or a creation may take minutes
		}
		ctx, cancel := withTimeout(timeout, time.Minute)
		defer cancel()
		var err error
		cl, err = w.claimer.Claim(ctx, v)
		if err == nil && cl.MovedFrom != "" {
			b.slog.Info("volume copied from another AZ", "from", cl.MovedFrom, "to", cl.VolumeID)
		}
		return err
	}); err != nil {
		return err
	}

	// EC2's "attached" and the kernel's device arrive independently; wait
	// for both, and stop waiting for the device as soon as EC2 gives up.
	attachStart := time.Now()
	attached := make(chan error, 1)
	nudge := make(chan struct{}, 1)
	devCtx, devCancel := withTimeout(cfg.Timeouts.Device.D(), 30*time.Second)
	defer devCancel()
	safego.Go("attachment wait", func() {
		if cl.AlreadyAttached {
			attached <- nil
			return
		}
		ctx, cancel := withTimeout(cfg.Timeouts.Attach.D(), time.Minute)
		defer cancel()
		err := w.claimer.WaitAttachedNudged(ctx, cl.VolumeID, nudge)
		if err != nil {
			devCancel()
		}
		attached <- err
	})
	target0 := blockdev.Target{VolumeID: cl.VolumeID, Device: cl.Device, Exclude: w.instanceStore}
	var disk string
	if err := b.log.Phase("device"+suffix, func() error {
		var err error
		disk, err = w.sys.WaitDisk(devCtx, w.uev, target0)
		if err != nil {
			select {
			case aerr := <-attached:
				if aerr != nil {
					return fmt.Errorf("EC2 did not attach %s: %w", cl.VolumeID, aerr)
				}
			default:
			}
			return err
		}
		b.slog.Info("block device", "volume", cl.VolumeID, "disk", "/dev/"+disk, "uptime", uptime())
		nudge <- struct{}{} // buffered: the API wait polls again now
		return nil
	}); err != nil {
		return err
	}
	if err := <-attached; err != nil {
		return &bootlog.PhaseError{Phase: "attach" + suffix, Err: err}
	}
	b.log.Printf("attach%s ok in %s", suffix, bootlog.MS(time.Since(attachStart)))

	var dev string
	var fs blockdev.FS
	if err := b.log.Phase("filesystem"+suffix, func() error {
		ctx, cancel := withTimeout(cfg.Timeouts.Device.D(), 30*time.Second)
		defer cancel()
		if cl.NeedsFormat {
			node, err := w.sys.Node(disk)
			if err != nil {
				return err
			}
			b.slog.Info("formatting new empty volume", "volume", cl.VolumeID, "device", node, "fs", cl.FSType)
			if err := b.tools.Format(ctx, node, cl.FSType, ""); err != nil {
				return err
			}
		}
		if isRoot {
			if err := b.fixDiskIdentity(w.sys, disk); err != nil {
				return err
			}
		}
		var err error
		dev, fs, err = b.findFilesystem(ctx, w.sys, w.uev, disk, v)
		if err != nil {
			return err
		}
		// The check and the identity fix have their own budget: on a
		// volume EBS loads lazily from S3 they can take minutes, and they
		// are never killed mid-write (fsutil runs tools to completion).
		fctx, fcancel := withTimeout(cfg.Timeouts.Fsck.D(), 10*time.Minute)
		defer fcancel()
		if isRoot && fs.Type == "btrfs" {
			// btrfs takes a second device with a known fsid for a member
			// of that filesystem: the fsid changes before the replay mount.
			if err := b.fixIdentityClash(fctx, dev, &fs); err != nil {
				return err
			}
		}
		if err := b.check(fctx, dev, fs.Type); err != nil {
			return err
		}
		if isRoot && fs.Type != "btrfs" {
			// ext4 and XFS need a replayed journal/log for the rewrite.
			return b.fixIdentityClash(fctx, dev, &fs)
		}
		return nil
	}); err != nil {
		return err
	}

	fstype := fs.Type
	if v.FSType != "" && v.FSType != "auto" {
		fstype = v.FSType
	}
	return b.log.Phase("mount"+suffix, func() error {
		if b.mountedDevs[dev] {
			return fmt.Errorf("%s is already mounted by spotroot; two volumes resolve to one device", dev)
		}
		if mods, err := b.kmod.LoadFilesystem(fstype); err != nil {
			return err
		} else if len(mods) > 0 {
			b.slog.Info("loaded filesystem modules", "modules", strings.Join(mods, ","))
		}
		// The root is mounted like the kernel would (read-only unless rw
		// was asked for) so the real init's fsck/remount logic runs as on
		// any boot; data volumes are mounted read-write, after fsck.
		rw := !isRoot || kernelRW(b.cmdline)
		rw, options := mountOptions(v.Options, rw)
		if !isRoot {
			if err := mkdirOnRO(target); err != nil {
				return err
			}
		}
		if err := sysroot.Mount(dev, target, fstype, rw, options); err != nil {
			return err
		}
		b.mounted = append(b.mounted, target)
		b.mountedDevs[dev] = true
		b.record = append(b.record, fmt.Sprintf("spotroot: volume=%s device=%s fs=%s mount=%s", cl.VolumeID, dev, fs, v.Mount))
		return nil
	})
}

// check makes the filesystem mountable and checks it: XFS and btrfs are
// mounted once to replay their logs (an unclean shutdown is the normal end
// of a Spot instance, and xfs_repair -n refuses a dirty log), then the
// image's checker runs; a missing checker is noted, not fatal.
func (b *booter) check(ctx context.Context, dev, fstype string) error {
	if fstype == "xfs" || fstype == "btrfs" {
		if mods, err := b.kmod.LoadFilesystem(fstype); err != nil {
			return err
		} else if len(mods) > 0 {
			b.slog.Info("loaded filesystem modules", "modules", strings.Join(mods, ","))
		}
		b.slog.Info("replaying the filesystem log (mount and unmount)", "device", dev, "fs", fstype)
		if err := sysroot.ReplayLog(dev, fstype, "/run"); err != nil {
			return fmt.Errorf("refusing to mount: %w", err)
		}
	}
	// The superblock says whether e2fsck has anything to do (an unclean
	// shutdown, a journal to replay, errors, a due check): a clean one
	// skips the checker's start, the slowest step here under a slow CPU.
	needs, why := fsutil.NeedsCheck(dev, fstype, time.Now())
	if !needs {
		b.slog.Info("filesystem clean; no check needed", "device", dev, "fs", fstype, "why", why)
		return nil
	}
	b.slog.Info("checking the filesystem", "device", dev, "fs", fstype, "why", why)
	res, err := b.tools.Check(ctx, dev, fstype)
	if errors.Is(err, errNoTool) {
		b.slog.Info("no checker for the filesystem in the image; skipping fsck", "device", dev, "fs", fstype)
		return nil
	}
	if err != nil {
		return fmt.Errorf("refusing to mount a corrupt filesystem: %w", err)
	}
	b.slog.Info("fsck", "device", dev, "result", res)
	return nil
}

// orderVolumes puts the root first and data volumes parents-first.
func orderVolumes(vs []config.Volume) []config.Volume {
	out := append([]config.Volume(nil), vs...)
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(strings.TrimSuffix(out[i].Mount, "/"), "/") < strings.Count(strings.TrimSuffix(out[j].Mount, "/"), "/")
	})
	return out
}

// mountOptions takes "ro"/"rw" out of a volume's options (they are mount
// flags, not filesystem data) and returns the rest.
func mountOptions(opts string, rw bool) (bool, string) {
	var rest []string
	for _, o := range strings.Split(opts, ",") {
		switch o = strings.TrimSpace(o); o {
		case "":
		case "rw":
			rw = true
		case "ro":
			rw = false
		default:
			rest = append(rest, o)
		}
	}
	return rw, strings.Join(rest, ",")
}

func joinRoot(root, p string) string {
	if p == "/" {
		return root
	}
	return root + p
}

// mkdirOnRO creates a mount point; on a read-only root (the kernel's
// default) it remounts the filesystem holding it read-write for the mkdir.
func mkdirOnRO(dir string) error {
	err := os.MkdirAll(dir, 0o755)
	if err == nil || !errors.Is(err, unix.EROFS) {
		if err != nil {
			return fmt.Errorf("create mount point %s: %w", dir, err)
		}
		return nil
	}
	// Remount the filesystem that holds the nearest existing ancestor.
	parent := dir
	for {
		parent = parentDir(parent)
		if _, err := os.Stat(parent); err == nil {
			break
		}
	}
	for parent != "/" {
		if mp, _ := apifs.IsMountPoint(parent); mp {
			break
		}
		parent = parentDir(parent)
	}
	if err := unix.Mount("", parent, "", unix.MS_REMOUNT, ""); err != nil {
		return fmt.Errorf("create mount point %s: remount %s read-write: %w", dir, parent, err)
	}
	defer unix.Mount("", parent, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create mount point %s: %w", dir, err)
	}
	return nil
}

func parentDir(p string) string {
	i := strings.LastIndex(strings.TrimSuffix(p, "/"), "/")
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// earlyFiles are the files of the root PID 1 runs from that every boot
// reads before EC2 answers: depmod's index for the NIC driver's lookup and
// the CA bundle for EC2's certificate. Their reads are submitted first
// thing (internal/readahead).
func earlyFiles() []string {
	files := kmod.IndexFiles("/", kernelRelease())
	if ca := caroots.Find("/"); ca != "" {
		files = append(files, ca)
	}
	return files
}

func kernelRelease() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
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
