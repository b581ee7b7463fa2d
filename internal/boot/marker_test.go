package boot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/testenv"
)

// On a read-only image root (what the kernel mounts without "rw") the
// marker is on disk when armAttempt returns, the root stays writable until
// clearAttempt, and clearAttempt leaves it read-only with the marker gone
// from the disk. The disk is read back with e2fsprogs from copies of the
// image: one taken right after the arm (a crash there: the journal is
// replayed, the marker must be in it), one after the clear and unmount.
func TestAttemptMarkerOnReadOnlyRoot(t *testing.T) {
	if os.Getenv("SPOTROOT_MARKER_HELPER") == "1" {
		markerHelper()
		return
	}
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "mkfs.ext4", "losetup", "unshare", "e2fsck", "debugfs", "cp")
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	testenv.Run(t, "truncate", "-s", "32M", img)
	testenv.Run(t, "mkfs.ext4", "-q", "-F", img)
	loop := testenv.LoopDevice(t, img)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", self, "-test.run=^TestAttemptMarkerOnReadOnlyRoot$")
	cmd.Env = append(os.Environ(), "SPOTROOT_MARKER_HELPER=1", "LOOP="+loop, "IMG="+img, "MNT="+filepath.Join(dir, "mnt"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, want := range []string{
		"ARMED remounted=" + filepath.Join(dir, "mnt") + " writable=true",
		"CLEARED writable=false marker=gone",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("helper output lacks %q:\n%s", want, out)
		}
	}
	// A crash right after the arm: the marker is in the journal.
	crashed := img + ".armed"
	// e2fsck exits 1 when it repaired something: here, the journal replay.
	if out, err := exec.Command("e2fsck", "-fy", crashed).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("e2fsck -fy on the disk a crash after the arm leaves: %v\n%s", err, out)
		}
	}
	if got := testenv.Run(t, "debugfs", "-R", "cat /var/lib/spotroot/boot-attempt", crashed); !strings.Contains(got, "started=test") {
		t.Fatalf("the disk as a crash after armAttempt leaves it has no marker: %q", got)
	}
	// After the clear: a clean filesystem without the marker.
	testenv.Run(t, "e2fsck", "-fn", img)
	if got := testenv.Run(t, "debugfs", "-R", "ls /var/lib/spotroot", img); strings.Contains(got, "boot-attempt") {
		t.Fatalf("the marker is still on disk after clearAttempt: %q", got)
	}
}

// markerHelper runs in a private mount namespace: it mounts the loop
// device read-only as the kernel mounts a root, arms, copies the image
// (the disk as a crash would leave it), clears and unmounts.
func markerHelper() {
	mnt, loop, img := os.Getenv("MNT"), os.Getenv("LOOP"), os.Getenv("IMG")
	fail := func(err error) {
		println("HELPER error:", err.Error())
		os.Exit(1)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		fail(err)
	}
	if err := unix.Mount(loop, mnt, "ext4", unix.MS_RDONLY, ""); err != nil {
		fail(err)
	}
	path := filepath.Join(mnt, "var/lib/spotroot/boot-attempt")
	remounted, err := armAttempt(path, "started=test")
	if err != nil {
		fail(err)
	}
	println("ARMED remounted=" + remounted + " writable=" + boolString(writable(mnt)))
	if out, err := exec.Command("cp", "--sparse=always", img, img+".armed").CombinedOutput(); err != nil {
		fail(fmt.Errorf("copy: %v: %s", err, out))
	}
	if err := clearAttempt(path, remounted); err != nil {
		fail(err)
	}
	_, serr := os.Stat(path)
	gone := "present"
	if os.IsNotExist(serr) {
		gone = "gone"
	}
	println("CLEARED writable=" + boolString(writable(mnt)) + " marker=" + gone)
	if err := unix.Unmount(mnt, 0); err != nil {
		fail(err)
	}
}

func writable(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Flags&unix.ST_RDONLY == 0
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
