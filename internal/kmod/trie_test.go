package kmod

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/testenv"
)

// concrete returns a string the alias pattern matches: '*' as fill, '?' as
// one byte, a class as its first member (or a byte outside a negated one).
func concrete(pattern, fill string) string {
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			b.WriteString(fill)
		case '?':
			b.WriteByte('Q')
		case '[':
			end := strings.IndexByte(pattern[i+2:], ']')
			if end < 0 {
				b.WriteByte(c)
				continue
			}
			class := pattern[i+1 : i+2+end]
			if class[0] == '!' || class[0] == '^' {
				b.WriteByte('~')
			} else {
				b.WriteByte(class[0])
			}
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// loadBoth opens a tree's binary tries and parses its text files.
func loadBoth(t *testing.T, dir string) (bin, text *index) {
	t.Helper()
	bin, err := loadBinIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if text, err = loadTextIndex(dir); err != nil {
		t.Fatal(err)
	}
	return bin, text
}

// TestTrieAgreesWithText looks up, in a real kernel's binary tries and in
// its text files, every module, every built-in name, and a modalias made
// from every alias pattern (and the devices the e2e guests and EC2's
// instance families show): the two must agree, order included.
func TestTrieAgreesWithText(t *testing.T) {
	dir := requireRealTree(t)
	bin, text := loadBoth(t, dir)
	keys := []string{virtioNetAlias, virtioChild, "xen:vif", "xen:vbd", "acpi:PNP0103:", "platform:pcspkr",
		"platform:platform-framebuffer", "serio:ty01pr00id00ex00", "fs-xfs", "fs-btrfs",
		"pci:v00001D0Fd0000EC20sv00001D0Fsd00000000bc02sc00i00", // ENA
		"pci:v00001D0Fd00008061sv00001D0Fsd00008061bc01sc08i02", // EBS NVMe
		"pci:v00008086d000010EDsv00000000sd00000000bc02sc00i00", // ixgbevf
		"", "pci:", "*", "pci:v0000"}
	for _, a := range text.aliases {
		keys = append(keys, concrete(a.pattern, ""), concrete(a.pattern, "0A-_x"))
	}
	matched := 0
	for _, k := range keys {
		want, _ := text.lookup(k)
		got, err := bin.lookup(k)
		if err != nil {
			t.Fatalf("lookup %q: %v", k, err)
		}
		if len(want) > 0 {
			matched++
		}
		if !slices.Equal(got, want) {
			t.Errorf("lookup %q: binary %v, text %v", k, got, want)
		}
	}
	if matched < len(text.aliases) {
		t.Errorf("only %d of %d made-up modaliases matched anything", matched, len(keys))
	}
	for name, want := range text.deps {
		got, ok, err := bin.dep(name)
		if err != nil || !ok || got != want {
			t.Errorf("dep %s: binary %+v %v %v, text %+v", name, got, ok, err, want)
		}
		if b, _ := bin.isBuiltin(name); b {
			t.Errorf("%s: a module file and built in", name)
		}
	}
	for name := range text.builtin {
		if b, err := bin.isBuiltin(name); !b || err != nil {
			t.Errorf("isBuiltin %s = %v, %v; modules.builtin lists it", name, b, err)
		}
	}
	for _, name := range []string{"", "virtio_ne", "virtio_net_x", "no_such_module"} {
		if e, ok, err := bin.dep(name); ok || err != nil {
			t.Errorf("dep %q = %+v, %v, %v; want none", name, e, ok, err)
		}
	}
	t.Logf("%d modaliases (%d matched), %d modules, %d built in", len(keys), matched, len(text.deps), len(text.builtin))
}

// TestTrieDamaged: a binary index that is cut short, has the wrong magic,
// or whose offsets point outside the file or in a loop is an error (and
// the loader falls back to the text files, as modprobe does), never a
// panic or a hang.
func TestTrieDamaged(t *testing.T) {
	dir := requireRealTree(t)
	good, err := os.ReadFile(filepath.Join(dir, "modules.alias.bin"))
	if err != nil {
		t.Fatal(err)
	}
	loop := loopingAliasBin(t, good)
	cases := map[string][]byte{
		"empty":     {},
		"magic":     append([]byte{0, 0, 0, 0}, good[4:]...),
		"version":   append(append(slices.Clone(good[:4]), 0, 3, 0, 1), good[8:]...),
		"root":      append(slices.Clone(good[:8]), append([]byte{0x2f, 0xff, 0xff, 0xff}, good[12:]...)...),
		"truncated": good[:len(good)/2],
		"loop":      loop,
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			d := treeWithAliasBin(t, dir, b)
			if tr, err := openTrie(filepath.Join(d, "modules.alias.bin")); err == nil {
				// It opens: the damage is deeper, and a lookup meets it.
				var lookupErr error
				for _, k := range []string{virtioNetAlias, virtioChild, "acpi:PNP0103:", "pci:v00001D0Fd0000EC20"} {
					if _, err := (&index{aliasBin: tr}).lookupBin(k); err != nil {
						lookupErr = err
					}
				}
				if lookupErr == nil && name != "truncated" {
					t.Fatalf("no error from any lookup")
				}
				if lookupErr != nil && !errors.Is(lookupErr, errTrie) {
					t.Fatalf("lookup error %v does not say the index is damaged", lookupErr)
				}
			}
			// Either way the loader ends on the text files and finds the
			// virtio drivers.
			ix, err := loadIndex(d)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := ix.lookup(virtioNetAlias); err != nil || !slices.Contains(got, "virtio_pci") {
				t.Fatalf("lookup %s = %v, %v", virtioNetAlias, got, err)
			}
			if got, err := ix.lookup(virtioChild); err != nil || !slices.Contains(got, "virtio_net") {
				t.Fatalf("lookup %s = %v, %v", virtioChild, got, err)
			}
			if e, ok, err := ix.dep("virtio_net"); !ok || err != nil || e.path != "kernel/drivers/net/virtio_net.ko" {
				t.Fatalf("dep virtio_net = %+v, %v, %v", e, ok, err)
			}
			if name == "truncated" && ix.aliasBin != nil {
				return // the half that is left may hold every key asked
			}
			if ix.aliasBin != nil || !ix.binDamaged || !strings.Contains(ix.textWhy, "modules.alias.bin") {
				t.Fatalf("index %s (damaged %v); want the text files, saying why", ix.source(), ix.binDamaged)
			}
		})
	}
}

// loopingAliasBin returns modules.alias.bin with a wildcard child pointing
// back at its parent: the subtree of the "pci:v*" patterns never ends, but
// the root opens fine.
func loopingAliasBin(t *testing.T, good []byte) []byte {
	t.Helper()
	loop := slices.Clone(good)
	tr := &trie{name: "test", b: loop, root: binary.BigEndian.Uint32(loop[8:])}
	off, key := tr.root, "pci:v"
	for {
		n, err := tr.node(off)
		if err != nil || !strings.HasPrefix(key, n.prefix) {
			t.Fatalf("walking to %q: %v", key, err)
		}
		if key = key[len(n.prefix):]; key == "" {
			if n.child('*') == 0 {
				t.Fatal("no '*' child under pci:v")
			}
			kids := cap(loop) - cap(n.kids)
			binary.BigEndian.PutUint32(loop[kids+4*int('*'-n.first):], off)
			return loop
		}
		off, key = n.child(key[0]), key[1:]
	}
}

// treeWithAliasBin is a copy of the depmod tree dir (its entries linked)
// whose modules.alias.bin is b.
func treeWithAliasBin(t *testing.T, dir string, b []byte) string {
	t.Helper()
	d := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "modules.alias.bin" {
			continue
		}
		if err := os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(d, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d, "modules.alias.bin"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestTrieDepmodPatterns builds a tree whose modules are bare ELF files
// with a .modinfo section (objcopy) and has depmod index it: patterns with
// '?', classes, a negated class and a '-', several modules per modalias,
// and a modules.order that is not alphabetical. The binary tries must give
// what the text gives, in modules.order.
func TestTrieDepmodPatterns(t *testing.T) {
	testenv.RequireTools(t, "depmod", "objcopy")
	root := t.TempDir()
	const release = "9.9.9-test"
	dir := filepath.Join(root, "lib/modules", release)
	kdir := filepath.Join(dir, "kernel/drivers/net")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		t.Fatal(err)
	}
	mods := []struct{ name, aliases string }{
		{"zeta-net", "pci:v00001234d*|virtio:d00000001v*"},
		{"gamma", "pci:v*d0001*"},
		{"beta", "pci:v?000*"},
		{"alpha", "pci:v0000[0-9A]*d*"},
		{"delta", "virtio:d0000000[!2]v*"},
		{"eps", "pci:v0000-x*|platform:a-b_c"},
	}
	var order strings.Builder
	for _, m := range mods {
		var info strings.Builder
		for _, a := range strings.Split(m.aliases, "|") {
			info.WriteString("alias=" + a + "\x00")
		}
		info.WriteString("license=GPL\x00name=" + strings.ReplaceAll(m.name, "-", "_") + "\x00")
		raw := filepath.Join(root, m.name+".modinfo")
		if err := os.WriteFile(raw, []byte(info.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.Run(t, "objcopy", "-I", "binary", "-O", "elf64-x86-64", "-B", "i386:x86-64",
			"--rename-section", ".data=.modinfo,alloc,load,readonly,data,contents", raw, filepath.Join(kdir, m.name+".ko"))
		order.WriteString("kernel/drivers/net/" + m.name + ".ko\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.order"), []byte(order.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "depmod", "-b", root, release)
	bin, text := loadBoth(t, dir)
	for key, want := range map[string][]string{
		"pci:v00001234d00010000": {"zeta_net", "gamma", "beta", "alpha"},
		"pci:v0000Axd0001":       {"gamma", "beta", "alpha"},
		"pci:v0000Bd0":           {"beta"},
		"pci:v0000-xyz":          {"beta", "eps"},
		"pci:v0000_xyz":          {"beta", "eps"},
		"virtio:d00000001v1":     {"zeta_net", "delta"},
		"virtio:d00000002v1":     nil,
		"platform:a-b-c":         {"eps"},
		"platform:a_b_c":         {"eps"},
		"pci:x":                  nil,
	} {
		got, err := bin.lookup(key)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("binary lookup %q = %v, %v; want %v", key, got, err, want)
		}
		if got, _ := text.lookup(key); !slices.Equal(got, want) && !strings.ContainsAny(key, "-_") {
			t.Errorf("text lookup %q = %v; want %v", key, got, want)
		}
	}
	if e, ok, err := bin.dep("zeta_net"); !ok || err != nil || e.path != "kernel/drivers/net/zeta-net.ko" {
		t.Errorf("dep zeta_net = %+v, %v, %v", e, ok, err)
	}
}
