// Package crash is the crash matrix at the simulator level: for every mutating EC2 call of
// the claim, detach-wait, create, move and pool flows, a boot is powered
// off right before the call reaches EC2 and, separately, right after EC2
// committed it but before the answer arrived (sim.Tap drops every later
// request and cancels the boot, as a power cut would). EC2 then terminates
// the instance (shutting-down, then terminated), and a replacement boots in
// the same AZ or, for the move, in the other AZ (followed, if the move is
// still under way there, by one in the move's target AZ). Every scenario
// asserts: the replacement claims the volume, exactly one volume carries
// the identity, the data written before the cut is on it, nothing is left
// untagged or orphaned (no dangling move, no stray copy or snapshot), the
// simulator recorded no data-loss event, and its audit log shows no forced
// detach in a flow without force_detach.
//
// The crash points are steps, not calls: the attempts of one call (the
// SDK's retries after a lost answer or throttling, the next device name,
// a retry while the instance is pending) are one step, and "after" cuts
// right after the first attempt EC2 did not refuse. Their count varies
// with the hostile dice; the steps do not.
//
// Matrix runs every point of a set of seeds (the seed picks the hostile
// profile's dice and the latencies), many at once: e2e/crash_test.go
// (make test: one seed; make crash-soak: many). Check runs one point.
package crash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/imds"
)

const crashAMI = "ami-0123456789abcdef0"

// T is what the matrix needs of a test; *testing.T has it, and so does
// the recorder Check uses.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// crashWorld is one simulated account for one crash scenario.
type crashWorld struct {
	t      T
	sim    *sim.World
	srv    *sim.Server
	ec2    *httptest.Server
	marker string
	tm     Timing
	ids    []string // instance ids in boot order
}

// Timing is the clock a run of the matrix keeps: the hostile profile's
// waits and the claimer's timing knobs, all scaled to EC2's consistency
// lag.
type Timing struct {
	Name string
	// Lag is the hostile profile's ConsistencyLag (always > 0: every
	// Describe may answer from a view this old). The answer stall of a
	// lost response, the credential delay and the pending time scale with
	// it; the device-name hold (which costs no time, only names) does not.
	Lag time.Duration
}

var (
	// Full is sim.DefaultHostile's timing (a 2 s lag): what make test
	// and make crash-soak run.
	Full = Timing{Name: "full", Lag: 2 * time.Second}
	// Quick is for working on the matrix (SPOTROOT_CRASH_TIMING=quick,
	// a seed in about 30 s instead of 55): a 500 ms lag. Every hostile
	// behaviour still fires (views lag, answers get lost after commit,
	// buckets throttle, credentials come late, the instance starts
	// pending, names are held, the clock is skewed), four times sooner,
	// with the claimer's waits scaled alike.
	Quick = Timing{Name: "quick", Lag: 500 * time.Millisecond}
)

// TimingFromEnv is SPOTROOT_CRASH_TIMING (full or quick), def otherwise.
func TimingFromEnv(def Timing) Timing {
	switch os.Getenv("SPOTROOT_CRASH_TIMING") {
	case "full":
		return Full
	case "quick":
		return Quick
	}
	return def
}

// hostile is sim.DefaultHostile for the crash seed, its waits scaled to
// the timing.
func (tm Timing) hostile(seed uint64) *sim.Hostile {
	h := sim.DefaultHostile(seed)
	scale := func(d time.Duration) time.Duration { return d * tm.Lag / h.ConsistencyLag }
	h.LostStall = scale(h.LostStall)
	h.CredentialDelay = scale(h.CredentialDelay)
	h.PendingFor = scale(h.PendingFor)
	h.ConsistencyLag = tm.Lag
	return h
}

// scenarioTimeout bounds one scenario (up to three boots, one of them
// moving a volume), generously: a scenario that needs it is stuck.
func (tm Timing) scenarioTimeout() time.Duration { return 30*time.Second + 30*tm.Lag }

func newCrashWorld(t T, seed uint64, tm Timing) *crashWorld {
	t.Helper()
	w, err := sim.Load("")
	if err != nil {
		t.Fatal(err)
	}
	// The crash seed picks the hostile dice too, so a seed replays.
	w.Hostile = tm.hostile(seed)
	w.DataDir = t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	w.AttachLatency = time.Duration(rng.IntN(30)) * time.Millisecond
	w.DetachLatency = time.Duration(rng.IntN(30)) * time.Millisecond
	w.CreateLatency = time.Duration(rng.IntN(60)) * time.Millisecond
	s := sim.NewServer(w)
	e := httptest.NewServer(s.EC2Handler())
	t.Cleanup(func() { e.Close(); s.Close() })
	return &crashWorld{t: t, sim: w, srv: s, ec2: e, tm: tm, marker: fmt.Sprintf("written-before-the-cut-%d", seed)}
}

// image writes a small disk image holding the marker.
func (w *crashWorld) image(name string) string {
	w.t.Helper()
	p := filepath.Join(w.sim.DataDir, name)
	buf := make([]byte, 64<<10)
	copy(buf[4096:], w.marker)
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *crashWorld) volume(az string, tags map[string]string, mutate func(*sim.Volume)) string {
	w.t.Helper()
	id := sim.NewVolumeID()
	v := sim.Volume{ID: id, AZ: az, Type: "gp3", SizeGiB: 8, Tags: tags, ImagePath: w.image(id + ".src.img")}
	if mutate != nil {
		mutate(&v)
	}
	if err := w.sim.AddVolume(v); err != nil {
		w.t.Fatal(err)
	}
	return id
}

func (w *crashWorld) instance(az string) string {
	w.t.Helper()
	id := sim.NewInstanceID()
	if err := w.sim.AddInstance(sim.Instance{ID: id, AZ: az, ImageID: crashAMI, State: "running", Role: "spotroot"}); err != nil {
		w.t.Fatal(err)
	}
	w.ids = append(w.ids, id)
	return id
}

// claimer is PID 1's claimer for instance id; its EC2 calls go through h.
func (w *crashWorld) claimer(id string, h http.Handler, flow Flow) *claim.Claimer {
	w.t.Helper()
	inst, _ := w.sim.Instance(id)
	api := w.ec2
	if h != nil {
		api = httptest.NewServer(h)
		w.t.Cleanup(api.Close)
	}
	md := httptest.NewServer(w.srv.IMDSHandler(id))
	w.t.Cleanup(md.Close)
	ic := imds.New(md.URL, nil)
	c := &claim.Claimer{
		EC2:      claim.NewClient(claim.ClientOptions{Region: "us-east-1", Endpoint: api.URL, IMDS: ic.SDK(), ClockOffset: ic.ClockOffset}),
		Instance: claim.Instance{ID: id, AZ: inst.AZ}, ImageID: crashAMI, ClockOffset: ic.ClockOffset,
		// Polls a few times per lag; every wait for EC2's views to
		// settle outlasts the lag (PID 1's defaults do the same for the
		// seconds a real EC2 lags: 200 ms to 1 s polls, a 10 s grace).
		// The grace is twice the lag: the claimer times a view when its
		// answer arrives, and with 128 scenarios on two shared cores an
		// answer served from a 2 s old view can arrive a second later
		// (at 1.5 × the lag, 1 of 1,300 soak scenarios saw a fresh
		// attachment "gone for 3s").
		PollInterval: w.tm.Lag / 40, MaxPoll: w.tm.Lag / 10,
		ConsistencyGrace: w.tm.Lag * 2,
		WaitDetach:       w.tm.Lag * 3, MoveBudget: 60 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if flow.Configure != nil {
		flow.Configure(c)
	}
	return c
}

// terminate is what EC2 does with a Spot instance that lost power:
// shutting-down for a moment (its volumes still attached), then terminated.
func (w *crashWorld) terminate(id string) {
	_ = w.sim.SetInstanceState(id, sim.InstanceShuttingDown)
	go func() {
		time.Sleep(150 * time.Millisecond)
		_ = w.sim.TerminateInstance(id)
	}()
}

// Flow is one flow of the matrix.
type Flow struct {
	Name string
	// setup makes the world the first boot meets and returns the volume
	// configuration and the first boot's AZ.
	Setup     func(w *crashWorld) (config.Volume, string)
	Configure func(*claim.Claimer)
	// then are the AZs replacements boot in (one scenario each).
	Then        []string
	Pool        bool
	DeleteMoved bool
}

var home = map[string]string{"Name": "home-root"}

var Flows = []Flow{
	{Name: "claim", Then: []string{"us-east-1a"}, Setup: func(w *crashWorld) (config.Volume, string) {
		w.volume("us-east-1a", home, nil)
		return config.Volume{Tag: home, Mount: "/"}, "us-east-1a"
	}},
	{Name: "detach-wait-stopped-owner", Then: []string{"us-east-1a"}, Setup: func(w *crashWorld) (config.Volume, string) {
		prev := w.instance("us-east-1a")
		w.volume("us-east-1a", home, func(v *sim.Volume) {
			v.Attachments = []sim.Attachment{{InstanceID: prev, Device: "/dev/sdf", State: sim.AttachAttached, AttachTime: time.Now().Add(-time.Hour)}}
		})
		if err := w.sim.SetInstanceState(prev, sim.InstanceStopped); err != nil {
			w.t.Fatal(err)
		}
		return config.Volume{Tag: home, Mount: "/"}, "us-east-1a"
	}},
	{Name: "detach-wait-terminated-owner-forced", Then: []string{"us-east-1a"},
		Configure: func(c *claim.Claimer) { c.ForceDetach = true },
		Setup: func(w *crashWorld) (config.Volume, string) {
			prev := w.instance("us-east-1a")
			w.volume("us-east-1a", home, func(v *sim.Volume) {
				v.Attachments = []sim.Attachment{{InstanceID: prev, Device: "/dev/sdf", State: sim.AttachAttached, AttachTime: time.Now().Add(-time.Hour)}}
			})
			// Terminated, but EC2 never released the volume.
			w.sim.Update(func(sw *sim.World) error { sw.Instances[prev].State = sim.InstanceTerminated; return nil })
			return config.Volume{Tag: home, Mount: "/"}, "us-east-1a"
		}},
	{Name: "create-from-ami", Then: []string{"us-east-1a"}, Setup: func(w *crashWorld) (config.Volume, string) {
		snap := sim.NewSnapshotID()
		if err := w.sim.AddSnapshot(sim.Snapshot{ID: snap, VolumeSize: 8, State: "completed", ImagePath: w.image(snap + ".img")}); err != nil {
			w.t.Fatal(err)
		}
		if err := w.sim.AddImage(sim.Image{ID: crashAMI, Name: "spotroot-test", RootSnapshotID: snap}); err != nil {
			w.t.Fatal(err)
		}
		return config.Volume{Tag: home, Mount: "/", Create: &config.Create{From: "ami"}}, "us-east-1a"
	}},
	{Name: "move", Then: []string{"us-east-1a", "us-east-1b"}, Setup: func(w *crashWorld) (config.Volume, string) {
		w.volume("us-east-1b", home, nil)
		return config.Volume{Tag: home, Mount: "/"}, "us-east-1a"
	}},
	{Name: "move-delete-moved", Then: []string{"us-east-1a", "us-east-1b"}, DeleteMoved: true,
		Configure: func(c *claim.Claimer) { c.DeleteMoved = true },
		Setup: func(w *crashWorld) (config.Volume, string) {
			w.volume("us-east-1b", home, nil)
			return config.Volume{Tag: home, Mount: "/"}, "us-east-1a"
		}},
	{Name: "pool", Then: []string{"us-east-1a"}, Pool: true, Setup: func(w *crashWorld) (config.Volume, string) {
		for range 3 {
			w.volume("us-east-1a", map[string]string{"spotroot:pool": "web"}, nil)
		}
		return config.Volume{Pool: map[string]string{"spotroot:pool": "web"}, Mount: "/"}, "us-east-1a"
	}},
}

func claimAndWait(ctx context.Context, c *claim.Claimer, v config.Volume) (claim.Claim, error) {
	cl, err := c.Claim(ctx, v)
	if err != nil {
		return cl, err
	}
	return cl, c.WaitAttached(ctx, cl.VolumeID)
}

// Steps runs the flow once without a crash and returns its steps: its
// mutating calls, the attempts of one call (retries, the next device
// name) counted once (sim.Tap's CrashAtStep).
func (f Flow) Steps(t T, seed uint64, tm Timing) []string {
	w := newCrashWorld(t, seed, tm)
	v, az := f.Setup(w)
	tap := &sim.Tap{Next: w.srv.EC2Handler()}
	c := w.claimer(w.instance(az), tap, f)
	ctx, cancel := context.WithTimeout(context.Background(), tm.scenarioTimeout())
	defer cancel()
	if _, err := claimAndWait(ctx, c, v); err != nil {
		t.Fatalf("%s without a crash: %v", f.Name, err)
	}
	var steps []string
	for _, call := range tap.Calls() {
		if d := describeCall(call); sim.Mutates(call.Action) && (len(steps) == 0 || steps[len(steps)-1] != d) {
			steps = append(steps, d)
		}
	}
	return steps
}

func describeCall(c sim.TapCall) string {
	s := c.Action
	if c.Action == "CreateTags" {
		s += " " + c.Params.Get("Tag.1.Key")
	}
	if c.Action == "DetachVolume" && strings.EqualFold(c.Params.Get("Force"), "true") {
		s += " (force)"
	}
	return s
}

// Run powers the first boot off at step n (before EC2 sees its first
// attempt, or after EC2 took one), then boots the replacements and checks
// the invariants. reached is false when the boot ended before step n (the
// hostile dice took it down another path): the replacements still run.
func Run(t T, seed uint64, tm Timing, f Flow, n int, after bool, thenAZ string) (reached bool) {
	w := newCrashWorld(t, seed, tm)
	v, az := f.Setup(w)
	ctx, cancel := context.WithTimeout(context.Background(), tm.scenarioTimeout())
	defer cancel()
	bootCtx, powerOff := context.WithCancel(ctx)
	tap := &sim.Tap{Next: w.srv.EC2Handler(), CrashAtStep: n, StepOf: describeCall, CrashAfter: after, OnCrash: powerOff}
	first := w.instance(az)
	_, err := claimAndWait(bootCtx, w.claimer(first, tap, f), v)
	reached = tap.Crashed()
	if !reached {
		// The hostile dice can take a boot down another path (a lost
		// answer, a lagging view); the point then falls past the end of
		// this run, which is still a boot to replace.
		t.Logf("the boot never reached step %d (err %v)", n, err)
	}
	w.terminate(first)

	// The replacements: in thenAZ, and if a move is still under way there
	// (a boot outside the target AZ does not take part), one in the
	// target AZ.
	var cl claim.Claim
	var last string
	for _, bootAZ := range []string{thenAZ, az} {
		last = w.instance(bootAZ)
		cl, err = claimAndWait(ctx, w.claimer(last, nil, f), v)
		var mip *claim.MoveInProgressError
		if errors.As(err, &mip) && bootAZ != az {
			t.Logf("replacement in %s: %v", bootAZ, err)
			w.terminate(last)
			continue
		}
		if err != nil {
			t.Fatalf("replacement in %s: %v", bootAZ, err)
		}
		break
	}
	// Let EC2 finish what is in flight (detaches of the dead, deletions).
	time.Sleep(300 * time.Millisecond)
	w.srv.Wait()
	checkInvariants(t, w, f, cl, last)
	return reached
}

func checkInvariants(t T, w *crashWorld, f Flow, cl claim.Claim, owner string) {
	t.Helper()
	if ev := w.sim.DataLossEvents(); len(ev) != 0 {
		t.Errorf("data-loss events: %+v", ev)
	}
	// The audit log: a flow without force_detach never forced a detach
	// EC2 carried out (with it, the data-loss events above judge whom).
	probe := &claim.Claimer{}
	if f.Configure != nil {
		f.Configure(probe)
	}
	evs, err := w.srv.AuditEvents()
	if err != nil {
		t.Errorf("audit log: %v", err)
	}
	for _, e := range evs {
		if e.EventName == "DetachVolume" && strings.EqualFold(e.RequestParameters["Force"], "true") && e.ErrorCode == "" && !probe.ForceDetach {
			t.Errorf("audit log: a forced DetachVolume of %s by %s without force_detach", e.RequestParameters["VolumeId"], e.UserIdentity.SourceInstance)
		}
	}
	var vols map[string]sim.Volume
	var snaps map[string]sim.Snapshot
	var amiSnap string
	w.sim.View(func(sw *sim.World) {
		vols, snaps = map[string]sim.Volume{}, map[string]sim.Snapshot{}
		for id, v := range sw.Volumes {
			vols[id] = *v
		}
		for id, s := range sw.Snapshots {
			snaps[id] = *s
		}
		if img, ok := sw.Images[crashAMI]; ok {
			amiSnap = img.RootSnapshotID
		}
	})
	got, ok := vols[cl.VolumeID]
	if !ok {
		t.Fatalf("claimed volume %s does not exist", cl.VolumeID)
	}
	if len(got.Attachments) != 1 || got.Attachments[0].InstanceID != owner || got.Attachments[0].State != sim.AttachAttached {
		t.Errorf("claimed volume %s attachments = %+v, want attached to %s only", cl.VolumeID, got.Attachments, owner)
	}
	// The data written before the cut.
	if b, err := readHead(got.ImagePath, 8192); err != nil || !strings.Contains(string(b), w.marker) {
		t.Errorf("claimed volume %s (%s) lacks the data written before the cut: %v", cl.VolumeID, got.ImagePath, err)
	}
	if f.Pool {
		for id, v := range vols {
			if v.Tags["spotroot:pool"] != "" && len(v.Attachments) > 1 {
				t.Errorf("pool member %s attached twice: %+v", id, v.Attachments)
			}
			if v.Tags["spotroot:pool"] == "" && !isRootStub(v) {
				t.Errorf("volume %s is not a pool member: %+v", id, v)
			}
		}
		return
	}
	// Exactly one volume carries the identity.
	var live []string
	for id, v := range vols {
		if isRootStub(v) {
			continue
		}
		if v.Tags["Name"] != "home-root" {
			t.Errorf("untagged or stray volume %s: %+v", id, v.Tags)
			continue
		}
		switch {
		case v.Tags[claim.TagMovedTo] != "":
			if _, ok := vols[v.Tags[claim.TagMovedTo]]; !ok {
				t.Errorf("volume %s retired for %s, which does not exist", id, v.Tags[claim.TagMovedTo])
			}
		case v.Tags[claim.TagMovingTo] != "":
			t.Errorf("volume %s is left mid-move: %v", id, v.Tags)
		case v.Tags[claim.TagMovedFrom] != "":
			orig, ok := vols[v.Tags[claim.TagMovedFrom]]
			if ok && orig.Tags[claim.TagMovedTo] != id {
				t.Errorf("stray copy %s of %s (the original names %q)", id, v.Tags[claim.TagMovedFrom], orig.Tags[claim.TagMovedTo])
				continue
			}
			live = append(live, id)
		default:
			live = append(live, id)
		}
	}
	if len(live) != 1 || live[0] != cl.VolumeID {
		t.Errorf("volumes carrying the identity: %v, want exactly the claimed %s", live, cl.VolumeID)
	}
	if f.DeleteMoved {
		for id, v := range vols {
			if v.Tags[claim.TagMovedTo] != "" {
				t.Errorf("delete_moved: retired original %s still exists", id)
			}
		}
		for id := range snaps {
			if id != amiSnap {
				t.Errorf("delete_moved: snapshot %s still exists", id)
			}
		}
	}
	// Every snapshot is the AMI's or the source of an existing volume.
	for id, s := range snaps {
		if id == amiSnap {
			continue
		}
		used := false
		for _, v := range vols {
			used = used || v.SnapshotID == id
		}
		if !used || s.Tags[claim.TagMovedFrom] == "" {
			t.Errorf("orphaned snapshot %s: %+v", id, s.Tags)
		}
	}
}

// isRootStub reports whether v is an instance's own root volume the
// simulator made for it.
func isRootStub(v sim.Volume) bool {
	return len(v.Attachments) > 0 && v.Attachments[0].DeleteOnTermination
}

// readHead reads the first n bytes of a (sparse, large) image.
func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(f, b)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return b[:k], err
}

// recorder is a T outside the testing package: errors are collected, a
// fatal one ends the run.
type recorder struct {
	errs     []string
	logs     []string
	cleanups []func()
}

type fatal struct{}

func (r *recorder) Helper()                   {}
func (r *recorder) Errorf(f string, a ...any) { r.errs = append(r.errs, fmt.Sprintf(f, a...)) }
func (r *recorder) Logf(f string, a ...any)   { r.logs = append(r.logs, fmt.Sprintf(f, a...)) }
func (r *recorder) Fatal(a ...any)            { r.errs = append(r.errs, fmt.Sprint(a...)); panic(fatal{}) }
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...); panic(fatal{}) }
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) TempDir() string {
	d, err := os.MkdirTemp("", "spotroot-crash-")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Point is one crash point: step N of a flow, cut before EC2 sees it or
// after it committed, with the replacement in ThenAZ.
type Point struct {
	Flow   Flow
	N      int
	Step   string // what step N is (for names)
	After  bool
	ThenAZ string
}

// String names the point; the matrix's subtests use it, and
// SPOTROOT_CRASH_POINT selects by it.
func (p Point) String() string {
	when := "before"
	if p.After {
		when = "after"
	}
	return fmt.Sprintf("%s/%s-%d-%s/then-%s", p.Flow.Name, when, p.N, strings.ReplaceAll(p.Step, " ", "-"), p.ThenAZ)
}

// points are the crash points of a flow with these steps.
func (f Flow) points(steps []string) []Point {
	var out []Point
	for n, step := range steps {
		for _, after := range []bool{false, true} {
			for _, az := range f.Then {
				out = append(out, Point{Flow: f, N: n + 1, Step: step, After: after, ThenAZ: az})
			}
		}
	}
	return out
}

// Check runs one crash point and returns what went wrong, if anything.
func Check(seed uint64, tm Timing, p Point) error {
	_, err := record(func(t T) { Run(t, seed, tm, p.Flow, p.N, p.After, p.ThenAZ) })
	return err
}

func record(fn func(T)) (logs []string, err error) {
	r := &recorder{}
	defer func() {
		for i := len(r.cleanups) - 1; i >= 0; i-- {
			r.cleanups[i]()
		}
		logs = r.logs
		if len(r.errs) > 0 {
			err = errors.New(strings.Join(r.errs, "; "))
		}
	}()
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(fatal); !ok {
				panic(v)
			}
		}
	}()
	fn(r)
	return nil, nil
}
