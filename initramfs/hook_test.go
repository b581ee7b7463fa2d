package initramfs_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spotroot/spotroot/internal/testenv"
)

// The hook runs under set -e; copy_file returns 1 when its target already
// exists (another hook copied it, or a rerun into the same DESTDIR), which
// used to abort mkinitramfs. Run it twice over a DESTDIR that already has
// the binary, with initramfs-tools' real hook-functions.
func TestInitramfsToolsHookIdempotent(t *testing.T) {
	if _, err := os.Stat("/usr/share/initramfs-tools/hook-functions"); err != nil {
		testenv.Skip(t, "initramfs-tools-core not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "spotroot")
	os.WriteFile(bin, []byte("#!/bin/sh\n# stand-in spotroot\n"), 0o755)
	dest := filepath.Join(dir, "dest")
	os.MkdirAll(filepath.Join(dest, "usr/sbin"), 0o755)
	os.WriteFile(filepath.Join(dest, "usr/sbin/spotroot"), []byte("#!/bin/sh\n# stand-in spotroot\n"), 0o755)
	os.WriteFile(filepath.Join(dest, "init"), []byte("#!/bin/sh\n# initramfs-tools init\n"), 0o755)
	for i := 1; i <= 2; i++ {
		cmd := exec.Command("sh", "initramfs-tools/hooks/spotroot")
		cmd.Env = append(os.Environ(), "DESTDIR="+dest, "SPOTROOT_BIN="+bin, "version=0.0.0-none", "verbose=n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("run %d: %v\n%s", i, err, out)
		}
	}
	init, _ := os.ReadFile(filepath.Join(dest, "init"))
	real, _ := os.ReadFile(filepath.Join(dest, "init.real"))
	want, _ := os.ReadFile(bin)
	if !bytes.Equal(init, want) || !bytes.Contains(real, []byte("initramfs-tools init")) {
		t.Fatalf("after two runs: /init %q, /init.real %q", init, real)
	}
	// The root's xz and zstd come along (the PID 1 build unpacks modules
	// the kernel cannot with them); e2e/setup.sh installs both.
	for _, tool := range []string{"xz", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, tool+" not installed")
		}
		if st, err := os.Stat(filepath.Join(dest, "usr/bin", tool)); err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("%s not in the initramfs: %v", tool, err)
		}
	}
}
