package fsutil

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tear makes the write e2fsck is cut after: one field of the primary
// superblock rewritten (s_mnt_count), its checksum not yet.
func tear(t *testing.T, img string, edit func(sb []byte)) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
	edit(sb)
	if _, err := f.WriteAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
}

// stateTree makes dir/content, a tree for mkfs -d holding var/lib/state,
// and returns it with the file's contents (what a cut must not lose).
func stateTree(t *testing.T, dir string) (content, data string) {
	t.Helper()
	content = filepath.Join(dir, "content")
	if err := os.MkdirAll(filepath.Join(content, "var/lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	data = strings.Repeat("persistent state ", 4096)
	if err := os.WriteFile(filepath.Join(content, "var/lib/state"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return content, data
}

// A check or a UUID change cut between two of its superblock writes leaves
// a primary superblock whose checksum does not match (found by
// TestIdentityFixCutAnywhere: e2fsck -p then exits 8 and the kernel
// refuses the mount). The next boot must see that the filesystem needs a
// check, check it from the backup superblock, and lose nothing; with no
// usable backup it must refuse, not force.
func TestTornSuperblockIsCheckedFromTheBackup(t *testing.T) {
	need(t, "mkfs.ext4", "e2fsck", "debugfs")
	ctx := context.Background()
	dir := t.TempDir()
	content, data := stateTree(t, dir)
	bump := func(sb []byte) { sb[sbMntCount]++ }
	for _, c := range []struct {
		name string
		mkfs []string
	}{
		{"1k-blocks", []string{"-O", "metadata_csum,^metadata_csum_seed", "-b", "1024"}},
		{"4k-blocks", []string{"-O", "metadata_csum", "-b", "4096"}},
		{"4k-blocks-sparse_super2", []string{"-O", "metadata_csum,sparse_super2", "-b", "4096"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(dir, c.name+".img")
			args := append(append([]string{"-q", "-F"}, c.mkfs...), "-d", content, img, "256M")
			if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
				t.Fatalf("mkfs: %v %s", err, out)
			}
			sb, err := readSuperblock(img)
			if err != nil {
				t.Fatal(err)
			}
			if tornSuperblock(sb) {
				t.Fatal("mkfs's own superblock reads as torn: the checksum is computed wrongly")
			}
			if needs, why := NeedsCheck(img, "ext4", time.Now()); needs {
				t.Fatalf("a fresh filesystem needs a check: %s", why)
			}
			tear(t, img, bump)
			if needs, why := NeedsCheck(img, "ext4", time.Now()); !needs || !strings.Contains(why, "checksum") {
				t.Fatalf("torn superblock: NeedsCheck = %v, %q", needs, why)
			}
			res, err := DefaultTools.Check(ctx, img, "ext4")
			if err != nil || !strings.HasPrefix(res, "errors corrected") || !strings.Contains(res, "backup") {
				t.Fatalf("Check of a torn superblock = %q, %v", res, err)
			}
			if sb, _ := readSuperblock(img); tornSuperblock(sb) {
				t.Fatal("the primary superblock is still torn after the check")
			}
			if out, err := exec.Command("e2fsck", "-f", "-n", img).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck -f -n after the check: %v\n%s", err, out)
			}
			out, err := exec.Command("debugfs", "-R", "cat /var/lib/state", img).Output()
			if err != nil || string(out) != data {
				t.Fatalf("data after the check: %v (%d bytes)", err, len(out))
			}

			// Torn, and no geometry to find a backup by: refused.
			tear(t, img, func(sb []byte) { bump(sb); binary.LittleEndian.PutUint32(sb[sbBlocksPerGroup:], 0) })
			if res, err := DefaultTools.Check(ctx, img, "ext4"); err == nil || !strings.Contains(err.Error(), "e2fsck -p "+img+" exited 8") {
				t.Fatalf("Check without a usable backup = %q, %v; want the refusal", res, err)
			}
		})
	}
}
