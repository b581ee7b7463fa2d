//go:build e2e_linkname

package main

import _ "unsafe" // go:linkname

// Go's runtime replaces most signal handlers before main runs, so
// /proc/self/status no longer shows what was inherited; the runtime keeps
// the inherited dispositions (fwdSig: 1 = SIG_IGN) and mask (initSigmask).
// The linker allows these references only with -checklinkname=0, which
// images.GoBuild passes with the tag e2e_linkname for e2e binaries.
//
//go:linkname fwdSig runtime.fwdSig
var fwdSig [65]uintptr

//go:linkname initSigmask runtime.initSigmask
var initSigmask [2]uint32

const signalsExact = true

// inheritedSignals returns SigIgn and SigBlk as /proc/self/status showed
// them when this process was exec'd.
func inheritedSignals() (ign, blk uint64) {
	for sig := 1; sig < len(fwdSig); sig++ {
		if fwdSig[sig] == 1 { // SIG_IGN
			ign |= 1 << (sig - 1)
		}
	}
	return ign, uint64(initSigmask[0]) | uint64(initSigmask[1])<<32
}
