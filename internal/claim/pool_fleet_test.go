package claim_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
)

// TestPoolHerdUnderThrottling: more claimants at once than DescribeVolumes'
// bucket holds (100), so listings are refused and claimants take turns at
// AttachVolume's rate, under the whole hostile profile (lagging views,
// answers lost after commit, pending instances). Whatever the pacing did,
// the simulator's own state must show every claimant holding exactly one
// pool member and no member attached twice; each claimant's answer must
// name the member EC2 attached to it.
func TestPoolHerdUnderThrottling(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	const n, spare = 160, 5
	w := newWorld(t)
	pool := map[string]string{"spotroot:pool": "fleet"}
	members := map[string]bool{}
	for range n + spare {
		members[w.volume("us-east-1a", pool)] = true
	}
	claimers := make([]*claim.Claimer, n)
	for i := range claimers {
		c := w.claimer("us-east-1a", nil)
		// PID 1's pace, not the fast test one: polls every 50ms from 160
		// claimants would measure only DescribeVolumes' throttling.
		c.PollInterval, c.MaxPoll, c.CallTimeout = 200*time.Millisecond, time.Second, 3*time.Minute
		claimers[i] = c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := claimAndWait(ctx, c, config.Volume{Pool: pool, Mount: "/"})
			got[i], errs[i] = cl.VolumeID, err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("claimant %d (%s): %v", i, claimers[i].Instance.ID, err)
		}
	}
	st := w.sim.Stats()
	if st.Throttled["DescribeVolumes"] == 0 {
		t.Errorf("no DescribeVolumes was throttled (%v): the herd did not exercise the refused-listing path", st.Throttled)
	}
	// The truth, from the simulator: instance → the pool members attached to it.
	held := map[string][]string{}
	w.sim.View(func(sw *sim.World) {
		for id, v := range sw.Volumes {
			if !members[id] {
				continue
			}
			if len(v.Attachments) > 1 {
				t.Errorf("volume %s has %d attachments: %+v", id, len(v.Attachments), v.Attachments)
			}
			for _, a := range v.Attachments {
				if a.State != sim.AttachAttached {
					t.Errorf("volume %s attachment to %s is %s, want attached", id, a.InstanceID, a.State)
				}
				held[a.InstanceID] = append(held[a.InstanceID], id)
			}
		}
	})
	for i, c := range claimers {
		h := held[c.Instance.ID]
		if len(h) != 1 {
			t.Errorf("instance %s holds %d pool members %v, want exactly 1", c.Instance.ID, len(h), h)
			continue
		}
		if h[0] != got[i] {
			t.Errorf("claimant %d was told %s, but EC2 attached %s to it", i, got[i], h[0])
		}
	}
	if len(held) != n {
		t.Errorf("%d instances hold pool members, want %d", len(held), n)
	}
	t.Logf("%d claimants at once: per claim %.2f API requests, %.2f AttachVolume; %d DescribeVolumes and %d AttachVolume throttled; %d answers lost",
		n, float64(sum(st.Calls))/n, float64(st.Calls["AttachVolume"])/n, st.Throttled["DescribeVolumes"], st.Throttled["AttachVolume"], sum(st.Lost))
}
