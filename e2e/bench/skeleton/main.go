// Command skeleton is an experiment, not a product: the least a handoff
// can do with spotroot's libraries (kernel modules, DHCP, IMDSv2 through
// the SDK, EC2 over TLS through the SDK, hot-plugged disk, ext4 mount,
// network down, switch, exec) and nothing else: no crash-loop marker, no
// configuration parsing, no checks, no fallbacks, a volume found by its
// Name tag and attached as /dev/sdf. It keeps spotroot's own speed-ups
// (read-ahead of its executable and of the index files it opens, the
// boot's timer slack, the TLS connection opened ahead). `make bench-floor`
// boots it as the AMI's /sbin/init in pairs with spotroot; it prints the
// lines the bench reads, so its start → exec is the floor of spotroot's.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/blockdev"
	"github.com/spotroot/spotroot/internal/caroots"
	"github.com/spotroot/spotroot/internal/claim"
	_ "github.com/spotroot/spotroot/internal/exeprefetch"
	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/kmod"
	"github.com/spotroot/spotroot/internal/netup"
	"github.com/spotroot/spotroot/internal/readahead"
	"github.com/spotroot/spotroot/internal/sysroot"
)

var console *os.File

func say(s string) { fmt.Fprintln(console, "spotroot: "+s) }

func uptime() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func main() {
	up := uptime()
	start := time.Now()
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/run", "tmpfs"}} {
		_ = unix.Mount(m.src, m.dir, m.fs, 0, "")
	}
	slowTimers()
	go readahead.Files(append(kmod.IndexFiles("/", release()), caroots.Find("/"))...)
	console, _ = os.OpenFile("/dev/console", os.O_WRONLY, 0)
	say(fmt.Sprintf("start pid=1 uptime=%.3fs", up))
	if err := run(start); err != nil {
		say("FAILED " + err.Error())
	}
	for {
		time.Sleep(time.Hour)
	}
}

// slowTimers gives every thread the boot's timer slack, as spotroot does
// (internal/boot, BootTimerSlack: fewer wake-ups of Go's sysmon).
func slowTimers() {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		_ = os.WriteFile("/proc/self/task/"+t.Name()+"/timerslack_ns", []byte("4000000"), 0)
	}
}

func release() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

func phase(name string, t *time.Time) {
	say(fmt.Sprintf("%s ok in %dms", name, time.Since(*t).Milliseconds()))
	*t = time.Now()
}

func run(start time.Time) error {
	ctx := context.Background()
	t := time.Now()
	l := &kmod.Loader{Root: "/", Release: release()}
	if _, err := l.LoadForClass(ctx, "0x02"); err != nil {
		return err
	}
	phase("modules", &t)
	h, err := netup.Up(ctx, netup.Config{LinkTimeout: 20 * time.Second, DHCPTimeout: 20 * time.Second})
	if err != nil {
		return err
	}
	phase("network", &t)
	md := imds.New(imds.DefaultEndpoint, nil)
	id, err := md.Identity(ctx)
	if err != nil {
		return err
	}
	creds := claim.Credentials(md.SDK(), 0)
	bundle, err := caroots.Open("/")
	if err != nil {
		return err
	}
	client := claim.NewClient(claim.ClientOptions{Region: id.Region, IMDS: md.SDK(), Resolver: h.Resolver(),
		Credentials: creds, Prewarm: true, Verify: bundle.Verify})
	phase("imds", &t)
	// Listening before the attach, as spotroot does: the disk's uevent
	// ends the wait instead of a poll.
	uev, err := blockdev.Listen()
	if err != nil {
		return err
	}
	dv, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("tag:Name"), Values: []string{"home-root"}},
		{Name: aws.String("availability-zone"), Values: []string{id.AZ}}}})
	if err != nil {
		return err
	}
	if len(dv.Volumes) != 1 {
		return fmt.Errorf("%d volumes", len(dv.Volumes))
	}
	vol := aws.ToString(dv.Volumes[0].VolumeId)
	if _, err := client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: &vol, InstanceId: &id.InstanceID, Device: aws.String("/dev/sdf")}); err != nil {
		return err
	}
	phase("claim", &t)
	disk, err := blockdev.DefaultSys.WaitDisk(ctx, uev, blockdev.Target{VolumeID: vol, Device: "/dev/sdf"})
	if err != nil {
		return err
	}
	phase("device", &t)
	p1, err := blockdev.DefaultSys.WaitPartition(ctx, uev, disk, 1)
	if err != nil {
		return err
	}
	part, err := blockdev.DefaultSys.Node(p1)
	if err != nil {
		return err
	}
	nr := "/run/spotroot/root"
	_ = os.MkdirAll(nr, 0o755)
	if err := unix.Mount(part, nr, "ext4", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount %s: %w", part, err)
	}
	phase("mount", &t)
	if err := h.Down(); err != nil {
		return err
	}
	phase("network-down", &t)
	if err := sysroot.Switch(nr); err != nil {
		return err
	}
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	say(fmt.Sprintf("exec /sbin/benchinit (pid 1 start→exec %dms, peak rss %dkB)", time.Since(start).Milliseconds(), ru.Maxrss))
	return unix.Exec("/sbin/benchinit", []string{"/sbin/benchinit"}, os.Environ())
}
