//go:build !spotroot_faults

package boot

// installFaults is a no-op in every build but the test one (tag
// spotroot_faults): nothing a user controls (user-data, the command line)
// can inject a fault into a product build.
func installFaults(*booter) {}
