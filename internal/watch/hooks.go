package watch

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

var stderr io.Writer = os.Stderr

// Hooks lists the executables in dir in the order they run (by name),
// skipping hidden files, editor backups and package manager leftovers, as
// run-parts does.
func Hooks(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") ||
			strings.Contains(name, ".dpkg-") || strings.HasSuffix(name, ".disabled") {
			continue
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p) // follows symlinks
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// RunHooks runs every hook for notice n, one after the other. Each gets
// at most budget, and none runs past deadline (when not zero). A hook that
// overruns gets SIGTERM, then SIGKILL 3 s later, with its whole process
// group. The environment carries SPOTROOT_KIND, SPOTROOT_ACTION,
// SPOTROOT_TIME (RFC 3339), SPOTROOT_DEADLINE and SPOTROOT_NOTICE (raw).
func RunHooks(ctx context.Context, dir string, n Notice, budget time.Duration, deadline time.Time, lg *log.Logger) {
	hooks, err := Hooks(dir)
	if err != nil {
		lg.Printf("hooks: list %s: %v", dir, err)
		return
	}
	if len(hooks) == 0 {
		lg.Printf("hooks: none in %s", dir)
		return
	}
	for _, h := range hooks {
		hctx, cancel := context.WithTimeout(ctx, budget)
		if !deadline.IsZero() {
			var c2 context.CancelFunc
			hctx, c2 = context.WithDeadline(hctx, deadline)
			defer c2()
		}
		dl, _ := hctx.Deadline()
		start := time.Now()
		err := runHook(hctx, h, n, dl, lg)
		cancel()
		took := time.Since(start).Round(time.Millisecond)
		switch {
		case hctx.Err() == context.DeadlineExceeded:
			lg.Printf("hook %s: killed after %v (time budget %v)", filepath.Base(h), took, dl.Sub(start).Round(time.Second))
		case err != nil:
			lg.Printf("hook %s: failed after %v: %v", filepath.Base(h), took, err)
		default:
			lg.Printf("hook %s: ok in %v", filepath.Base(h), took)
		}
	}
}

func runHook(ctx context.Context, path string, n Notice, deadline time.Time, lg *log.Logger) error {
	cmd := exec.CommandContext(ctx, path, n.Kind, n.Action)
	cmd.Env = append(os.Environ(),
		"SPOTROOT_KIND="+n.Kind,
		"SPOTROOT_ACTION="+n.Action,
		"SPOTROOT_TIME="+n.Time.UTC().Format(time.RFC3339),
		"SPOTROOT_DEADLINE="+deadline.UTC().Format(time.RFC3339),
		"SPOTROOT_NOTICE="+n.Raw,
		"SPOTROOT_INSTANCE_ID="+n.InstanceID,
	)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lg.Printf("hook %s: %s", filepath.Base(path), sc.Text())
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if cmd.Process != nil && ctx.Err() != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return err
}
