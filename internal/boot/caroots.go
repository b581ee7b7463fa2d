package boot

import (
	"crypto/x509"
	"errors"
	"strings"
	"sync"

	"github.com/spotroot/spotroot/internal/caroots"
	"github.com/spotroot/spotroot/internal/safego"
)

// caRootsLoad is the CA bundle, opened once per boot: the claim's client
// and the failed-boot tagger share it.
type caRootsLoad struct {
	once   sync.Once
	done   chan struct{}
	bundle *caroots.Bundle
	err    error
}

// startCARoots opens the CA bundle in the background while the network and
// IMDS phases wait for answers. Its certificates are parsed only when a
// server's chain names one (caroots.Bundle).
func (b *booter) startCARoots() {
	b.ca.once.Do(func() {
		b.ca.done = make(chan struct{})
		safego.Go("CA roots", func() {
			defer close(b.ca.done) // also on a panic (safego reports it)
			b.ca.bundle, b.ca.err = caroots.Open("/")
			if b.ca.err == nil && b.slog != nil {
				b.slog.Info("CA roots", "bundle", b.ca.bundle.Source, "certificates", b.ca.bundle.Count)
			}
		})
	})
}

// caRoots returns the CA bundle of the root PID 1 runs from (the image's,
// or the target root's copy in the initramfs) for an https EC2 endpoint (""
// is the regional https://ec2.<region>.amazonaws.com). A plain-http
// custom endpoint needs none (nil, nil).
func (b *booter) caRoots(endpoint string) (*caroots.Bundle, error) {
	if strings.HasPrefix(endpoint, "http://") {
		return nil, nil
	}
	b.startCARoots()
	<-b.ca.done
	if b.ca.err != nil {
		return nil, b.ca.err
	}
	if b.ca.bundle == nil {
		return nil, errors.New("CA roots: the loader failed")
	}
	return b.ca.bundle, nil
}

// verifyEC2 verifies EC2's certificate chain for the name dialed against
// the bundle (claim.ClientOptions.Verify).
func (b *booter) verifyEC2(serverName string, chain []*x509.Certificate) error {
	bd, err := b.caRoots("")
	if err != nil {
		return err
	}
	return bd.Verify(serverName, chain)
}
