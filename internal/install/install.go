// Package install puts spotroot into an image root (a mounted AMI volume,
// or / on the build instance) and takes it out again.
//
// Two methods: init-arg adds init=/usr/sbin/spotroot to GRUB's default
// kernel command line and leaves /sbin/init alone; sbin-init moves the
// image's init aside to /sbin/init.real, links /sbin/init to spotroot and
// records image_init in /etc/spotroot/config.yaml. Both are idempotent and
// reversible, and refuse a root whose init they cannot identify.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// Paths inside the image root.
const (
	Binary     = "/usr/sbin/spotroot"
	SbinInit   = "/sbin/init"
	RealInit   = "/sbin/init.real"
	ConfigFile = "/etc/spotroot/config.yaml"
	GrubFile   = "/etc/default/grub"
	InitArg    = "init=" + Binary
)

// Opts configure Install and Uninstall.
type Opts struct {
	Root   string // "" = /
	Method string // init-arg or sbin-init
	Source string // the spotroot binary to install ("" = the running one)
	Out    io.Writer
}

func (o *Opts) fill() error {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Method != "init-arg" && o.Method != "sbin-init" {
		return fmt.Errorf("--method %q: use init-arg or sbin-init", o.Method)
	}
	if o.Source == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Source = exe
	}
	return nil
}

// inRoot resolves p inside root, following symlinks as the image would
// (absolute targets are relative to root), never escaping it.
func inRoot(root, p string) (string, error) {
	cur := "/"
	rest := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		next := path.Join(cur, c)
		st, err := os.Lstat(filepath.Join(root, next))
		if err != nil || st.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if len(rest) == 0 {
			// The last component stays a link; callers Lstat it.
			cur = next
			break
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many symbolic links", p)
		}
		t, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if !path.IsAbs(t) {
			t = path.Join(cur, t)
		}
		rest = append(strings.Split(strings.Trim(path.Clean(t), "/"), "/"), rest...)
		cur = "/"
	}
	return filepath.Join(root, cur), nil
}

// identifyInit returns what /sbin/init is: its link target or "executable".
func identifyInit(root, p string) (string, error) {
	full, err := inRoot(root, p)
	if err != nil {
		return "", err
	}
	st, err := os.Lstat(full)
	if err != nil {
		return "", fmt.Errorf("no %s in %s", p, root)
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		t, _ := os.Readlink(full)
		tp := t
		if !path.IsAbs(tp) {
			tp = path.Join(path.Dir(p), tp)
		}
		tf, err := inRoot(root, tp)
		if err != nil {
			return "", err
		}
		if st2, err := os.Stat(tf); err != nil || st2.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("%s links to %s, which is not an executable in %s", p, t, root)
		}
		return "link to " + t, nil
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s in %s is not an executable file", p, root)
	}
	f, err := os.Open(full)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 4)
	io.ReadFull(f, head)
	if !bytes.Equal(head, []byte("\x7fELF")) && !bytes.HasPrefix(head, []byte("#!")) {
		return "", fmt.Errorf("%s in %s is neither an ELF binary nor a script", p, root)
	}
	return "executable", nil
}

// isSpotroot reports whether p in root is (a link to) the installed spotroot.
func isSpotroot(root, p string) bool {
	full, err := inRoot(root, p)
	if err != nil {
		return false
	}
	if t, err := os.Readlink(full); err == nil {
		return t == Binary || t == strings.TrimPrefix(Binary, "/") || path.Clean(path.Join(path.Dir(p), t)) == Binary
	}
	a, err1 := os.ReadFile(full)
	bfull, _ := inRoot(root, Binary)
	b, err2 := os.ReadFile(bfull)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// Install installs spotroot into o.Root with o.Method.
func Install(o Opts) error {
	if err := o.fill(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	what := fmt.Sprintf("install spotroot into %s (%s)", o.Root, o.Method)
	switch o.Method {
	case "init-arg":
		if _, err := identifyInit(o.Root, SbinInit); err != nil && !isSpotroot(o.Root, SbinInit) {
			return fmt.Errorf("%s: cannot identify the image's init: %w; spotroot falls back to it, so it must exist", what, err)
		}
		if err := copyBinary(o); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		ensureDevNodes(o.Root, o.Out)
		changed, err := editGrub(o.Root, true)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if changed {
			fmt.Fprintf(o.Out, "added %s to GRUB_CMDLINE_LINUX in %s; run update-grub (or grub2-mkconfig -o /boot/grub2/grub.cfg) inside the image\n", InitArg, GrubFile)
		} else {
			fmt.Fprintf(o.Out, "%s already has %s\n", GrubFile, InitArg)
		}
		return nil
	default: // sbin-init
		if isSpotroot(o.Root, SbinInit) {
			if _, err := identifyInit(o.Root, RealInit); err != nil {
				return fmt.Errorf("%s: %s is already spotroot but the image's own init is unknown: %w", what, SbinInit, err)
			}
			if err := copyBinary(o); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if err := recordImageInit(o.Root, true); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			fmt.Fprintf(o.Out, "already installed: %s → %s, image init %s; binary refreshed\n", SbinInit, Binary, RealInit)
			return nil
		}
		kind, err := identifyInit(o.Root, SbinInit)
		if err != nil {
			return fmt.Errorf("%s: cannot identify the image's init: %w", what, err)
		}
		realPath, _ := inRoot(o.Root, RealInit)
		if _, err := os.Lstat(realPath); err == nil {
			return fmt.Errorf("%s: %s already exists and %s is not spotroot: move one of them away first", what, RealInit, SbinInit)
		}
		if err := copyBinary(o); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		ensureDevNodes(o.Root, o.Out)
		initPath, _ := inRoot(o.Root, SbinInit)
		if err := os.Rename(initPath, realPath); err != nil {
			return fmt.Errorf("%s: move %s aside: %w", what, SbinInit, err)
		}
		if err := os.Symlink(Binary, initPath); err != nil {
			os.Rename(realPath, initPath)
			return fmt.Errorf("%s: link %s to %s: %w", what, SbinInit, Binary, err)
		}
		if err := recordImageInit(o.Root, true); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		fmt.Fprintf(o.Out, "moved the image's init (%s) to %s, linked %s → %s, recorded image_init in %s\n", kind, RealInit, SbinInit, Binary, ConfigFile)
		return nil
	}
}

// Uninstall reverses Install.
func Uninstall(o Opts) error {
	o.Source = "-"
	if err := o.fill(); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	what := fmt.Sprintf("uninstall spotroot from %s (%s)", o.Root, o.Method)
	switch o.Method {
	case "init-arg":
		changed, err := editGrub(o.Root, false)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if changed {
			fmt.Fprintf(o.Out, "removed %s from %s; run update-grub inside the image\n", InitArg, GrubFile)
		}
	default:
		if isSpotroot(o.Root, SbinInit) {
			realPath, _ := inRoot(o.Root, RealInit)
			if _, err := identifyInit(o.Root, RealInit); err != nil {
				return fmt.Errorf("%s: %s is spotroot but the image's own init is not at %s (%v): restore it by hand", what, SbinInit, RealInit, err)
			}
			initPath, _ := inRoot(o.Root, SbinInit)
			if err := os.Remove(initPath); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if err := os.Rename(realPath, initPath); err != nil {
				return fmt.Errorf("%s: restore %s: %w", what, SbinInit, err)
			}
			fmt.Fprintf(o.Out, "restored %s from %s\n", SbinInit, RealInit)
		}
		if err := recordImageInit(o.Root, false); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	bin, _ := inRoot(o.Root, Binary)
	if err := os.Remove(bin); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintf(o.Out, "removed %s\n", Binary)
	return nil
}

func copyBinary(o Opts) error {
	b, err := os.ReadFile(o.Source)
	if err != nil {
		return fmt.Errorf("read the spotroot binary %s: %w", o.Source, err)
	}
	dst, err := inRoot(o.Root, Binary)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".spotroot-new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", Binary, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", Binary, err)
	}
	return nil
}

var grubLine = regexp.MustCompile(`(?m)^GRUB_CMDLINE_LINUX=(["']?)(.*?)(["']?)$`)

// editGrub adds (or removes) init=/usr/sbin/spotroot in GRUB_CMDLINE_LINUX.
func editGrub(root string, add bool) (bool, error) {
	p, err := inRoot(root, GrubFile)
	if err != nil {
		return false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		if !add {
			return false, nil
		}
		return false, fmt.Errorf("no %s in %s: use --method sbin-init, or add %s to the kernel command line of your boot loader", GrubFile, root, InitArg)
	}
	if err != nil {
		return false, err
	}
	s := string(b)
	m := grubLine.FindStringSubmatchIndex(s)
	if m == nil {
		if !add {
			return false, nil
		}
		s = strings.TrimRight(s, "\n") + "\nGRUB_CMDLINE_LINUX=\"" + InitArg + "\"\n"
		return true, os.WriteFile(p, []byte(s), 0o644)
	}
	args := strings.Fields(s[m[4]:m[5]])
	var kept []string
	has := false
	for _, a := range args {
		switch {
		case a == InitArg:
			has = true
			if !add {
				continue
			}
		case add && strings.HasPrefix(a, "init="):
			return false, fmt.Errorf("%s already sets %s: remove it, or use --method sbin-init", GrubFile, a)
		}
		kept = append(kept, a)
	}
	if add == has {
		return false, nil
	}
	if add {
		kept = append(kept, InitArg)
	}
	q := s[m[2]:m[3]]
	if q == "" {
		q = `"`
	}
	line := "GRUB_CMDLINE_LINUX=" + q + strings.Join(kept, " ") + q
	s = s[:m[0]] + line + s[m[1]:]
	return true, os.WriteFile(p, []byte(s), 0o644)
}

const imageInitLine = "  image_init: " + RealInit + " # spotroot install --method sbin-init"

// recordImageInit adds (or removes) image_init under the spotroot: key of
// the image config file.
func recordImageInit(root string, add bool) error {
	p, err := inRoot(root, ConfigFile)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(b) == 0 {
		lines = nil
	}
	var out []string
	has, hasKey := false, false
	for _, l := range lines {
		has = has || l == imageInitLine
	}
	for _, l := range lines {
		if l == imageInitLine && !add {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(l), "image_init:") && l != imageInitLine && add {
			return fmt.Errorf("%s already sets %s: remove it so spotroot can record %s", ConfigFile, strings.TrimSpace(l), RealInit)
		}
		out = append(out, l)
		if l == "spotroot:" && add && !has {
			hasKey = true
			out = append(out, imageInitLine)
			has = true
		}
	}
	if add && !hasKey && !has {
		if strings.Contains(string(b), "spotroot:") {
			return fmt.Errorf("%s has a spotroot: mapping spotroot cannot edit: add \"image_init: %s\" under it", ConfigFile, RealInit)
		}
		out = append(out, "spotroot:", imageInitLine)
	}
	if !add && len(out) == 1 && out[0] == "spotroot:" {
		return os.Remove(p)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(strings.Join(out, "\n")+"\n"), 0o644)
}
