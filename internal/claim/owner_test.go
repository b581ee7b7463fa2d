package claim_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
)

// TestDetachRules is the detach matrix: every owner state, with and
// without force_detach. Whatever happens, the simulator must record no
// data-loss event (a forced detach from an instance that may still have
// the disk mounted), and only a terminated owner is ever force-detached.
func TestDetachRules(t *testing.T) {
	ctx := context.Background()
	type owner struct {
		state string
		// then, if set, is the state the owner reaches after 150 ms
		// (EC2 finishing a stop or a termination).
		then string
		// stuck keeps the attachment after termination (EC2 not
		// releasing it: what force_detach is for).
		stuck bool
		// notFound removes the owner from EC2's answers; age is how old
		// the attachment is.
		notFound bool
		age      time.Duration
		// skew is EC2's clock minus the guests' (sim.Hostile.ClockSkew):
		// EC2 stamps the attachment by its clock.
		skew time.Duration
	}
	for _, tc := range []struct {
		name  string
		owner owner
		force bool
		deny  bool
		want  string // "" = claimed
		// forced and detached are the DetachVolume calls expected.
		forced, plain int
	}{
		{name: "terminated-releases-itself", owner: owner{state: "shutting-down", then: "terminated"}},
		{name: "terminated-stuck-no-force", owner: owner{state: "terminated", stuck: true}, want: "set force_detach: true"},
		{name: "terminated-stuck-forced", owner: owner{state: "terminated", stuck: true}, force: true, forced: 1},
		{name: "shutting-down-waits-never-forced", owner: owner{state: "shutting-down"}, force: true, want: "never forces a detach"},
		{name: "stopping-waits-never-forced", owner: owner{state: "stopping"}, force: true, want: "never forces a detach"},
		{name: "stopping-then-stopped-plain-detach", owner: owner{state: "stopping", then: "stopped"}, force: true, plain: 1},
		{name: "stopped-plain-detach", owner: owner{state: "stopped"}, plain: 1},
		{name: "stopped-plain-detach-even-with-force", owner: owner{state: "stopped"}, force: true, plain: 1},
		{name: "stopped-detach-denied", owner: owner{state: "stopped"}, deny: true, want: "may not call ec2:DetachVolume", plain: 1},
		{name: "running-never-touched", owner: owner{state: "running"}, force: true, want: "never takes a volume from a running instance"},
		{name: "pending-never-touched", owner: owner{state: "pending"}, force: true, want: "never takes a volume from a running instance"},
		{name: "notfound-young-attachment-is-unknown", owner: owner{state: "running", notFound: true, age: 10 * time.Second}, force: true, want: "(unknown)"},
		{name: "notfound-young-attachment-guest-clock-ahead", owner: owner{state: "running", notFound: true, age: 10 * time.Second, skew: -7 * time.Minute}, force: true, want: "(unknown)"},
		{name: "notfound-old-attachment-is-gone", owner: owner{state: "running", notFound: true, age: time.Hour}, force: true, forced: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			calls := tapDetaches(t, w)
			id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
			prev := w.claimer("us-east-1a", nil)
			if _, err := claimAndWait(ctx, prev, home); err != nil {
				t.Fatal(err)
			}
			err := w.sim.Update(func(sw *sim.World) error {
				v := sw.Volumes[id]
				v.Attachments[0].AttachTime = time.Now().Add(-tc.owner.age)
				if tc.owner.skew != 0 {
					sw.Hostile.ClockSkew = tc.owner.skew
				}
				if tc.owner.notFound {
					delete(sw.Instances, prev.Instance.ID)
					return nil
				}
				sw.Instances[prev.Instance.ID].State = tc.owner.state
				if tc.deny {
					sw.DenyActions = []string{"DetachVolume"}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if tc.owner.then != "" {
				go func() {
					time.Sleep(150 * time.Millisecond)
					w.sim.SetInstanceState(prev.Instance.ID, tc.owner.then)
				}()
			}
			c := w.claimer("us-east-1a", nil)
			c.ForceDetach = tc.force
			c.WaitDetach = time.Second
			cl, err := claimAndWait(ctx, c, home)
			w.srv.Wait()
			if ev := w.sim.DataLossEvents(); len(ev) != 0 {
				t.Fatalf("data-loss events: %+v", ev)
			}
			// (A retried call counts once: whether it was made is what matters.)
			if f, p := calls.count(); (f > 0) != (tc.forced > 0) || (p > 0) != (tc.plain > 0) {
				t.Errorf("DetachVolume calls: %d forced, %d plain; want %d, %d", f, p, tc.forced, tc.plain)
			}
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				if v := w.vol(id); len(v.Attachments) != 1 || v.Attachments[0].InstanceID != prev.Instance.ID {
					t.Fatalf("a refused claim changed the attachment: %+v", v.Attachments)
				}
				return
			}
			if err != nil || cl.VolumeID != id {
				t.Fatalf("claim = %+v, %v", cl, err)
			}
		})
	}
}

// TestForcedDetachOfLiveOwnerIsDataLoss checks the simulator's side of the
// contract: the event the matrix asserts against does get recorded.
func TestForcedDetachOfLiveOwnerIsDataLoss(t *testing.T) {
	ctx := context.Background()
	for _, state := range []string{"running", "shutting-down", "stopping", "terminated"} {
		w := newWorld(t)
		id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
		prev := w.claimer("us-east-1a", nil)
		if _, err := claimAndWait(ctx, prev, home); err != nil {
			t.Fatal(err)
		}
		w.sim.Update(func(sw *sim.World) error { sw.Instances[prev.Instance.ID].State = state; return nil })
		// A lost answer makes the SDK send it again, and the retry of the
		// committed detach finds the volume available: IncorrectState.
		if _, err := prev.EC2.DetachVolume(ctx, detachInput(id, prev.Instance.ID, true)); err != nil && claim.ErrorCode(err) != "IncorrectState" {
			t.Fatal(err)
		}
		want := 1
		if state == "terminated" {
			want = 0
		}
		if ev := w.sim.DataLossEvents(); len(ev) != want {
			t.Errorf("%s owner: %d data-loss events, want %d: %+v", state, len(ev), want, ev)
		}
	}
}

// TestMoveRace: two instances in two AZs start moving the same volume at
// once; exactly one copy results and no snapshot is left over.
func TestMoveRace(t *testing.T) {
	for round := range 5 {
		w := newWorld(t)
		w.sim.Update(func(sw *sim.World) error { sw.CreateLatency = 50 * time.Millisecond; return nil })
		old := w.volume("us-east-1c", map[string]string{"Name": "home-root"})
		a, b := w.claimer("us-east-1a", nil), w.claimer("us-east-1b", nil)
		type res struct {
			cl  claim.Claim
			err error
		}
		ch := make(chan res, 2)
		for _, c := range []*claim.Claimer{a, b} {
			go func() {
				cl, err := claimAndWait(context.Background(), c, home)
				ch <- res{cl, err}
			}()
		}
		r1, r2 := <-ch, <-ch
		w.srv.Wait()
		won := 0
		for _, r := range []res{r1, r2} {
			var mip *claim.MoveInProgressError
			switch {
			case r.err == nil:
				won++
			case errorsAs(r.err, &mip):
			default:
				t.Fatalf("round %d: unexpected error %v", round, r.err)
			}
		}
		var copies, snaps int
		w.sim.View(func(sw *sim.World) {
			for _, v := range sw.Volumes {
				if v.Tags[claim.TagMovedFrom] == old {
					copies++
				}
			}
			snaps = len(sw.Snapshots)
		})
		if won != 1 || copies != 1 || snaps != 1 {
			t.Fatalf("round %d: %d winners, %d copies, %d snapshots (want 1 each): %v / %v", round, won, copies, snaps, r1.err, r2.err)
		}
	}
}

// TestMoveBudgetRunsOut: a snapshot slower than the boot's budget ends the
// boot with one line saying how far the move is; the next boot resumes with
// the same snapshot and finishes.
func TestMoveBudgetRunsOut(t *testing.T) {
	w := newWorld(t)
	// The budget outlasts EC2's lagging views (the snapshot must be
	// visible to be reported) but not the snapshot.
	w.sim.Update(func(sw *sim.World) error { sw.CreateLatency = 12 * time.Second; return nil })
	old := w.volume("us-east-1b", map[string]string{"Name": "home-root"})
	c := w.claimer("us-east-1a", nil)
	// Past the mover's consistency grace (3 s), with room for lost answers
	// (2 s stalls) before the snapshot is asked for; short of the snapshot.
	c.MoveBudget = 8 * time.Second
	_, err := c.Claim(context.Background(), home)
	var snaps []string
	w.sim.View(func(sw *sim.World) {
		for id := range sw.Snapshots {
			snaps = append(snaps, id)
		}
	})
	var mip *claim.MoveInProgressError
	if len(snaps) != 1 || !errorsAs(err, &mip) || mip.Snapshot != snaps[0] || !strings.Contains(err.Error(), "move of volume "+old+" from us-east-1b to us-east-1a is under way (snapshot "+snaps[0]) {
		t.Fatalf("err = %v, snapshots %v: want a move-in-progress line naming the one snapshot", err, snaps)
	}
	if v := w.vol(old); v.Tags[claim.TagMovingTo] != "us-east-1a" {
		t.Fatalf("original not marked: %v", v.Tags)
	}
	// A boot in the original's AZ neither claims the original nor moves it.
	o := w.claimer("us-east-1b", nil)
	if _, err := o.Claim(context.Background(), home); !errorsAs(err, &mip) || !strings.Contains(err.Error(), "only a boot in us-east-1a resumes it") {
		t.Fatalf("boot in the old AZ: err = %v", err)
	}
	w.sim.TerminateInstance(c.Instance.ID)
	c2 := w.claimer("us-east-1a", nil)
	cl, err := claimAndWait(context.Background(), c2, home)
	if err != nil || cl.MovedFrom != old || w.vol(cl.VolumeID).SnapshotID != mip.Snapshot {
		t.Fatalf("resumed claim = %+v, %v; want the copy from %s", cl, err, mip.Snapshot)
	}
	w.srv.Wait()
	n := 0
	w.sim.View(func(sw *sim.World) { n = len(sw.Snapshots) })
	if n != 1 {
		t.Fatalf("%d snapshots after a resumed move, want 1", n)
	}
}

// TestCreateVolumeClientToken: the simulator's CreateVolume is idempotent
// per ClientToken, as EC2's.
func TestCreateVolumeClientToken(t *testing.T) {
	w := newWorld(t)
	c := w.claimer("us-east-1a", nil)
	in := createInput("us-east-1a", "tok-1")
	a, err := c.EC2.CreateVolume(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.EC2.CreateVolume(context.Background(), createInput("us-east-1a", "tok-1"))
	if err != nil || *a.VolumeId != *b.VolumeId {
		t.Fatalf("repeat = %v, %v; want %s", b, err, *a.VolumeId)
	}
	if _, err := c.EC2.CreateVolume(context.Background(), createInput("us-east-1b", "tok-1")); claim.ErrorCode(err) != "IdempotentParameterMismatch" {
		t.Fatalf("other parameters, same token: err = %v", err)
	}
}

type detachCounter struct{ tap *sim.Tap }

// tapDetaches routes the world's EC2 API through a Tap to count
// DetachVolume calls.
func tapDetaches(t *testing.T, w *world) detachCounter {
	t.Helper()
	tap := &sim.Tap{Next: w.srv.EC2Handler()}
	w.ec2.Config.Handler = tap
	return detachCounter{tap}
}

func (d detachCounter) count() (forced, plain int) {
	for _, c := range d.tap.Calls() {
		if c.Action != "DetachVolume" {
			continue
		}
		if strings.EqualFold(c.Params.Get("Force"), "true") {
			forced++
		} else {
			plain++
		}
	}
	return forced, plain
}

func detachInput(vol, inst string, force bool) *ec2.DetachVolumeInput {
	return &ec2.DetachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Force: aws.Bool(force)}
}

func createInput(az, token string) *ec2.CreateVolumeInput {
	return &ec2.CreateVolumeInput{AvailabilityZone: aws.String(az), Size: aws.Int32(1), VolumeType: types.VolumeTypeGp3, ClientToken: aws.String(token)}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// TestMoveVersusLocalClaim: a boot in the original's AZ found the volume
// free and attaches it just as a boot in another AZ starts moving it. Both
// may give up, but never both win: the original attached here and the
// move committed would be two diverging copies.
func TestMoveVersusLocalClaim(t *testing.T) {
	for round := range 4 {
		w := newWorld(t)
		w.sim.Update(func(sw *sim.World) error { sw.CreateLatency = 100 * time.Millisecond; return nil })
		old := w.volume("us-east-1b", map[string]string{"Name": "home-root"})
		local := w.claimer("us-east-1b", nil)
		mover := w.claimer("us-east-1a", nil)
		// The local boot's AttachVolume reaches EC2 late, after the mover's
		// mark and its re-read.
		w.sim.SetFault("AttachVolume", sim.Fault{Delay: time.Duration(150+50*round) * time.Millisecond})
		errs := make(chan error, 2)
		go func() { _, err := claimAndWait(context.Background(), local, home); errs <- err }()
		time.Sleep(20 * time.Millisecond)
		go func() { _, err := claimAndWait(context.Background(), mover, home); errs <- err }()
		e1, e2 := <-errs, <-errs
		w.srv.Wait()
		ov := w.vol(old)
		attachedHere := len(ov.Attachments) > 0
		committed := ov.Tags[claim.TagMovedTo] != ""
		t.Logf("round %d: local/mover: %v / %v; attached here %v, committed %v", round, e1, e2, attachedHere, committed)
		if attachedHere && committed {
			t.Fatalf("round %d: split: the original is attached in us-east-1b and the move committed", round)
		}
		if ev := w.sim.DataLossEvents(); len(ev) != 0 {
			t.Fatalf("data-loss events: %+v", ev)
		}
	}
}

// TestMoveSnapshotAnswerLost: EC2 takes the CreateSnapshot but the answer
// is lost. CreateSnapshot has no ClientToken, so asking again would make a
// second snapshot; the claimer finds the first by its tag instead.
func TestMoveSnapshotAnswerLost(t *testing.T) {
	w := newWorld(t)
	old := w.volume("us-east-1b", map[string]string{"Name": "home-root"})
	tap := &sim.Tap{Next: w.srv.EC2Handler(), LoseAt: 2} // 1 = the moving-to tag, 2 = CreateSnapshot
	w.ec2.Config.Handler = tap
	cl, err := claimAndWait(context.Background(), w.claimer("us-east-1a", nil), home)
	if err != nil || cl.MovedFrom != old {
		t.Fatalf("claim = %+v, %v", cl, err)
	}
	w.srv.Wait()
	calls, snaps := 0, 0
	for _, c := range tap.Calls() {
		if c.Action == "CreateSnapshot" {
			calls++
		}
	}
	w.sim.View(func(sw *sim.World) { snaps = len(sw.Snapshots) })
	if calls != 1 || snaps != 1 {
		t.Fatalf("%d CreateSnapshot calls, %d snapshots; want 1 and 1", calls, snaps)
	}
}

// TestMovedVolumeByID: a volume configured by id keeps being found after a
// move (and a move back), through spotroot:moved-to.
func TestMovedVolumeByID(t *testing.T) {
	w := newWorld(t)
	old := w.volume("us-east-1b", map[string]string{"Name": "home-root"})
	byID := home
	byID.Tag, byID.ID = nil, old
	a := w.claimer("us-east-1a", nil)
	cl, err := claimAndWait(context.Background(), a, byID)
	if err != nil || cl.MovedFrom != old {
		t.Fatalf("first move: %+v, %v", cl, err)
	}
	w.sim.TerminateInstance(a.Instance.ID)
	b := w.claimer("us-east-1b", nil)
	cl2, err := claimAndWait(context.Background(), b, byID)
	if err != nil || cl2.MovedFrom != cl.VolumeID {
		t.Fatalf("move back: %+v, %v; want a copy of %s", cl2, err, cl.VolumeID)
	}
	w.sim.TerminateInstance(b.Instance.ID)
	cl3, err := claimAndWait(context.Background(), w.claimer("us-east-1b", nil), byID)
	if err != nil || cl3.VolumeID != cl2.VolumeID {
		t.Fatalf("third boot: %+v, %v; want %s", cl3, err, cl2.VolumeID)
	}
}

// TestClaimLetsGoOfAVolumeMarkedForMove: a mover in another AZ marks the
// volume just as this boot's AttachVolume lands (it found the volume free
// a moment before). The claim looks again after its attach, sees the mark,
// detaches the volume and says so: the move or the next boot wins, never
// both.
func TestClaimLetsGoOfAVolumeMarkedForMove(t *testing.T) {
	w := newWorld(t)
	// What is tested is that the claim reads the mark after its attach,
	// not how long EC2's view takes to show it.
	if err := w.sim.DisableHostile(sim.HostileConsistency, "the mark must be visible to the look after the attach at once"); err != nil {
		t.Fatal(err)
	}
	id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
	var marked atomic.Bool
	w.ec2.Config.Handler = &sim.Tap{Next: w.srv.EC2Handler(), Before: func(c sim.TapCall) {
		if c.Action == "AttachVolume" && marked.CompareAndSwap(false, true) {
			w.sim.Update(func(sw *sim.World) error {
				sw.Volumes[id].Tags[claim.TagMovingTo] = "us-east-1b"
				return nil
			})
		}
	}}
	_, err := claimAndWait(context.Background(), w.claimer("us-east-1a", nil), home)
	var mip *claim.MoveInProgressError
	if !marked.Load() || !errorsAs(err, &mip) || mip.Volume != id || mip.To != "us-east-1b" {
		t.Fatalf("claim = %v (marked: %v), want the move under way to us-east-1b", err, marked.Load())
	}
	w.srv.Wait()
	if v := w.vol(id); len(v.Attachments) != 0 || v.State != sim.VolumeAvailable {
		t.Fatalf("volume %s: state %s, attachments %v; want it let go (available, detached)", id, v.State, v.Attachments)
	}
}
