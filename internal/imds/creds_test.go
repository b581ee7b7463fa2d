package imds_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/imds"
)

// The role's credentials are 404 for the first second (the hostile
// simulator's CredentialDelay); RoleCredentials waits them out within its
// budget, and fails at once for an instance without a profile.
func TestRoleCredentialsWaitOutLate404(t *testing.T) {
	w, err := sim.Load("")
	if err != nil {
		t.Fatal(err)
	}
	w.Update(func(sw *sim.World) error { sw.Hostile.CredentialDelay = time.Second; return nil })
	withRole, bare := sim.NewInstanceID(), sim.NewInstanceID()
	for _, i := range []sim.Instance{{ID: withRole, Role: "spotroot"}, {ID: bare}} {
		if err := w.AddInstance(i); err != nil {
			t.Fatal(err)
		}
	}
	s := sim.NewServer(w)
	defer s.Close()
	md := httptest.NewServer(s.IMDSHandler(withRole))
	defer md.Close()
	start := time.Now()
	c, err := imds.RoleCredentials(imds.New(md.URL, nil).SDK(), 10*time.Second).Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := w.Instance(withRole)
	if c.AccessKeyID != inst.Credentials.AccessKeyID || time.Since(start) < time.Second {
		t.Fatalf("got %s after %v, want %s after the 1s of 404s", c.AccessKeyID, time.Since(start), inst.Credentials.AccessKeyID)
	}
	if st := w.Stats(); st.Credential4x == 0 {
		t.Fatal("no 404 was served: the test proves nothing")
	}

	md2 := httptest.NewServer(s.IMDSHandler(bare))
	defer md2.Close()
	start = time.Now()
	if _, err := imds.RoleCredentials(imds.New(md2.URL, nil).SDK(), 10*time.Second).Retrieve(context.Background()); err == nil {
		t.Fatal("credentials for an instance without a profile")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("waited %v for an instance without a profile", time.Since(start))
	}
}
