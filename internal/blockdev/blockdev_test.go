package blockdev

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/testenv"
)

func fakeSys(t *testing.T) Sys {
	t.Helper()
	d := t.TempDir()
	s := Sys{SysBlock: filepath.Join(d, "sys/block"), Dev: filepath.Join(d, "dev")}
	must(t, os.MkdirAll(s.SysBlock, 0o755))
	must(t, os.MkdirAll(s.Dev, 0o755))
	return s
}

func addDisk(t *testing.T, s Sys, name string, files map[string]string) {
	t.Helper()
	for f, content := range files {
		p := filepath.Join(s.SysBlock, name, f)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), 0o644))
	}
	must(t, os.MkdirAll(filepath.Join(s.SysBlock, name), 0o755))
}

func TestMatch(t *testing.T) {
	s := fakeSys(t)
	addDisk(t, s, "nvme0n1", map[string]string{"device/serial": "volamiroot          \n"})
	addDisk(t, s, "nvme1n1", map[string]string{"device/serial": "vol0123456789abcdef0\n"})
	addDisk(t, s, "vda", map[string]string{"serial": "vol0aaaaaaaaaaaaaaaa\n"})
	addDisk(t, s, "xvdg", nil)
	cases := []struct {
		t    Target
		want string
	}{
		{Target{VolumeID: "vol-0123456789abcdef0", Device: "/dev/sdf"}, "nvme1n1"},
		{Target{VolumeID: "vol-0aaaaaaaaaaaaaaaa", Device: "/dev/sdf"}, "vda"},
		{Target{VolumeID: "vol-0bbbbbbbbbbbbbbbb", Device: "/dev/sdg"}, "xvdg"},
		{Target{VolumeID: "vol-0bbbbbbbbbbbbbbbb", Device: "/dev/sdh"}, ""},
	}
	for _, c := range cases {
		got, err := s.Match(c.t)
		if err != nil || got != c.want {
			t.Errorf("Match(%+v) = %q, %v; want %q", c.t, got, err, c.want)
		}
	}
}

func TestWaitDiskIsEventDriven(t *testing.T) {
	s := fakeSys(t)
	l, events := NewTestListener()
	target := Target{VolumeID: "vol-0123456789abcdef0", Device: "/dev/sdf"}
	done := make(chan string, 1)
	go func() {
		name, err := s.WaitDisk(context.Background(), l, target)
		if err != nil {
			name = "error: " + err.Error()
		}
		done <- name
	}()
	select {
	case got := <-done:
		t.Fatalf("returned %q before the disk existed", got)
	case <-time.After(20 * time.Millisecond):
	}
	addDisk(t, s, "nvme1n1", map[string]string{"device/serial": "vol0123456789abcdef0"})
	// Without an event the waiter must not notice (no polling).
	select {
	case got := <-done:
		t.Fatalf("noticed %q without an event: it polls", got)
	case <-time.After(20 * time.Millisecond):
	}
	events <- Uevent{Action: "add", Subsystem: "block", DevName: "nvme1n1"}
	select {
	case got := <-done:
		if got != "nvme1n1" {
			t.Fatalf("WaitDisk = %q", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("event did not wake the waiter")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := s.WaitDisk(ctx, l, Target{VolumeID: "vol-0ffffffffffffffff", Device: "/dev/sdp"})
	if err == nil || !strings.Contains(err.Error(), "vol0ffffffffffffffff") || !strings.Contains(err.Error(), "sdp/xvdp") {
		t.Fatalf("timeout error = %v", err)
	}
}

// The kernel lists a disk and its partitions in sysfs (and devtmpfs) a
// moment before their block devices open: opening the node fails with
// ENXIO until then (a boot of the bench's bare handoff mounted the
// partition in that moment and failed). The waits (a volume's disk, its
// partition, the initramfs's root) must return only once the node opens,
// woken by the uevent that follows.
func TestWaitsUntilTheDeviceOpens(t *testing.T) {
	s := fakeSys(t)
	var mu sync.Mutex
	opens := map[string]bool{}
	s.open = func(p string) error {
		mu.Lock()
		defer mu.Unlock()
		if !opens[filepath.Base(p)] {
			return unix.ENXIO
		}
		return nil
	}
	ready := func(name string) { mu.Lock(); opens[name] = true; mu.Unlock() }
	addDisk(t, s, "nvme1n1", map[string]string{"device/serial": "vol0123456789abcdef0", "nvme1n1p1/partition": "1\n"})
	must(t, os.WriteFile(filepath.Join(s.Dev, "nvme1n1"), nil, 0o600))
	must(t, os.WriteFile(filepath.Join(s.Dev, "nvme1n1p1"), nil, 0o600))
	l, events := NewTestListener()
	target := Target{VolumeID: "vol-0123456789abcdef0", Device: "/dev/sdf"}

	waits := []struct {
		name string
		wait func(context.Context) (string, error)
	}{
		{"nvme1n1", func(ctx context.Context) (string, error) { return s.WaitDisk(ctx, l, target) }},
		{"nvme1n1p1", func(ctx context.Context) (string, error) { return s.WaitPartition(ctx, l, "nvme1n1", 1) }},
		{"nvme1n1p1", func(ctx context.Context) (string, error) {
			return s.WaitRoot(ctx, l, RootSpec{Key: "path", Value: "nvme1n1p1"})
		}},
	}
	for _, w := range waits {
		mu.Lock()
		delete(opens, w.name)
		mu.Unlock()
		done := make(chan string, 1)
		go func() {
			name, err := w.wait(context.Background())
			if err != nil {
				name = "error: " + err.Error()
			}
			done <- name
		}()
		events <- Uevent{Action: "add", Subsystem: "block", DevName: w.name}
		select {
		case got := <-done:
			t.Fatalf("returned %q while %s did not open", got, w.name)
		case <-time.After(30 * time.Millisecond):
		}
		ready(w.name)
		events <- Uevent{Action: "add", Subsystem: "block", DevName: w.name}
		select {
		case got := <-done:
			if got != w.name {
				t.Fatalf("wait = %q, want %s", got, w.name)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("the event after %s opened did not wake the waiter", w.name)
		}
	}

	// A device that never opens: the timeout names it and why.
	mu.Lock()
	opens = map[string]bool{}
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := s.WaitPartition(ctx, l, "nvme1n1", 1)
	if err == nil || !strings.Contains(err.Error(), "nvme1n1p1") || !strings.Contains(err.Error(), "does not open yet") || !errors.Is(err, unix.ENXIO) {
		t.Fatalf("timeout error = %v", err)
	}
}

func TestPartitionsAndNode(t *testing.T) {
	s := fakeSys(t)
	addDisk(t, s, "nvme1n1", map[string]string{
		"dev": "259:1\n", "nvme1n1p1/partition": "1\n", "nvme1n1p1/dev": "259:2\n", "nvme1n1p2/partition": "2\n",
	})
	if got := s.Partitions("nvme1n1"); got[1] != "nvme1n1p1" || got[2] != "nvme1n1p2" || len(got) != 2 {
		t.Fatalf("Partitions = %v", got)
	}
	must(t, os.WriteFile(filepath.Join(s.Dev, "nvme1n1"), nil, 0o600))
	if p, err := s.Node("nvme1n1"); err != nil || p != filepath.Join(s.Dev, "nvme1n1") {
		t.Fatalf("Node(existing) = %q, %v", p, err)
	}
	if os.Geteuid() == 0 {
		p, err := s.Node("nvme1n1p1")
		if err != nil {
			t.Fatalf("Node(missing) = %v", err)
		}
		st, err := os.Stat(p)
		if err != nil || st.Mode()&os.ModeDevice == 0 {
			t.Fatalf("created node %s: %v %v", p, st, err)
		}
	}
	if _, err := s.Node("nvme1n1p2"); err == nil {
		t.Fatal("Node without major:minor must fail")
	}
}

func TestParseUevent(t *testing.T) {
	msg := []byte("add@/devices/pci0000:00/0000:00:02.0/nvme/nvme1/nvme1n1\x00ACTION=add\x00DEVPATH=/devices/x/nvme1n1\x00SUBSYSTEM=block\x00DEVNAME=nvme1n1\x00DEVTYPE=disk\x00")
	ev, ok := parseUevent(msg)
	if !ok || ev.Action != "add" || ev.DevName != "nvme1n1" || ev.Subsystem != "block" || ev.DevType != "disk" {
		t.Fatalf("parse = %+v %v", ev, ok)
	}
	if _, ok := parseUevent([]byte("libudev\x00\xfe\xed")); ok {
		t.Fatal("udev messages must be ignored")
	}
}

// TestChooseOnRealImages builds GPT, MBR-less whole-disk and xfs images with
// the real mkfs tools and checks which filesystem is chosen.
func TestChooseOnRealImages(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testenv.Skip(t, "mkfs.ext4 not installed (e2fsprogs; e2e/setup.sh installs it)")
	}
	dir := t.TempDir()

	whole := filepath.Join(dir, "whole.img")
	run(t, "truncate", "-s", "16M", whole)
	run(t, "mkfs.ext4", "-q", "-F", "-L", "wholefs", whole)
	c := choose(t, whole, "")
	if c.Partition != 0 || c.FS.Type != "ext4" || c.FS.Label != "wholefs" {
		t.Fatalf("whole disk: %+v", c)
	}

	// GPT: 1 = BIOS boot (skipped), 2 = empty Linux fs, 3 = ext4 "root".
	img := filepath.Join(dir, "gpt.img")
	run(t, "truncate", "-s", "40M", img)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	must(t, err)
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 4095, Type: gpt.BIOSBoot, Name: "bios"},
		{Index: 2, Start: 4096, End: 8191, Type: gpt.LinuxFilesystem, Name: "blank"},
		{Index: 3, Start: 8192, End: 8192 + 16*2048 - 1, Type: gpt.LinuxFilesystem, Name: "root"},
	}}
	must(t, table.Write(f, 40<<20))
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", "-L", "persist", "-E", "offset="+itoa(8192*512), img, "16M")
	c = choose(t, img, "")
	if c.Partition != 3 || c.FS.Label != "persist" || c.Label != "root" || c.PartUUID == "" {
		t.Fatalf("gpt auto: %+v", c)
	}
	if c := choose(t, img, "label:root"); c.Partition != 3 {
		t.Fatalf("gpt label: %+v", c)
	}
	if c := choose(t, img, "partuuid:"+strings.ToLower(c.PartUUID)); c.Partition != 3 {
		t.Fatalf("gpt partuuid: %+v", c)
	}
	for spec, want := range map[string]string{
		"2":           "holds no supported filesystem",
		"label:nope":  `no partition matches "label:nope"`,
		"partuuid:00": `no partition matches`,
	} {
		if _, err := chooseErr(t, img, spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("spec %q: err = %v, want %q", spec, err, want)
		}
	}

	blank := filepath.Join(dir, "blank.img")
	run(t, "truncate", "-s", "8M", blank)
	if _, err := chooseErr(t, blank, ""); err == nil || !strings.Contains(err.Error(), "empty or corrupt") {
		t.Fatalf("blank disk err = %v", err)
	}

	if _, err := exec.LookPath("mkfs.xfs"); err == nil {
		x := filepath.Join(dir, "xfs.img")
		run(t, "truncate", "-s", "320M", x)
		run(t, "mkfs.xfs", "-q", "-f", "-L", "xroot", x)
		if c := choose(t, x, ""); c.FS.Type != "xfs" || c.FS.Label != "xroot" {
			t.Fatalf("xfs: %+v", c)
		}
	}
	if _, err := exec.LookPath("mkfs.btrfs"); err == nil {
		b := filepath.Join(dir, "btrfs.img")
		run(t, "truncate", "-s", "128M", b)
		run(t, "mkfs.btrfs", "-q", "-f", "-L", "broot", b)
		if c := choose(t, b, ""); c.FS.Type != "btrfs" || c.FS.Label != "broot" {
			t.Fatalf("btrfs: %+v", c)
		}
	}
}

func choose(t *testing.T, img, spec string) Choice {
	t.Helper()
	c, err := chooseErr(t, img, spec)
	if err != nil {
		t.Fatalf("Choose(%s, %q): %v", filepath.Base(img), spec, err)
	}
	return c
}

func chooseErr(t *testing.T, img, spec string) (Choice, error) {
	f, err := os.Open(img)
	must(t, err)
	defer f.Close()
	return Choose(f, 512, spec)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestEBSDeviceName(t *testing.T) {
	id := make([]byte, 4096)
	copy(id[3072:], "/dev/sdf                        ")
	if got := ebsDeviceName(id); got != "sdf" {
		t.Fatalf("vendor name = %q", got)
	}
	copy(id[3072:], "xvdg\x00")
	if got := ebsDeviceName(id); got != "xvdg" {
		t.Fatalf("vendor name = %q", got)
	}
	if got := ebsDeviceName(make([]byte, 4096)); got != "" {
		t.Fatalf("empty vendor area = %q", got)
	}
}

func TestMatchByVendorNameWhenSerialAbsent(t *testing.T) {
	s := fakeSys(t)
	addDisk(t, s, "nvme0n1", map[string]string{"device/serial": "volamiroot"})
	addDisk(t, s, "nvme1n1", map[string]string{"device/serial": "\n"})
	old := nvmeVendorName
	t.Cleanup(func() { nvmeVendorName = old })
	nvmeVendorName = func(dev string) (string, error) {
		if filepath.Base(dev) == "nvme1n1" {
			return "sdf", nil
		}
		return "", nil
	}
	got, err := s.Match(Target{VolumeID: "vol-0123456789abcdef0", Device: "/dev/xvdf"})
	if err != nil || got != "nvme1n1" {
		t.Fatalf("Match = %q, %v; want nvme1n1 by its EBS vendor name", got, err)
	}
	if got, _ := s.Match(Target{VolumeID: "vol-0123456789abcdef0", Device: "/dev/sdg"}); got != "" {
		t.Fatalf("matched %q for another device name", got)
	}
}

func TestNVMeAdminCmdLayout(t *testing.T) {
	// The ioctl number encodes the size: 0x48 = 72 bytes.
	if n := unsafe.Sizeof(nvmeAdminCmd{}); n != 72 {
		t.Fatalf("struct nvme_admin_cmd is %d bytes, the kernel's is 72", n)
	}
}

// An i3/c5d/m6gd-like instance: one or two instance-store NVMe disks sit
// beside the root and the attached EBS volume. They are never matched, not
// even for a volume whose serial is unknown (the vendor-name fallback) or
// for a Xen name that an instance-store mapping holds.
func TestInstanceStoreNeverMatched(t *testing.T) {
	s := fakeSys(t)
	addDisk(t, s, "nvme0n1", map[string]string{"device/serial": "vol0aaaaaaaaaaaaaaaa\n", "device/model": "Amazon Elastic Block Store\n"})
	addDisk(t, s, "nvme1n1", map[string]string{"device/serial": "AWS22B28B6A9C4E3C1C3\n", "device/model": InstanceStoreModel + "\n"})
	addDisk(t, s, "nvme2n1", map[string]string{"device/serial": "AWS5F3E0C0A4C6B2D111\n", "device/model": "QEMU NVMe Ctrl\n"})
	addDisk(t, s, "nvme3n1", map[string]string{"device/serial": "\n"})
	addDisk(t, s, "xvdb", nil)
	addDisk(t, s, "xvdf", nil)
	if got := s.InstanceStoreDisks(); strings.Join(got, ",") != "nvme1n1,nvme2n1" {
		t.Fatalf("InstanceStoreDisks = %v, want nvme1n1,nvme2n1 (model or AWS serial)", got)
	}
	old := nvmeVendorName
	t.Cleanup(func() { nvmeVendorName = old })
	// Both the instance store and the serial-less disk would claim sdg.
	nvmeVendorName = func(string) (string, error) { return "sdg", nil }
	cases := []struct {
		t    Target
		want string
	}{
		{Target{VolumeID: "vol-0bbbbbbbbbbbbbbbb", Device: "/dev/sdg"}, "nvme3n1"},
		// ephemeral0 is mapped at sdb: xvdb is instance storage.
		{Target{VolumeID: "vol-0bbbbbbbbbbbbbbbb", Device: "/dev/sdb", Exclude: []string{"sdb"}}, ""},
		{Target{VolumeID: "vol-0bbbbbbbbbbbbbbbb", Device: "/dev/sdf", Exclude: []string{"/dev/sdb"}}, "xvdf"},
	}
	for _, c := range cases {
		got, err := s.Match(c.t)
		if err != nil || got != c.want {
			t.Errorf("Match(%+v) = %q, %v; want %q", c.t, got, err, c.want)
		}
	}
	// The serial-less disk removed: nothing but instance storage answers sdg.
	must(t, os.RemoveAll(filepath.Join(s.SysBlock, "nvme3n1")))
	if got, _ := s.Match(Target{VolumeID: "vol-0bbbbbbbbbbbbbbbb", Device: "/dev/sdg"}); got != "" {
		t.Errorf("matched instance storage %q", got)
	}
	if got := s.XenDiskNames(); strings.Join(got, ",") != "xvdb,xvdf" {
		t.Errorf("XenDiskNames = %v", got)
	}
}
