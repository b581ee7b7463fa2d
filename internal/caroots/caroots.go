// Package caroots loads the CA roots PID 1 verifies EC2's certificate with:
// the CA bundle of the root it runs from. As the image's /sbin/init that is
// the image's own bundle; from an initramfs it is the target root's bundle,
// which the initramfs builders copy in (the target root is not mounted yet
// when the claim runs).
//
// crypto/x509 would find the same file by itself, but only on the first
// TLS handshake, then also reads every file of /etc/ssl/certs, and when
// nothing is there fails with "certificate signed by unknown authority".
// Loading it here reads one file, says which, and names what is missing.
package caroots

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Paths are the CA bundle files crypto/x509 looks for on Linux, in its
// order (src/crypto/x509/root_linux.go).
var Paths = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Arch
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7, Amazon Linux
	"/etc/ssl/cert.pem",                                 // Alpine
}

// Roots is a loaded CA pool and where it came from.
type Roots struct {
	Pool   *x509.CertPool
	Source string // the bundle file, or "built-in"
	Count  int    // certificates in the bundle (0 for built-in)
}

// Find returns the first of Paths present under root, as a path inside
// root ("" if none).
func Find(root string) string {
	for _, p := range Paths {
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Load reads the first CA bundle of Paths under root. Without one it uses
// the roots compiled into the binary (only in builds with the
// fallbackroots tag: golang.org/x/crypto/x509roots/fallback), else fails
// naming the files it looked for.
func Load(root string) (*Roots, error) {
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
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			errs = append(errs, fmt.Errorf("CA bundle %s holds no PEM certificate", p))
			continue
		}
		return &Roots{Pool: pool, Source: p, Count: strings.Count(string(b), "-----BEGIN CERTIFICATE-----")}, nil
	}
	if builtin != nil {
		if pool := builtin(); pool != nil {
			return &Roots{Pool: pool, Source: "built-in"}, nil
		}
	}
	where := root
	if root == "/" || root == "" {
		where = "the root spotroot runs from (the image's, or the initramfs's)"
	}
	return nil, fmt.Errorf("no CA roots to verify EC2's TLS certificate: none of %s in %s (install ca-certificates in the image, and rebuild the initramfs so it carries the bundle)%s",
		strings.Join(Paths, ", "), where, joinErrs(errs))
}

func joinErrs(errs []error) string {
	if len(errs) == 0 {
		return ""
	}
	return ": " + errors.Join(errs...).Error()
}

// builtin returns the roots compiled into the binary, if any (fallback.go).
var builtin func() *x509.CertPool
