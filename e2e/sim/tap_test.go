package sim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// fakeEC2 answers each action with the statuses queued for it (200 once
// the queue is empty) and counts what it served.
type fakeEC2 struct {
	mu     sync.Mutex
	queue  map[string][]int
	served []string
}

func (f *fakeEC2) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	a := r.Form.Get("Action")
	f.mu.Lock()
	f.served = append(f.served, a)
	status := http.StatusOK
	if q := f.queue[a]; len(q) > 0 {
		status, f.queue[a] = q[0], q[1:]
	}
	f.mu.Unlock()
	switch status {
	case http.StatusServiceUnavailable:
		rw.WriteHeader(status)
		rw.Write([]byte("<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>"))
	default:
		rw.WriteHeader(status)
	}
}

func postAction(srv *httptest.Server, action string) (int, error) {
	resp, err := http.PostForm(srv.URL, url.Values{"Action": {action}})
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// CrashAtStep counts a run of attempts of one call as one step: before
// cuts at the step's first attempt; after passes refused attempts (4xx,
// throttled) back and cuts right after the first one EC2 took.
func TestTapCrashAtStep(t *testing.T) {
	stepOf := func(c TapCall) string { return c.Action }
	for _, tc := range []struct {
		name   string
		after  bool
		calls  []string
		want   []int    // statuses the caller sees (0: no answer)
		served []string // what reached EC2
	}{
		{"before", false, []string{"CreateTags", "CreateTags", "AttachVolume", "AttachVolume"},
			[]int{400, 200, 0, 0}, []string{"CreateTags", "CreateTags"}},
		{"after", true, []string{"CreateTags", "CreateTags", "AttachVolume", "AttachVolume", "AttachVolume", "DescribeVolumes"},
			[]int{400, 200, 503, 400, 0, 0}, []string{"CreateTags", "CreateTags", "AttachVolume", "AttachVolume", "AttachVolume"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeEC2{queue: map[string][]int{"CreateTags": {400}, "AttachVolume": {503, 400}}}
			crashes := 0
			tap := &Tap{Next: f, CrashAtStep: 2, CrashAfter: tc.after, StepOf: stepOf, OnCrash: func() { crashes++ }}
			srv := httptest.NewServer(tap)
			defer srv.Close()
			for i, a := range tc.calls {
				got, err := postAction(srv, a)
				if (err != nil) != (tc.want[i] == 0) || (err == nil && got != tc.want[i]) {
					t.Fatalf("call %d (%s): status %d, err %v; want %d", i+1, a, got, err, tc.want[i])
				}
			}
			if crashes != 1 || !tap.Crashed() {
				t.Fatalf("crashes = %d, Crashed() = %v; want one", crashes, tap.Crashed())
			}
			if len(f.served) != len(tc.served) {
				t.Fatalf("EC2 served %v, want %v", f.served, tc.served)
			}
		})
	}
}

// An instance the profile holds pending was pending in every lagging view
// too: EC2 goes pending → running, so no view may show it running before
// it is.
func TestPendingIsPendingInLaggingViews(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) {
		h.PendingFor, h.ConsistencyLag, h.ConsistencyOldest = time.Second, 300*time.Millisecond, true
	})
	ctx := context.Background()
	// The instance's first call starts its pending time.
	if _, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
		t.Fatal(err)
	}
	out, err := e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{e.inst.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if st := out.Reservations[0].Instances[0].State.Name; st != types.InstanceStateNamePending {
		t.Fatalf("a view %v old says %s, want pending", 300*time.Millisecond, st)
	}
	if e.w.Stats().StaleReads == 0 {
		t.Fatal("the view was not a lagging one")
	}
	time.Sleep(1100 * time.Millisecond)
	e.op.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}) // EC2 notices the pending time is over
	time.Sleep(400 * time.Millisecond)                     // and the lag
	out, err = e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{e.inst.ID}})
	if err != nil || out.Reservations[0].Instances[0].State.Name != types.InstanceStateNameRunning {
		t.Fatalf("after the pending time: %+v, %v; want running", out, err)
	}
}
