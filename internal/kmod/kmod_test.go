package kmod

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/testenv"
)

const rel = "6.1.0-test-cloud-amd64"

// The virtio chain as in Debian's cloud kernel (aliases and modules.dep
// lines copied from 6.1.0-56-cloud-amd64).
const (
	fakeAlias = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias virtio:d00000001v* virtio_net
alias pci:v00001D0Fd0000EC20sv*sd*bc*sc*i* ena
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
`
	fakeDep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/ethernet/amazon/ena/ena.ko:
`
	fakeBuiltin = `kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/nvme/host/nvme.ko
`
	virtioNetPCI   = "0000:00:03.0"
	virtioNetAlias = "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"
	virtioChild    = "virtio:d00000001v00001AF4"
)

var wantVirtioOrder = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net",
}

type fakeTree struct {
	t    *testing.T
	root string
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newFakeTree builds sysfs with a virtio-net PCI NIC and an NVMe controller
// (built-in driver, already bound), and lib/modules with empty .ko files.
func newFakeTree(t *testing.T) *fakeTree {
	root := t.TempDir()
	ft := &fakeTree{t: t, root: root}
	ft.pciDevice(virtioNetPCI, "0x020000", virtioNetAlias)
	nvme := ft.pciDevice("0000:00:04.0", "0x010802", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02")
	ft.bind(nvme, "nvme")
	mdir := filepath.Join(root, "lib/modules", rel)
	write(t, filepath.Join(mdir, "modules.alias"), fakeAlias)
	write(t, filepath.Join(mdir, "modules.dep"), fakeDep)
	write(t, filepath.Join(mdir, "modules.builtin"), fakeBuiltin)
	for _, line := range strings.Split(fakeDep, "\n") {
		if p, _, ok := strings.Cut(line, ":"); ok {
			write(t, filepath.Join(mdir, p), "\x7fELF fake module "+p)
		}
	}
	return ft
}

// pciDevice creates /sys/devices/pci0000:00/<addr> and the bus symlink.
func (ft *fakeTree) pciDevice(addr, class, modalias string) string {
	dev := filepath.Join(ft.root, "sys/devices/pci0000:00", addr)
	write(ft.t, filepath.Join(dev, "class"), class+"\n")
	write(ft.t, filepath.Join(dev, "modalias"), modalias+"\n")
	bus := filepath.Join(ft.root, "sys/bus/pci/devices")
	if err := os.MkdirAll(bus, 0o755); err != nil {
		ft.t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("../../../devices/pci0000:00", addr), filepath.Join(bus, addr)); err != nil {
		ft.t.Fatal(err)
	}
	return dev
}

func (ft *fakeTree) bind(dev, driver string) {
	if err := os.Symlink("../../bus/drivers/"+driver, filepath.Join(dev, "driver")); err != nil && !errors.Is(err, os.ErrExist) {
		ft.t.Error(err)
	}
}

func (ft *fakeTree) pciPath(addr string) string {
	return filepath.Join(ft.root, "sys/devices/pci0000:00", addr)
}

// kernel simulates what the kernel does when the virtio modules load:
// virtio_pci binds the PCI device and registers virtio0; virtio_net binds it.
type kernel struct {
	ft    *fakeTree
	mu    sync.Mutex
	order []string
	delay time.Duration // > 0: probe completes asynchronously
	fail  map[string]error
}

func (k *kernel) load(path, params string) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	name := moduleName(path)
	if err := k.fail[name]; err != nil {
		return err
	}
	k.mu.Lock()
	k.order = append(k.order, name)
	k.mu.Unlock()
	pci := k.ft.pciPath(virtioNetPCI)
	child := filepath.Join(pci, "virtio0")
	probe := func() {}
	switch name {
	case "virtio_pci":
		probe = func() {
			// Children are registered inside probe, before it returns.
			write(k.ft.t, filepath.Join(child, "modalias"), virtioChild+"\n")
			k.ft.bind(pci, "virtio-pci")
		}
	case "virtio_net":
		probe = func() { k.ft.bind(child, "virtio_net") }
	}
	if k.delay > 0 {
		time.AfterFunc(k.delay, probe)
	} else {
		probe()
	}
	return nil
}

func (ft *fakeTree) loader(k *kernel) *Loader {
	return &Loader{Root: ft.root, Release: rel, Logger: testLogger(ft.t), Load: k.load}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestVirtioChain(t *testing.T) {
	ft := newFakeTree(t)
	k := &kernel{ft: ft}
	got, err := ft.loader(k).LoadForClass(context.Background(), "0x02")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	if !slices.Equal(got, wantVirtioOrder) {
		t.Errorf("loaded %v\nwant    %v", got, wantVirtioOrder)
	}
	if !slices.Equal(k.order, wantVirtioOrder) {
		t.Errorf("Load calls %v\nwant       %v", k.order, wantVirtioOrder)
	}
}

// TestReadAheadBeforeChain: each driver's whole dependency chain (its
// file and depmod's list) is handed to ReadAhead before the first of
// them loads.
func TestReadAheadBeforeChain(t *testing.T) {
	ft := newFakeTree(t)
	k := &kernel{ft: ft}
	l := ft.loader(k)
	var calls [][]string
	loadsBefore := []int{}
	l.ReadAhead = func(paths ...string) {
		var names []string
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("ReadAhead of %s: %v", p, err)
			}
			names = append(names, moduleName(p))
		}
		k.mu.Lock()
		loadsBefore = append(loadsBefore, len(k.order))
		k.mu.Unlock()
		calls = append(calls, names)
	}
	if _, err := l.LoadForClass(context.Background(), "0x02"); err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	if len(calls) != 2 {
		t.Fatalf("ReadAhead calls %v, want one per driver (virtio_pci, virtio_net)", calls)
	}
	for i, c := range calls {
		top := c[0]
		at := slices.Index(wantVirtioOrder, top)
		var chain []string
		for _, m := range wantVirtioOrder[:at+1] {
			if slices.Contains(c, m) {
				chain = append(chain, m)
			}
		}
		// Every module in the call loads after it, none before.
		if n := loadsBefore[i]; slices.ContainsFunc(k.order[:n], func(m string) bool { return slices.Contains(c, m) }) {
			t.Errorf("ReadAhead %v came after some of them loaded (%v)", c, k.order[:n])
		}
		if len(chain) != len(c) {
			t.Errorf("ReadAhead %v names modules outside %s's chain", c, top)
		}
	}
	if !slices.Contains(calls[0], "virtio_ring") || !slices.Contains(calls[1], "net_failover") {
		t.Errorf("ReadAhead calls %v miss a dependency (virtio_ring of virtio_pci, net_failover of virtio_net)", calls)
	}
}

func TestChildAppearsLater(t *testing.T) {
	ft := newFakeTree(t)
	k := &kernel{ft: ft, delay: 60 * time.Millisecond}
	start := time.Now()
	got, err := ft.loader(k).LoadForClass(context.Background(), "0x02")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	if !slices.Equal(got, wantVirtioOrder) {
		t.Errorf("loaded %v, want %v", got, wantVirtioOrder)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v; the wait should end when the devices bind", d)
	}
}

func TestSettleIsBounded(t *testing.T) {
	ft := newFakeTree(t)
	k := &kernel{ft: ft, delay: time.Hour} // probe never completes
	l := ft.loader(k)
	l.Settle = 100 * time.Millisecond
	start := time.Now()
	got, err := l.LoadForClass(context.Background(), "0x02")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	if want := wantVirtioOrder[:5]; !slices.Equal(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("took %v, want about the 100ms settle bound", d)
	}
}

func TestContextCancel(t *testing.T) {
	ft := newFakeTree(t)
	k := &kernel{ft: ft, delay: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	l := ft.loader(k)
	l.Settle = time.Hour
	_, err := l.LoadForClass(ctx, "0x02")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestNoAliasIsNotAnError(t *testing.T) {
	ft := newFakeTree(t)
	ft.pciDevice("0000:00:05.0", "0x020000", "pci:v0000ABCDd00001234sv00000000sd00000000bc02sc00i00")
	if err := os.Remove(filepath.Join(ft.pciPath(virtioNetPCI), "modalias")); err != nil {
		t.Fatal(err)
	}
	got, err := ft.loader(&kernel{ft: ft}).LoadForClass(context.Background(), "0x02")
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want nothing, no error", got, err)
	}
}

func TestBoundDeviceNeedsNoIndex(t *testing.T) {
	ft := newFakeTree(t)
	ft.bind(ft.pciPath(virtioNetPCI), "virtio-pci")
	if err := os.RemoveAll(filepath.Join(ft.root, "lib/modules")); err != nil {
		t.Fatal(err)
	}
	got, err := ft.loader(&kernel{ft: ft}).LoadForClass(context.Background(), "0x02")
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want nothing, no error (no index needed)", got, err)
	}
}

func TestMissingModuleFile(t *testing.T) {
	ft := newFakeTree(t)
	file := filepath.Join(ft.root, "lib/modules", rel, "kernel/drivers/net/virtio_net.ko")
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	got, err := ft.loader(&kernel{ft: ft}).LoadForClass(context.Background(), "0x02")
	if err == nil {
		t.Fatal("no error for a missing module file")
	}
	for _, want := range []string{"virtio_net", virtioChild, file} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v does not wrap ErrNotExist", err)
	}
	if want := wantVirtioOrder[:7]; !slices.Equal(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
}

func TestMissingDependencyFile(t *testing.T) {
	ft := newFakeTree(t)
	file := filepath.Join(ft.root, "lib/modules", rel, "kernel/net/core/failover.ko")
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	_, err := ft.loader(&kernel{ft: ft}).LoadForClass(context.Background(), "0x02")
	if err == nil {
		t.Fatal("no error for a missing dependency")
	}
	for _, want := range []string{"failover", "virtio_net", virtioChild, file} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestBuiltinAndLiveAndEEXIST(t *testing.T) {
	ft := newFakeTree(t)
	mdir := filepath.Join(ft.root, "lib/modules", rel)
	write(t, filepath.Join(mdir, "modules.builtin"), fakeBuiltin+"kernel/drivers/virtio/virtio_ring.ko\n")
	write(t, filepath.Join(ft.root, "sys/module/virtio/initstate"), "live\n")
	k := &kernel{ft: ft, fail: map[string]error{"failover": syscall.EEXIST}}
	got, err := ft.loader(k).LoadForClass(context.Background(), "0x02")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	want := []string{"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "net_failover", "virtio_net"}
	if !slices.Equal(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
}

func TestLoadErrorNamesModule(t *testing.T) {
	ft := newFakeTree(t)
	k := &kernel{ft: ft, fail: map[string]error{"virtio_pci": syscall.ENOEXEC}}
	got, err := ft.loader(k).LoadForClass(context.Background(), "0x02")
	if !errors.Is(err, syscall.ENOEXEC) || !strings.Contains(err.Error(), "virtio_pci") || !strings.Contains(err.Error(), virtioNetAlias) {
		t.Fatalf("err = %v", err)
	}
	if want := wantVirtioOrder[:4]; !slices.Equal(got, want) {
		t.Errorf("loaded %v, want %v", got, want)
	}
}

func TestDashUnderscore(t *testing.T) {
	ix := &index{
		aliases: parseAlias("alias pci:v00001D0Fd* net-fancy\n"),
		deps:    parseDep("kernel/net/net-fancy.ko.xz: kernel/lib/crc-x.ko\nkernel/lib/crc-x.ko:\n"),
	}
	if got, _ := ix.lookup("pci:v00001D0Fd0000EC20"); !slices.Equal(got, []string{"net_fancy"}) {
		t.Fatalf("lookup = %v", got)
	}
	e, ok := ix.deps["net_fancy"]
	if !ok {
		t.Fatalf("deps keys %v", ix.deps)
	}
	if got := e.depPaths(); !slices.Equal(got, []string{"kernel/lib/crc-x.ko"}) || moduleName(got[0]) != "crc_x" {
		t.Fatalf("deps = %v", got)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", virtioNetAlias, true},
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00001AF5d00001041sv00001AF4sd00001100bc02sc00i00", false},
		{"virtio:d00000001v*", virtioChild, true},
		{"virtio:d00000001v*", "virtio:d00000002v00001AF4", false},
		{"pci:v000010ECd00008168sv*sd*bc*sc*i*", "pci:v000010ECd00008168sv00001043sd00008554bc02sc00i00", true},
		{"usb:v0B95p1790d*dc*dsc*dp*ic*isc*ip*in*", "usb:v0B95p1790d0100dcFFdsc00dp00icFFiscFFipFFin00", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"[ab]x", "bx", true},
		{"[!ab]x", "bx", false},
		{"[^ab]x", "cx", true},
		{"[0-9]*", "7up", true},
		{"[0-9]*", "up", false},
		{"*", "", true},
		{"*a*b", "xxaxxb", true},
		{"*a*b", "xxaxxbc", false},
		{"of:N*T*Cvirtio,mmio", "of:NvirtioT<NULL>Cvirtio,mmio", true},
		{"acpi*:LNRO0005:*", "acpi:LNRO0005:", true},
		{"a/*", "a/b/c", true}, // fnmatch without FNM_PATHNAME: '*' crosses '/'
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{"[unterminated", "[unterminated", true},
		{"", "", true},
		{"", "x", false},
	} {
		if got := globMatch(c.p, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

// TestDecompress checks userspace decompression of each supported format.
func TestDecompress(t *testing.T) {
	payload := bytes.Repeat([]byte("\x7fELF module payload "), 5000)
	for comp, data := range compressAll(t, payload) {
		got, err := readModule(bytes.NewReader(data), comp)
		if err != nil {
			t.Errorf("%s: %v", comp, err)
			continue
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("%s: decompressed %d bytes, want %d", comp, len(got), len(payload))
		}
	}
	if _, err := readModule(strings.NewReader("not xz"), "xz"); err == nil {
		t.Error("corrupt xz accepted")
	}
}

// TestToolDecompress checks the PID 1 build's decompression with the
// root's own xz and zstd: the module comes back whole, and a corrupt or
// truncated file is an error naming the tool, never a short module.
func TestToolDecompress(t *testing.T) {
	for _, tool := range []string{"xz", "zstd"} {
		if lookTool(tool) == "" {
			testenv.Skip(t, tool+" not installed (e2e/setup.sh installs it)")
		}
	}
	payload := bytes.Repeat([]byte("\x7fELF module payload "), 50000)
	for comp, data := range compressAll(t, payload) {
		if comp == "gz" {
			continue
		}
		rc, err := toolDecompressor(bytes.NewReader(data), comp)
		if err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("%s: %d bytes, err %v; want %d bytes", comp, len(got), err, len(payload))
		}
		for what, bad := range map[string][]byte{"corrupt": []byte("not " + comp), "truncated": data[:len(data)/2]} {
			rc, err := toolDecompressor(bytes.NewReader(bad), comp)
			if err != nil {
				t.Fatalf("%s: %v", comp, err)
			}
			_, err = io.ReadAll(rc)
			rc.Close()
			if err == nil || !strings.Contains(err.Error(), decompressTools[comp][0]) {
				t.Errorf("%s %s: err %v, want the tool's failure", what, comp, err)
			}
		}
	}
	// Not read to the end: Close stops the tool.
	rc, err := toolDecompressor(bytes.NewReader(compressAll(t, payload)["xz"]), "xz")
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Error(err)
	}
	old := toolDirs
	toolDirs = nil
	t.Setenv("PATH", "")
	defer func() { toolDirs = old }()
	if _, err := toolDecompressor(strings.NewReader("x"), "zst"); err == nil || !strings.Contains(err.Error(), "no zstd in") {
		t.Errorf("no tool: err %v", err)
	}
}

// TestLoadFileFallback checks the syscall choice: finit_module with the
// compressed flag first, init_module with the decompressed image when the
// kernel cannot decompress, and no fallback for genuine errors.
func TestLoadFileFallback(t *testing.T) {
	dir := t.TempDir()
	payload := []byte("\x7fELF plain module")
	files := map[string][]byte{"m.ko": payload}
	for comp, data := range compressAll(t, payload) {
		files["m.ko."+comp] = data
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		compressed := name != "m.ko"
		for _, finitErr := range []error{nil, syscall.EOPNOTSUPP, syscall.EINVAL, syscall.ENOSYS, syscall.EEXIST, syscall.EPERM} {
			var flags int
			var image []byte
			var params string
			s := sysModule{
				finit: func(fd int, p string, f int) error { flags = f; params = p; return finitErr },
				init:  func(img []byte, p string) error { image = img; params = p; return nil },
			}
			err := s.loadFile(path, "debug=1")
			wantFlags := 0
			if compressed {
				wantFlags = unix.MODULE_INIT_COMPRESSED_FILE
			}
			if flags != wantFlags {
				t.Errorf("%s/%v: finit flags %d, want %d", name, finitErr, flags, wantFlags)
			}
			fallback := errors.Is(finitErr, syscall.ENOSYS) ||
				(compressed && (errors.Is(finitErr, syscall.EOPNOTSUPP) || errors.Is(finitErr, syscall.EINVAL)))
			switch {
			case fallback:
				if err != nil || !bytes.Equal(image, payload) || params != "debug=1" {
					t.Errorf("%s/%v: fallback err=%v image=%q params=%q", name, finitErr, err, image, params)
				}
			case finitErr == nil:
				if err != nil || image != nil {
					t.Errorf("%s: err=%v, init_module called=%v", name, err, image != nil)
				}
			default:
				if !errors.Is(err, finitErr) || image != nil {
					t.Errorf("%s/%v: err=%v, init_module called=%v", name, finitErr, err, image != nil)
				}
			}
		}
	}
}

func compressAll(t *testing.T, payload []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	var xb bytes.Buffer
	// Kernel builds use xz --check=crc32 --lzma2=dict=1MiB.
	xw, err := xz.WriterConfig{CheckSum: xz.CRC32, DictCap: 1 << 20}.NewWriter(&xb)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, xw, payload)
	out["xz"] = xb.Bytes()
	var zb bytes.Buffer
	zw, err := zstd.NewWriter(&zb)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, zw, payload)
	out["zst"] = zb.Bytes()
	var gb bytes.Buffer
	gw := gzip.NewWriter(&gb)
	mustWrite(t, gw, payload)
	out["gz"] = gb.Bytes()
	return out
}

func mustWrite(t *testing.T, w io.WriteCloser, p []byte) {
	t.Helper()
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// realModulesDir is the running kernel's depmod tree, or the one named by
// SPOTROOT_KMOD_TREE (a lib/modules/<release> directory, e.g. an extracted
// cloud kernel), or "" when neither exists.
func realModulesDir() string {
	if d := os.Getenv("SPOTROOT_KMOD_TREE"); d != "" {
		return d
	}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
}

// requireRealTree returns the real depmod tree, or skips (fails under CI,
// where make test names the cloud kernel's tree).
func requireRealTree(t testing.TB) string {
	t.Helper()
	dir := realModulesDir()
	if _, err := os.Stat(filepath.Join(dir, "modules.dep")); err != nil {
		testenv.Skip(t, fmt.Sprintf("no depmod tree at %s (set SPOTROOT_KMOD_TREE to a lib/modules/<release> dir): %v", dir, err))
	}
	return dir
}

func TestRealTreeParse(t *testing.T) {
	dir := requireRealTree(t)
	start := time.Now()
	ix, err := loadTextIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d modules, %d aliases, %d built-in, parsed in %v", dir, len(ix.deps), len(ix.aliases), len(ix.builtin), time.Since(start))
	if len(ix.deps) == 0 || len(ix.aliases) == 0 {
		t.Fatal("empty index")
	}
	// Every dependency named in modules.dep must itself be an entry.
	for name, e := range ix.deps {
		for _, p := range e.depPaths() {
			if _, ok := ix.deps[moduleName(p)]; !ok {
				t.Errorf("%s depends on %s, which has no entry", name, p)
			}
		}
	}
	if e, ok := ix.deps["virtio_net"]; ok {
		if got, _ := ix.lookup(virtioChild); !slices.Contains(got, "virtio_net") {
			t.Errorf("lookup(%s) = %v, want virtio_net", virtioChild, got)
		}
		t.Logf("virtio_net: %s deps %v", e.path, e.depPaths())
	}
	if _, ok := ix.deps["virtio_pci"]; ok {
		if got, _ := ix.lookup(virtioNetAlias); !slices.Contains(got, "virtio_pci") {
			t.Errorf("lookup(%s) = %v, want virtio_pci", virtioNetAlias, got)
		}
	}
}

// BenchmarkIndex measures what a boot whose NIC driver is a module pays
// for the index: opening it, two aliases and one module's dependencies,
// from the binary tries and from the text.
func BenchmarkIndex(b *testing.B) {
	dir := requireRealTree(b)
	for _, bc := range []struct {
		name string
		load func(string) (*index, error)
	}{{"binary", loadBinIndex}, {"text", loadTextIndex}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				ix, err := bc.load(dir)
				if err != nil {
					b.Fatal(err)
				}
				ix.lookup(virtioNetAlias)
				ix.lookup(virtioChild)
				ix.dep("virtio_net")
			}
		})
	}
}

// TestRealTreeVirtioOrder runs the loader on a fake sysfs against a real
// depmod tree: the order must be the one measured in the cloud kernel.
func TestRealTreeVirtioOrder(t *testing.T) {
	dir := requireRealTree(t)
	if _, err := os.Stat(filepath.Join(dir, "kernel/drivers/net/virtio_net.ko")); err != nil {
		t.Skipf("tree has no plain virtio_net.ko: %v", err)
	}
	good, err := os.ReadFile(filepath.Join(dir, "modules.alias.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// The same with a modules.alias.bin damaged below its root: the text
	// files answer the lookup that meets the damage, and one warning says so.
	for name, tree := range map[string]string{"intact": dir, "damaged trie": treeWithAliasBin(t, dir, loopingAliasBin(t, good))} {
		t.Run(name, func(t *testing.T) {
			ft := newFakeTree(t)
			mods := filepath.Join(ft.root, "lib/modules")
			if err := os.RemoveAll(mods); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(mods, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(tree, filepath.Join(mods, rel)); err != nil {
				t.Fatal(err)
			}
			k := &kernel{ft: ft}
			var logs strings.Builder
			l := ft.loader(k)
			l.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			got, err := l.LoadForClass(context.Background(), "0x02")
			if err != nil {
				t.Fatalf("LoadForClass: %v", err)
			}
			if !slices.Equal(got, wantVirtioOrder) {
				t.Errorf("loaded %v\nwant    %v", got, wantVirtioOrder)
			}
			want := 0
			if tree != dir {
				want = 1
			}
			if n := strings.Count(logs.String(), "binary index is damaged"); n != want {
				t.Errorf("%d damaged-index warnings, want %d:\n%s", n, want, logs.String())
			}
		})
	}
}

// TestUeventWatcherBounded: the event wait returns within its bound even
// when no event comes (read-only socket; nothing is changed on the host).
func TestUeventWatcherBounded(t *testing.T) {
	w := openUevents()
	if w == nil {
		testenv.Skip(t, "cannot open a NETLINK_KOBJECT_UEVENT socket here")
	}
	defer w.close()
	start := time.Now()
	w.wait(context.Background(), 30*time.Millisecond)
	if d := time.Since(start); d > time.Second {
		t.Errorf("wait took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	w.wait(ctx, time.Hour)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("wait with a done context took %v", d)
	}
}

func TestPCIClassFromAlias(t *testing.T) {
	for ma, want := range map[string]string{
		virtioNetAlias: "0x020000",
		"pci:v00001D0Fd0000EC20sv00001D0Fsd0000EC20bc02sc00i00": "0x020000", // ENA
		"pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02": "0x010802", // NVMe
		"pci:v00001AF4d00001041":                                "",         // no class: read the class file
		"virtio:d00000001v00001AF4":                             "",
		"":                                                      "",
	} {
		got, ok := pciClassFromAlias(ma)
		if got != want || ok != (want != "") {
			t.Errorf("pciClassFromAlias(%q) = %q, %v; want %q", ma, got, ok, want)
		}
	}
}

// modules.alias lines as depmod writes them and as a hand-edited file may
// have them: fields split by spaces or tabs; malformed lines are skipped.
func TestParseAliasLines(t *testing.T) {
	got := parseAlias(strings.Join([]string{
		"# Aliases extracted from modules themselves.",
		"alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci",
		"alias\tvirtio:d00000001v*\t virtio-net",
		"alias  acpi*:PNP0103:*   hpet_fake  ",
		"alias pci:v00008086d* e1000e extra-field",
		"alias lonely",
		"aliasx pci:v* nope",
		"alias exact:name exact_mod",
	}, "\n"))
	want := []alias{
		{pattern: "pci:v00001AF4d*sv*sd*bc*sc*i*", module: "virtio_pci", lit: "pci:v00001AF4d"},
		{pattern: "virtio:d00000001v*", module: "virtio_net", lit: "virtio:d00000001v"},
		{pattern: "acpi*:PNP0103:*", module: "hpet_fake", lit: "acpi"},
		{pattern: "exact:name", module: "exact_mod", lit: "exact:name"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parseAlias:\n got %+v\nwant %+v", got, want)
	}
}

// TestIndexFilesOfRealTree: the files boot reads ahead are the binary
// index a real depmod wrote and loadBinIndex opens.
func TestIndexFilesOfRealTree(t *testing.T) {
	dir := requireRealTree(t)
	release := filepath.Base(dir)
	root := strings.TrimSuffix(dir, filepath.Join("lib/modules", release))
	for _, p := range IndexFiles(root, release) {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("IndexFiles names %s: %v (size %v)", p, err, st)
		}
	}
	if _, err := loadBinIndex(dir); err != nil {
		t.Errorf("loadBinIndex(%s): %v", dir, err)
	}
}
