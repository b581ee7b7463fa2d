package sim

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// env is a world with one running instance ("the VM"), its IMDS, the EC2
// API, and an SDK client authenticated through the instance's role.
type env struct {
	t       *testing.T
	w       *World
	s       *Server
	ec2URL  string
	imdsURL string
	inst    Instance
	rootVol string
	hp      *fakeHotplugger
	ec2     *ec2.Client // as the instance
	op      *ec2.Client // as the operator
}

func newEnv(t *testing.T) *env {
	t.Helper()
	w, err := Load(filepath.Join(t.TempDir(), "world.json"))
	if err != nil {
		t.Fatal(err)
	}
	// These tests pin the wire format and semantics of single calls, which
	// the hostile profile would randomise; hostile_test.go covers it.
	if err := w.DisableHostile("*", "single-call wire-format tests; hostile_test.go tests the profile"); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, w: w, rootVol: NewVolumeID(), hp: &fakeHotplugger{}}
	inst := Instance{ID: NewInstanceID(), AZ: "us-east-1a", InstanceType: "m7i.large", Role: "spotroot-test",
		UserData: []byte("#cloud-config\nspotroot: {}\n"), Tags: map[string]string{"Name": "vm1"},
		BlockDevices: map[string]string{"/dev/xvda": e.rootVol}}
	if err := w.AddInstance(inst); err != nil {
		t.Fatal(err)
	}
	e.inst, _ = w.Instance(inst.ID)

	e.s = NewServer(w)
	e.s.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ec2srv := httptest.NewServer(e.s.EC2Handler())
	imdssrv := httptest.NewServer(e.s.IMDSHandler(inst.ID))
	// Cleanups run last-in first-out: stop async work before the test ends
	// so its logging does not outlive t.
	t.Cleanup(ec2srv.Close)
	t.Cleanup(imdssrv.Close)
	t.Cleanup(e.s.Close)
	e.ec2URL, e.imdsURL = ec2srv.URL, imdssrv.URL

	e.ec2 = e.client(aws.NewCredentialsCache(ec2rolecreds.New(func(o *ec2rolecreds.Options) {
		o.Client = e.imdsClient()
	})))
	op := w.OperatorCredentials()
	e.op = e.client(credentials.NewStaticCredentialsProvider(op.AccessKeyID, op.SecretAccessKey, ""))
	return e
}

func (e *env) imdsClient() *imds.Client {
	return imds.New(imds.Options{Endpoint: e.imdsURL, EnableFallback: aws.FalseTernary})
}

// client is an EC2 client with no retries, so injected faults show.
func (e *env) client(creds aws.CredentialsProvider) *ec2.Client {
	return ec2.NewFromConfig(aws.Config{
		Region:       "us-east-1",
		Credentials:  creds,
		BaseEndpoint: aws.String(e.ec2URL),
		Retryer:      func() aws.Retryer { return retry.AddWithMaxAttempts(retry.NewStandard(), 1) },
	})
}

// addInstance adds another running instance in az.
func (e *env) addInstance(az string, mod func(*Instance)) string {
	e.t.Helper()
	i := Instance{ID: NewInstanceID(), AZ: az, Role: "other"}
	if mod != nil {
		mod(&i)
	}
	if err := e.w.AddInstance(i); err != nil {
		e.t.Fatal(err)
	}
	return i.ID
}

// addVolume adds an available volume in az with tags.
func (e *env) addVolume(az string, tags map[string]string) string {
	e.t.Helper()
	id := NewVolumeID()
	if err := e.w.AddVolume(Volume{ID: id, AZ: az, SizeGiB: 10, Tags: tags, ImagePath: "/images/" + id + ".img"}); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// waitVolume polls DescribeVolumes until cond holds, like a real client.
func (e *env) waitVolume(id string, cond func(Volume) bool) Volume {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, ok := e.w.Volume(id)
		if ok && cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("volume %s: condition not reached; last %+v", id, v)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// wantAPIError checks that err is the SDK's API error with code and status.
func wantAPIError(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s, got success", code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %s, got %T %v", code, err, err)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("error code = %q (%s), want %q", ae.ErrorCode(), ae.ErrorMessage(), code)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("no HTTP response in %v", err)
	}
	if re.HTTPStatusCode() != status {
		t.Fatalf("%s: HTTP status = %d, want %d", code, re.HTTPStatusCode(), status)
	}
	if re.ServiceRequestID() == "" {
		t.Fatalf("%s: no request id parsed", code)
	}
}

// fakeHotplugger records calls; err fails them; hold blocks Attach until
// closed.
type fakeHotplugger struct {
	mu    sync.Mutex
	calls []string
	err   error
	hold  chan struct{}
}

func (f *fakeHotplugger) Attach(ctx context.Context, volumeID, imagePath, device string) error {
	f.mu.Lock()
	f.calls = append(f.calls, "attach "+volumeID+" "+imagePath+" "+device)
	hold, err := f.hold, f.err
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (f *fakeHotplugger) Detach(ctx context.Context, volumeID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "detach "+volumeID)
	return f.err
}

func (f *fakeHotplugger) set(err error, hold chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.hold = err, hold
}

func (f *fakeHotplugger) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// testWriter sends server logs to t.Log, shown for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newTestServer serves s's EC2 API until the test ends.
func newTestServer(t *testing.T, s *Server) string {
	srv := httptest.NewServer(s.EC2Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func tagsOf(kv ...string) []types.Tag {
	var out []types.Tag
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return out
}
