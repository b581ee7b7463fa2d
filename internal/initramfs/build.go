package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/spotroot/spotroot/internal/caroots"
)

// DefaultModules are what spotroot may need before any root is mounted, on
// the instance families EC2 runs: the NIC (virtio_net under QEMU/KVM, ena
// on Nitro, xen_netfront on Xen), the disk (nvme, virtio_blk,
// xen_blkfront) and the filesystems a volume may carry. Those built into
// the target kernel are skipped, as are those it does not have at all.
var DefaultModules = []string{
	"virtio_pci", "virtio_net", "ena", "xen_netfront",
	"nvme", "virtio_blk", "xen_blkfront",
	"ext4", "xfs", "btrfs",
}

// Options describe one initramfs.
type Options struct {
	Spotroot    string   // the spotroot binary, installed as /init (required)
	ModulesDir  string   // the target kernel's lib/modules/<release> (required unless Modules is empty)
	Release     string   // uname -r of the target kernel; "" = base name of ModulesDir
	Modules     []string // module names; nil = DefaultModules; dependencies are added
	Config      []byte   // optional /etc/spotroot/config.yaml inside the initramfs
	Compression string   // zstd (default), xz, gzip or none
	MTime       int64    // mtime of every entry (e.g. SOURCE_DATE_EPOCH); default 0
	Depmod      string   // depmod binary; "" = "depmod" from PATH
	// CABundle is the target root's CA bundle, copied to
	// /etc/ssl/certs/ca-certificates.crt: spotroot verifies EC2's TLS
	// certificate before that root is mounted. "" = the first of
	// caroots.Paths found under SysRoot; NoCABundle ("none") = leave it
	// out (only for a plain-http ec2_endpoint).
	CABundle string
	SysRoot  string // the target root ("" = "/")
}

// NoCABundle as Options.CABundle builds an initramfs without CA roots.
const NoCABundle = "none"

// Result is a built initramfs and what went into it.
type Result struct {
	Data         []byte   // the compressed archive
	Uncompressed int      // size of the cpio archive before compression
	Release      string   // kernel release the modules are for
	Modules      []string // module files included, relative to lib/modules/<release>, load order
	Builtin      []string // requested modules built into the kernel (nothing to include)
	Missing      []string // requested modules the kernel does not have
	Names        []string // every entry of the archive
	CABundle     string   // the CA bundle file copied in ("" = none)
}

// caBundle reads the bundle Options name (see Options.CABundle).
func caBundle(o Options) ([]byte, string, error) {
	src := o.CABundle
	if src == "" {
		root := o.SysRoot
		if root == "" {
			root = "/"
		}
		p := caroots.Find(root)
		if p == "" {
			return nil, "", fmt.Errorf("initramfs: no CA bundle in %s (none of %s): spotroot could not verify EC2's certificate; install ca-certificates there, or name a bundle",
				root, strings.Join(caroots.Paths, ", "))
		}
		src = filepath.Join(root, p)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return nil, "", fmt.Errorf("initramfs: CA bundle: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return nil, "", fmt.Errorf("initramfs: CA bundle %s holds no PEM certificate", src)
	}
	return b, src, nil
}

// Build assembles the archive. The same options and input files give the
// same bytes.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Spotroot == "" {
		return nil, errors.New("initramfs: no spotroot binary given")
	}
	if o.Compression == "" {
		o.Compression = "zstd"
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	bin, err := os.ReadFile(o.Spotroot)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if f, err := elf.NewFile(bytes.NewReader(bin)); err != nil {
		return nil, fmt.Errorf("initramfs: %s is not an ELF executable: %w", o.Spotroot, err)
	} else {
		f.Close()
	}
	a := NewArchive()
	a.MTime = o.MTime
	res := &Result{}
	errs := []error{a.AddFile("init", 0o755, bin)}
	for _, d := range []string{"dev", "proc", "sys", "run", "etc", "root"} {
		errs = append(errs, a.AddDir(d, 0o755))
	}
	errs = append(errs,
		a.AddDir("tmp", 0o777|fs.ModeSticky),
		a.AddCharDev("dev/console", 0o600, 5, 1),
		a.AddCharDev("dev/null", 0o666, 1, 3))
	if o.Config != nil {
		errs = append(errs, a.AddFile("etc/spotroot/config.yaml", 0o644, o.Config))
	}
	if o.CABundle != NoCABundle {
		b, src, err := caBundle(o)
		if err != nil {
			return nil, err
		}
		res.CABundle = src
		errs = append(errs, a.AddFile(strings.TrimPrefix(caroots.Paths[0], "/"), 0o644, b))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(o.Modules) > 0 {
		if o.ModulesDir == "" {
			return nil, errors.New("initramfs: modules requested but no modules directory given")
		}
		if err := addModules(ctx, a, o, res); err != nil {
			return nil, err
		}
	}
	raw := a.Bytes()
	res.Uncompressed = len(raw)
	res.Names = a.Names()
	res.Data, err = Compress(o.Compression, raw)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// moduleSuffixes are the module file names depmod knows.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func modName(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

func addModules(ctx context.Context, a *Archive, o Options, res *Result) error {
	dir := o.ModulesDir
	rel := o.Release
	if rel == "" {
		rel = filepath.Base(filepath.Clean(dir))
	}
	res.Release = rel
	// Every module file of the kernel, by name.
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir && (d.Name() == "build" || d.Name() == "source") {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			for _, s := range moduleSuffixes {
				if strings.HasSuffix(d.Name(), s) {
					r, _ := filepath.Rel(dir, p)
					files[modName(r)] = filepath.ToSlash(r)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("initramfs: modules of %s: %w", dir, err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	// Resolve the dependency closure from each module's own .modinfo
	// (depends= and softdep=): it needs no prior depmod run, so a freshly
	// extracted kernel package works too.
	type mod struct {
		rel  string
		data []byte
	}
	mods := map[string]mod{}
	var order []string
	var visit func(name string, stack []string) error
	visit = func(name string, stack []string) error {
		if _, ok := mods[name]; ok {
			return nil
		}
		for _, s := range stack {
			if s == name {
				return nil // dependency cycle: already being added
			}
		}
		r, ok := files[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) is not in %s", name, strings.Join(stack, " → "), dir)
		}
		data, err := readModule(filepath.Join(dir, r))
		if err != nil {
			return err
		}
		deps, soft, err := modinfoDeps(data)
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
		for _, d := range deps {
			if err := visit(d, append(stack, name)); err != nil {
				return err
			}
		}
		for _, d := range soft {
			// softdeps may name aliases (crc32c) or built-in code: optional.
			if _, ok := files[d]; ok && !builtin[d] {
				if err := visit(d, append(stack, name)); err != nil {
					return err
				}
			}
		}
		mods[name] = mod{rel: stripCompression(r), data: data}
		order = append(order, name)
		return nil
	}
	for _, m := range o.Modules {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := strings.ReplaceAll(strings.TrimSpace(m), "-", "_")
		switch {
		case n == "":
		case builtin[n]:
			res.Builtin = append(res.Builtin, n)
		case files[n] == "":
			res.Missing = append(res.Missing, n)
		default:
			if err := visit(n, nil); err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
		}
	}
	if len(mods) == 0 {
		return nil
	}

	// Stage the chosen modules (uncompressed: the whole archive is
	// compressed) and let depmod write the index the loader reads.
	stage, err := os.MkdirTemp("", "spotroot-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	mdir := filepath.Join(stage, "lib", "modules", rel)
	for _, n := range order {
		m := mods[n]
		res.Modules = append(res.Modules, m.rel)
		if err := writeFile(filepath.Join(mdir, filepath.FromSlash(m.rel)), m.data); err != nil {
			return err
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		if err := writeFile(filepath.Join(mdir, "modules.builtin"), b); err != nil {
			return err
		}
	}
	// modules.order fixes depmod's output order; keep only what is here.
	included := map[string]bool{}
	for _, m := range res.Modules {
		included[m] = true
	}
	var ord bytes.Buffer
	if b, err := os.ReadFile(filepath.Join(dir, "modules.order")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if l := stripCompression(strings.TrimSpace(sc.Text())); included[l] {
				ord.WriteString(l + "\n")
				delete(included, l)
			}
		}
	}
	rest := make([]string, 0, len(included))
	for m := range included {
		rest = append(rest, m)
	}
	sort.Strings(rest)
	for _, m := range rest {
		ord.WriteString(m + "\n")
	}
	if err := writeFile(filepath.Join(mdir, "modules.order"), ord.Bytes()); err != nil {
		return err
	}
	depmod := o.Depmod
	if depmod == "" {
		depmod = "depmod"
	}
	// An empty configuration directory: the host's /etc/depmod.d must not
	// change the result.
	conf := filepath.Join(stage, "depmod.d")
	if err := os.Mkdir(conf, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, depmod, "-b", stage, "-C", conf, rel)
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("initramfs: depmod not found (apt-get install kmod): %w", err)
		}
		return fmt.Errorf("initramfs: depmod -b %s %s: %w: %s", stage, rel, err, out)
	}
	if _, err := os.Stat(filepath.Join(mdir, "modules.dep")); err != nil {
		return fmt.Errorf("initramfs: depmod wrote no modules.dep: %w", err)
	}
	return filepath.WalkDir(mdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(stage, p)
		return a.AddFile(filepath.ToSlash(r), 0o644, b)
	})
}

func stripCompression(p string) string {
	for _, s := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+s) {
			return strings.TrimSuffix(p, s)
		}
	}
	return p
}

func writeFile(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// readModule returns a module file's ELF bytes, decompressing .ko.xz,
// .ko.zst and .ko.gz.
func readModule(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		r, err = xz.NewReader(bytes.NewReader(b))
	case strings.HasSuffix(p, ".ko.gz"):
		r, err = gzip.NewReader(bytes.NewReader(b))
	case strings.HasSuffix(p, ".ko.zst"):
		var d *zstd.Decoder
		d, err = zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
		if err == nil {
			defer d.Close()
			r = d
		}
	default:
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return out, nil
}

// modinfoDeps reads depends= and softdep= from a module's .modinfo section.
func modinfoDeps(ko []byte) (deps, soft []string, err error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, nil, fmt.Errorf("not an ELF module: %w", err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil, nil
	}
	data, err := s.Data()
	if err != nil {
		return nil, nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
		case "softdep":
			for _, d := range strings.Fields(v) {
				if !strings.HasSuffix(d, ":") {
					soft = append(soft, strings.ReplaceAll(d, "-", "_"))
				}
			}
		}
	}
	return deps, soft, nil
}
