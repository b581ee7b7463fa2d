//go:build fallbackroots

package caroots

import (
	"crypto/x509"

	// Mozilla's roots compiled in (~150 KiB): the last resort when the root
	// carries no bundle. Not in the default PID 1 build, which is over its
	// 10 MiB budget already; build with -tags pid1,fallbackroots to add it.
	_ "golang.org/x/crypto/x509roots/fallback"
)

func init() {
	builtin = func() *x509.CertPool {
		// With no bundle on disk, the system pool is the fallback's
		// (x509.SetFallbackRoots, called by the package above).
		p, err := x509.SystemCertPool()
		if err != nil {
			return nil
		}
		return p
	}
}
