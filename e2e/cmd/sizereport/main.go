// Command sizereport shows where the PID 1 binary's bytes go (make
// size-report): the binary's size, with and without the compiled-in CA
// roots, against its 10 MiB budget, and the packages that take the most of
// it (code and data symbols, summed per package from `go tool nm -size`),
// optionally beside an older revision built with that revision's recipe.
// It exits 1 when the binary with CA roots is over budget.
//
// The table is README.md's "Where the PID 1 binary's bytes go".
package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spotroot/spotroot/e2e/images"
)

func main() {
	base := flag.String("base", "", "git revision to compare with (built with -base-tags, -base-gcflags)")
	baseTags := flag.String("base-tags", "pid1", "the base revision's PID 1 build tags")
	baseGC := flag.String("base-gcflags", "", "the base revision's PID 1 -gcflags=… arguments (space-separated)")
	top := flag.Int("top", 25, "packages to list")
	flag.Parse()
	root, err := images.ModuleRoot()
	check(err)
	tmp, err := os.MkdirTemp("", "sizereport")
	check(err)
	defer os.RemoveAll(tmp)

	after := measure(root, filepath.Join(tmp, "after"), images.PID1Tags, images.PID1GCFlags)
	var before *result
	if *base != "" {
		src := filepath.Join(tmp, "src")
		check(os.MkdirAll(src, 0o755))
		arch := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %q | tar -x -C %q", root, *base, src))
		if b, err := arch.CombinedOutput(); err != nil {
			check(fmt.Errorf("git archive %s: %v\n%s", *base, err, b))
		}
		var gc []string
		if *baseGC != "" {
			gc = strings.Fields(*baseGC)
		}
		before = measure(src, filepath.Join(tmp, "before"), *baseTags, gc)
	}

	fmt.Printf("PID 1 build: CGO_ENABLED=0 go %s (%s)\n\n", strings.Join(images.PID1BuildArgs(""), " "), goVersion())
	row := func(name string, f func(*result) int64) {
		if before != nil {
			a, b := f(after), f(before)
			fmt.Printf("| %s | %s | %s | %s |\n", name, num(b), num(a), delta(a-b))
		} else {
			fmt.Printf("| %s | %s |\n", name, num(f(after)))
		}
	}
	if before != nil {
		fmt.Printf("| | before (%s, -tags %s) | after | change |\n|---|--:|--:|--:|\n", *base, *baseTags)
	} else {
		fmt.Print("| | bytes |\n|---|--:|\n")
	}
	row("**binary**", func(r *result) int64 { return r.size })
	row("**binary with CA roots** (+fallbackroots)", func(r *result) int64 { return r.sizeRoots })
	for _, s := range []string{".text", ".rodata", ".gopclntab", ".noptrdata", ".data"} {
		row("section "+s, func(r *result) int64 { return r.sections[s] })
	}
	fmt.Println()

	// The packages: the top of the current build, then any of the base's
	// top that shrank out of it.
	names := sortedPkgs(after.pkgs)
	if len(names) > *top {
		names = names[:*top]
	}
	if before != nil {
		// The base's top, and every package of 8 KB or more that is gone.
		for i, p := range sortedPkgs(before.pkgs) {
			gone := after.pkgs[p] == 0 && before.pkgs[p] >= 8<<10
			if (i < *top || gone) && !contains(names, p) {
				names = append(names, p)
			}
		}
	}
	if before != nil {
		fmt.Print("| package (code + data symbols) | before | after | change |\n|---|--:|--:|--:|\n")
	} else {
		fmt.Print("| package (code + data symbols) | bytes |\n|---|--:|\n")
	}
	for _, p := range names {
		row("`"+p+"`", func(r *result) int64 { return r.pkgs[p] })
	}
	fmt.Println()
	mark := "✔"
	if after.sizeRoots > images.PID1Budget {
		mark = "✘"
	}
	fmt.Printf("%s PID 1 binary ≤ 10 MiB (%s B), CA roots and all: %s B (%.2f MiB)\n", mark, num(images.PID1Budget), num(after.sizeRoots), float64(after.sizeRoots)/(1<<20))
	fmt.Println("Symbols are the stripped binary's code and data; .gopclntab (line tables, ~0.7 B per code byte) and unnamed rodata are not in the package rows.")
	if mark == "✘" {
		os.Exit(1)
	}
}

type result struct {
	size, sizeRoots int64
	sections        map[string]int64
	pkgs            map[string]int64
}

func measure(src, out, tags string, gcflags []string) *result {
	check(os.MkdirAll(out, 0o755))
	build := func(name, tags, ldflags string) string {
		bin := filepath.Join(out, name)
		args := append([]string{"build", "-tags", tags}, gcflags...)
		args = append(args, "-trimpath", "-ldflags="+ldflags, "-o", bin, "./cmd/spotroot")
		cmd := exec.Command("go", args...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			check(fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), src, err, b))
		}
		return bin
	}
	r := &result{sections: map[string]int64{}, pkgs: map[string]int64{}}
	r.size = fileSize(build("spotroot", tags, "-s -w"))
	r.sizeRoots = fileSize(build("spotroot-roots", tags+",fallbackroots", "-s -w"))
	// The same build with its symbol table (-w only: no DWARF); code and
	// data are laid out as in the stripped one.
	sym := build("spotroot-sym", tags, "-w")
	f, err := elf.Open(sym)
	check(err)
	defer f.Close()
	type span struct{ lo, hi uint64 }
	var file []span
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && s.Flags&elf.SHF_ALLOC != 0 {
			file = append(file, span{s.Addr, s.Addr + s.Size})
			r.sections[s.Name] = int64(s.Size)
		}
	}
	nm, err := exec.Command("go", "tool", "nm", "-size", sym).Output()
	check(err)
	sc := bufio.NewScanner(bytes.NewReader(nm))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || fs[2] == "U" {
			continue
		}
		addr, err1 := strconv.ParseUint(fs[0], 16, 64)
		size, err2 := strconv.ParseInt(fs[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		in := false
		for _, s := range file {
			in = in || (addr >= s.lo && addr < s.hi)
		}
		if in {
			r.pkgs[pkgOf(strings.Join(fs[3:], " "))] += size
		}
	}
	return r
}

// pkgOf returns the import path a symbol belongs to: methods, closures,
// generic instances (by the generic's package), type descriptors and itabs
// by the type's package; the linker's own tables are "(runtime metadata)".
func pkgOf(sym string) string {
	for _, p := range []string{"type:.eq.", "type:.hash.", "type:", "go:itab.", "*", "(*", "("} {
		sym = strings.TrimPrefix(sym, p)
	}
	if strings.HasPrefix(sym, "go:") || sym == "" {
		return "(runtime metadata: " + strings.SplitN(sym, ".", 2)[0] + ")"
	}
	if i := strings.IndexAny(sym, "[,"); i >= 0 {
		sym = sym[:i]
	}
	slash := strings.LastIndex(sym, "/")
	if dot := strings.Index(sym[slash+1:], "."); dot >= 0 {
		return sym[:slash+1+dot]
	}
	return sym
}

func sortedPkgs(m map[string]int64) []string {
	var names []string
	for p := range m {
		names = append(names, p)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	return names
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	check(err)
	return st.Size()
}

func goVersion() string {
	b, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "go"
	}
	return strings.TrimSpace(string(b))
}

func num(v int64) string {
	s := strconv.FormatInt(v, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func delta(v int64) string {
	if v > 0 {
		return "+" + num(v)
	}
	return num(v)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sizereport:", err)
		os.Exit(2)
	}
}
