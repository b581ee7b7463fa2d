// Command spotroot-initramfs builds spotroot's initramfs: spotroot as /init,
// the kernel modules it needs for the target kernel with their depmod
// index, optionally /etc/spotroot/config.yaml; a reproducible cpio (newc)
// archive, compressed. It also lists an existing initramfs.
//
//	spotroot-initramfs -spotroot build/spotroot -kernel /lib/modules/6.1.0-56-cloud-amd64 -o initramfs.img
//	spotroot-initramfs -kernel linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb -o initramfs.img
//	spotroot-initramfs -list initramfs.img
//
// -kernel takes lib/modules/<release>, a root holding lib/modules/<release>
// (an extracted kernel package), or a kernel .deb. Without it the running
// kernel's /lib/modules/$(uname -r) is used (`make initramfs` passes the
// Debian cloud kernel the e2e tests boot when the build host has none).
//
// It is shipped in the .deb as /usr/bin/spotroot-initramfs: product code,
// so it imports nothing from e2e/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/initramfs"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("spotroot-initramfs", flag.ContinueOnError)
	fl.SetOutput(stderr)
	spot := fl.String("spotroot", "build/spotroot", "spotroot binary, installed as /init")
	kdir := fl.String("kernel", "", "lib/modules/<release>, a root containing it, or a kernel .deb (default: the running kernel)")
	release := fl.String("release", "", "kernel release when -kernel holds several")
	mods := fl.String("modules", strings.Join(initramfs.DefaultModules, ","), "modules to include (dependencies are added; built-in and absent ones are skipped)")
	conf := fl.String("config", "", "file installed as /etc/spotroot/config.yaml")
	comp := fl.String("compress", "zstd", "compression: "+strings.Join(initramfs.Compressions, ", "))
	out := fl.String("o", "build/initramfs.img", "output file")
	list := fl.String("list", "", "list the contents of this initramfs and exit")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *list != "" {
		if err := listArchive(*list, stdout); err != nil {
			fmt.Fprintln(stderr, "spotroot-initramfs:", err)
			return 1
		}
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	modulesDir, cleanup, err := findModules(ctx, *kdir, *release)
	if err != nil {
		fmt.Fprintln(stderr, "spotroot-initramfs:", err)
		return 1
	}
	defer cleanup()
	o := initramfs.Options{Spotroot: *spot, ModulesDir: modulesDir, Compression: *comp, Modules: []string{}}
	for _, m := range strings.Split(*mods, ",") {
		if m = strings.TrimSpace(m); m != "" {
			o.Modules = append(o.Modules, m)
		}
	}
	if *conf != "" {
		if o.Config, err = os.ReadFile(*conf); err != nil {
			fmt.Fprintln(stderr, "spotroot-initramfs:", err)
			return 1
		}
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if o.MTime, err = strconv.ParseInt(s, 10, 64); err != nil {
			fmt.Fprintln(stderr, "spotroot-initramfs: SOURCE_DATE_EPOCH:", err)
			return 1
		}
	}
	res, err := initramfs.Build(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "spotroot-initramfs:", err)
		return 1
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fmt.Fprintln(stderr, "spotroot-initramfs:", err)
		return 1
	}
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, res.Data, 0o644); err != nil {
		fmt.Fprintln(stderr, "spotroot-initramfs:", err)
		return 1
	}
	if err := os.Rename(tmp, *out); err != nil {
		fmt.Fprintln(stderr, "spotroot-initramfs:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d bytes (%s; cpio %d bytes), kernel %s, %d modules\n",
		*out, len(res.Data), *comp, res.Uncompressed, res.Release, len(res.Modules))
	for _, m := range res.Modules {
		fmt.Fprintln(stdout, "  module", m)
	}
	if len(res.Builtin) > 0 {
		fmt.Fprintln(stdout, "  built in:", strings.Join(res.Builtin, " "))
	}
	if len(res.Missing) > 0 {
		fmt.Fprintln(stdout, "  not in this kernel:", strings.Join(res.Missing, " "))
	}
	return 0
}

// findModules resolves -kernel to a lib/modules/<release> directory.
func findModules(ctx context.Context, spec, release string) (string, func(), error) {
	nop := func() {}
	if spec == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err == nil {
			d := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
			if _, err := os.Stat(filepath.Join(d, "modules.order")); err == nil {
				return d, nop, nil
			}
		}
		return "", nop, errors.New("no modules for the running kernel (/lib/modules/$(uname -r)): give -kernel with lib/modules/<release>, a root holding it, or a kernel .deb (e.g. from apt-get download linux-image-cloud-amd64)")
	}
	if strings.HasSuffix(spec, ".deb") {
		tmp, err := os.MkdirTemp("", "spotroot-kernel-")
		if err != nil {
			return "", nop, err
		}
		cleanup := func() { os.RemoveAll(tmp) }
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", spec, tmp).CombinedOutput(); err != nil {
			cleanup()
			return "", nop, fmt.Errorf("dpkg-deb -x %s: %w: %s", spec, err, out)
		}
		d, err := modulesIn(tmp, release)
		if err != nil {
			cleanup()
			return "", nop, err
		}
		return d, cleanup, nil
	}
	d, err := modulesIn(spec, release)
	return d, nop, err
}

// modulesIn accepts lib/modules/<release> itself or a root above it.
func modulesIn(dir, release string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "modules.order")); err == nil {
		return dir, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "kernel")); err == nil {
		return dir, nil
	}
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		entries, err := os.ReadDir(filepath.Join(dir, base))
		if err != nil {
			continue
		}
		var found []string
		for _, e := range entries {
			if e.IsDir() && (release == "" || e.Name() == release) {
				found = append(found, e.Name())
			}
		}
		switch len(found) {
		case 1:
			return filepath.Join(dir, base, found[0]), nil
		case 0:
		default:
			return "", fmt.Errorf("%s holds several kernels (%s): pick one with -release", filepath.Join(dir, base), strings.Join(found, ", "))
		}
	}
	return "", fmt.Errorf("%s: no kernel modules (want lib/modules/<release>)", dir)
}

func listArchive(p string, w io.Writer) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	raw, err := initramfs.Decompress(b)
	if err != nil {
		return err
	}
	recs, err := initramfs.ReadArchive(raw)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return errors.New("empty archive")
	}
	for _, r := range recs {
		extra := ""
		switch {
		case r.Mode&fs.ModeSymlink != 0:
			extra = " -> " + r.Link
		case r.Mode&fs.ModeDevice != 0:
			extra = fmt.Sprintf(" %d,%d", r.Major, r.Minor)
		}
		fmt.Fprintf(w, "%s %4d:%-4d %10d /%s%s\n", r.Mode, r.UID, r.GID, len(r.Data), r.Name, extra)
	}
	return nil
}
