package main

// Translated guest code (-translations). On a TCG guest the handoff's time
// goes mostly to translating code the boot runs for the first time (README:
// "Where the handoff's time goes on this guest"), and the host's ±30 %
// drift hides a 5 % change in wall time even over 14 paired runs. How many
// guest instructions QEMU translates between spotroot's first instruction
// and the volume's init's first instruction does not follow the host's
// speed: boots of one build agree within 1.5 % of ~380 000 (what varies is
// work whose timing decides whether it lands before the exec or after it;
// IPv6's timers did so by 5 % before the kernel's IPv6 was held off during
// DHCPv4). QEMU's in_asm log (every translation block, as translated)
// gives it, split between user space (spotroot) and the kernel (syscalls,
// page faults, module loading, the network stack: everything the boot
// makes the kernel run for the first time).

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spotroot/spotroot/e2e/harness"
)

const secTranslations = "translated guest code: spotroot's first instruction → the volume's init's first (TCG in_asm log, one boot each, kind, attach 0s)"

// kernelSpace is where every kernel address of x86-64 and arm64 (48-bit
// and larger) lies; user space is below.
const kernelSpace = 0xffff_8000_0000_0000

// Translated counts the guest instructions QEMU translated in one span.
type Translated struct{ User, Kernel int }

func (t Translated) All() int { return t.User + t.Kernel }

// countTranslated reads a QEMU "-d in_asm" log (blocks of "0x<addr>:  …"
// lines, one per guest instruction translated, each block after an "IN:"
// line) and counts the instructions from the first block that starts at
// from up to the first block that starts at to (not counted). from and to
// are the two programs' ELF entry points: the span is what the guest
// translated while spotroot ran, in every process and the kernel.
//
// marks split the span into stretches: stretch 0 runs until the first
// block at any mark; from the first block at marks[i], stretch i+1 runs
// until another mark's first block. Goroutines overlap, so the seams are
// approximate. perStretch has len(marks)+1 entries.
func countTranslated(r io.Reader, from, to uint64, marks []uint64) (t Translated, perStretch []int, err error) {
	perStretch = make([]int, len(marks)+1)
	seen := make([]bool, len(marks))
	cur := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	in, blockStart := false, false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "IN:") {
			blockStart = true
			continue
		}
		if !strings.HasPrefix(line, "0x") {
			continue
		}
		hex, _, ok := strings.Cut(line[2:], ":")
		if !ok {
			continue
		}
		a, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		if blockStart {
			blockStart = false
			switch {
			case !in && a == from:
				in = true
			case in && a == to:
				return t, perStretch, nil
			case in:
				for i, m := range marks {
					if a == m && !seen[i] {
						seen[i], cur = true, i+1
					}
				}
			}
		}
		if !in {
			continue
		}
		perStretch[cur]++
		if a >= kernelSpace {
			t.Kernel++
		} else {
			t.User++
		}
	}
	if err := sc.Err(); err != nil {
		return t, perStretch, err
	}
	if !in {
		return t, perStretch, fmt.Errorf("no translation block at spotroot's entry point %#x", from)
	}
	return t, perStretch, fmt.Errorf("no translation block at the volume's init's entry point %#x after spotroot's", to)
}

// stretches name the handoff's stages by the function that starts each
// (its first translated block), in the PID 1 binary's symbol table.
var stretches = []struct{ name, symbol string }{
	{"mounts, early configuration, marker", "main.main"},
	{"NIC modules", "github.com/spotroot/spotroot/internal/kmod.(*Loader).LoadForClass"},
	{"network (link, DHCP, netlink)", "github.com/spotroot/spotroot/internal/netup.Up"},
	{"IMDS (SDK client, HTTP, JSON, YAML, DNS)", "github.com/spotroot/spotroot/internal/imds.Choose"},
	{"EC2 client, TLS, claim, device", "github.com/spotroot/spotroot/internal/claim.NewClient"},
	{"filesystem", "github.com/spotroot/spotroot/internal/fsutil.NeedsCheck"},
	{"mount, marker removal, switch", "github.com/spotroot/spotroot/internal/sysroot.Mount"},
}

// stretchMarks resolves the stretches' symbols in syms, an unstripped twin
// of the booted binary (the same build without -s -w). It checks the twin
// has the booted binary's code where the booted one has it (entry point,
// .text address and size) and fails otherwise.
func stretchMarks(booted, syms string) ([]uint64, error) {
	b, err := elf.Open(booted)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	s, err := elf.Open(syms)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	bt, st := b.Section(".text"), s.Section(".text")
	if bt == nil || st == nil || b.Entry != s.Entry || bt.Addr != st.Addr || bt.Size != st.Size {
		return nil, fmt.Errorf("%s is not %s with symbols: entry or .text differ", syms, booted)
	}
	symbols, err := s.Symbols()
	if err != nil {
		return nil, err
	}
	addr := map[string]uint64{}
	for _, sy := range symbols {
		addr[sy.Name] = sy.Value
	}
	marks := make([]uint64, len(stretches))
	for i, st := range stretches {
		if marks[i] = addr[st.symbol]; marks[i] == 0 {
			return nil, fmt.Errorf("%s: no symbol %s", syms, st.symbol)
		}
	}
	return marks, nil
}

// elfEntry is a static binary's entry point: its first instruction's address.
func elfEntry(path string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Entry, nil
}

// Translations boots spotroot (the PID 1 binary in b.Env's AMI) once with
// the in_asm log and records the counts under label.
func (b *Bench) Translations(ctx context.Context, label, spotroot, guestinit string, marks []uint64) (Translated, error) {
	from, err := elfEntry(spotroot)
	if err != nil {
		return Translated{}, fmt.Errorf("entry point of %s: %w", spotroot, err)
	}
	to, err := elfEntry(guestinit)
	if err != nil {
		return Translated{}, fmt.Errorf("entry point of %s: %w", guestinit, err)
	}
	w, dir, err := b.world(ctx, "translations", false, 0)
	if err != nil {
		return Translated{}, err
	}
	defer w.Close()
	defer cleanup(dir)
	logPath := filepath.Join(dir, "in_asm.log")
	defer os.Remove(logPath) // ~60 MB
	if _, err := w.Boot(ctx, harness.BootOpts{UserData: benchUserData, KernelArgs: kargs(), LazyRoot: lazyAMI,
		Until: regexp.MustCompile(`^BENCHINIT uptime=`), ExtraArgs: []string{"-d", "in_asm", "-D", logPath}}); err != nil {
		return Translated{}, err
	}
	f, err := os.Open(logPath)
	if err != nil {
		return Translated{}, err
	}
	defer f.Close()
	t, per, err := countTranslated(f, from, to, marks)
	if err != nil {
		return t, fmt.Errorf("%s: %w", logPath, err)
	}
	b.Rep.Add(secTranslations, label, "guest instructions translated", "insns", float64(t.All()))
	b.Rep.Add(secTranslations, label, "  in user space (spotroot)", "insns", float64(t.User))
	b.Rep.Add(secTranslations, label, "  in the kernel", "insns", float64(t.Kernel))
	if len(marks) > 0 {
		b.Rep.Add(secTranslations, label, "  stretch: before main (runtime, package initialisers, exec)", "insns", float64(per[0]))
		for i, st := range stretches {
			b.Rep.Add(secTranslations, label, "  stretch: "+st.name, "insns", float64(per[i+1]))
		}
	}
	return t, nil
}

// spotrootSyms is this build's PID 1 binary with symbols (main.go builds
// it beside the stripped one when -translations is on), for stretches.
var spotrootSyms string

// translationRuns counts this build's translations and, with -against, the
// other build's (alternating, as the timed runs do), and notes the
// difference of the medians.
func translationRuns(ctx context.Context, b *Bench, spotroot, guestinit string, aenv *harness.Env) error {
	kb := *b
	kb.Profile, kb.Label = profileKind, ""
	ab := kb
	ab.Env = aenv
	var marks []uint64
	if spotrootSyms != "" {
		m, err := stretchMarks(spotroot, spotrootSyms)
		if err != nil {
			b.Rep.Note("translations: no stretches: %v", err)
		}
		marks = m
	}
	var mine, theirs []Translated
	for i := 0; i < translations; i++ {
		t, err := kb.Translations(ctx, "this build", spotroot, guestinit, marks)
		if err != nil {
			return err
		}
		mine = append(mine, t)
		logf("translations %d/%d: this build %d guest instructions (user %d, kernel %d)", i+1, translations, t.All(), t.User, t.Kernel)
		if aenv == nil {
			continue
		}
		if t, err = ab.Translations(ctx, againstLabel, against, guestinit, nil); err != nil {
			return err
		}
		theirs = append(theirs, t)
	}
	b.Rep.Note("Translations vary by about 1.5 %% from boot to boot: work whose timing decides whether it lands before the exec or after it.")
	if aenv == nil {
		return nil
	}
	m, o := medianTranslated(mine), medianTranslated(theirs)
	b.Rep.Note("translations, this build − against (medians of %d boots each): %+d guest instructions (%+.1f %%; user %+d, kernel %+d).",
		translations, m.All()-o.All(), 100*float64(m.All()-o.All())/float64(o.All()), m.User-o.User, m.Kernel-o.Kernel)
	return nil
}

// medianTranslated is the per-field median (upper median for an even count).
func medianTranslated(ts []Translated) Translated {
	med := func(f func(Translated) int) int {
		v := make([]int, len(ts))
		for i, t := range ts {
			v[i] = f(t)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return Translated{User: med(func(t Translated) int { return t.User }), Kernel: med(func(t Translated) int { return t.Kernel })}
}
