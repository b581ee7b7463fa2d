package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// What the kernel (or spotroot) handed this init, recorded before testinit
// changes anything and printed as one line before the TESTINIT line:
//
//	TESTINIT-HYGIENE {"sigign":"…","sigblk":"…","fds":[…],…}
//
// The e2e scenarios compare it with what a kernel-started init gets.

type fdInfo struct {
	FD     int    `json:"fd"`
	Target string `json:"target"`
	Rdev   string `json:"rdev,omitempty"` // major:minor of a character device
}

type mountRec struct {
	Point  string `json:"point"`
	FSType string `json:"fstype"`
	Source string `json:"source"`
	Self   bool   `json:"self,omitempty"` // mounted by testinit itself
}

type hygiene struct {
	// SigIgn and SigBlk as /proc/1/status would have shown them at exec
	// (exact only in the e2e_linkname build, see signals_*.go).
	SigIgn       string `json:"sigign"`
	SigBlk       string `json:"sigblk"`
	SignalsExact bool   `json:"signals_exact"`
	// The same lines as /proc/self/status shows them now (after the Go
	// runtime's own set-up), for the record.
	StatusSigIgn string     `json:"status_sigign"`
	StatusSigBlk string     `json:"status_sigblk"`
	FDs          []fdInfo   `json:"fds"`
	Argv         []string   `json:"argv"`
	Env          []string   `json:"env"`
	Cwd          string     `json:"cwd"`
	Umask        string     `json:"umask"`
	TimerSlackNS string     `json:"timerslack_ns"`
	Cmdline      string     `json:"cmdline"`
	Mounts       []mountRec `json:"mounts"`
	Addrs        []string   `json:"addrs"`  // every address on a non-loopback link
	Routes       []string   `json:"routes"` // main-table routes, every family
	LinksUp      []string   `json:"links_up"`
	Modules      []string   `json:"modules"`
	Errors       []string   `json:"errors,omitempty"`
}

// inherited is read first thing in main, before anything opens a file.
type inherited struct {
	sigign, sigblk uint64
	umask          int
	cwd            string
	fds            []fdInfo
	fdErr          error
}

func readInherited() inherited {
	var in inherited
	in.sigign, in.sigblk = inheritedSignals()
	in.umask = unix.Umask(0)
	unix.Umask(in.umask)
	in.cwd, _ = os.Getwd()
	in.fds, in.fdErr = openFDs()
	return in
}

// openFDs lists this process's open fds from /proc/self/fd with raw
// syscalls (so the listing's own fd is known and left out). Before /proc is
// mounted it probes fds 0–63 with fcntl instead.
func openFDs() ([]fdInfo, error) {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		var out []fdInfo
		for fd := 0; fd < 64; fd++ {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				out = append(out, describeFD(fd, "?"))
			}
		}
		return out, nil
	}
	defer unix.Close(dir)
	buf := make([]byte, 8192)
	var names []string
	for {
		n, err := unix.ReadDirent(dir, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
	var out []fdInfo
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == dir {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + name)
		out = append(out, describeFD(fd, target))
	}
	return out, nil
}

func describeFD(fd int, target string) fdInfo {
	fi := fdInfo{FD: fd, Target: target}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
		fi.Rdev = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return fi
}

// recordHygiene completes the record once /proc is mounted; selfMounted
// are the mount points testinit mounted itself.
func recordHygiene(in inherited, selfMounted map[string]bool) string {
	h := hygiene{
		SigIgn: fmt.Sprintf("%016x", in.sigign), SigBlk: fmt.Sprintf("%016x", in.sigblk), SignalsExact: signalsExact,
		FDs: in.fds, Argv: os.Args, Env: os.Environ(), Cwd: in.cwd, Umask: fmt.Sprintf("%04o", in.umask),
	}
	if in.fdErr != nil {
		h.Errors = append(h.Errors, "fds: "+in.fdErr.Error())
	}
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
				h.StatusSigIgn = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(l, "SigBlk:"); ok {
				h.StatusSigBlk = strings.TrimSpace(v)
			}
		}
	}
	// Go's runtime leaves the timer slack alone: this is what the exec gave.
	if sl, err := os.ReadFile("/proc/self/timerslack_ns"); err == nil {
		h.TimerSlackNS = strings.TrimSpace(string(sl))
	} else {
		h.Errors = append(h.Errors, "timer slack: "+err.Error())
	}
	cl, _ := os.ReadFile("/proc/cmdline")
	h.Cmdline = strings.TrimSpace(string(cl))
	if ms, err := readMountInfoFull(); err == nil {
		for _, m := range ms {
			m.Self = selfMounted[m.Point]
			h.Mounts = append(h.Mounts, m)
		}
	} else {
		h.Errors = append(h.Errors, "mounts: "+err.Error())
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&(1<<0) != 0 && a.Name != "lo" { // net.FlagUp
				h.LinksUp = append(h.LinksUp, a.Name)
			}
			if a.Name == "lo" {
				continue
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
			for _, ad := range addrs {
				h.Addrs = append(h.Addrs, a.Name+":"+ad.IPNet.String())
			}
		}
	} else {
		h.Errors = append(h.Errors, "links: "+err.Error())
	}
	if routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE); err == nil {
		for _, r := range routes {
			h.Routes = append(h.Routes, r.String())
		}
	} else {
		h.Errors = append(h.Errors, "routes: "+err.Error())
	}
	if mods, err := os.ReadFile("/proc/modules"); err == nil {
		for _, l := range strings.Split(string(mods), "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				h.Modules = append(h.Modules, f[0])
			}
		}
	}
	b, _ := json.Marshal(h)
	return "TESTINIT-HYGIENE " + string(b)
}

func readMountInfoFull() ([]mountRec, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountRec
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		a, p := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(p) < 2 {
			continue
		}
		out = append(out, mountRec{Point: unescape(a[4]), FSType: p[0], Source: unescape(p[1])})
	}
	return out, nil
}
