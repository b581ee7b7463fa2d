package caroots

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Bundle is a CA bundle indexed by subject, its certificates parsed only
// when a server's chain names one as its issuer. x509.CertPool parses every
// certificate as it is added: a distribution's ~145 roots cost ~175 ms of a
// TCG guest's CPU per load, on the boot's critical path, to verify one
// server that chains to one or two of them.
//
// Verification stays crypto/x509's: Verify builds a pool of the candidate
// roots and calls (*x509.Certificate).Verify with it. The candidates are
// every root whose subject equals the issuer of a certificate the server
// sent — the only roots x509 itself would try (CertPool finds a parent by
// the child's RawIssuer), so the subset never fails a chain the whole pool
// would accept.
type Bundle struct {
	Source string // the bundle file, or "built-in"
	Count  int

	pool      *x509.CertPool      // built-in roots (no file to index)
	bySubject map[string][][]byte // RawSubject -> DER
	mu        sync.Mutex
	parsed    map[string]*x509.Certificate // DER -> parsed
}

// Open reads the first CA bundle of Paths under root, like Load, without
// parsing its certificates.
func Open(root string) (*Bundle, error) {
	var errs []error
	for _, p := range Paths {
		b, err := os.ReadFile(filepath.Join(root, p))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		bd := &Bundle{Source: p, bySubject: map[string][][]byte{}, parsed: map[string]*x509.Certificate{}}
		for len(b) > 0 {
			var blk *pem.Block
			if blk, b = pem.Decode(b); blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" || len(blk.Headers) != 0 {
				continue // as x509.CertPool.AppendCertsFromPEM skips them
			}
			subj, err := rawSubject(blk.Bytes)
			if err != nil {
				continue // unparseable: AppendCertsFromPEM skips it too
			}
			bd.bySubject[string(subj)] = append(bd.bySubject[string(subj)], blk.Bytes)
			bd.Count++
		}
		if bd.Count == 0 {
			errs = append(errs, fmt.Errorf("CA bundle %s holds no PEM certificate", p))
			continue
		}
		return bd, nil
	}
	if builtin != nil {
		if pool := builtin(); pool != nil {
			return &Bundle{Source: "built-in", pool: pool}, nil
		}
	}
	_, err := Load(root) // the same search, for its error message
	if err == nil {
		err = fmt.Errorf("no CA bundle in %s", root)
	}
	return nil, err
}

// rawSubject returns a DER certificate's subject Name, tag and length
// included (x509.Certificate.RawSubject), walking the TBSCertificate
// (RFC 5280 4.1) without parsing the rest.
func rawSubject(der []byte) ([]byte, error) {
	var cert, tbs, v asn1.RawValue
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		return nil, err
	}
	if _, err := asn1.Unmarshal(cert.Bytes, &tbs); err != nil {
		return nil, err
	}
	rest, err := asn1.Unmarshal(tbs.Bytes, &v)
	if err != nil {
		return nil, err
	}
	if v.Class == asn1.ClassContextSpecific && v.Tag == 0 { // [0] version
		if rest, err = asn1.Unmarshal(rest, &v); err != nil {
			return nil, err
		}
	}
	// v is the serial number; then signature, issuer, validity, subject.
	for range 4 {
		if rest, err = asn1.Unmarshal(rest, &v); err != nil {
			return nil, err
		}
	}
	if v.Tag != asn1.TagSequence {
		return nil, errors.New("certificate subject is not a SEQUENCE")
	}
	return v.FullBytes, nil
}

// Verify checks that chain (the server's certificates, leaf first) leads to
// one of the bundle's roots and that the leaf is valid for serverName, as
// crypto/tls would with a full pool.
func (b *Bundle) Verify(serverName string, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("the server sent no certificate")
	}
	if serverName == "" {
		return errors.New("no server name to verify the certificate for")
	}
	opts := x509.VerifyOptions{DNSName: serverName, Roots: b.pool, Intermediates: x509.NewCertPool()}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if b.pool == nil {
		opts.Roots = b.candidates(chain)
	}
	_, err := chain[0].Verify(opts)
	return err
}

// candidates is a pool of the roots named as issuer by any certificate of
// the chain, each parsed once per boot.
func (b *Bundle) candidates(chain []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range chain {
		for _, der := range b.bySubject[string(c.RawIssuer)] {
			root, ok := b.parsed[string(der)]
			if !ok {
				root, _ = x509.ParseCertificate(der) // nil: skipped, as AppendCertsFromPEM would
				b.parsed[string(der)] = root
			}
			if root != nil {
				pool.AddCert(root)
			}
		}
	}
	return pool
}
