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
	}
}

// TestHandoffRegionGuessWrong: the DHCP domain names the region before IMDS
// does, and PID 1 opens EC2 for it ahead. A VPC whose DHCP option set names
// another region's domain (copied from elsewhere) must cost only that early
// connection: the boot lands on the persistent root and every EC2 request
// the simulator saw went to the instance's own regional endpoint, signed
// for its region (EC2 refuses any other scope with AuthFailure).
func TestHandoffRegionGuessWrong(t *testing.T) {
	w := newWorld(t, harness.WorldOpts{})
	r := bootOpts(t, w, harness.BootOpts{DHCPDomain: "eu-west-1.compute.internal"})
	checkPersistent(t, r, 1)
	// The guess was acted on: the early connection looked its endpoint up.
	if r.DNSQueries["ec2.eu-west-1.amazonaws.com. A"] == 0 {
		t.Errorf("no lookup of the guessed region's endpoint: the DHCP domain went unused (queries: %v)", r.DNSQueries)
	}
	evs, err := w.Server.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		host := ""
		if e.TLSDetails != nil {
			host = e.TLSDetails.ClientProvidedHostHeader
		}
		if host != harness.EC2Host || e.ErrorCode == "AuthFailure" {
			t.Errorf("%s at %s: sent to %q, error %q; want %s, signed for %s", e.EventName, e.EventTime.Format("15:04:05.000"), host, e.ErrorCode, harness.EC2Host, harness.Region)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no EC2 request reached the simulator")
	}
}
