// Package install puts spotroot into an image root (a mounted AMI volume,
// or / on the build instance) and takes it out again.
//
// Two methods: init-arg adds init=/usr/sbin/spotroot to GRUB's default
// kernel command line and leaves /sbin/init alone; sbin-init takes
// /sbin/init over. On a dpkg-managed root that is a `dpkg-divert --rename`
// of /sbin/init to /sbin/init.real, so an upgrade of the package that owns
// /sbin/init (systemd-sysv) installs its new init as /sbin/init.real and
// keeps spotroot in front; elsewhere a plain rename. Both methods record
// image_init in /etc/spotroot/config.yaml, are idempotent and reversible,
// and refuse a root whose init they cannot identify.
//
// Install checks everything first and changes the image only afterwards
// (undoing what it did if a later step fails), so an image is never left
// half-switched; Uninstall finds out by itself which method is installed.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// Paths inside the image root.
const (
	Binary     = "/usr/sbin/spotroot"
	SbinInit   = "/sbin/init"
	RealInit   = "/sbin/init.real"
	ConfigFile = "/etc/spotroot/config.yaml"
	GrubFile   = "/etc/default/grub"
	InitArg    = "init=" + Binary
	// DpkgStatus marks a dpkg-managed root, where /sbin/init is diverted.
	DpkgStatus = "/var/lib/dpkg/status"
)

// Opts configure Install and Uninstall.
type Opts struct {
	Root   string // "" = /
	Method string // init-arg or sbin-init; Uninstall ignores it (it detects)
	Source string // the spotroot binary to install ("" = the running one)
	Out    io.Writer
	// DpkgDivert is the dpkg-divert program; "" = looked up in $PATH.
	DpkgDivert string
}

func (o *Opts) fill(install bool) error {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if install && o.Method != "init-arg" && o.Method != "sbin-init" {
		return fmt.Errorf("--method %q: use init-arg or sbin-init", o.Method)
	}
	if install && o.Source == "" {
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

// Installed reports which methods are in place in root.
func Installed(root string) (sbinInit, initArg bool) {
	sbinInit = isSpotroot(root, SbinInit)
	if p, err := inRoot(root, GrubFile); err == nil {
		if b, err := os.ReadFile(p); err == nil {
			if m := grubLine().FindStringSubmatch(string(b)); m != nil {
				for _, a := range strings.Fields(m[2]) {
					initArg = initArg || a == InitArg
				}
			}
		}
	}
	return sbinInit, initArg
}

// change is one reversible edit of the image, prepared before any is made.
type change struct {
	what string
	do   func() error
	undo func() error
}

// apply makes the changes in order; when one fails, the ones already made
// are undone (last first) so the image is as it was.
func apply(changes []change) error {
	for i, c := range changes {
		if err := c.do(); err != nil {
			var undoErrs []string
			for j := i - 1; j >= 0; j-- {
				if changes[j].undo == nil {
					continue
				}
				if uerr := changes[j].undo(); uerr != nil {
					undoErrs = append(undoErrs, fmt.Sprintf("undo %s: %v", changes[j].what, uerr))
				}
			}
			if len(undoErrs) > 0 {
				return fmt.Errorf("%s: %w (and rolling back failed: %s; fix the image by hand)", c.what, err, strings.Join(undoErrs, "; "))
			}
			return fmt.Errorf("%s: %w (nothing was changed)", c.what, err)
		}
	}
	return nil
}

// fileChange writes content to p atomically (nil removes it); undo puts
// back what was there.
func fileChange(what, p string, content []byte, mode fs.FileMode) (change, error) {
	old, err := os.ReadFile(p)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return change{}, fmt.Errorf("%s: read %s: %w", what, p, err)
	}
	oldMode := mode
	if st, err := os.Stat(p); err == nil {
		oldMode = st.Mode().Perm()
	}
	if err := writableDir(filepath.Dir(p)); err != nil {
		return change{}, fmt.Errorf("%s: %w", what, err)
	}
	put := func(b []byte, m fs.FileMode, present bool) error {
		if !present {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}
		return writeAtomic(p, b, m)
	}
	return change{
		what: what,
		do:   func() error { return put(content, mode, content != nil) },
		undo: func() error { return put(old, oldMode, existed) },
	}, nil
}

// writableDir checks that a file can be created in dir (or in the nearest
// existing parent, which MkdirAll will extend).
func writableDir(dir string) error {
	d := dir
	for {
		if st, err := os.Stat(d); err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", d)
			}
			f, err := os.CreateTemp(d, ".spotroot-check-")
			if err != nil {
				return fmt.Errorf("cannot write in %s: %w", d, err)
			}
			f.Close()
			os.Remove(f.Name())
			return nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return fmt.Errorf("no directory %s", dir)
		}
		d = parent
	}
}

func writeAtomic(p string, b []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".spotroot-new"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// dpkgManaged reports whether root's files are tracked by dpkg.
func dpkgManaged(root string) bool {
	p, err := inRoot(root, DpkgStatus)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

func (o *Opts) divertTool() (string, error) {
	if o.DpkgDivert != "" {
		return o.DpkgDivert, nil
	}
	p, err := exec.LookPath("dpkg-divert")
	if err != nil {
		return "", fmt.Errorf("%s is dpkg-managed but dpkg-divert is not installed here: run spotroot install inside the image (chroot), or install dpkg", o.Root)
	}
	return p, nil
}

func (o *Opts) divert(args ...string) (string, error) {
	tool, err := o.divertTool()
	if err != nil {
		return "", err
	}
	full := append([]string{"--root", o.Root}, args...)
	out, err := exec.Command(tool, full...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("dpkg-divert %s: %w: %s", strings.Join(full, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// diversion returns where dpkg diverts /sbin/init to ("" = not diverted).
func (o *Opts) diversion() (string, error) {
	t, err := o.divert("--truename", SbinInit)
	if err != nil {
		return "", err
	}
	if t == SbinInit {
		return "", nil
	}
	return t, nil
}

// Install installs spotroot into o.Root with o.Method.
func Install(o Opts) error {
	if err := o.fill(true); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	what := fmt.Sprintf("install spotroot into %s (%s)", o.Root, o.Method)
	changes, msgs, err := planInstall(&o)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := apply(changes); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ensureDevNodes(o.Root, o.Out) // devnodes.go; additive, nothing to undo
	for _, m := range msgs {
		fmt.Fprintln(o.Out, m)
	}
	return nil
}

// planInstall checks everything and prepares every change; it changes nothing.
func planInstall(o *Opts) ([]change, []string, error) {
	var changes []change
	var msgs []string
	bin, err := os.ReadFile(o.Source)
	if err != nil {
		return nil, nil, fmt.Errorf("read the spotroot binary %s: %w", o.Source, err)
	}
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		return nil, nil, fmt.Errorf("%s is not an ELF executable", o.Source)
	}
	binPath, err := inRoot(o.Root, Binary)
	if err != nil {
		return nil, nil, err
	}
	already := isSpotroot(o.Root, SbinInit)
	var kind string
	switch {
	case already:
		if _, err := identifyInit(o.Root, RealInit); err != nil {
			return nil, nil, fmt.Errorf("%s is already spotroot but the image's own init is unknown: %w", SbinInit, err)
		}
	default:
		kind, err = identifyInit(o.Root, SbinInit)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot identify the image's init: %w; spotroot falls back to it, so it must exist", err)
		}
	}
	cfgPath, err := inRoot(o.Root, ConfigFile)
	if err != nil {
		return nil, nil, err
	}
	oldCfg, err := os.ReadFile(cfgPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	// init-arg boots spotroot as init= and leaves /sbin/init, which is then
	// the image's init; sbin-init moves it to /sbin/init.real.
	imageInit := RealInit
	if o.Method == "init-arg" {
		imageInit = SbinInit
		if already {
			imageInit = RealInit
		}
	}
	newCfg, cfgChanged, err := EditImageInit(oldCfg, imageInit, true)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ConfigFile, err)
	}
	c, err := fileChange("write "+Binary, binPath, bin, 0o755)
	if err != nil {
		return nil, nil, err
	}
	changes = append(changes, c)
	if cfgChanged {
		c, err := fileChange("record image_init in "+ConfigFile, cfgPath, newCfg, 0o644)
		if err != nil {
			return nil, nil, err
		}
		changes = append(changes, c)
	}
	switch o.Method {
	case "init-arg":
		grubPath, err := inRoot(o.Root, GrubFile)
		if err != nil {
			return nil, nil, err
		}
		old, err := os.ReadFile(grubPath)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("no %s in %s: use --method sbin-init, or add %s to the kernel command line of your boot loader", GrubFile, o.Root, InitArg)
		}
		if err != nil {
			return nil, nil, err
		}
		g, changed, err := editGrub(old, true)
		if err != nil {
			return nil, nil, err
		}
		if changed {
			c, err := fileChange("add "+InitArg+" to "+GrubFile, grubPath, g, 0o644)
			if err != nil {
				return nil, nil, err
			}
			changes = append(changes, c)
			msgs = append(msgs, fmt.Sprintf("added %s to GRUB_CMDLINE_LINUX in %s; run update-grub (or grub2-mkconfig -o /boot/grub2/grub.cfg) inside the image", InitArg, GrubFile))
		} else {
			msgs = append(msgs, fmt.Sprintf("%s already has %s; binary refreshed", GrubFile, InitArg))
		}
		return changes, msgs, nil
	}
	// sbin-init
	if already {
		msgs = append(msgs, fmt.Sprintf("already installed: %s → %s, image init %s; binary refreshed", SbinInit, Binary, RealInit))
		return changes, msgs, nil
	}
	realPath, _ := inRoot(o.Root, RealInit)
	initPath, _ := inRoot(o.Root, SbinInit)
	if _, err := os.Lstat(realPath); err == nil {
		return nil, nil, fmt.Errorf("%s already exists and %s is not spotroot: move one of them away first", RealInit, SbinInit)
	}
	if err := writableDir(filepath.Dir(initPath)); err != nil {
		return nil, nil, err
	}
	how := "renamed"
	if dpkgManaged(o.Root) {
		d, err := o.diversion()
		if err != nil {
			return nil, nil, err
		}
		if d != "" && d != RealInit {
			return nil, nil, fmt.Errorf("%s is already diverted to %s by another package or admin: remove that diversion first (dpkg-divert --list %s)", SbinInit, d, SbinInit)
		}
		how = "diverted (dpkg-divert --rename)"
		changes = append(changes, change{
			what: "divert " + SbinInit + " to " + RealInit,
			do: func() error {
				_, err := o.divert("--local", "--rename", "--divert", RealInit, "--add", SbinInit)
				return err
			},
			undo: func() error {
				_, err := o.divert("--local", "--rename", "--divert", RealInit, "--remove", SbinInit)
				return err
			},
		})
	} else {
		changes = append(changes, change{
			what: "move " + SbinInit + " to " + RealInit,
			do:   func() error { return os.Rename(initPath, realPath) },
			undo: func() error { return os.Rename(realPath, initPath) },
		})
	}
	changes = append(changes, change{
		what: "link " + SbinInit + " to " + Binary,
		do:   func() error { return os.Symlink(Binary, initPath) },
		undo: func() error { return os.Remove(initPath) },
	})
	msgs = append(msgs, fmt.Sprintf("%s the image's init (%s) to %s, linked %s → %s, recorded image_init in %s", how, kind, RealInit, SbinInit, Binary, ConfigFile))
	return changes, msgs, nil
}

// Uninstall reverses Install, whichever method it used.
func Uninstall(o Opts) error {
	if err := o.fill(false); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	sbinInit, initArg := Installed(o.Root)
	methods := []string{}
	if sbinInit {
		methods = append(methods, "sbin-init")
	}
	if initArg {
		methods = append(methods, "init-arg")
	}
	what := fmt.Sprintf("uninstall spotroot from %s", o.Root)
	if len(methods) > 0 {
		what += " (installed: " + strings.Join(methods, ", ") + ")"
	}
	if o.Method != "" && len(methods) > 0 && !(o.Method == "sbin-init" && sbinInit || o.Method == "init-arg" && initArg) {
		fmt.Fprintf(o.Out, "note: --method %s given, but the image is installed with %s; undoing that\n", o.Method, strings.Join(methods, " and "))
	}
	var changes []change
	var msgs []string
	if sbinInit {
		if _, err := identifyInit(o.Root, RealInit); err != nil {
			return fmt.Errorf("%s: %s is spotroot but the image's own init is not at %s (%v): restore it by hand", what, SbinInit, RealInit, err)
		}
		realPath, _ := inRoot(o.Root, RealInit)
		initPath, _ := inRoot(o.Root, SbinInit)
		oldLink, _ := os.Readlink(initPath)
		diverted := ""
		if dpkgManaged(o.Root) {
			d, err := o.diversion()
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			diverted = d
		}
		changes = append(changes, change{
			what: "remove the link " + SbinInit,
			do:   func() error { return os.Remove(initPath) },
			undo: func() error {
				if oldLink != "" {
					return os.Symlink(oldLink, initPath)
				}
				return nil
			},
		})
		if diverted != "" {
			changes = append(changes, change{
				what: "remove the diversion of " + SbinInit,
				do: func() error {
					_, err := o.divert("--rename", "--divert", diverted, "--remove", SbinInit)
					return err
				},
			})
		} else {
			changes = append(changes, change{
				what: "restore " + SbinInit + " from " + RealInit,
				do:   func() error { return os.Rename(realPath, initPath) },
				undo: func() error { return os.Rename(initPath, realPath) },
			})
		}
		msgs = append(msgs, fmt.Sprintf("restored %s from %s", SbinInit, RealInit))
	}
	if initArg {
		grubPath, err := inRoot(o.Root, GrubFile)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		old, err := os.ReadFile(grubPath)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		g, _, err := editGrub(old, false)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		c, err := fileChange("remove "+InitArg+" from "+GrubFile, grubPath, g, 0o644)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		changes = append(changes, c)
		msgs = append(msgs, fmt.Sprintf("removed %s from %s; run update-grub inside the image", InitArg, GrubFile))
	}
	cfgPath, err := inRoot(o.Root, ConfigFile)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if old, err := os.ReadFile(cfgPath); err == nil {
		if b, changed, err := EditImageInit(old, "", false); err == nil && changed {
			if len(bytes.TrimSpace(b)) == 0 {
				b = nil // spotroot install created it: leave no trace
			}
			c, err := fileChange("remove image_init from "+ConfigFile, cfgPath, b, 0o644)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			changes = append(changes, c)
		}
	}
	binPath, err := inRoot(o.Root, Binary)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := os.Stat(binPath); err == nil {
		c, err := fileChange("remove "+Binary, binPath, nil, 0o755)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		changes = append(changes, c)
		msgs = append(msgs, "removed "+Binary)
	}
	if len(changes) == 0 {
		fmt.Fprintf(o.Out, "spotroot is not installed in %s; nothing to do\n", o.Root)
		return nil
	}
	if err := apply(changes); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, m := range msgs {
		fmt.Fprintln(o.Out, m)
	}
	return nil
}

// grubLine compiles when install runs, not at every start of PID 1 (which
// shares this binary).
var grubLine = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?m)^GRUB_CMDLINE_LINUX=(["']?)(.*?)(["']?)$`)
})

// editGrub adds (or removes) init=/usr/sbin/spotroot in GRUB_CMDLINE_LINUX.
func editGrub(b []byte, add bool) ([]byte, bool, error) {
	s := string(b)
	m := grubLine().FindStringSubmatchIndex(s)
	if m == nil {
		if !add {
			return b, false, nil
		}
		s = strings.TrimRight(s, "\n") + "\nGRUB_CMDLINE_LINUX=\"" + InitArg + "\"\n"
		return []byte(s), true, nil
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
			return nil, false, fmt.Errorf("%s already sets %s: remove it, or use --method sbin-init", GrubFile, a)
		}
		kept = append(kept, a)
	}
	if add == has {
		return b, false, nil
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
	return []byte(s), true, nil
}
