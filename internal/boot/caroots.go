package boot

import (
	"crypto/x509"
	"strings"

	"github.com/spotroot/spotroot/internal/caroots"
)

// caRoots loads the CA bundle of the root PID 1 runs from (the image's, or
// the target root's copy in the initramfs) for an https EC2 endpoint (""
// is the regional https://ec2.<region>.amazonaws.com). A plain-http
// custom endpoint needs none.
func (b *booter) caRoots(endpoint string) (*x509.CertPool, error) {
	if strings.HasPrefix(endpoint, "http://") {
		return nil, nil
	}
	r, err := caroots.Load("/")
	if err != nil {
		return nil, err
	}
	b.slog.Info("CA roots", "bundle", r.Source, "certificates", r.Count)
	return r.Pool, nil
}
