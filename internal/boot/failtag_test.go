package boot

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/imds"
)

// A failed boot marks itself on the instance with its own credentials;
// the tag is what EC2 (the simulator) then holds.
func TestTagFailureMarksTheInstance(t *testing.T) {
	w, err := sim.Load("")
	if err != nil {
		t.Fatal(err)
	}
	id := sim.NewInstanceID()
	if err := w.AddInstance(sim.Instance{ID: id, AZ: "us-east-1a", Role: "spotroot", BlockDevices: map[string]string{"/dev/xvda": sim.NewVolumeID()}}); err != nil {
		t.Fatal(err)
	}
	s := sim.NewServer(w)
	t.Cleanup(s.Close)
	md := httptest.NewServer(s.IMDSHandler(id))
	t.Cleanup(md.Close)
	api := httptest.NewServer(s.EC2Handler())
	t.Cleanup(api.Close)
	c := claim.NewClient(claim.ClientOptions{Region: "us-east-1", Endpoint: api.URL, IMDS: imds.New(md.URL, nil).SDK()})
	// A boot that fails in the claim has its instance-profile credentials
	// cached already; the hostile simulator's first seconds of credential
	// 404s (sim.Hostile.CredentialDelay) belong to the claim, not here.
	if _, err := c.Options().Credentials.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The effect decides, not the error: the hostile simulator may lose
	// the answer of a CreateTags that EC2 committed.
	err = TagFailure(context.Background(), c, id, "claim")
	inst, _ := w.Instance(id)
	if got := inst.Tags[BootTagKey]; got != "failed:claim" {
		t.Fatalf("instance tags %v, want %s=failed:claim (TagFailure: %v)", inst.Tags, BootTagKey, err)
	}
}

// Bounded: an EC2 that does not answer delays the fallback by at most
// FailTagTimeout.
func TestTagFailureIsBounded(t *testing.T) {
	done := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(done) })
	old := FailTagTimeout
	FailTagTimeout = 300 * time.Millisecond
	t.Cleanup(func() { FailTagTimeout = old })
	w, _ := sim.Load("")
	id := sim.NewInstanceID()
	w.AddInstance(sim.Instance{ID: id, AZ: "us-east-1a", Role: "spotroot", BlockDevices: map[string]string{"/dev/xvda": sim.NewVolumeID()}})
	s := sim.NewServer(w)
	t.Cleanup(s.Close)
	md := httptest.NewServer(s.IMDSHandler(id))
	t.Cleanup(md.Close)
	c := claim.NewClient(claim.ClientOptions{Region: "us-east-1", Endpoint: hang.URL, IMDS: imds.New(md.URL, nil).SDK()})
	start := time.Now()
	err := TagFailure(context.Background(), c, id, "device")
	if err == nil {
		t.Fatal("tagging against a dead endpoint succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("TagFailure took %v with a %v budget", d, FailTagTimeout)
	}
}
