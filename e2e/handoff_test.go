package e2e_test

import (
	"testing"

	"github.com/spotroot/spotroot/e2e/harness"
)

// TestHandoffOneConnection: on a cloud that drops no connection, the
// connection opened ahead while IMDS is read carries every EC2 call of the
// boot (the claim's calls are sequential): one TLS handshake. The boot lands
// on the persistent root.
func TestHandoffOneConnection(t *testing.T) {
	w := newWorld(t, harness.WorldOpts{})
	// Lost answers reset connections by design (a new, resumed, handshake
	// each): this test counts handshakes, so the cloud keeps them.
	if err := w.Sim.DisableHostile("*", "counts TLS handshakes per boot; lost answers and throttling would add connections by design"); err != nil {
		t.Fatal(err)
	}
	r := boot(t, w)
	checkPersistent(t, r, 1)
	const name = "ec2.us-east-1.amazonaws.com"
	if n := r.TLSHandshakes[name]; n != 1 || r.EC2HTTPS < 2 {
		t.Errorf("%d TLS handshakes with %s for %d EC2 requests; want 1 for all of them (handshakes: %v)", n, name, r.EC2HTTPS, r.TLSHandshakes)
		for _, e := range audit(t, w) {
			t.Logf("EC2 call at %s: %s %s", e.EventTime.Format("15:04:05.000"), e.EventName, e.ErrorCode)
		}
	}
}
