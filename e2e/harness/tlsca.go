package harness

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"time"
)

// TestCA is a certificate authority made for one test run: the AMI trusts
// its root in its CA bundle and the simulated EC2 endpoint's certificate is
// issued under it, so the guest verifies EC2 exactly as on AWS.
//
// The chain has EC2's shape, not a kinder one: EC2's endpoints moved to
// Amazon Trust Services certificates (AWS Security Blog, "How to Prepare
// for AWS's Move to Its Own Certificate Authority"), whose leaves "derive
// their authority from an Amazon Trust Services root CA through any of
// several intermediate CAs" (ACM User Guide, "ACM certificate
// characteristics"; AWS Security Blog, "Amazon introduces dynamic
// intermediate certificate authorities"). So the server sends a leaf and
// an intermediate, and the client verifies two signatures up to a root
// only its bundle holds. The keys are RSA 2048 with SHA-256, as Amazon
// Root CA 1 (amazontrust.com repository) and the "Amazon RSA 2048 M0x"
// intermediates that ec2.<region>.amazonaws.com's certificate comes from:
// verifying RSA is more work than verifying P-256, and the handshake the
// bench measures should cost what EC2's does.
type TestCA struct {
	Cert    *x509.Certificate // the root, in the image's bundle
	CertPEM []byte
	inter   *x509.Certificate // issues the leaves; sent by the server
	key     *rsa.PrivateKey   // the intermediate's
}

// rsaBits is the size of every key of the chain (Amazon Root CA 1 and the
// Amazon RSA 2048 intermediates).
const rsaBits = 2048

// NewTestCA makes a fresh root named name and an intermediate under it.
func NewTestCA(name string) (*TestCA, error) {
	root, rootKey, err := makeCA(name, nil, nil)
	if err != nil {
		return nil, err
	}
	inter, interKey, err := makeCA(name+" RSA 2048 M01", root, rootKey)
	if err != nil {
		return nil, err
	}
	return &TestCA{Cert: root, inter: inter, key: interKey,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})}, nil
}

// makeCA makes a CA certificate and its key: a self-signed root when
// parent is nil, else an intermediate that may issue only leaves.
func makeCA(name string, parent *x509.Certificate, parentKey *rsa.PrivateKey) (*x509.Certificate, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"spotroot e2e"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	} else {
		tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.MaxPathLenZero = true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("make CA %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// Issue returns a server certificate for the DNS names, with the
// intermediate after it, as a server sends its chain.
func (ca *TestCA) Issue(names ...string) (tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:       serial(),
		Subject:            pkix.Name{CommonName: names[0]},
		DNSNames:           names,
		NotBefore:          now.Add(-time.Hour),
		NotAfter:           now.Add(7 * 24 * time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		SignatureAlgorithm: x509.SHA256WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue %v: %w", names, err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.inter.Raw}, PrivateKey: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// hostBundle is the CA bundle an image usually carries.
const hostBundle = "/etc/ssl/certs/ca-certificates.crt"

// ImageCABundle is the AMI's /etc/ssl/certs/ca-certificates.crt: the host's
// public roots (a real image's bundle, ~140 roots to parse) plus the test
// CA.
func (ca *TestCA) ImageCABundle() []byte {
	b, _ := os.ReadFile(hostBundle)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return append(b, ca.CertPEM...)
}
