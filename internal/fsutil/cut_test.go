package fsutil

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestIdentityFixCutAnywhere: the UUID rewrite and the check are killed
// (SIGKILL, like a power cut to the process) at random moments; each time
// the filesystem must still check clean, keep its data, and the next
// boot's fix must finish with a UUID other than the image's.
func TestIdentityFixCutAnywhere(t *testing.T) {
	need(t, "mkfs.ext4", "e2fsck", "tune2fs", "debugfs")
	ctx := context.Background()
	dir := t.TempDir()
	content, data := stateTree(t, dir)
	base := filepath.Join(dir, "image.img")
	// Debian's mkfs default: metadata_csum without the seed.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "metadata_csum,^metadata_csum_seed", "-d", content, base, "256M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	imageUUID := probe(t, base).UUID
	rng := rand.New(rand.NewPCG(7, 13))
	for i := range 12 {
		vol := filepath.Join(dir, "vol.img")
		b, _ := os.ReadFile(base)
		os.WriteFile(vol, b, 0o644)
		// The cut: the check or the rewrite, killed after a random delay.
		argv := [][]string{{"e2fsck", "-f", "-p", vol}, {"tune2fs", "-O", "metadata_csum_seed", "-U", "random", vol}}[i%2]
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(20000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		// The next boot: check, then fix the identity, then check again.
		if res, err := DefaultTools.Check(ctx, vol, "ext4"); err != nil {
			t.Fatalf("cut %d (%s): check after the cut: %v", i, argv[0], err)
		} else if res != "clean" && !strings.HasPrefix(res, "errors corrected") {
			t.Fatalf("cut %d: check = %q", i, res)
		}
		if probe(t, vol).UUID == imageUUID {
			if err := DefaultTools.NewUUID(ctx, vol, "ext4"); err != nil {
				t.Fatalf("cut %d: the next boot's fix: %v", i, err)
			}
		}
		if got := probe(t, vol).UUID; got == imageUUID {
			t.Fatalf("cut %d: UUID still the image's", i)
		}
		if out, err := exec.Command("e2fsck", "-f", "-n", vol).CombinedOutput(); err != nil {
			t.Fatalf("cut %d: e2fsck -f -n after the fix: %v\n%s", i, err, out)
		}
		out, err := exec.Command("debugfs", "-R", "cat /var/lib/state", vol).Output()
		if err != nil || string(out) != data {
			t.Fatalf("cut %d: data after the fix: %v (%d bytes)", i, err, len(out))
		}
	}
}

// TestNewUUIDIsASuperblockWrite: with metadata_csum the fix adds the
// checksum seed instead of rewriting every block's checksum, so it changes
// only a handful of blocks (the superblock and its backups).
func TestNewUUIDIsASuperblockWrite(t *testing.T) {
	need(t, "mkfs.ext4", "tune2fs", "e2fsck")
	img := image(t, "256M")
	// Populated, so a checksum rewrite would touch many inode table and
	// directory blocks.
	content := t.TempDir()
	for d := range 20 {
		sub := filepath.Join(content, "d"+strconv.Itoa(d))
		os.MkdirAll(sub, 0o755)
		for f := range 50 {
			os.WriteFile(filepath.Join(sub, "f"+strconv.Itoa(f)), []byte("x"), 0o644)
		}
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "metadata_csum,^metadata_csum_seed", "-d", content, img).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	before, _ := os.ReadFile(img)
	if err := DefaultTools.NewUUID(context.Background(), img, "ext4"); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(img)
	changed := 0
	for off := 0; off < len(before); off += 4096 {
		if string(before[off:off+4096]) != string(after[off:off+4096]) {
			changed++
		}
	}
	if f, _ := ext4Features(img); !f.csumSeed || changed > 8 {
		t.Fatalf("NewUUID changed %d blocks (seed %v); want only superblocks", changed, f.csumSeed)
	}
	t.Logf("%d of %d blocks changed", changed, len(before)/4096)
}

// TestBtrfsNewUUID: btrfstune -m (metadata_uuid) changes the fsid without
// rewriting metadata.
func TestBtrfsNewUUID(t *testing.T) {
	need(t, "mkfs.btrfs", "btrfstune")
	img := image(t, "200M")
	if err := DefaultTools.Format(context.Background(), img, "btrfs", "b"); err != nil {
		t.Fatal(err)
	}
	before := probe(t, img)
	if err := DefaultTools.NewUUID(context.Background(), img, "btrfs"); err != nil {
		t.Fatal(err)
	}
	if after := probe(t, img); after.UUID == before.UUID || after.Type != "btrfs" {
		t.Fatalf("btrfs UUID %s → %s", before.UUID, after.UUID)
	}
}
