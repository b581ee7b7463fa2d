//go:build !e2e_linkname

package main

import (
	"os"
	"strconv"
	"strings"
)

// Without the runtime's record (a plain go build), only what survives Go's
// own set-up shows: inherited SIG_IGN of SIGHUP and SIGINT, most of the
// mask. The e2e harness always builds with e2e_linkname.
const signalsExact = false

func inheritedSignals() (ign, blk uint64) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			ign, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
		if v, ok := strings.CutPrefix(l, "SigBlk:"); ok {
			blk, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return ign, blk
}
