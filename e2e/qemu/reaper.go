package qemu

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var reaperOnce sync.Once

// startReaper makes this process a child subreaper and reaps the socat
// processes QEMU's guestfwd spawns. glib double-forks them, so they are
// orphaned at once; without this they would be reparented to (and possibly
// left as zombies under) the host's PID 1. Only zombie children named socat
// are reaped, never anything os/exec waits for.
func startReaper() {
	reaperOnce.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return
		}
		go func() {
			for {
				time.Sleep(time.Second)
				reapSocat()
			}
		}()
	})
}

func reapSocat() {
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open {
			continue
		}
		comm := string(b[open+1 : close])
		f := bytes.Fields(b[close+1:])
		if len(f) < 2 || string(f[0]) != "Z" || comm != "socat" {
			continue
		}
		if ppid, _ := strconv.Atoi(string(f[1])); ppid != self {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}
