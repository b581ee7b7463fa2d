// Package kernel fetches and caches the Debian cloud kernel used to boot the
// e2e guests.
//
// Ensure resolves the linux-image-cloud-amd64 metapackage to its concrete
// kernel package, downloads that .deb with apt-get, extracts it and runs
// depmod on the extracted tree. The result is cached per package name and
// version, so later calls (and later test runs) are instant and need no
// network.
package kernel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MetaPackage is the Debian metapackage whose dependency names the amd64
// kernel; MetaPackageFor names the one of another architecture.
const MetaPackage = "linux-image-cloud-amd64"

// MetaPackageFor returns the cloud kernel metapackage of a Debian
// architecture ("amd64", "arm64"): what Debian's AMIs of that architecture run.
func MetaPackageFor(arch string) string { return "linux-image-cloud-" + arch }

// Kernel is an extracted kernel ready to boot.
type Kernel struct {
	Version    string // uname -r, e.g. 6.1.0-56-cloud-amd64
	Vmlinuz    string // absolute path of the kernel image
	ModulesDir string // absolute path of lib/modules/<Version>, depmod already run
}

// DefaultCacheDir is where Ensure caches kernels when given no directory:
// $SPOTROOT_CACHE/kernel if set, else ~/.cache/spotroot/kernel.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("SPOTROOT_CACHE"); d != "" {
		return filepath.Join(d, "kernel"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kernel cache: %w (set SPOTROOT_CACHE)", err)
	}
	return filepath.Join(d, "spotroot", "kernel"), nil
}

const doneMarker = ".complete"

// Ensure returns the cloud kernel, downloading and extracting it into
// cacheDir ("" = DefaultCacheDir) unless a complete copy is already there.
// If apt cannot resolve the package (no package lists, offline) but the cache
// holds a complete kernel, that kernel is used.
func Ensure(ctx context.Context, cacheDir string) (Kernel, error) {
	return EnsureArch(ctx, cacheDir, "amd64")
}

// EnsureArch is Ensure for the cloud kernel of a Debian architecture. A
// foreign one (arm64 on an amd64 host) is fetched as pkg:arch, which needs
// `dpkg --add-architecture arm64 && apt-get update` (e2e/setup.sh does it).
func EnsureArch(ctx context.Context, cacheDir, arch string) (Kernel, error) {
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return Kernel{}, err
		}
		cacheDir = d
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	unlock, err := LockCache(ctx, filepath.Join(cacheDir, ".lock"))
	if err != nil {
		return Kernel{}, err
	}
	defer unlock()

	pkg, ver, resolveErr := resolve(ctx, arch)
	if resolveErr != nil {
		// Offline or no package lists: fall back to the newest cached kernel.
		if k, err := newestCached(cacheDir, arch); err == nil {
			return k, nil
		}
		return Kernel{}, resolveErr
	}
	dir := filepath.Join(cacheDir, sanitize(pkg+"_"+ver))
	if k, err := load(dir); err == nil {
		return k, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".tmp-")
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := fetch(ctx, tmp, pkg+aptArch(arch), ver); err != nil {
		return Kernel{}, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	return load(dir)
}

// resolve finds the kernel package the metapackage depends on, and its
// version: `apt-cache show` of the metapackage gives both in one call
// (Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)).
func resolve(ctx context.Context, arch string) (pkg, ver string, err error) {
	meta := MetaPackageFor(arch) + aptArch(arch)
	out, err := run(ctx, "", "apt-cache", "show", "--no-all-versions", meta)
	if err != nil {
		hint := "apt-get update"
		if aptArch(arch) != "" {
			hint = "dpkg --add-architecture " + arch + " && apt-get update"
		}
		return "", "", fmt.Errorf("%w (is %s known to apt? try: %s)", err, meta, hint)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		deps, ok := strings.CutPrefix(sc.Text(), "Depends:")
		if !ok {
			continue
		}
		for _, d := range strings.Split(deps, ",") {
			d = strings.TrimSpace(strings.Split(d, "|")[0])
			name, rest, _ := strings.Cut(d, " ")
			if !strings.HasPrefix(name, "linux-image-") {
				continue
			}
			pkg = name
			if v, ok := strings.CutPrefix(strings.TrimSpace(rest), "(="); ok {
				ver = strings.TrimSpace(strings.TrimSuffix(v, ")"))
			}
			break
		}
		break
	}
	if pkg == "" {
		return "", "", fmt.Errorf("apt-cache show %s: no linux-image-* dependency in:\n%s\n(try: apt-get update)", meta, out)
	}
	if ver != "" {
		return pkg, ver, nil
	}
	out, err = run(ctx, "", "apt-cache", "policy", pkg+aptArch(arch))
	if err != nil {
		return "", "", fmt.Errorf("%w (try: apt-get update)", err)
	}
	sc = bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Candidate:"); ok {
			ver = strings.TrimSpace(v)
		}
	}
	if ver == "" || ver == "(none)" {
		return "", "", fmt.Errorf("apt-cache policy %s: no candidate version (try: apt-get update)", pkg)
	}
	return pkg, ver, nil
}

// fetch downloads pkg=ver into dir, extracts it to dir/root and runs depmod.
func fetch(ctx context.Context, dir, pkg, ver string) error {
	dl := filepath.Join(dir, "deb")
	if err := os.Mkdir(dl, 0o755); err != nil {
		return err
	}
	// apt-get download writes into the working directory. As root, apt drops
	// to the _apt user for downloads, which needs write access there.
	_ = os.Chmod(dl, 0o777)
	if _, err := run(ctx, dl, "apt-get", "download", "-q", pkg+"="+ver); err != nil {
		return fmt.Errorf("%w (needs network access to the Debian mirror; if the version is gone, run apt-get update)", err)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s=%s: expected one .deb in %s, found %d", pkg, ver, dl, len(debs))
	}
	root := filepath.Join(dir, "root")
	if _, err := run(ctx, "", "dpkg-deb", "-x", debs[0], root); err != nil {
		return err
	}
	kver, err := moduleVersion(root)
	if err != nil {
		return err
	}
	if _, err := run(ctx, "", "depmod", "-b", root, kver); err != nil {
		return fmt.Errorf("%w (install kmod: apt-get install kmod)", err)
	}
	if err := os.RemoveAll(dl); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, doneMarker), []byte(pkg+" "+ver+"\n"), 0o644)
}

// aptArch is the ":arch" qualifier apt needs for a foreign architecture's
// package ("" for the host's own).
func aptArch(arch string) string {
	if arch == "" || arch == hostArch() {
		return ""
	}
	return ":" + arch
}

func hostArch() string {
	if out, err := exec.Command("dpkg", "--print-architecture").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "amd64"
}

func moduleVersion(root string) (string, error) {
	ents, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil {
		return "", fmt.Errorf("kernel package has no lib/modules: %w", err)
	}
	var vers []string
	for _, e := range ents {
		if e.IsDir() {
			vers = append(vers, e.Name())
		}
	}
	if len(vers) != 1 {
		return "", fmt.Errorf("kernel package: expected one directory in lib/modules, found %v", vers)
	}
	return vers[0], nil
}

// load returns the kernel in a complete cache entry.
func load(dir string) (Kernel, error) {
	if _, err := os.Stat(filepath.Join(dir, doneMarker)); err != nil {
		return Kernel{}, err
	}
	root := filepath.Join(dir, "root")
	kver, err := moduleVersion(root)
	if err != nil {
		return Kernel{}, err
	}
	k := Kernel{
		Version:    kver,
		Vmlinuz:    filepath.Join(root, "boot", "vmlinuz-"+kver),
		ModulesDir: filepath.Join(root, "lib", "modules", kver),
	}
	for _, p := range []string{k.Vmlinuz, filepath.Join(k.ModulesDir, "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, fmt.Errorf("kernel cache entry %s is incomplete: %w", dir, err)
		}
	}
	return k, nil
}

func newestCached(cacheDir, arch string) (Kernel, error) {
	ents, err := os.ReadDir(cacheDir)
	if err != nil {
		return Kernel{}, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), "-"+arch+"_") {
			names = append(names, e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for _, n := range names {
		if k, err := load(filepath.Join(cacheDir, n)); err == nil {
			return k, nil
		}
	}
	return Kernel{}, errors.New("no cached kernel")
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_', r == '+':
			return r
		}
		return '_'
	}, s)
}

// LockCache takes an exclusive flock on path (created if missing), so
// concurrent test binaries fill a cache entry once; the returned func
// releases it. Other caches (the distro root) use it too.
func LockCache(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("cache lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for cache lock %s: %w", path, ctx.Err())
		case <-sleep():
		}
	}
}

func run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("%s: not installed: %w", name, err)
		}
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func sleep() <-chan time.Time { return time.After(200 * time.Millisecond) }
