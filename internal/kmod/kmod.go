// Package kmod loads the kernel modules a device class needs, the way
// modprobe would for a coldplug, without modprobe: PID 1 runs before any
// userland exists.
package kmod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spotroot/spotroot/internal/readahead"
)

// DefaultSettle bounds the wait for a device to bind to the driver just
// loaded for it (and so for its child devices to appear).
const DefaultSettle = 2 * time.Second

// Loader loads modules for devices found in sysfs. It remembers what it
// loaded across calls; it is not safe for concurrent use.
type Loader struct {
	Root    string // "/" in production; a fake tree in tests
	Release string // uname -r
	Logger  *slog.Logger
	// Load inserts one module file. Default: finit_module, with in-kernel
	// or userspace decompression for .ko.xz/.ko.zst/.ko.gz.
	Load func(path string, params string) error
	// ReadAhead submits the reads of a module and its dependencies before
	// the first of them loads. Default: readahead.Files.
	ReadAhead func(paths ...string)

	// Params are per-module parameters (module name -> "a=1 b=2"). Optional.
	Params map[string]string
	// Settle bounds the wait for a device to bind after its driver was
	// loaded (0 = DefaultSettle).
	Settle time.Duration

	ix          *index
	warnedIndex bool // warnDamaged said it
	state       map[string]modState
	loaded      []string
	log         *slog.Logger
}

type modState uint8

const (
	modUnknown modState = iota
	modLoaded           // inserted by us, or already present
	modFailed
)

// device is a sysfs device with a modalias.
type device struct {
	path     string // absolute sysfs path (under Root)
	modalias string
	// otherBus: found on a bus other than PCI (xen, vmbus, virtio-mmio…),
	// whose devices carry no class: its drivers are taken only if they
	// live in the class's part of the module tree (classDirs).
	otherBus bool
}

func (d device) name() string { return filepath.Base(d.path) }

// LoadForClass loads the drivers of PCI devices whose class starts with
// classPrefix (e.g. "0x02" for network), then of the child devices those
// drivers create (virtio0 under a virtio_pci device), and of the devices on
// every other bus that exposes a modalias (a Xen instance's NIC is vif-0 on
// the xen bus, modalias "xen:vif", driver xen-netfront) whose driver is a
// module of the class (classDirs), until nothing new loads. It returns the modules it inserted, in order. A device no alias
// matches is not an error: its driver is built in (or absent) and the caller
// waits for the link. Errors of individual modules are joined; loading
// continues for the other devices.
func (l *Loader) LoadForClass(ctx context.Context, classPrefix string) (loaded []string, err error) {
	defer func() {
		// PID 1 must not die on a bug here; a missing NIC is reported instead.
		if r := recover(); r != nil {
			err = fmt.Errorf("kmod: internal error: %v", r)
		}
	}()
	l.init()
	first := len(l.loaded)
	defer func() { loaded = l.loaded[first:len(l.loaded):len(l.loaded)] }()
	root := l.Root
	if root == "" {
		root = "/"
	}
	settle := l.Settle
	if settle <= 0 {
		settle = DefaultSettle
	}
	// Listen before the first scan so a bind event between scan and wait is
	// not lost. Only the real sysfs produces events.
	var w watcher = pollWatcher{}
	if filepath.Clean(root) == "/" {
		if uw := openUevents(); uw != nil {
			w = uw
		}
	}
	defer w.close()

	classPrefix = strings.ToLower(strings.TrimSpace(classPrefix))
	sc := newScanner(filepath.Join(root, "sys/bus"), classPrefix)
	done := map[string]bool{}    // device paths already handled
	waiting := map[string]bool{} // devices we loaded a driver for that are not yet bound
	var errs []error
	var deadline time.Time

	for {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("kmod: load drivers for class %s: %w", classPrefix, err))
			break
		}
		devs, err := sc.scan()
		if err != nil {
			errs = append(errs, err)
			break
		}
		progress := false
		for _, d := range devs {
			if done[d.path] {
				continue
			}
			done[d.path] = true
			if bound(d.path) {
				continue // driver present; only its children may need work
			}
			mods, err := l.modulesFor(root, d)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if d.otherBus {
				mods = l.ofClass(mods, classPrefix)
			}
			if len(mods) == 0 {
				l.log.Debug("no module alias for device; driver built in or absent", "device", d.name(), "modalias", d.modalias)
				continue
			}
			ok := false
			for _, m := range mods {
				if err := l.load(m, d, 0); err != nil {
					errs = append(errs, fmt.Errorf("kmod: %w", err))
					continue
				}
				ok = true
			}
			if ok && !d.otherBus {
				// Wait for the bind only if a driver is in. Not on other
				// buses: their probes run inside finit_module, and a device
				// still unbound was declined (an empty virtio-mmio slot).
				waiting[d.path] = true
			}
			progress = true
		}
		if progress {
			deadline = time.Now().Add(settle)
			// Rescan at once: synchronous probes (virtio_pci, ena) run inside
			// finit_module, so their children exist by now. Asynchronous
			// ones are covered by waiting below until the device binds.
			continue
		}
		for p := range waiting {
			if bound(p) {
				delete(waiting, p)
			}
		}
		if len(waiting) == 0 {
			break
		}
		if !time.Now().Before(deadline) {
			names := make([]string, 0, len(waiting))
			for p := range waiting {
				names = append(names, filepath.Base(p))
			}
			sort.Strings(names)
			l.log.Warn("devices not bound after loading their driver", "devices", strings.Join(names, ","), "waited", settle)
			break
		}
		// Wait for a uevent (bind/add), or a short tick when events are not
		// available, bounded by the settle deadline; then rescan.
		w.wait(ctx, time.Until(deadline))
	}
	return nil, errors.Join(errs...)
}

func (l *Loader) init() {
	if l.log == nil {
		l.log = l.Logger
		if l.log == nil {
			l.log = slog.New(slog.DiscardHandler)
		}
		l.log = l.log.With("phase", "kmod")
	}
	if l.state == nil {
		l.state = map[string]modState{}
	}
	if l.Load == nil {
		l.Load = loadModule
	}
	if l.ReadAhead == nil {
		l.ReadAhead = readahead.Files
	}
}

// modulesFor resolves a device's modalias, parsing the index on first use so
// a machine whose NIC driver is built in never reads modules.alias.
func (l *Loader) modulesFor(root string, d device) ([]string, error) {
	if l.ix == nil {
		if l.Release == "" {
			return nil, fmt.Errorf("kmod: device %s (alias %s): no kernel release given", d.name(), d.modalias)
		}
		t := time.Now()
		ix, err := loadIndex(filepath.Join(root, "lib/modules", l.Release))
		if err != nil {
			return nil, fmt.Errorf("kmod: device %s (alias %s): %w", d.name(), d.modalias, err)
		}
		l.ix = ix
		l.log.Debug("module index opened", "index", ix.source(), "took", time.Since(t))
	}
	mods, err := l.ix.lookup(d.modalias)
	l.warnDamaged()
	if err != nil {
		return nil, fmt.Errorf("kmod: device %s (alias %s): %w", d.name(), d.modalias, err)
	}
	return mods, nil
}

// warnDamaged logs, once, that the binary index was found damaged (when
// opened or during a lookup) and the text files answer instead.
func (l *Loader) warnDamaged() {
	if l.ix.binDamaged && !l.warnedIndex {
		l.warnedIndex = true
		l.log.Warn("depmod's binary index is damaged; reading modules.alias and modules.dep instead (run depmod to rebuild it)",
			"dir", l.ix.dir, "error", l.ix.textWhy)
	}
}

// classDirs are the module-tree directories of a PCI class's drivers: what
// tells a NIC from a disk on buses whose devices carry no class (the xen bus
// has vif and vbd, the virtio bus net and blk).
// The virtio transports (virtio_mmio for a platform device: virt machines,
// Firecracker) count for both: the NIC or disk is their child on the virtio
// bus, found on the next scan.
var classDirs = map[string][]string{
	"0x02": {"kernel/drivers/net/", "kernel/drivers/virtio/"},
	"0x01": {"kernel/drivers/block/", "kernel/drivers/nvme/", "kernel/drivers/scsi/", "kernel/drivers/ata/", "kernel/drivers/virtio/"},
}

// ofClass keeps the modules whose file lies in one of the class's
// directories. Built-in drivers have no file and need no loading.
func (l *Loader) ofClass(mods []string, classPrefix string) []string {
	var out []string
	for _, m := range mods {
		e, ok, err := l.ix.dep(m)
		if !ok || err != nil {
			continue // built in, or not loadable: reported if it is ever loaded
		}
		p := strings.TrimPrefix(e.path, "/lib/modules/"+l.Release+"/")
		for _, dir := range classDirs[classPrefix] {
			if strings.HasPrefix(p, dir) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// load inserts a module after its dependencies, each once. Errors name the
// module, the device's alias and the file.
func (l *Loader) load(name string, d device, depth int) error {
	switch l.state[name] {
	case modLoaded:
		return nil
	case modFailed:
		return nil // reported once already
	}
	builtin, err := l.ix.isBuiltin(name)
	l.warnDamaged()
	if err != nil {
		l.state[name] = modFailed
		return fmt.Errorf("module %s (alias %s of %s): %w", name, d.modalias, d.name(), err)
	}
	if builtin {
		l.state[name] = modLoaded
		return nil
	}
	if depth > 64 { // a dependency cycle would be a broken depmod tree
		l.state[name] = modFailed
		return fmt.Errorf("module %s (alias %s of %s): dependency chain too deep", name, d.modalias, d.name())
	}
	e, ok, err := l.ix.dep(name)
	l.warnDamaged()
	if err != nil {
		l.state[name] = modFailed
		return fmt.Errorf("module %s (alias %s of %s): %w", name, d.modalias, d.name(), err)
	}
	if !ok {
		l.state[name] = modFailed
		return fmt.Errorf("module %s (alias %s of %s): not in %s", name, d.modalias, d.name(), filepath.Join(l.ix.dir, "modules.dep"))
	}
	l.state[name] = modLoaded // mark first: breaks cycles
	if depth == 0 {
		// depmod lists every module the chain needs: submit the reads of
		// those not loaded yet before the first finit_module waits for
		// its own.
		files := []string{l.ix.file(e.path)}
		for _, dp := range e.depPaths() {
			if l.state[moduleName(dp)] == modUnknown {
				files = append(files, l.ix.file(dp))
			}
		}
		l.ReadAhead(files...)
	}
	for _, dp := range e.depPaths() {
		if err := l.load(moduleName(dp), d, depth+1); err != nil {
			l.state[name] = modFailed
			return fmt.Errorf("%w (needed by %s)", err, name)
		}
	}
	if l.isLive(name) {
		l.log.Debug("module already loaded", "module", name)
		return nil
	}
	path := l.ix.file(e.path)
	t := time.Now()
	err = l.Load(path, l.Params[name])
	switch {
	case err == nil:
		l.loaded = append(l.loaded, name)
		l.log.Debug("module loaded", "module", name, "took", time.Since(t))
		return nil
	case errors.Is(err, syscall.EEXIST):
		l.log.Debug("module already loaded", "module", name)
		return nil
	default:
		l.state[name] = modFailed
		return fmt.Errorf("load module %s (alias %s of %s) from %s: %w", name, d.modalias, d.name(), path, err)
	}
}

// isLive reports whether the running kernel already has the module, which
// saves reading (and maybe decompressing) its file. Only loadable modules
// have initstate; built-ins with parameters also appear in /sys/module.
func (l *Loader) isLive(name string) bool {
	root := l.Root
	if root == "" {
		root = "/"
	}
	_, err := os.Stat(filepath.Join(root, "sys/module", name, "initstate"))
	return err == nil
}

// bound reports whether a driver is bound to the device.
func bound(devPath string) bool {
	_, err := os.Lstat(filepath.Join(devPath, "driver"))
	return err == nil
}

// scanner lists the devices that may need a driver. It remembers the bus
// entries it has read, so the rescans after each load (three or four per
// boot) read only what is new: on a TCG guest one pass over every bus's
// sysfs attributes costs well over 100 ms.
type scanner struct {
	busDir      string
	classPrefix string
	seen        map[string]bool      // bus entries examined and not of interest
	matched     map[string]*pciMatch // PCI entries of the class
	other       map[string]*device   // other-bus entries with a modalias
}

func newScanner(busDir, classPrefix string) *scanner {
	return &scanner{busDir: busDir, classPrefix: classPrefix, seen: map[string]bool{},
		matched: map[string]*pciMatch{}, other: map[string]*device{}}
}

// scan lists PCI devices of the class and, below them, child devices with
// a modalias (virtio0 under a virtio_pci device), parents first; then the
// devices of every other bus with a modalias, marked otherBus. Like udev's
// coldplug (and booster's), the bus lists in /sys/bus/*/devices are what is
// walked; buses that only ever hold CPUs and memory are skipped, and so is
// the acpi bus: it lists firmware descriptions (40-odd on a small VM), and a
// NIC that ACPI describes is bound as the platform device carrying the same
// acpi: modalias.
func (s *scanner) scan() ([]device, error) {
	out, err := s.scanPCI(filepath.Join(s.busDir, "pci", "devices"))
	if err != nil {
		return nil, err
	}
	if len(classDirs[s.classPrefix]) == 0 {
		return out, nil
	}
	buses, err := os.ReadDir(s.busDir)
	if err != nil {
		return out, nil // no sysfs: nothing else to find
	}
	for _, b := range buses {
		switch b.Name() {
		case "pci", "acpi", "cpu", "memory", "node", "container", "clockevents", "clocksource", "event_source", "workqueue":
			continue
		}
		dir := filepath.Join(s.busDir, b.Name(), "devices")
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			entry := filepath.Join(dir, e.Name())
			if d := s.other[entry]; d != nil {
				out = append(out, *d)
				continue
			}
			if s.seen[entry] {
				continue
			}
			p := resolve(entry)
			ma, err := readTrim(filepath.Join(p, "modalias"))
			if err != nil || ma == "" {
				s.seen[entry] = true
				continue
			}
			s.other[entry] = &device{path: p, modalias: ma, otherBus: true}
			out = append(out, *s.other[entry])
		}
	}
	return out, nil
}

// scanPCI lists PCI devices of the class and their children with a modalias.
// A device's children appear when a driver binds it: they are looked for
// on the first scan and again once it is bound, not on every scan.
func (s *scanner) scanPCI(pciDir string) ([]device, error) {
	ents, err := os.ReadDir(pciDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // no PCI bus (a Xen PV guest) or no sysfs
		}
		return nil, fmt.Errorf("kmod: list PCI devices: %w", err)
	}
	var out []device
	for _, e := range ents {
		entry := filepath.Join(pciDir, e.Name())
		if s.seen[entry] {
			continue
		}
		m, ok := s.matched[entry]
		if !ok {
			// The modalias carries the class (bc<base>sc<sub>i<prog-if>):
			// one read per device; the class file only when it does not.
			ma, _ := readTrim(filepath.Join(entry, "modalias"))
			class, known := pciClassFromAlias(ma)
			if !known {
				class, _ = readTrim(filepath.Join(entry, "class"))
			}
			if !strings.HasPrefix(strings.ToLower(class), s.classPrefix) {
				s.seen[entry] = true
				continue
			}
			// The bus entry is a symlink into /sys/devices; resolve it so
			// child paths are stable and the walk below can skip symlinks.
			m = &pciMatch{path: resolve(entry), modalias: ma}
			s.matched[entry] = m
		}
		if m.modalias != "" {
			out = append(out, device{path: m.path, modalias: m.modalias})
		}
		if b := bound(m.path); !m.walked || b != m.bound {
			m.children = walkChildren(m.path, 3, nil)
			m.walked, m.bound = true, b
		}
		out = append(out, m.children...)
	}
	return out, nil
}

// pciMatch is a PCI device of the class, with what the last walk found.
type pciMatch struct {
	path, modalias string
	walked, bound  bool
	children       []device
}

// pciClassFromAlias reads "0x020000" from a PCI modalias
// ("pci:v…d…sv…sd…bc02sc00i00"), as the class file says it.
func pciClassFromAlias(ma string) (string, bool) {
	i := strings.LastIndex(ma, "bc")
	if !strings.HasPrefix(ma, "pci:") || i < 0 || len(ma) < i+11 || ma[i+4:i+6] != "sc" || ma[i+8] != 'i' {
		return "", false
	}
	return "0x" + strings.ToLower(ma[i+2:i+4]+ma[i+6:i+8]+ma[i+9:i+11]), true
}

// resolve turns a /sys/bus/*/devices entry into its /sys/devices path. The
// entry is one relative symlink straight to the device, so one readlink
// does what EvalSymlinks does with a stat per path component.
func resolve(entry string) string {
	t, err := os.Readlink(entry)
	if err != nil {
		return entry // a plain directory (fake trees), or gone
	}
	if filepath.IsAbs(t) {
		return filepath.Clean(t)
	}
	return filepath.Join(filepath.Dir(entry), t)
}

// walkChildren collects devices with a modalias below dir, depth-bounded,
// not following symlinks (sysfs links to driver, subsystem, iommu group...).
func walkChildren(dir string, depth int, out []device) []device {
	if depth == 0 {
		return out
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if !e.IsDir() || e.Type()&os.ModeSymlink != 0 {
			continue
		}
		switch e.Name() {
		case "power", "msi_irqs", "net", "subsystem", "driver":
			continue
		}
		p := filepath.Join(dir, e.Name())
		if ma, err := readTrim(filepath.Join(p, "modalias")); err == nil && ma != "" {
			out = append(out, device{path: p, modalias: ma})
		}
		out = walkChildren(p, depth-1, out)
	}
	return out
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
