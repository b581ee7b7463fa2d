package fsutil

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestNeedsCheck: the superblock decides whether e2fsck runs; every state
// e2fsck -p itself would check (or replay) says so, only a clean one skips.
func TestNeedsCheck(t *testing.T) {
	need(t, "mkfs.ext4", "debugfs", "e2fsck")
	now := time.Now()
	fresh := func() string {
		img := image(t, "16M")
		if err := DefaultTools.Format(context.Background(), img, "ext4", ""); err != nil {
			t.Fatal(err)
		}
		return img
	}
	img := fresh()
	if needs, why := NeedsCheck(img, "ext4", now); needs {
		t.Fatalf("fresh ext4: needs a check (%s)", why)
	}
	for _, tc := range []struct {
		reqs []string
		// stricter: e2fsck -p itself would skip it; we check anyway.
		stricter bool
	}{
		{reqs: []string{"ssv state 0"}},                       // not cleanly unmounted
		{reqs: []string{"ssv state 3"}},                       // errors
		{reqs: []string{"ssv error_count 1"}, stricter: true}, // errors the kernel recorded
		{reqs: []string{"feature needs_recovery"}},            // journal to replay
		{reqs: []string{"ssv last_orphan 12"}},                // orphans
		{reqs: []string{"ssv max_mnt_count 3", "ssv mnt_count 3"}},
		{reqs: []string{"ssv checkinterval 60", "ssv lastcheck 20000101"}},
		{reqs: []string{"ssv checkinterval 60", "ssv lastcheck 29990101"}},
	} {
		img := fresh()
		for _, req := range tc.reqs {
			if out, err := exec.Command("debugfs", "-w", "-R", req, img).CombinedOutput(); err != nil || strings.Contains(string(out), "not found") {
				t.Fatalf("debugfs %s: %v %s", req, err, out)
			}
		}
		needs, why := NeedsCheck(img, "ext4", now)
		if !needs {
			t.Errorf("%v: no check needed, want one", tc.reqs)
			continue
		}
		// e2fsck -p agrees that it has work to do: it does more than
		// print its one "clean," line.
		out, _ := exec.Command("e2fsck", "-p", img).CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !tc.stricter && len(lines) == 1 && strings.Contains(lines[0], "clean,") {
			t.Errorf("%v (%s): e2fsck -p skipped it as clean: %s", tc.reqs, why, out)
		}
	}
	if needs, _ := NeedsCheck(img, "xfs", now); !needs {
		t.Error("xfs: no check needed")
	}
	if needs, _ := NeedsCheck("/nonexistent", "ext4", now); !needs {
		t.Error("unreadable device: no check needed")
	}
	// A clean filesystem e2fsck -p would skip as clean: so do we.
	out, err := exec.Command("e2fsck", "-p", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "clean,") {
		t.Fatalf("e2fsck -p on the fresh image: %v %s", err, out)
	}
}
