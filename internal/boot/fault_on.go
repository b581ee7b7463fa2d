//go:build spotroot_faults

package boot

import (
	"os"
	"strings"
)

// installFaults arms the fault named on the kernel command line, in the
// e2e test build only (-tags spotroot_faults):
//
//	spotroot_test.fault=<phase>:<start|end>:<kind>
//
// kinds: error (an EIO, as a failed syscall), panic (in the phase's own
// goroutine), goroutine-panic (in a goroutine spotroot started), fatal (a
// Go runtime fatal error: nothing can recover it, PID 1 dies and the
// kernel panics). The prefix is not spotroot.*: the configuration parser
// rejects unknown spotroot.* parameters.
func installFaults(b *booter) {
	cl, _ := os.ReadFile("/proc/cmdline")
	var spec string
	for _, f := range strings.Fields(string(cl)) {
		if v, ok := strings.CutPrefix(f, "spotroot_test.fault="); ok {
			spec = v
		}
	}
	if spec == "" {
		return
	}
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) != 3 {
		b.log.Printf("warning: spotroot_test.fault=%s: want phase:point:kind", spec)
		return
	}
	b.log.Printf("test build: fault %s armed", spec)
	b.log.Fault = Fault(parts[0], parts[1], parts[2])
}
