package imds

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeIMDS answers like IMDSv2: tokens required, optional failures first.
type fakeIMDS struct {
	failFirst  int32 // answer 503 to this many requests
	v1Only     bool
	userData   string
	requests   atomic.Int32
	tokenPUTs  atomic.Int32
	sawNoToken atomic.Bool
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.requests.Add(1)
	if n <= f.failFirst {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == "/latest/api/token" {
		f.tokenPUTs.Add(1)
		if f.v1Only || r.Method != http.MethodPut {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		w.Write([]byte("tok"))
		return
	}
	if r.Header.Get("X-Aws-Ec2-Metadata-Token") != "tok" {
		f.sawNoToken.Store(true)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/latest/dynamic/instance-identity/document":
		w.Write([]byte(`{"instanceId":"i-0123456789abcdef0","region":"eu-west-1","availabilityZone":"eu-west-1b","imageId":"ami-1","accountId":"123"}`))
	case "/latest/user-data":
		if f.userData == "" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(f.userData))
	default:
		http.NotFound(w, r)
	}
}

func client(t *testing.T, f *fakeIMDS) *Client {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := New(srv.URL, nil)
	c.AttemptTimeout = time.Second
	return c
}

func TestIdentityAndUserData(t *testing.T) {
	f := &fakeIMDS{userData: "#cloud-config\n"}
	c := client(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.InstanceID != "i-0123456789abcdef0" || id.Region != "eu-west-1" || id.AZ != "eu-west-1b" {
		t.Fatalf("identity = %+v", id)
	}
	ud, err := c.UserData(ctx)
	if err != nil || string(ud) != "#cloud-config\n" {
		t.Fatalf("user-data = %q, %v", ud, err)
	}
	if f.sawNoToken.Load() {
		t.Fatal("a request went out without a session token (IMDSv1)")
	}
	_, found, err := c.Get(ctx, "spot/instance-action")
	if err != nil || found {
		t.Fatalf("Get(missing) found=%v err=%v", found, err)
	}
}

func TestNoUserDataIsNotAnError(t *testing.T) {
	c := client(t, &fakeIMDS{})
	ud, err := c.UserData(context.Background())
	if err != nil || ud != nil {
		t.Fatalf("user-data = %q, %v", ud, err)
	}
}

func TestRetriesTransientFailures(t *testing.T) {
	f := &fakeIMDS{failFirst: 6}
	c := client(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Identity(ctx); err != nil {
		t.Fatalf("Identity after transient 503s: %v", err)
	}
}

func TestRefusesIMDSv1(t *testing.T) {
	f := &fakeIMDS{v1Only: true}
	c := client(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Identity(ctx)
	if err == nil || !strings.Contains(err.Error(), "IMDSv2 only") {
		t.Fatalf("err = %v, want an IMDSv2-only explanation", err)
	}
	if f.sawNoToken.Load() {
		t.Fatal("fell back to IMDSv1")
	}
	if ctx.Err() != nil {
		t.Fatal("a refused token must fail at once, not retry until the deadline")
	}
}

func TestBoundedInTime(t *testing.T) {
	c := New("http://127.0.0.1:1", nil) // nothing listens
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Identity(ctx)
	if err == nil || !strings.Contains(err.Error(), "no answer after") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v past a 300ms budget", d)
	}
}
