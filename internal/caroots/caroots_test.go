package caroots

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testCert(t *testing.T, cn string) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func write(t *testing.T, root, p string, b []byte) {
	t.Helper()
	f := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func verifies(r *Roots, c *x509.Certificate) bool {
	_, err := c.Verify(x509.VerifyOptions{Roots: r.Pool})
	return err == nil
}

// The root's own bundle is used, in crypto/x509's order, and nothing else.
func TestLoadFirstBundleOfTheRoot(t *testing.T) {
	root := t.TempDir()
	a, pa := testCert(t, "a")
	b, pb := testCert(t, "b")
	write(t, root, "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", pb)
	write(t, root, "/etc/ssl/certs/ca-certificates.crt", append(append([]byte{}, pa...), pa...))
	r, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if r.Source != "/etc/ssl/certs/ca-certificates.crt" || r.Count != 2 {
		t.Errorf("source %s count %d, want the Debian bundle with 2 certificates", r.Source, r.Count)
	}
	if !verifies(r, a) || verifies(r, b) {
		t.Errorf("pool trusts a=%v b=%v, want only a (the first bundle)", verifies(r, a), verifies(r, b))
	}
	if got := Find(root); got != r.Source {
		t.Errorf("Find = %q, want %q", got, r.Source)
	}
}

func TestLoadOtherDistributions(t *testing.T) {
	root := t.TempDir()
	c, p := testCert(t, "c")
	write(t, root, "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", p)
	r, err := Load(root)
	if err != nil || !verifies(r, c) {
		t.Fatalf("Load = %+v, %v; want the RHEL bundle", r, err)
	}
}

func TestLoadNone(t *testing.T) {
	root := t.TempDir()
	write(t, root, "/etc/ssl/certs/ca-certificates.crt", []byte("not a certificate\n"))
	r, err := Load(root)
	if builtin != nil {
		if err != nil || r.Source != "built-in" {
			t.Fatalf("with the fallback roots built in: %+v, %v", r, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Load of a root without a usable bundle = %+v, want an error", r)
	}
	for _, want := range []string{"no CA roots", "/etc/ssl/certs/ca-certificates.crt", "install ca-certificates", "holds no PEM certificate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if Find(t.TempDir()) != "" {
		t.Error("Find in an empty root found a bundle")
	}
}
