package kmod

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// index is the depmod output of one kernel release: its binary tries when
// the tree has them (what modprobe reads: a boot looks up a few keys), else
// its text files, parsed whole. Parsed strings are substrings of the files'
// contents: parsing allocates slices, not text.
type index struct {
	dir string // <root>/lib/modules/<release>
	// Binary: modules.alias.bin and modules.dep.bin, modules.builtin.bin
	// if present.
	aliasBin, depBin, builtinBin *trie
	// Text: why the binary index was not used (binDamaged: it is there
	// but unreadable), and the parsed files.
	textWhy    string
	binDamaged bool
	aliases    []alias             // modules.alias, in file order (modprobe's order)
	deps       map[string]depEntry // module name -> modules.dep entry
	builtin    map[string]bool     // modules.builtin names
}

type alias struct {
	pattern string
	module  string
	lit     string // literal prefix of pattern, checked before the glob
}

type depEntry struct {
	path string // as written in modules.dep (relative to dir unless absolute)
	deps string // space-separated paths; split only for modules we load
}

func loadIndex(dir string) (*index, error) {
	ix, err := loadBinIndex(dir)
	if err == nil {
		return ix, nil
	}
	// As modprobe: without (or with a damaged) binary index, the text.
	ix, terr := loadTextIndex(dir)
	if terr != nil {
		return nil, terr
	}
	ix.textWhy, ix.binDamaged = err.Error(), !errors.Is(err, fs.ErrNotExist)
	return ix, nil
}

// depmod's binary index files, in a release's module directory.
const (
	aliasBin   = "modules.alias.bin"
	depBin     = "modules.dep.bin"
	builtinBin = "modules.builtin.bin"
)

// IndexFiles are the files a NIC driver's lookup reads first under root
// for the kernel release: depmod's binary index (internal/readahead reads
// them ahead at boot).
func IndexFiles(root, release string) []string {
	dir := filepath.Join(root, "lib/modules", release)
	return []string{filepath.Join(dir, aliasBin), filepath.Join(dir, depBin), filepath.Join(dir, builtinBin)}
}

func loadBinIndex(dir string) (*index, error) {
	ix := &index{dir: dir}
	var err error
	if ix.aliasBin, err = openTrie(filepath.Join(dir, aliasBin)); err != nil {
		return nil, err
	}
	if ix.depBin, err = openTrie(filepath.Join(dir, depBin)); err != nil {
		return nil, err
	}
	// modules.builtin.bin is optional, as modules.builtin is; depmod
	// writes it empty when the tree has no modules.builtin, and an old
	// depmod does not write it: then the text list, if any.
	builtin := filepath.Join(dir, builtinBin)
	if st, err := os.Stat(builtin); err == nil && st.Size() > 0 {
		if ix.builtinBin, err = openTrie(builtin); err != nil {
			return nil, err
		}
	} else {
		ix.builtin = readBuiltin(dir)
	}
	return ix, nil
}

func loadTextIndex(dir string) (*index, error) {
	ix := &index{dir: dir}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	ix.deps = parseDep(string(dep))
	al, err := os.ReadFile(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return nil, fmt.Errorf("read modules.alias: %w", err)
	}
	ix.aliases = parseAlias(string(al))
	ix.builtin = readBuiltin(dir)
	return ix, nil
}

// readBuiltin parses modules.builtin, which is optional: old depmod trees
// and fake trees lack it.
func readBuiltin(dir string) map[string]bool {
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil
	}
	return parseBuiltin(string(b))
}

// source says which index is in use, for the debug log.
func (ix *index) source() string {
	if ix.aliasBin != nil {
		return "binary (modules.alias.bin, modules.dep.bin)"
	}
	return fmt.Sprintf("text (%d modules, %d aliases; %s)", len(ix.deps), len(ix.aliases), ix.textWhy)
}

// toText replaces a binary index found damaged during a lookup (its root
// opened fine) by the text files, for this lookup and every later one: a
// bad byte deep in a trie must not cost the boot its NIC driver.
func (ix *index) toText(damage error) error {
	tx, err := loadTextIndex(ix.dir)
	if err != nil {
		return errors.Join(damage, err)
	}
	tx.textWhy, tx.binDamaged = damage.Error(), true
	*ix = *tx
	return nil
}

// dep returns a module's modules.dep entry.
func (ix *index) dep(name string) (depEntry, bool, error) {
	if ix.depBin != nil {
		v, ok, err := ix.depBin.get(name)
		if err == nil {
			if !ok {
				return depEntry{}, false, nil
			}
			e, _ := parseDepLine(v)
			return e, true, nil
		}
		if err := ix.toText(err); err != nil {
			return depEntry{}, false, err
		}
	}
	e, ok := ix.deps[name]
	return e, ok, nil
}

// isBuiltin reports whether a module is built into the kernel.
func (ix *index) isBuiltin(name string) (bool, error) {
	if ix.aliasBin != nil && ix.builtinBin != nil {
		_, ok, err := ix.builtinBin.get(name)
		if err == nil {
			return ok, nil
		}
		if err := ix.toText(err); err != nil {
			return false, err
		}
	}
	return ix.builtin[name], nil
}

// forEachLine calls fn for every non-empty line of s without allocating.
func forEachLine(s string, fn func(line string)) {
	for len(s) > 0 {
		line := s
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		if line = strings.TrimSpace(line); line != "" && line[0] != '#' {
			fn(line)
		}
	}
}

func parseDep(s string) map[string]depEntry {
	m := make(map[string]depEntry, strings.Count(s, "\n")+1)
	forEachLine(s, func(line string) {
		if e, ok := parseDepLine(line); ok {
			m[moduleName(e.path)] = e
		}
	})
	return m
}

// parseDepLine splits "path: dep dep…", a modules.dep line or a
// modules.dep.bin value.
func parseDepLine(line string) (depEntry, bool) {
	path, deps, ok := strings.Cut(line, ":")
	return depEntry{path: strings.TrimSpace(path), deps: strings.TrimSpace(deps)}, ok
}

func parseAlias(s string) []alias {
	out := make([]alias, 0, strings.Count(s, "\n")+1)
	forEachLine(s, func(line string) {
		rest, ok := strings.CutPrefix(line, "alias")
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			return
		}
		// Two fields, split by hand: a real modules.alias has thousands of
		// lines, and strings.Fields allocates for each (a TCG guest pays
		// tens of ms for a full index).
		pattern, rest := nextField(rest)
		module, rest := nextField(rest)
		if module == "" {
			return
		}
		if extra, _ := nextField(rest); extra != "" {
			return
		}
		lit := pattern
		for i := 0; i < len(lit); i++ {
			if c := lit[i]; c == '*' || c == '?' || c == '[' {
				lit = lit[:i]
				break
			}
		}
		out = append(out, alias{pattern: pattern, module: normalize(module), lit: lit})
	})
	return out
}

// nextField returns the first space- or tab-separated field of s and what
// follows it.
func nextField(s string) (field, rest string) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	j := i
	for j < len(s) && s[j] != ' ' && s[j] != '\t' {
		j++
	}
	return s[i:j], s[j:]
}

func parseBuiltin(s string) map[string]bool {
	m := make(map[string]bool, strings.Count(s, "\n")+1)
	forEachLine(s, func(line string) { m[moduleName(line)] = true })
	return m
}

// lookup returns the modules whose alias pattern matches modalias, each
// once, in modules.alias order — what modprobe would load for it.
func (ix *index) lookup(modalias string) ([]string, error) {
	if ix.aliasBin != nil {
		mods, err := ix.lookupBin(modalias)
		if err == nil {
			return mods, nil
		}
		if err := ix.toText(err); err != nil {
			return nil, err
		}
	}
	var out []string
	for i := range ix.aliases {
		a := &ix.aliases[i]
		if !strings.HasPrefix(modalias, a.lit) || !globMatch(a.pattern, modalias) {
			continue
		}
		if !slices.Contains(out, a.module) {
			out = append(out, a.module)
		}
	}
	return out, nil
}

// lookupBin is lookup in modules.alias.bin, whose keys have '-' written
// '_' outside brackets (depmod's and modprobe's alias normalisation). A
// value's priority is its module's place in depmod's order, which is
// modules.alias's order.
func (ix *index) lookupBin(modalias string) ([]string, error) {
	type hit struct {
		prio   uint32
		module string
	}
	var hits []hit
	err := ix.aliasBin.match(underscores(modalias), func(prio uint32, m string) { hits = append(hits, hit{prio, m}) })
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(hits, func(a, b hit) int { return cmp.Compare(a.prio, b.prio) })
	var out []string
	for _, h := range hits {
		if m := normalize(h.module); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// underscores writes '-' as '_' outside bracket expressions.
func underscores(s string) string {
	if strings.IndexByte(s, '-') < 0 {
		return s
	}
	b := []byte(s)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '[':
			if j := strings.IndexByte(s[i:], ']'); j > 0 {
				i += j
			}
		case '-':
			b[i] = '_'
		}
	}
	return string(b)
}

// depPaths returns the dependency paths of a module in load order. depmod
// lists the closure with the deepest dependency last, so modprobe walks it
// backwards; the loader still recurses, so a hand-written tree works too.
func (e depEntry) depPaths() []string {
	f := strings.Fields(e.deps)
	for i, j := 0, len(f)-1; i < j; i, j = i+1, j-1 {
		f[i], f[j] = f[j], f[i]
	}
	return f
}

func (ix *index) file(path string) string {
	if filepath.IsAbs(path) {
		// An absolute path in modules.dep is relative to the install root,
		// which is dir minus "lib/modules/<release>".
		return filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(ix.dir))), path)
	}
	return filepath.Join(ix.dir, path)
}

// moduleName turns "kernel/drivers/net/virtio_net.ko.xz" into "virtio_net".
func moduleName(path string) string {
	path = strings.TrimSpace(path)
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		path = path[i+1:]
	}
	if i := strings.Index(path, ".ko"); i > 0 {
		path = path[:i]
	}
	return normalize(path)
}

// normalize makes '-' and '_' equivalent, as the kernel and modprobe do.
func normalize(name string) string {
	if strings.IndexByte(name, '-') < 0 {
		return name
	}
	return strings.ReplaceAll(name, "-", "_")
}

// globMatch is fnmatch(3) without flags, as modprobe uses for aliases:
// '*' and '?' match any byte including '/', '[...]' is a class with '!' or
// '^' negation and ranges, '\' escapes. Iterative: no recursion, no panic.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	starP, starS := -1, -1
	for sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starP, starS = px, sx
				px++
				continue
			case '?':
				px++
				sx++
				continue
			case '[':
				if ok, n, valid := matchClass(pattern[px:], s[sx]); valid {
					if ok {
						px += n
						sx++
						continue
					}
				} else if s[sx] == '[' { // unterminated class: literal '['
					px++
					sx++
					continue
				}
			case '\\':
				if px+1 < len(pattern) && pattern[px+1] == s[sx] {
					px += 2
					sx++
					continue
				}
			default:
				if c == s[sx] {
					px++
					sx++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		px, sx = starP+1, starS
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// matchClass matches c against the class at the start of p ("[...]").
// It returns whether c matched, the class length, and whether the class
// was well formed.
func matchClass(p string, c byte) (matched bool, n int, valid bool) {
	i := 1
	neg := false
	if i < len(p) && (p[i] == '!' || p[i] == '^') {
		neg = true
		i++
	}
	first := true
	for i < len(p) {
		if p[i] == ']' && !first {
			return matched != neg, i + 1, true
		}
		first = false
		lo := p[i]
		if lo == '\\' && i+1 < len(p) {
			i++
			lo = p[i]
		}
		i++
		hi := lo
		if i+1 < len(p) && p[i] == '-' && p[i+1] != ']' {
			hi = p[i+1]
			if hi == '\\' && i+2 < len(p) {
				i++
				hi = p[i+1]
			}
			i += 2
		}
		if lo <= c && c <= hi {
			matched = true
		}
	}
	return false, 0, false
}

// Lookup returns the modules modprobe would load for a device's modalias
// in the depmod tree modulesDir (lib/modules/<release>), in modules.alias
// order, and whether each is built in. For checks of a kernel's index
// (which driver does this instance's NIC get?), not for the boot path.
func Lookup(modulesDir, modalias string) (mods []string, builtin map[string]bool, err error) {
	ix, err := loadIndex(modulesDir)
	if err != nil {
		return nil, nil, err
	}
	if mods, err = ix.lookup(modalias); err != nil {
		return nil, nil, err
	}
	builtin = map[string]bool{}
	for _, m := range mods {
		b, err := ix.isBuiltin(m)
		if err != nil {
			return mods, builtin, err
		}
		if b {
			builtin[m] = true
			continue
		}
		if _, ok, err := ix.dep(m); err != nil || !ok {
			if err == nil {
				err = fmt.Errorf("module %s (alias %s) is neither in modules.dep nor built in", m, modalias)
			}
			return mods, builtin, err
		}
	}
	return mods, builtin, nil
}
