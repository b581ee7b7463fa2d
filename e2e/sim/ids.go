package sim

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// Resource ids look like EC2's current long form: prefix + 17 hex digits.
// The 8-digit legacy form is accepted on input, as EC2 still does.

func NewInstanceID() string { return newID("i-") }
func NewVolumeID() string   { return newID("vol-") }
func NewSnapshotID() string { return newID("snap-") }
func NewImageID() string    { return newID("ami-") }

func newID(prefix string) string {
	return prefix + randHex(17)
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// randBase64 returns n random bytes, base64-encoded (std alphabet).
func randBase64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// randUpper returns n characters from the alphabet AWS uses in key ids.
func randUpper(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// newRequestID returns a UUID-shaped request id like EC2's.
func newRequestID() string {
	h := randHex(32)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// derivedHex gives stable pseudo-random hex for things EC2 would store but
// we can compute (reservation ids, MACs) from an instance id.
func derivedHex(seed, salt string, n int) string {
	sum := sha256.Sum256([]byte(salt + "/" + seed))
	return hex.EncodeToString(sum[:])[:n]
}

var idPattern = regexp.MustCompile(`^([a-z]+)-([0-9a-f]{8}|[0-9a-f]{17})$`)

// validID reports whether id is a well-formed id with the given prefix
// ("vol", "i", ...).
func validID(id, prefix string) bool {
	m := idPattern.FindStringSubmatch(id)
	return m != nil && m[1] == prefix
}

// idPrefix returns "vol" for "vol-0123...".
func idPrefix(id string) string {
	p, _, ok := strings.Cut(id, "-")
	if !ok {
		return ""
	}
	return p
}

func checkID(id, prefix string) error {
	if !validID(id, prefix) {
		return fmt.Errorf("malformed %s id %q", prefix, id)
	}
	return nil
}
