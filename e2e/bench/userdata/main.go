// Command userdata is boot 1 of the two-boot flow the older tools use, as
// the image's own init: the image comes up (API filesystems, NIC driver,
// DHCP), then a user-data-like step does what `aws ec2 attach-volume` and
// `aws ec2 wait volume-in-use` do with the instance profile's credentials
// (IMDSv2, DescribeVolumes by the user-data's tag, DescribeInstances for a
// free device name, AttachVolume, poll until attached), records the volume
// id on the image's root for the next boot's init script, and reboots.
//
// It prints "BENCHUSERDATA start uptime=<s>", "BENCHUSERDATA attached
// volume=<id> uptime=<s>" and "BENCHUSERDATA reboot uptime=<s>" right
// before reboot(2) (with QEMU's -no-reboot the VM then exits).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/kmod"
	"github.com/spotroot/spotroot/internal/netup"
)

func main() {
	say(fmt.Sprintf("BENCHUSERDATA start uptime=%.6f", uptime()))
	if err := run(); err != nil {
		say("BENCHUSERDATA error: " + err.Error())
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	unix.Sync()
	say(fmt.Sprintf("BENCHUSERDATA reboot uptime=%.6f", uptime()))
	for {
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		time.Sleep(time.Second)
	}
}

func run() error {
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		if err := unix.Mount(m.src, m.dir, m.fs, unix.MS_NOSUID, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var u unix.Utsname
	_ = unix.Uname(&u)
	kl := &kmod.Loader{Root: "/", Release: unix.ByteSliceToString(u.Release[:]), Logger: log}
	if _, err := kl.LoadForClass(ctx, "0x02"); err != nil {
		return fmt.Errorf("NIC driver: %w", err)
	}
	h, err := netup.Up(ctx, netup.Config{LinkTimeout: 20 * time.Second, DHCPTimeout: 20 * time.Second, Logger: log})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	md := imds.New(imds.DefaultEndpoint, nil)
	id, err := md.Identity(ctx)
	if err != nil {
		return fmt.Errorf("imds: %w", err)
	}
	ud, err := md.UserData(ctx)
	if err != nil {
		return fmt.Errorf("user-data: %w", err)
	}
	cmdline, _ := os.ReadFile("/proc/cmdline") // the simulator's endpoint is there
	cfg, err := config.Load(nil, ud, string(cmdline))
	if err != nil {
		return fmt.Errorf("user-data: %w", err)
	}
	if len(cfg.Volumes) == 0 {
		return fmt.Errorf("user-data names no volume")
	}
	c := &claim.Claimer{
		EC2: claim.NewClient(claim.ClientOptions{Region: id.Region, Endpoint: cfg.EC2Endpoint,
			IMDS: md.SDK(), Resolver: h.Resolver()}),
		Instance: claim.Instance{ID: id.InstanceID, AZ: id.AZ},
		Log:      log,
	}
	// Find + AttachVolume; no pools, moves or forced detaches here.
	vol, err := c.Find(ctx, cfg.Volumes[0])
	if err != nil {
		return err
	}
	cl, err := c.Attach(ctx, vol)
	if err != nil {
		return err
	}
	if err := c.WaitAttached(ctx, cl.VolumeID); err != nil {
		return err
	}
	say(fmt.Sprintf("BENCHUSERDATA attached volume=%s uptime=%.6f", cl.VolumeID, uptime()))
	// The next boot's init script reads the volume from the image's root.
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT, ""); err != nil {
		return fmt.Errorf("remount / rw: %w", err)
	}
	if err := os.MkdirAll("/etc/bench", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile("/etc/bench/volume", []byte(cl.VolumeID+"\n"), 0o644); err != nil {
		return err
	}
	// A clean reboot leaves the root read-only (no journal replay next boot).
	unix.Sync()
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	return nil
}

func uptime() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return float64(ts.Nano()) / 1e9
}

func say(s string) {
	s = strings.TrimRight(s, "\n") + "\n"
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		_, _ = c.WriteString(s)
		c.Close()
		return
	}
	_, _ = os.Stdout.WriteString(s)
}
