package caroots

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"
)

type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func issue(t *testing.T, cn string, parent *issued, ca bool, dns ...string) *issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: []string{"spotroot test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: ca, BasicConstraintsValid: true, DNSNames: dns}
	if ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &issued{c, key}
}

func pemOf(cs ...*issued) []byte {
	var b bytes.Buffer
	for _, c := range cs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
	}
	return b.Bytes()
}

// A bundle opened without parsing verifies exactly what a full pool does:
// a chain through an intermediate to one of its roots, for the right name
// only, and nothing from a CA it does not hold.
func TestBundleVerifiesLikeAPool(t *testing.T) {
	root := issue(t, "Root CA", nil, true)
	inter := issue(t, "Intermediate CA", root, true)
	leaf := issue(t, "ec2", inter, false, "ec2.us-east-1.amazonaws.com")
	var others []*issued
	for _, cn := range []string{"Other A", "Other B", "Other C"} {
		others = append(others, issue(t, cn, nil, true))
	}
	stranger := issue(t, "Root CA", nil, true) // same name, other key
	strangeLeaf := issue(t, "ec2", issue(t, "Intermediate CA", stranger, true), false, "ec2.us-east-1.amazonaws.com")

	dir := t.TempDir()
	write(t, dir, Paths[0], append(append(pemOf(others...), []byte("# a comment\n")...), pemOf(root, others[0])...))
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Count != 5 || b.Source != Paths[0] {
		t.Fatalf("bundle: %d certificates from %s", b.Count, b.Source)
	}
	full, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{leaf.cert, inter.cert}
	for _, tc := range []struct {
		name  string
		host  string
		chain []*x509.Certificate
		ok    bool
	}{
		{"chain to a bundled root", "ec2.us-east-1.amazonaws.com", chain, true},
		{"wrong host name", "ec2.eu-west-1.amazonaws.com", chain, false},
		{"missing intermediate", "ec2.us-east-1.amazonaws.com", chain[:1], false},
		{"a CA of the same name, other key", "ec2.us-east-1.amazonaws.com", []*x509.Certificate{strangeLeaf.cert, issue(t, "x", nil, true).cert}, false},
	} {
		err := b.Verify(tc.host, tc.chain)
		_, perr := tc.chain[0].Verify(x509.VerifyOptions{DNSName: tc.host, Roots: full.Pool, Intermediates: pool(tc.chain[1:])})
		if (err == nil) != tc.ok || (perr == nil) != tc.ok {
			t.Errorf("%s: bundle %v, full pool %v; want ok=%v", tc.name, err, perr, tc.ok)
		}
	}
	var he x509.HostnameError
	if err := b.Verify("other.example", chain); !errors.As(err, &he) {
		t.Errorf("wrong name: %v, want a HostnameError", err)
	}
	var ua x509.UnknownAuthorityError
	if err := b.Verify("ec2.us-east-1.amazonaws.com", []*x509.Certificate{strangeLeaf.cert}); !errors.As(err, &ua) {
		t.Errorf("unknown CA: %v, want an UnknownAuthorityError", err)
	}
	if err := b.Verify("", chain); err == nil {
		t.Error("no server name: verified")
	}
	if err := b.Verify("ec2.us-east-1.amazonaws.com", nil); err == nil {
		t.Error("no certificate: verified")
	}
	// Only the root the chain named was parsed.
	if len(b.parsed) != 1 {
		t.Errorf("parsed %d roots, want 1", len(b.parsed))
	}
}

func pool(cs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func TestBundleNone(t *testing.T) {
	if _, err := Open(t.TempDir()); err == nil {
		t.Fatal("Open of a root without a bundle succeeded")
	}
	dir := t.TempDir()
	write(t, dir, Paths[0], []byte("not a certificate\n"))
	if _, err := Open(dir); err == nil {
		t.Fatal("Open of a bundle without certificates succeeded")
	}
}
