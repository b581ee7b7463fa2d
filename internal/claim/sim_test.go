package claim_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/imds"
)

// world is an in-memory simulated account with its EC2 API served over
// HTTP, so these tests go through the SDK and the real wire format.
type world struct {
	t   *testing.T
	sim *sim.World
	srv *sim.Server
	ec2 *httptest.Server
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w, err := sim.Load("")
	if err != nil {
		t.Fatal(err)
	}
	w.DataDir = t.TempDir()
	// The hostile profile is on (sim.DefaultHostile); a failure names its
	// seed so SPOTROOT_SEED replays the same dice.
	seed := w.HostileSeed()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hostile simulator seed %d: reproduce with SPOTROOT_SEED=%d go test -run '^%s$' ./internal/claim", seed, seed, t.Name())
		}
	})
	s := sim.NewServer(w)
	e := httptest.NewServer(s.EC2Handler())
	t.Cleanup(func() { e.Close(); s.Close() })
	return &world{t: t, sim: w, srv: s, ec2: e}
}

// claimer launches an instance in az and returns a Claimer using its
// instance-profile credentials, as PID 1 would.
func (w *world) claimer(az string, mutate func(*sim.Instance)) *claim.Claimer {
	w.t.Helper()
	inst := sim.Instance{ID: sim.NewInstanceID(), AZ: az, ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro", State: "running", Role: "spotroot"}
	if mutate != nil {
		mutate(&inst)
	}
	if err := w.sim.AddInstance(inst); err != nil {
		w.t.Fatal(err)
	}
	md := httptest.NewServer(w.srv.IMDSHandler(inst.ID))
	w.t.Cleanup(md.Close)
	ic := imds.New(md.URL, nil)
	client := claim.NewClient(claim.ClientOptions{Region: "us-east-1", Endpoint: w.ec2.URL, IMDS: ic.SDK(), ClockOffset: ic.ClockOffset})
	return &claim.Claimer{EC2: client, Instance: claim.Instance{ID: inst.ID, AZ: az}, ImageID: inst.ImageID, ClockOffset: ic.ClockOffset,
		PollInterval: 5 * time.Millisecond, MaxPoll: 50 * time.Millisecond, WaitDetach: 300 * time.Millisecond,
		// Longer than the simulator's ConsistencyLag (2s).
		ConsistencyGrace: 3 * time.Second,
		Log:              slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func (w *world) volume(az string, tags map[string]string) string {
	w.t.Helper()
	id := sim.NewVolumeID()
	if err := w.sim.AddVolume(sim.Volume{ID: id, AZ: az, Type: "gp3", SizeGiB: 8, Tags: tags, State: sim.VolumeAvailable}); err != nil {
		w.t.Fatal(err)
	}
	return id
}

func (w *world) vol(id string) sim.Volume {
	v, ok := w.sim.Volume(id)
	if !ok {
		w.t.Fatalf("volume %s is gone", id)
	}
	return v
}

func claimAndWait(ctx context.Context, c *claim.Claimer, v config.Volume) (claim.Claim, error) {
	cl, err := c.Claim(ctx, v)
	if err != nil {
		return cl, err
	}
	return cl, c.WaitAttached(ctx, cl.VolumeID)
}

var home = config.Volume{Tag: map[string]string{"Name": "home-root"}, Mount: "/"}

// TestPoolRace: 100 instances claim from a pool of 100 volumes at once.
// Each must get exactly one volume and no volume may be attached twice.
func TestPoolRace(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	const n = 100
	w := newWorld(t)
	pool := map[string]string{"spotroot:pool": "web"}
	for range n {
		w.volume("us-east-1a", pool)
	}
	claimers := make([]*claim.Claimer, n)
	for i := range claimers {
		claimers[i] = w.claimer("us-east-1a", nil)
		// A real boot's poll pace: a hundred claimants polling every 50ms
		// would only measure EC2's throttling of DescribeVolumes (100
		// tokens, 20/s for the whole account). Throttled calls back off
		// for as long as the race needs.
		claimers[i].PollInterval, claimers[i].MaxPoll = 200*time.Millisecond, time.Second
		claimers[i].CallTimeout = 3 * time.Minute
		claimers[i].TagClaims = true // the winners' tags are checked below
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := claimAndWait(ctx, c, config.Volume{Pool: pool, Mount: "/"})
			got[i], errs[i] = cl.VolumeID, err
		}()
	}
	wg.Wait()
	st := w.sim.Stats()
	total := 0
	for _, k := range st.Calls {
		total += k
	}
	t.Logf("%d claimants, %d pool volumes, EC2's throttling buckets: all claimed in %v; per claim %.1f API requests (%.1f throttled), %.1f AttachVolume requests (%.1f not throttled); %d answers lost",
		n, n, time.Since(start).Round(time.Millisecond), float64(total)/n, float64(sum(st.Throttled))/n,
		float64(st.Calls["AttachVolume"])/n, float64(st.Calls["AttachVolume"]-st.Throttled["AttachVolume"])/n, sum(st.Lost))
	owner := map[string]int{}
	for i, id := range got {
		if errs[i] != nil {
			t.Fatalf("claimant %d: %v", i, errs[i])
		}
		if prev, dup := owner[id]; dup {
			t.Fatalf("volume %s claimed by both %d and %d", id, prev, i)
		}
		owner[id] = i
		v := w.vol(id)
		if len(v.Attachments) != 1 || v.Attachments[0].InstanceID != claimers[i].Instance.ID {
			t.Fatalf("volume %s attachments = %+v, want only %s", id, v.Attachments, claimers[i].Instance.ID)
		}
		if v.Tags[claim.TagInstance] != claimers[i].Instance.ID {
			t.Errorf("volume %s not tagged %s=%s: %v", id, claim.TagInstance, claimers[i].Instance.ID, v.Tags)
		}
	}
	// One more claimant finds the pool exhausted.
	_, err := w.claimer("us-east-1a", nil).Claim(ctx, config.Volume{Pool: pool, Mount: "/"})
	if err == nil || !strings.Contains(err.Error(), "pool pool spotroot:pool=web is exhausted in us-east-1a") {
		t.Fatalf("exhausted pool err = %v", err)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestOtherAZMove(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	old := w.volume("us-east-1b", map[string]string{"Name": "home-root", "team": "a"})
	c := w.claimer("us-east-1a", nil)
	ctx := context.Background()
	cl, err := claimAndWait(ctx, c, home)
	if err != nil {
		t.Fatal(err)
	}
	if cl.VolumeID == old || cl.MovedFrom != old {
		t.Fatalf("claim = %+v, want a copy of %s", cl, old)
	}
	nv := w.vol(cl.VolumeID)
	if nv.AZ != "us-east-1a" || nv.Tags["Name"] != "home-root" || nv.Tags["team"] != "a" || nv.Tags[claim.TagMovedFrom] != old || nv.SizeGiB != 8 || nv.Type != "gp3" {
		t.Fatalf("copy = %+v", nv)
	}
	if ov := w.vol(old); ov.Tags[claim.TagMovedTo] != cl.VolumeID {
		t.Fatalf("old volume not marked moved-to: %v", ov.Tags)
	}
	// The next boot (a replacement in the same AZ) finds the copy, not the old one.
	c2 := w.claimer("us-east-1a", nil)
	w.sim.TerminateInstance(c.Instance.ID)
	cl2, err := claimAndWait(ctx, c2, home)
	if err != nil || cl2.VolumeID != cl.VolumeID || cl2.MovedFrom != "" {
		t.Fatalf("second claim = %+v, %v", cl2, err)
	}
	// cross_az: fail refuses instead.
	w2 := newWorld(t)
	w2.volume("us-east-1b", map[string]string{"Name": "home-root"})
	c3 := w2.claimer("us-east-1a", nil)
	c3.CrossAZ = "fail"
	if _, err := c3.Claim(ctx, home); err == nil || !strings.Contains(err.Error(), "is in us-east-1b, but this instance is in us-east-1a") {
		t.Fatalf("cross_az fail err = %v", err)
	}
}

func TestMoveDeletesWhenAsked(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	// CreateSnapshot has no ClientToken: when its answer is lost the SDK's
	// retry makes a second snapshot that delete_moved does not know of (a
	// leak the move protocol should sweep by its moved-from tag, not data
	// loss). This test counts snapshots, so answers are not lost here.
	if err := w.sim.DisableHostile(sim.HostileLost, "counts leftover snapshots; a lost CreateSnapshot answer leaks one (see comment)"); err != nil {
		t.Fatal(err)
	}
	old := w.volume("us-east-1b", map[string]string{"Name": "home-root"})
	c := w.claimer("us-east-1a", nil)
	c.DeleteMoved = true
	if _, err := claimAndWait(context.Background(), c, home); err != nil {
		t.Fatal(err)
	}
	w.srv.Wait()
	if _, ok := w.sim.Volume(old); ok {
		t.Fatalf("old volume %s still exists with delete_moved", old)
	}
	left := 0
	w.sim.View(func(sw *sim.World) { left = len(sw.Snapshots) })
	if left != 0 {
		t.Fatalf("%d snapshots left after delete_moved", left)
	}
}

func TestCreateWhenMissing(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	ctx := context.Background()
	w := newWorld(t)
	snap := sim.NewSnapshotID()
	if err := w.sim.AddSnapshot(sim.Snapshot{ID: snap, VolumeSize: 4, State: "completed"}); err != nil {
		t.Fatal(err)
	}
	if err := w.sim.AddImage(sim.Image{ID: "ami-0123456789abcdef0", Name: "spotroot-test", State: "available", RootDeviceName: "/dev/xvda", RootSnapshotID: snap}); err != nil {
		t.Fatal(err)
	}
	c := w.claimer("us-east-1a", nil)
	v := home
	v.Create = &config.Create{SizeGiB: 10, From: "ami"}
	cl, err := claimAndWait(ctx, c, v)
	if err != nil {
		t.Fatal(err)
	}
	nv := w.vol(cl.VolumeID)
	if !cl.Created || cl.NeedsFormat || nv.SnapshotID != snap || nv.SizeGiB != 10 || nv.Type != "gp3" || nv.Tags["Name"] != "home-root" || nv.Tags[claim.TagCreatedBy] != c.Instance.ID {
		t.Fatalf("created %+v from claim %+v", nv, cl)
	}
	// The next claim finds it instead of creating another.
	w.sim.TerminateInstance(c.Instance.ID)
	cl2, err := claimAndWait(ctx, w.claimer("us-east-1a", nil), v)
	if err != nil || cl2.VolumeID != cl.VolumeID || cl2.Created {
		t.Fatalf("second claim = %+v, %v", cl2, err)
	}

	empty := config.Volume{Tag: map[string]string{"Name": "data"}, Mount: "/home", Create: &config.Create{SizeGiB: 2, From: "empty", Type: "gp2"}}
	cl3, err := claimAndWait(ctx, w.claimer("us-east-1a", nil), empty)
	if err != nil || !cl3.NeedsFormat || cl3.FSType != "ext4" || w.vol(cl3.VolumeID).SnapshotID != "" {
		t.Fatalf("empty create = %+v, %v", cl3, err)
	}
}

func TestAPIErrorsNameTheActionAndRetryThrottling(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	ctx := context.Background()
	w := newWorld(t)
	w.volume("us-east-1a", map[string]string{"Name": "home-root"})
	if err := w.sim.SetFault("DescribeVolumes", sim.Fault{Code: "RequestLimitExceeded", Times: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := claimAndWait(ctx, w.claimer("us-east-1a", nil), home); err != nil {
		t.Fatalf("throttling must be retried: %v", err)
	}
	w2 := newWorld(t)
	w2.volume("us-east-1a", map[string]string{"Name": "home-root"})
	w2.sim.Update(func(sw *sim.World) error { sw.DenyActions = []string{"AttachVolume"}; return nil })
	c := w2.claimer("us-east-1a", nil)
	_, err := c.Claim(ctx, home)
	if err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation: the instance role may not call ec2:AttachVolume") || !strings.Contains(err.Error(), c.Instance.ID) {
		t.Fatalf("denied err = %v", err)
	}
}
