package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// copyHostTools copies host programs into stage at the same paths, with
// the shared libraries ldd names and the dynamic loader, so the guest can
// run them with the image's own "distribution".
func copyHostTools(ctx context.Context, stage string, names []string) error {
	seen := map[string]bool{}
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			return fmt.Errorf("host tool %s for the AMI: %w (apt-get install e2fsprogs)", name, err)
		}
		p, _ = filepath.EvalSymlinks(p)
		files := []string{p}
		out, err := exec.CommandContext(ctx, "ldd", p).Output()
		if err != nil {
			return fmt.Errorf("ldd %s: %w", p, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(l) {
				if strings.HasPrefix(f, "/") {
					files = append(files, f)
				}
			}
		}
		for _, f := range files {
			if seen[f] {
				continue
			}
			seen[f] = true
			real, err := filepath.EvalSymlinks(f)
			if err != nil {
				return err
			}
			// Keep the path ldd printed (the loader's is fixed in the binary).
			dst := filepath.Join(stage, f)
			if err := installFile(real, dst, 0o755); err != nil {
				return fmt.Errorf("copy %s into the AMI: %w", f, err)
			}
		}
		// Tools run by name from /sbin as well (spotroot searches sbin dirs).
		if link := filepath.Join(stage, "sbin", name); !strings.HasPrefix(p, "/sbin/") {
			_ = os.MkdirAll(filepath.Dir(link), 0o755)
			_ = os.Symlink(p, link)
		}
	}
	return nil
}

func uuidArgs(uuid string) []string {
	if uuid == "" {
		return nil
	}
	return []string{"-U", uuid}
}

// corrupt marks the filesystem as having errors and clears its resize
// inode: e2fsck -p then stops with "UNEXPECTED INCONSISTENCY".
func corrupt(ctx context.Context, img string) error {
	for _, req := range []string{"ssv state 2", "clri <7>"} {
		if out, err := exec.CommandContext(ctx, "debugfs", "-w", "-R", req, img).CombinedOutput(); err != nil {
			return fmt.Errorf("debugfs -w -R %q %s: %w: %s", req, img, err, out)
		}
	}
	return nil
}

// unclean marks the filesystem as not cleanly unmounted (s_state without
// VALID), as a crash of a filesystem without a journal leaves it: the
// checker must run on the next boot.
func unclean(ctx context.Context, img string) error {
	if out, err := exec.CommandContext(ctx, "debugfs", "-w", "-R", "ssv state 0", img).CombinedOutput(); err != nil {
		return fmt.Errorf("debugfs -w -R %q %s: %w: %s", "ssv state 0", img, err, out)
	}
	return nil
}
