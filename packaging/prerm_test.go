package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/testenv"
)

// The package's prerm used to let `apt remove spotroot` delete the binary
// /sbin/init points to. It refuses now and names the command to run first.
func TestPrermRefusesToRemoveTheInit(t *testing.T) {
	deb := buildDeb(t, "")
	ctl := t.TempDir()
	testenv.Run(t, "dpkg-deb", "-e", deb, ctl)
	prerm := filepath.Join(ctl, "prerm")
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
	os.MkdirAll(filepath.Join(root, "etc/default"), 0o755)
	os.Symlink("usr/sbin", filepath.Join(root, "sbin"))
	os.WriteFile(filepath.Join(root, "usr/sbin/spotroot"), []byte("\x7fELF"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/sbin/init.real"), []byte("\x7fELF"), 0o755)
	prermRun := func(arg string) (int, string) {
		cmd := exec.Command("sh", prerm, arg)
		cmd.Env = append(os.Environ(), "DPKG_ROOT="+root)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	os.Symlink("/usr/sbin/spotroot", filepath.Join(root, "usr/sbin/init"))
	if code, out := prermRun("remove"); code == 0 || !strings.Contains(out, "spotroot install --uninstall") {
		t.Fatalf("remove with /sbin/init → spotroot: exit %d\n%s", code, out)
	}
	if code, out := prermRun("upgrade"); code != 0 {
		t.Fatalf("upgrade refused: %d\n%s", code, out)
	}
	os.Remove(filepath.Join(root, "usr/sbin/init"))
	os.Symlink("init.real", filepath.Join(root, "usr/sbin/init"))
	os.WriteFile(filepath.Join(root, "etc/default/grub"), []byte("GRUB_CMDLINE_LINUX=\"quiet init=/usr/sbin/spotroot\"\n"), 0o644)
	if code, out := prermRun("remove"); code == 0 || !strings.Contains(out, "GRUB_CMDLINE_LINUX") {
		t.Fatalf("remove with init= in GRUB: exit %d\n%s", code, out)
	}
	os.WriteFile(filepath.Join(root, "etc/default/grub"), []byte("GRUB_CMDLINE_LINUX=\"quiet\"\n"), 0o644)
	if code, out := prermRun("remove"); code != 0 {
		t.Fatalf("remove after uninstall refused: %d\n%s", code, out)
	}
}
