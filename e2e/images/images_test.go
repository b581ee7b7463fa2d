package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/spotroot/spotroot/e2e/kernel"

	"github.com/spotroot/spotroot/internal/testenv"
)

func TestBuildImages(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "requires root")
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, tool+" not installed (e2e/setup.sh installs it)")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernel.Ensure(ctx, "")
	if err != nil {
		testenv.Skip(t, "no kernel: "+err.Error())
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ami := filepath.Join(dir, "ami.img")
	start := time.Now()
	if err := BuildAMI(ctx, AMIOpts{Out: ami, SpotrootBin: bin, TestinitBin: bin, Kernel: k,
		ImageConfig: []byte("x: 1\n")}); err != nil {
		t.Fatal(err)
	}
	t.Logf("AMI in %v", time.Since(start))
	ls := func(img, path string) string {
		out, err := exec.Command("debugfs", "-R", "ls -l "+path, img).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs %s: %v %s", path, err, out)
		}
		return string(out)
	}
	cat := func(img, path string) string {
		out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
		if err != nil {
			t.Fatalf("debugfs cat %s: %v", path, err)
		}
		return string(out)
	}
	for _, want := range []string{"init", "init.real"} {
		if s := ls(ami, "/sbin"); !strings.Contains(s, want) {
			t.Errorf("/sbin lacks %s:\n%s", want, s)
		}
	}
	if s := ls(ami, "/dev"); !strings.Contains(s, "console") || !strings.Contains(s, "null") {
		t.Errorf("/dev:\n%s", s)
	}
	if s := cat(ami, "/etc/spotroot-test/kind"); s != "image\n" {
		t.Errorf("kind %q", s)
	}
	// The kernel's own index (every module), over the staged subset's.
	for _, n := range []string{"modules.dep", "modules.alias", "modules.alias.bin", "modules.dep.bin", "modules.builtin.bin"} {
		want, err := os.ReadFile(filepath.Join(k.ModulesDir, n))
		if err != nil {
			t.Fatal(err)
		}
		if got := cat(ami, "/lib/modules/"+k.Version+"/"+n); got != string(want) {
			t.Errorf("%s has %d bytes, the kernel's %d", n, len(got), len(want))
		}
	}
	// Only the chosen modules' files, and every one of them with its
	// dependencies.
	dep := cat(ami, "/lib/modules/"+k.Version+"/modules.dep")
	files, err := ResolveModules(k.ModulesDir, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !strings.Contains(dep, f+":") {
			t.Errorf("modules.dep lacks %s", f)
		}
		if s := ls(ami, "/lib/modules/"+k.Version+"/"+filepath.Dir(f)); !strings.Contains(s, filepath.Base(f)) {
			t.Errorf("%s is not in the image:\n%s", f, s)
		}
	}
	if s := ls(ami, "/lib/modules/"+k.Version+"/kernel/drivers/net"); !strings.Contains(s, "virtio_net.ko") || strings.Contains(s, "ena") {
		t.Errorf("only the chosen modules' files are copied:\n%s", s)
	}

	vol := filepath.Join(dir, "vol.img")
	start = time.Now()
	if err := BuildVolume(ctx, VolumeOpts{Out: vol, TestinitBin: bin, SizeMiB: 64}); err != nil {
		t.Fatal(err)
	}
	t.Logf("volume in %v", time.Since(start))
	d, err := diskfs.Open(vol, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := d.GetPartitionTable()
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	g := pt.(*gpt.Table)
	if len(g.Partitions) != 1 || g.Partitions[0].Name != "root" || g.Partitions[0].Type != gpt.LinuxFilesystem || g.Partitions[0].Start != 2048 {
		t.Fatalf("partitions: %+v", g.Partitions)
	}
	// Extract the partition and check the filesystem in it.
	part := filepath.Join(dir, "part.img")
	out, err := exec.Command("dd", "if="+vol, "of="+part, "bs=1M", "skip=1", "count=62").CombinedOutput()
	if err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v %s", err, out)
	}
	if s := cat(part, "/etc/spotroot-test/kind"); s != "persistent\n" {
		t.Errorf("kind %q", s)
	}
	if s := ls(part, "/var/lib"); !strings.Contains(s, "spotroot-test") {
		t.Errorf("/var/lib:\n%s", s)
	}
}
