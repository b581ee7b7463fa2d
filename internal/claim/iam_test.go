package claim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/iampolicy"
)

// Each capability of the boot path under exactly the policy
// `spotroot iam-policy --config` prints for its configuration, through the
// SDK and the simulator's IAM evaluation; the audit log shows no denial.

var managed = map[string]string{iampolicy.DefaultTagKey: iampolicy.DefaultTagValue}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func policyFor(t *testing.T, w *world, userData string) {
	t.Helper()
	c, err := config.Load(nil, []byte("#cloud-config\nspotroot:\n"+userData), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := iampolicy.Render(iampolicy.ForConfig(c))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.sim.SetRolePolicy("spotroot", string(b)); err != nil {
		t.Fatal(err)
	}
}

func noDenials(t *testing.T, w *world) {
	t.Helper()
	evs, err := w.srv.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.ErrorCode == "UnauthorizedOperation" {
			t.Errorf("denied: %s %v: %s", e.EventName, e.Resources, e.ErrorMessage)
		}
	}
}

func TestCapabilitiesUnderDerivedPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // seven claims under the hostile profile
	defer cancel()
	home := config.Volume{Tag: map[string]string{"Name": "home-root"}, Mount: "/"}

	t.Run("claim", func(t *testing.T) {
		w := newWorld(t)
		policyFor(t, w, "  volume:\n    tag: {Name: home-root}\n  cross_az: fail\n")
		id := w.volume("us-east-1a", with(managed, "Name", "home-root"))
		if _, err := claimAndWait(ctx, w.claimer("us-east-1a", nil), home); err != nil {
			t.Fatal(err)
		}
		if v := w.vol(id); len(v.Attachments) != 1 {
			t.Errorf("not attached: %+v", v)
		}
		noDenials(t, w)
	})
	t.Run("create", func(t *testing.T) {
		w := newWorld(t)
		policyFor(t, w, "  volume:\n    tag: {Name: home-root}\n    create: {from: empty, size: 1}\n  cross_az: fail\n")
		v := home
		v.Create = &config.Create{From: "empty", SizeGiB: 1}
		cl, err := claimAndWait(ctx, w.claimer("us-east-1a", nil), v)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.vol(cl.VolumeID).Tags; got[iampolicy.DefaultTagKey] != "true" || got["Name"] != "home-root" || got[claim.TagInstance] == "" {
			t.Errorf("created volume tags %v", got)
		}
		noDenials(t, w)
	})
	t.Run("create-from-ami", func(t *testing.T) {
		w := newWorld(t)
		snap := sim.NewSnapshotID()
		w.sim.AddSnapshot(sim.Snapshot{ID: snap, VolumeSize: 1, Tags: managed})
		w.sim.AddImage(sim.Image{ID: "ami-0123456789abcdef0", RootDeviceName: "/dev/xvda", RootSnapshotID: snap})
		policyFor(t, w, "  volume:\n    tag: {Name: home-root}\n    create: {from: ami}\n  cross_az: fail\n")
		v := home
		v.Create = &config.Create{From: "ami"}
		if _, err := claimAndWait(ctx, w.claimer("us-east-1a", nil), v); err != nil {
			t.Fatal(err)
		}
		noDenials(t, w)
	})
	t.Run("cross-az-move-and-delete", func(t *testing.T) {
		w := newWorld(t)
		policyFor(t, w, "  volume:\n    tag: {Name: home-root}\n  delete_moved: true\n")
		old := w.volume("us-east-1b", with(managed, "Name", "home-root"))
		c := w.claimer("us-east-1a", nil)
		c.DeleteMoved = true
		cl, err := claimAndWait(ctx, c, home)
		if err != nil {
			t.Fatal(err)
		}
		if cl.MovedFrom != old {
			t.Errorf("claim %+v", cl)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, still := w.sim.Volume(old)
			if !still {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the moved volume %s was not deleted", old)
			}
			time.Sleep(10 * time.Millisecond)
		}
		noDenials(t, w)
	})
	// Every delete's answer is lost after EC2 committed it. A blind retry
	// is judged against a resource that no longer has the tags its
	// permission is scoped by, and is denied; the claimer judges an
	// unclear delete by looking instead, so the audit log holds no denial
	// and nothing of the move is left.
	t.Run("cross-az-move-and-delete-lost-answers", func(t *testing.T) {
		w := newWorld(t)
		w.sim.Update(func(sw *sim.World) error {
			sw.Hostile.LostResponses, sw.Hostile.LostStall = 1, 100*time.Millisecond
			sw.Hostile.LostOnly = []string{"DeleteVolume", "DeleteSnapshot"}
			return nil
		})
		policyFor(t, w, "  volume:\n    tag: {Name: home-root}\n  delete_moved: true\n")
		old := w.volume("us-east-1b", with(managed, "Name", "home-root"))
		c := w.claimer("us-east-1a", nil)
		c.DeleteMoved = true
		if _, err := claimAndWait(ctx, c, home); err != nil {
			t.Fatal(err)
		}
		w.srv.Wait()
		var vols, snaps int
		w.sim.View(func(sw *sim.World) {
			_, still := sw.Volumes[old]
			vols, snaps = map[bool]int{true: 1}[still], len(sw.Snapshots)
		})
		if vols != 0 || snaps != 0 {
			t.Errorf("after the move: original left %d, snapshots left %d (want 0, 0)", vols, snaps)
		}
		noDenials(t, w)
	})
	t.Run("detach-dead-owner", func(t *testing.T) {
		w := newWorld(t)
		policyFor(t, w, "  volume:\n    tag: {Name: home-root}\n  force_detach: true\n  cross_az: fail\n")
		id := w.volume("us-east-1a", with(managed, "Name", "home-root"))
		w.claimer("us-east-1a", func(i *sim.Instance) {
			i.State, i.Tags, i.BlockDevices = sim.InstanceStopped, managed, map[string]string{"/dev/sdf": id}
		})
		c := w.claimer("us-east-1a", nil)
		// A stopped owner gets a plain DetachVolume, then the wait for
		// EC2 to show it released: long enough for its lagging views.
		c.ForceDetach, c.WaitDetach = true, 20*time.Second
		if _, err := claimAndWait(ctx, c, home); err != nil {
			t.Fatal(err)
		}
		noDenials(t, w)
	})
	t.Run("pool-without-claim-tags", func(t *testing.T) {
		// The default: the pool's derived policy has no CreateTags and the
		// claim sends none (a denied call per boot would be noise in
		// CloudTrail and a wasted request at fleet scale).
		w := newWorld(t)
		policyFor(t, w, "  volume:\n    pool: {spotroot:pool: web}\n  cross_az: fail\n")
		id := w.volume("us-east-1a", with(managed, "spotroot:pool", "web"))
		c := w.claimer("us-east-1a", nil)
		if _, err := claimAndWait(ctx, c, config.Volume{Pool: map[string]string{"spotroot:pool": "web"}, Mount: "/"}); err != nil {
			t.Fatal(err)
		}
		w.attachedTo(id, c.Instance.ID)
		if n := w.sim.Stats().Calls["CreateTags"]; n != 0 {
			t.Errorf("%d CreateTags calls without tag_claims", n)
		}
		noDenials(t, w)
	})
	t.Run("pool-claim-tags", func(t *testing.T) {
		w := newWorld(t)
		policyFor(t, w, "  volume:\n    pool: {spotroot:pool: web}\n  cross_az: fail\n  tag_claims: true\n")
		id := w.volume("us-east-1a", with(managed, "spotroot:pool", "web"))
		c := w.claimer("us-east-1a", nil)
		c.TagClaims = true
		if _, err := claimAndWait(ctx, c, config.Volume{Pool: map[string]string{"spotroot:pool": "web"}, Mount: "/"}); err != nil {
			t.Fatal(err)
		}
		if got := w.vol(id).Tags[claim.TagInstance]; got != c.Instance.ID {
			t.Errorf("pool winner tagged %q", got)
		}
		noDenials(t, w)
	})
	// Claim-only policy, a configuration that asks to create: the error
	// names the denied action and the flag that grants it.
	t.Run("least-privilege-create-denied", func(t *testing.T) {
		w := newWorld(t)
		b, _ := iampolicy.Render(iampolicy.Options{})
		w.sim.SetRolePolicy("spotroot", string(b))
		v := home
		v.Create = &config.Create{From: "empty", SizeGiB: 1}
		_, err := claimAndWait(ctx, w.claimer("us-east-1a", nil), v)
		if err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation: the instance role may not call ec2:CreateVolume on arn:aws:ec2:us-east-1:123456789012:volume/*") ||
			!strings.Contains(err.Error(), "spotroot iam-policy --create") || strings.Contains(err.Error(), "Encoded") {
			t.Errorf("error %v", err)
		}
	})
}
