package harness

import (
	"crypto/rsa"
	"crypto/x509"
	"testing"
)

// The simulated EC2 endpoint's chain has EC2's shape: an RSA 2048 leaf
// sent with its RSA 2048 intermediate, verifiable only through that
// intermediate up to the root the image's bundle holds.
func TestChainHasEC2Shape(t *testing.T) {
	ca, err := NewTestCA("shape test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(EC2Host)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 2 {
		t.Fatalf("server chain has %d certificates, want leaf and intermediate", len(cert.Certificate))
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	inter, err := x509.ParseCertificate(cert.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*x509.Certificate{leaf, inter, ca.Cert} {
		k, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok || k.N.BitLen() != 2048 || c.SignatureAlgorithm != x509.SHA256WithRSA {
			t.Errorf("%s: key %T, signature %v; want RSA 2048, SHA256-RSA", c.Subject.CommonName, c.PublicKey, c.SignatureAlgorithm)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: EC2Host, Roots: roots, Intermediates: inters}); err != nil {
		t.Errorf("leaf does not verify through the intermediate: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: EC2Host, Roots: roots}); err == nil {
		t.Error("leaf verifies without the intermediate: the root signed it directly")
	}
}
