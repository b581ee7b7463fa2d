package fsutil

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/blockdev"
	"github.com/spotroot/spotroot/internal/testenv"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, tool+" not installed (e2fsprogs/xfsprogs; e2e/setup.sh installs them)")
		}
	}
}

func image(t *testing.T, size string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	if out, err := exec.Command("truncate", "-s", size, p).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	return p
}

func probe(t *testing.T, p string) blockdev.FS {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fs, ok := blockdev.Probe(f, 0)
	if !ok {
		t.Fatalf("%s: no filesystem", p)
	}
	return fs
}

func TestFormatCheckAndNewUUID(t *testing.T) {
	need(t, "mkfs.ext4", "e2fsck", "tune2fs", "debugfs")
	ctx := context.Background()
	img := image(t, "16M")
	tools := DefaultTools
	if err := tools.Format(ctx, img, "ext4", "data"); err != nil {
		t.Fatal(err)
	}
	before := probe(t, img)
	if before.Type != "ext4" || before.Label != "data" {
		t.Fatalf("formatted: %+v", before)
	}
	if res, err := tools.Check(ctx, img, "ext4"); err != nil || res != "clean" {
		t.Fatalf("check clean fs: %q, %v", res, err)
	}
	if err := tools.NewUUID(ctx, img, "ext4"); err != nil {
		t.Fatal(err)
	}
	if after := probe(t, img); after.UUID == before.UUID || after.Label != "data" {
		t.Fatalf("UUID not changed: %s → %s", before.UUID, after.UUID)
	}
	// Mark the filesystem as having errors (so -p does not skip it as
	// clean) and clear the resize inode: -p cannot fix that unattended.
	for _, req := range []string{"ssv state 2", "clri <7>"} {
		if out, err := exec.Command("debugfs", "-w", "-R", req, img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs %s: %v %s", req, err, out)
		}
	}
	if _, err := tools.Check(ctx, img, "ext4"); err == nil || !strings.Contains(err.Error(), "uncorrected errors") {
		t.Fatalf("corrupt fs check err = %v", err)
	}
}

func TestMissingTool(t *testing.T) {
	tools := Tools{Root: t.TempDir(), Dirs: []string{"/sbin"}}
	_, err := tools.Check(context.Background(), "/dev/null", "ext4")
	if !errors.Is(err, ErrNoTool) {
		t.Fatalf("err = %v, want ErrNoTool", err)
	}
	if _, err := tools.Check(context.Background(), "/dev/null", "btrfs"); !errors.Is(err, ErrNoTool) {
		t.Fatalf("btrfs err = %v", err)
	}
}

func TestXFS(t *testing.T) {
	need(t, "mkfs.xfs", "xfs_repair", "xfs_admin")
	ctx := context.Background()
	img := image(t, "320M")
	if err := DefaultTools.Format(ctx, img, "xfs", "x"); err != nil {
		t.Fatal(err)
	}
	before := probe(t, img)
	if res, err := DefaultTools.Check(ctx, img, "xfs"); err != nil || res != "clean" {
		t.Fatalf("xfs check: %q %v", res, err)
	}
	if err := DefaultTools.NewUUID(ctx, img, "xfs"); err != nil {
		t.Fatal(err)
	}
	if after := probe(t, img); after.UUID == before.UUID {
		t.Fatal("xfs UUID not changed")
	}
}
