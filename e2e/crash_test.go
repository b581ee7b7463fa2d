package e2e_test

// The simulator-level crash matrix (package e2e/crash): every step of the
// claim, detach-wait, create, move and pool flows, cut before EC2 sees it
// and after it committed, each followed by replacement boots, under the
// hostile simulator; see e2e/crash for what every scenario asserts.
//
// make test runs one seed (SPOTROOT_SEED, else a random one) under the
// default hostile profile (crash.Full); make crash-soak and make soak run
// SPOTROOT_CRASH_SEEDS seeds from it. A failing point prints its seed and
// the one-line command that replays it (SPOTROOT_CRASH_SEED,
// SPOTROOT_CRASH_POINT).

import (
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/crash"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
)

func TestCrashMatrix(t *testing.T) {
	o := crash.OptionsFromEnv(sim.SeedFromEnv(), crash.Full)
	start := time.Now()
	results := crash.Matrix(o)
	passed, reached := 0, 0
	var slowest crash.Result
	for _, r := range results {
		if r.Took > slowest.Took {
			slowest = r
		}
		if r.Reached {
			reached++
		}
		t.Run(r.Name(), func(t *testing.T) {
			if r.Err == nil {
				passed++
				return
			}
			for _, l := range r.Logs {
				t.Log(l)
			}
			t.Errorf("seed %d, %s (%s timing, %v): %v\nreproduce: %s", r.Seed, r.Point, o.Timing.Name, r.Took.Round(time.Millisecond), r.Err, r.Repro(o.Timing))
		})
	}
	t.Logf("crash matrix: %d of %d scenarios passed (%d cut at their point, %d past the end of a shorter run), seeds %v, %s timing (lag %v), %d at once, %v (slowest %s, %v)",
		passed, len(results), reached, len(results)-reached, o.Seeds, o.Timing.Name, o.Timing.Lag, o.Parallel, time.Since(start).Round(time.Second), slowest.Name(), slowest.Took.Round(time.Millisecond))
	if len(results) == 0 {
		t.Fatalf("no crash point matched SPOTROOT_CRASH_POINT=%q", o.Only)
	}
	// A matrix whose boots end before their points tests nothing: the
	// cut must land where it says for nearly every point (the hostile
	// dice may take a boot down a shorter path now and then).
	if reached*10 < len(results)*9 {
		t.Errorf("only %d of %d scenarios were cut at their point", reached, len(results))
	}
	if o.Only == "" && len(results) < 12*len(o.Seeds) {
		t.Errorf("%d crash points for %d seeds, want at least 12 a seed", len(results), len(o.Seeds))
	}
}

// TestCrashCheck: the entry point the soak uses outside the testing
// package reports a broken invariant as an error.
func TestCrashCheck(t *testing.T) {
	f := crash.Flows[0]
	if err := crash.Check(1, crash.Quick, crash.Point{Flow: f, N: 1, After: true, ThenAZ: f.Then[0]}); err != nil {
		t.Fatalf("a passing point: %v", err)
	}
	// A replacement in another AZ that may not move the volume fails.
	broken := f
	broken.Configure = func(c *claim.Claimer) { c.CrossAZ = "fail" }
	if err := crash.Check(1, crash.Quick, crash.Point{Flow: broken, N: 1, ThenAZ: "us-east-1b"}); err == nil || !strings.Contains(err.Error(), "replacement in us-east-1b") {
		t.Fatalf("a broken point reported %v", err)
	}
}
