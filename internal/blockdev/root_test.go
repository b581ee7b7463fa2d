package blockdev

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/spotroot/spotroot/internal/testenv"
)

func TestParseRoot(t *testing.T) {
	for in, want := range map[string]RootSpec{
		"/dev/nvme0n1":                  {"path", "nvme0n1"},
		"/dev/nvme0n1p1":                {"path", "nvme0n1p1"},
		"UUID=ab894189-f293-47dc":       {"UUID", "ab894189-f293-47dc"},
		"LABEL=cloudimg-rootfs":         {"LABEL", "cloudimg-rootfs"},
		"PARTUUID=0f5a9f7e-01":          {"PARTUUID", "0f5a9f7e-01"},
		"PARTLABEL=root":                {"PARTLABEL", "root"},
		"/dev/disk/by-uuid/1234-5678":   {"UUID", "1234-5678"},
		"/dev/disk/by-label/root":       {"LABEL", "root"},
		"/dev/disk/by-partuuid/abcd-ef": {"PARTUUID", "abcd-ef"},
		"259:1":                         {"devnum", "259:1"},
		"/dev/disk/by-partlabel/rootfs": {"PARTLABEL", "rootfs"},
	} {
		got, err := ParseRoot(in)
		if err != nil || got != want {
			t.Errorf("ParseRoot(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "nvme0n1", "UUID=", "/dev/mapper/vg/root", "a:b"} {
		if _, err := ParseRoot(bad); err == nil {
			t.Errorf("ParseRoot(%q) accepted", bad)
		}
	}
}

// TestFindRoot finds a root by path, MAJ:MIN, filesystem UUID and LABEL, GPT
// PARTUUID and PARTLABEL, and MBR PARTUUID, on a fake sysfs whose /dev
// entries are image files.
func TestFindRoot(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testenv.Skip(t, "mkfs.ext4 not installed (e2fsprogs; e2e/setup.sh installs it)")
	}
	s := fakeSys(t)
	// vda: whole-disk ext4.
	addDisk(t, s, "vda", map[string]string{"dev": "254:0\n", "size": "32768\n"})
	run(t, "truncate", "-s", "16M", filepath.Join(s.Dev, "vda"))
	run(t, "mkfs.ext4", "-q", "-F", "-L", "imgroot", "-U", "0b1c2d3e-0000-4000-8000-00000000abcd", filepath.Join(s.Dev, "vda"))
	// nvme0n1: GPT with partition 1 "rootfs".
	disk := filepath.Join(s.Dev, "nvme0n1")
	d, err := diskfs.Create(disk, 8<<20, diskfs.SectorSizeDefault)
	must(t, err)
	must(t, d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 8191, Type: gpt.LinuxFilesystem, Name: "rootfs",
			GUID: "6E1B3F2A-1111-4222-8333-444455556666"}}}))
	must(t, d.Close())
	addDisk(t, s, "nvme0n1", map[string]string{"dev": "259:0\n", "size": "16384\n",
		"nvme0n1p1/partition": "1\n", "nvme0n1p1/dev": "259:1\n", "nvme0n1p1/size": "6144\n"})
	must(t, os.WriteFile(filepath.Join(s.Dev, "nvme0n1p1"), nil, 0o644))
	// xvda: MBR with signature 0x0f5a9f7e, partition 1.
	mbr := make([]byte, 1<<20)
	binary.LittleEndian.PutUint32(mbr[440:], 0x0f5a9f7e)
	mbr[446+4] = 0x83
	binary.LittleEndian.PutUint32(mbr[446+8:], 2048)
	binary.LittleEndian.PutUint32(mbr[446+12:], 10)
	mbr[510], mbr[511] = 0x55, 0xaa
	must(t, os.WriteFile(filepath.Join(s.Dev, "xvda"), mbr, 0o644))
	addDisk(t, s, "xvda", map[string]string{"dev": "202:0\n", "size": "2048\n",
		"xvda1/partition": "1\n", "xvda1/dev": "202:1\n", "xvda1/size": "10\n"})

	for spec, want := range map[string]string{
		"/dev/vda":       "vda",
		"/dev/nvme0n1p1": "nvme0n1p1",
		"/dev/nvme9n1":   "",
		"259:1":          "nvme0n1p1",
		"UUID=0B1C2D3E-0000-4000-8000-00000000ABCD": "vda",
		"LABEL=imgroot": "vda",
		"LABEL=other":   "",
		"PARTUUID=6e1b3f2a-1111-4222-8333-444455556666": "nvme0n1p1",
		"PARTLABEL=rootfs":     "nvme0n1p1",
		"PARTUUID=0f5a9f7e-01": "xvda1",
		"PARTUUID=0f5a9f7e-02": "",
	} {
		r, err := ParseRoot(spec)
		must(t, err)
		got, err := s.FindRoot(r)
		if err != nil || got != want {
			t.Errorf("FindRoot(%s) = %q, %v; want %q", spec, got, err, want)
		}
	}
}

// TestWaitRootIsEventDriven: the root appears after the wait began and is
// found on the next uevent.
func TestWaitRootIsEventDriven(t *testing.T) {
	s := fakeSys(t)
	l, events := NewTestListener()
	defer l.Close()
	r, _ := ParseRoot("/dev/nvme0n1")
	done := make(chan string, 1)
	go func() {
		name, err := s.WaitRoot(context.Background(), l, r)
		if err != nil {
			name = "error: " + err.Error()
		}
		done <- name
	}()
	addDisk(t, s, "nvme0n1", map[string]string{"dev": "259:0\n"})
	must(t, os.WriteFile(filepath.Join(s.Dev, "nvme0n1"), nil, 0o600)) // devtmpfs's node
	events <- Uevent{Action: "add", Subsystem: "block", DevName: "nvme0n1"}
	if got := <-done; got != "nvme0n1" {
		t.Fatalf("WaitRoot = %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	r2, _ := ParseRoot("LABEL=never")
	if _, err := s.WaitRoot(ctx, l, r2); err == nil || !strings.Contains(err.Error(), "LABEL=never") {
		t.Fatalf("WaitRoot for a missing root: %v", err)
	}
}
