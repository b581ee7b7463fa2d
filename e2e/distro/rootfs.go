// Package distro builds real distribution images for the slower e2e tier
// (`make e2e-distro`): a Debian bookworm root made from Debian's packages
// with mmdebstrap (systemd as init, udev, networkd, cloud-init), plus the
// cloud kernel's modules, assembled into the disks the scenarios boot: the
// persistent volume (GPT, ext4) and a stock "AMI" (whole-disk ext4).
//
// The package set is built once and cached as a tarball keyed by a hash of
// everything that goes into it (BuilderVersion, suite, variant, packages,
// dpkg and apt options, the cleanup hook), since it takes minutes. The
// mirror comes from the host's apt configuration at run time; the built tree
// keeps no apt sources.
package distro

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spotroot/spotroot/e2e/kernel"
)

// BuilderVersion changes whenever the way the root is built changes in a way
// the other key parts do not show; it invalidates cached roots.
const BuilderVersion = "1"

// Suite and Variant of the Debian root.
const (
	Suite   = "bookworm"
	Variant = "minbase"
)

// Packages are installed on top of the minbase variant, without recommends.
// systemd-networkd is part of systemd in bookworm; cloud-init pulls
// isc-dhcp-client (its EC2 datasource's ephemeral DHCP) and python3.
// cloud-init's networkd renderer restarts systemd-networkd and
// systemd-resolved together to apply its config, so resolved is there too.
var Packages = []string{
	"systemd-sysv", "udev", "dbus", "e2fsprogs", "kmod", "iproute2", "systemd-resolved", "cloud-init",
}

// dpkgOptions keep documentation, manuals and translations out of the image.
var dpkgOptions = []string{
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/locale/*",
	"path-include=/usr/share/locale/locale.alias",
	"path-exclude=/usr/share/lintian/*",
}

var aptOptions = []string{`APT::Install-Recommends "false"`}

// cleanupHook runs on the finished tree ($1): it drops what mmdebstrap
// copied from the build host (apt sources, resolv.conf, hostname, hosts) so
// that the cached root names no host of ours, and sets a locale that needs
// no generation (cloud-init would otherwise run locale-gen en_US.UTF-8).
const cleanupHook = `set -e
rm -f "$1/etc/apt/sources.list" "$1"/etc/apt/sources.list.d/*
if [ ! -L "$1/etc/resolv.conf" ]; then rm -f "$1/etc/resolv.conf"; : > "$1/etc/resolv.conf"; fi
echo debian > "$1/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$1/etc/hosts"
echo LANG=C.UTF-8 > "$1/etc/default/locale"
echo LANG=C.UTF-8 > "$1/etc/locale.conf"
`

// Key is the cache key of the root the current settings build.
func Key() string {
	h := sha256.New()
	fmt.Fprintf(h, "builder %s\nsuite %s\nvariant %s\n", BuilderVersion, Suite, Variant)
	fmt.Fprintf(h, "packages %s\n", strings.Join(slices.Sorted(slices.Values(Packages)), ","))
	fmt.Fprintf(h, "dpkg %s\napt %s\nhook %s\n", strings.Join(dpkgOptions, "\x00"),
		strings.Join(aptOptions, "\x00"), cleanupHook)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// DefaultCacheDir is $SPOTROOT_CACHE/distro if set, else
// ~/.cache/spotroot/distro.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("SPOTROOT_CACHE"); d != "" {
		return filepath.Join(d, "distro"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("distro cache: %w (set SPOTROOT_CACHE)", err)
	}
	return filepath.Join(d, "spotroot", "distro"), nil
}

// Rootfs is a built root filesystem tree, as a tarball.
type Rootfs struct {
	Tar      string        // uncompressed tar of the tree (numeric owners, xattrs)
	Key      string        // cache key
	Built    bool          // built by this call (false = from the cache)
	Duration time.Duration // time Ensure took
}

const doneMarker = ".complete"

// EnsureRootfs returns the cached root for the current settings, building it
// with mmdebstrap first if needed (needs root and the Debian mirror the
// host's apt uses). log receives mmdebstrap's progress (may be nil).
func EnsureRootfs(ctx context.Context, cacheDir string, log io.Writer) (Rootfs, error) {
	start := time.Now()
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return Rootfs{}, err
		}
		cacheDir = d
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Rootfs{}, fmt.Errorf("distro cache: %w", err)
	}
	unlock, err := kernel.LockCache(ctx, filepath.Join(cacheDir, ".lock"))
	if err != nil {
		return Rootfs{}, err
	}
	defer unlock()

	key := Key()
	dir := filepath.Join(cacheDir, Suite+"-"+key)
	r := Rootfs{Tar: filepath.Join(dir, "rootfs.tar"), Key: key}
	if _, err := os.Stat(filepath.Join(dir, doneMarker)); err == nil {
		if _, err := os.Stat(r.Tar); err == nil {
			r.Duration = time.Since(start)
			return r, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return Rootfs{}, err
	}
	tmp, err := os.MkdirTemp(cacheDir, ".tmp-")
	if err != nil {
		return Rootfs{}, err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Rootfs{}, err
	}
	if err := build(ctx, filepath.Join(tmp, "rootfs.tar"), filepath.Join(tmp, "build.log"), log); err != nil {
		return Rootfs{}, err
	}
	desc := fmt.Sprintf("suite %s variant %s builder %s\npackages %s\nbuilt %s in %v\n", Suite, Variant,
		BuilderVersion, strings.Join(Packages, " "), time.Now().UTC().Format(time.RFC3339), time.Since(start).Round(time.Second))
	if err := os.WriteFile(filepath.Join(tmp, doneMarker), []byte(desc), 0o644); err != nil {
		return Rootfs{}, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return Rootfs{}, err
	}
	r.Built, r.Duration = true, time.Since(start)
	return r, nil
}

func build(ctx context.Context, out, logPath string, log io.Writer) error {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return fmt.Errorf("mmdebstrap not installed (apt-get install mmdebstrap): %w", err)
	}
	sources, err := HostSources(Suite)
	if err != nil {
		return err
	}
	args := []string{"--variant=" + Variant, "--mode=root", "--format=tar",
		"--include=" + strings.Join(Packages, ",")}
	for _, o := range aptOptions {
		args = append(args, "--aptopt="+o)
	}
	for _, o := range dpkgOptions {
		args = append(args, "--dpkgopt="+o)
	}
	args = append(args, "--customize-hook="+cleanupHook, Suite, out, "-")
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	var w io.Writer = lf
	if log != nil {
		w = io.MultiWriter(lf, log)
	}
	var tail bytes.Buffer
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Stdin = strings.NewReader(sources)
	cmd.Stdout = io.MultiWriter(w, &tail)
	cmd.Stderr = io.MultiWriter(w, &tail)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	if err := cmd.Run(); err != nil {
		t := tail.String()
		if len(t) > 4000 {
			t = t[len(t)-4000:]
		}
		return fmt.Errorf("mmdebstrap %s: %w\n%s", Suite, err, t)
	}
	return nil
}

// aptSource is one deb822 stanza (or one-line entry) of the host's apt.
type aptSource struct {
	Types, URIs, Suites, Components []string
	SignedBy                        string
	Enabled                         bool
}

// HostSources renders, as deb822, the host's apt entries for suite and its
// -updates and -security pockets (main only), read from /etc/apt/sources.list
// and /etc/apt/sources.list.d/*.{list,sources}. It fails if there are none.
func HostSources(suite string) (string, error) {
	return hostSources("/etc/apt", suite)
}

func hostSources(etcApt, suite string) (string, error) {
	var all []aptSource
	if ss, err := readOneLine(filepath.Join(etcApt, "sources.list")); err == nil {
		all = append(all, ss...)
	}
	lists, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.list"))
	for _, p := range lists {
		if ss, err := readOneLine(p); err == nil {
			all = append(all, ss...)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.sources"))
	for _, p := range debs {
		if ss, err := readDeb822(p); err == nil {
			all = append(all, ss...)
		}
	}
	var b strings.Builder
	seen := map[string]bool{}
	for _, s := range all {
		if !s.Enabled || !slices.Contains(s.Types, "deb") || !slices.Contains(s.Components, "main") {
			continue
		}
		var suites []string
		for _, su := range s.Suites {
			if su == suite || su == suite+"-updates" || su == suite+"-security" {
				suites = append(suites, su)
			}
		}
		if len(suites) == 0 {
			continue
		}
		for _, u := range s.URIs {
			k := u + " " + strings.Join(suites, " ")
			if seen[k] {
				continue
			}
			seen[k] = true
			fmt.Fprintf(&b, "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n", u, strings.Join(suites, " "))
			if s.SignedBy != "" {
				fmt.Fprintf(&b, "Signed-By: %s\n", s.SignedBy)
			}
			b.WriteString("\n")
		}
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("no apt source for Debian %s (main) in %s: the distro images are built from the mirror the host's apt uses", suite, etcApt)
	}
	return b.String(), nil
}

func readOneLine(path string) ([]aptSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []aptSource
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fs := strings.Fields(line)
		if len(fs) < 3 {
			continue
		}
		s := aptSource{Types: []string{fs[0]}, Enabled: true}
		fs = fs[1:]
		if strings.HasPrefix(fs[0], "[") {
			// [ key=value ... ] options
			var opts []string
			for len(fs) > 0 {
				o := fs[0]
				fs = fs[1:]
				opts = append(opts, strings.Trim(o, "[]"))
				if strings.HasSuffix(o, "]") {
					break
				}
			}
			for _, o := range opts {
				if v, ok := strings.CutPrefix(o, "signed-by="); ok {
					s.SignedBy = v
				}
			}
		}
		if len(fs) < 2 {
			continue
		}
		s.URIs, s.Suites, s.Components = []string{fs[0]}, []string{fs[1]}, fs[2:]
		out = append(out, s)
	}
	return out, sc.Err()
}

func readDeb822(path string) ([]aptSource, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []aptSource
	for _, para := range strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n\n") {
		fields := map[string]string{}
		last := ""
		for _, l := range strings.Split(para, "\n") {
			if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
				continue
			}
			if (l[0] == ' ' || l[0] == '\t') && last != "" {
				fields[last] += "\n" + strings.TrimSpace(l)
				continue
			}
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
		if fields["types"] == "" {
			continue
		}
		s := aptSource{
			Types: strings.Fields(fields["types"]), URIs: strings.Fields(fields["uris"]),
			Suites: strings.Fields(fields["suites"]), Components: strings.Fields(fields["components"]),
			Enabled: !strings.EqualFold(fields["enabled"], "no"),
		}
		// An inline key block cannot be passed on; a path can.
		if sb := fields["signed-by"]; sb != "" && !strings.Contains(sb, "\n") {
			s.SignedBy = sb
		}
		out = append(out, s)
	}
	return out, nil
}
