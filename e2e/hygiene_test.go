package e2e_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
)

// The hand-over contract: the init spotroot execs (the volume's, or the
// image's on fallback) starts as an init the kernel started would, plus
// only what the README documents. testinit records what it was handed
// (TESTINIT-HYGIENE, e2e/cmd/testinit/hygiene.go); checkHandoff compares.

type handoff struct {
	SigIgn       string `json:"sigign"`
	SigBlk       string `json:"sigblk"`
	SignalsExact bool   `json:"signals_exact"`
	StatusSigIgn string `json:"status_sigign"`
	StatusSigBlk string `json:"status_sigblk"`
	FDs          []struct {
		FD     int    `json:"fd"`
		Target string `json:"target"`
		Rdev   string `json:"rdev"`
	} `json:"fds"`
	Argv  []string `json:"argv"`
	Env   []string `json:"env"`
	Cwd   string   `json:"cwd"`
	Umask string   `json:"umask"`
	// TimerSlackNS: PID 1 boots with a wider slack (internal/boot's
	// BootTimerSlack) and must give the kernel's back.
	TimerSlackNS string `json:"timerslack_ns"`
	Cmdline      string `json:"cmdline"`
	Mounts       []struct {
		Point, FSType, Source string
		Self                  bool
	} `json:"mounts"`
	Addrs   []string `json:"addrs"`
	Routes  []string `json:"routes"`
	LinksUp []string `json:"links_up"`
	Modules []string `json:"modules"`
	Errors  []string `json:"errors"`
}

var hygieneRE = regexp.MustCompile(`TESTINIT-HYGIENE (\{.*\})`)

// parseHandoff returns testinit's record from a console.
func parseHandoff(console string) (*handoff, bool) {
	m := hygieneRE.FindStringSubmatch(console)
	if m == nil {
		return nil, false
	}
	var h handoff
	if err := json.Unmarshal([]byte(m[1]), &h); err != nil {
		return nil, false
	}
	return &h, true
}

// handoffOpts relaxes what a scenario changes on purpose.
type handoffOpts struct {
	// NoConsole: the kernel had no console device, so a kernel-started
	// init gets no fds 0–2; spotroot hands /dev/null (devtmpfs) instead.
	NoConsole bool
}

// apiMounts are the mounts the README documents spotroot leaving for the
// init it execs, with their filesystem types.
var apiMounts = map[string]string{"/dev": "devtmpfs", "/proc": "proc", "/sys": "sysfs", "/run": "tmpfs"}

// volumeSource: a volume spotroot mounted because the configuration said
// so (the root, a data volume): a disk the simulator hot-plugged.
var volumeSource = regexp.MustCompile(`^/dev/(nvme[1-9][0-9]*n1|vd[a-z])(p[0-9]+)?$`)

// checkHandoff asserts the hand-over contract on a boot that ended in
// testinit (either kind).
func checkHandoff(t *testing.T, r *harness.BootResult, opts ...handoffOpts) {
	t.Helper()
	var o handoffOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	h, ok := parseHandoff(r.Console)
	if !ok {
		t.Errorf("hand-over: no TESTINIT-HYGIENE line on the console")
		return
	}
	bad := func(f string, a ...any) {
		t.Helper()
		t.Errorf("hand-over to the %s init: "+f, append([]any{r.Kind}, a...)...)
	}
	for _, e := range h.Errors {
		bad("testinit could not record: %s", e)
	}
	// Signals: default dispositions, empty mask (as at exec, see hygiene.go).
	if !h.SignalsExact {
		bad("testinit was not built with e2e_linkname: it cannot see what it inherited")
	}
	if h.SigIgn != "0000000000000000" {
		bad("SigIgn %s, want 0000000000000000 (signals left ignored survive exec into every child)", h.SigIgn)
	}
	if h.SigBlk != "0000000000000000" {
		bad("SigBlk %s, want 0000000000000000", h.SigBlk)
	}
	// fds: 0–2 on the console, nothing else.
	var fds []int
	for _, f := range h.FDs {
		fds = append(fds, f.FD)
		wantRdev := "5:1" // /dev/console
		if o.NoConsole {
			wantRdev = "1:3" // /dev/null
		}
		if f.FD <= 2 && f.Rdev != wantRdev {
			bad("fd %d is %s (rdev %q), want the character device %s", f.FD, f.Target, f.Rdev, wantRdev)
		}
		if f.FD > 2 {
			bad("fd %d is open (%s): spotroot leaked it across the exec", f.FD, f.Target)
		}
	}
	if !slices.Equal(fds, []int{0, 1, 2}) {
		bad("open fds %v, want exactly [0 1 2]", fds)
	}
	// argv and environment: the kernel's.
	words := strings.Fields(h.Cmdline)
	if len(h.Argv) == 0 || !strings.HasPrefix(h.Argv[0], "/") {
		bad("argv %q: argv[0] should be the init's path", h.Argv)
	}
	for _, a := range h.Argv[min(1, len(h.Argv)):] {
		if !slices.Contains(words, a) {
			bad("argv has %q, which is not from the kernel command line %q", a, h.Cmdline)
		}
	}
	for _, want := range []string{"HOME=/", "TERM=linux"} {
		if !slices.Contains(h.Env, want) {
			bad("environment %q lacks %s (the kernel sets it)", h.Env, want)
		}
	}
	for _, e := range h.Env {
		k, _, _ := strings.Cut(e, "=")
		if e == "HOME=/" || e == "TERM=linux" || slices.Contains(words, e) && !strings.Contains(k, ".") {
			continue
		}
		bad("environment has %q: neither the kernel's nor documented", e)
	}
	if h.Cwd != "/" {
		bad("cwd %q, want /", h.Cwd)
	}
	if h.Umask != "0022" {
		bad("umask %s, want 0022", h.Umask)
	}
	// The kernel starts init with a 50 µs timer slack (prctl(2),
	// PR_SET_TIMERSLACK: "the default value is 50,000 nanoseconds"); every
	// child of the next init inherits what it gets.
	if h.TimerSlackNS != "50000" {
		bad("timer slack %q ns, want the kernel's 50000 (spotroot's boot-time slack leaked across the exec)", h.TimerSlackNS)
	}
	// Mounts: /, the API filesystems, configured volumes, lent modules.
	for _, m := range h.Mounts {
		switch {
		case m.Self || m.Point == "/":
		case apiMounts[m.Point] != "":
			if m.FSType != apiMounts[m.Point] {
				bad("%s is %s, want %s", m.Point, m.FSType, apiMounts[m.Point])
			}
		case strings.HasPrefix(m.Point, "/lib/modules/") && (m.Source == "/dev/root" || m.Source == "/dev/nvme0n1"):
			// the image's modules, lent read-only (documented)
		case volumeSource.MatchString(m.Source):
			// a configured data volume
		default:
			bad("undocumented mount left behind: %s (%s from %s)", m.Point, m.FSType, m.Source)
		}
	}
	// Network: spotroot's lease, routes and link state are gone.
	if len(h.Addrs) > 0 || len(h.Routes) > 0 || len(h.LinksUp) > 0 {
		bad("network left behind: addresses %q, routes %q, links up %q", h.Addrs, h.Routes, h.LinksUp)
	}
	// Modules: only the documented ones (NIC driver, filesystems, storage).
	allowed := documentedModules(t)
	for _, m := range h.Modules {
		if !allowed[m] {
			bad("module %s is loaded; spotroot documents only the NIC driver, filesystem and storage modules", m)
		}
	}
	if t.Failed() {
		t.Logf("hand-over record: sigign=%s sigblk=%s (after Go's runtime: SigIgn %s SigBlk %s) fds=%v argv=%q env=%q",
			h.SigIgn, h.SigBlk, h.StatusSigIgn, h.StatusSigBlk, h.FDs, h.Argv, h.Env)
	}
}

var (
	modsOnce sync.Once
	mods     map[string]bool
)

// documentedModules is the closure, in the test kernel's modules.dep, of
// what the README says spotroot loads: the NIC driver (virtio_net here, ena
// on EC2), filesystem modules (xfs, btrfs) and, on an initramfs fallback,
// storage drivers.
func documentedModules(t *testing.T) map[string]bool {
	modsOnce.Do(func() {
		mods = map[string]bool{}
		dep := map[string][]string{}
		f, err := os.Open(filepath.Join(sharedEnv(t).Kernel.ModulesDir, "modules.dep"))
		if err != nil {
			return
		}
		defer f.Close()
		name := func(p string) string {
			n := filepath.Base(p)
			n, _, _ = strings.Cut(n, ".ko")
			return strings.ReplaceAll(n, "-", "_")
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			m, rest, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			for _, d := range strings.Fields(rest) {
				dep[name(m)] = append(dep[name(m)], name(d))
			}
			dep[name(m)] = append(dep[name(m)], name(m))
		}
		for _, m := range append(slices.Clone(images.DefaultModules), "ena", "virtio_blk", "virtio_scsi", "nvme") {
			for _, d := range dep[m] {
				mods[d] = true
			}
			mods[m] = true
		}
	})
	return mods
}
