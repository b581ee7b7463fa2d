package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"
)

// The pool at fleet scale (issue 16 item 3): a thousand claimants, at once
// and with boots spread over a minute, under EC2's throttling buckets.

// Goals of the fleet-scale race.
const (
	fleetN            = 1000
	fleetSpread       = 60 * time.Second
	goalAttachPer     = 2.0 // AttachVolume requests per claim, throttled ones included
	goalCallsPer      = 5.0 // EC2 requests in all per claim, SDK retries and throttled ones included
	goalWallOverFloor = 1.3 // wall time / what the buckets alone force
)

// The buckets a claim cannot do without, as EC2 documents them ("Request
// throttling for the Amazon EC2 API", Request token bucket sizes and refill
// rates, https://docs.aws.amazon.com/AWSEC2/latest/APIReference/throttling.html;
// e2e/sim/hostile.go models the same table): each claimant needs one
// DescribeVolumes (filtered: non-mutating, 100 tokens, 20/s) to learn the
// members' ids, then one AttachVolume (mutating, 50 tokens, 5/s).
var (
	floorDescribe = tokenBucket{size: 100, refill: 20}
	floorAttach   = tokenBucket{size: 50, refill: 5}
)

type tokenBucket struct{ size, refill float64 }

// BucketFloor is the earliest the last of the claimants starting at starts
// can have its volume attached, measured from the first start, if each sent
// exactly one DescribeVolumes and one AttachVolume and the buckets served
// them in order without a token wasted: what the rate limit alone forces.
func BucketFloor(starts []time.Duration) time.Duration {
	s := append([]time.Duration(nil), starts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	listed := serve(floorDescribe, s)
	sort.Slice(listed, func(i, j int) bool { return listed[i] < listed[j] })
	attached := serve(floorAttach, listed)
	if len(attached) == 0 {
		return 0
	}
	return attached[len(attached)-1] - s[0]
}

// serve returns when a bucket (full at the first request) grants each of
// the requests arriving at (sorted) times, first come first served.
func serve(b tokenBucket, at []time.Duration) []time.Duration {
	out := make([]time.Duration, len(at))
	if len(at) == 0 {
		return out
	}
	tokens, last := b.size, at[0].Seconds()
	for i, a := range at {
		t := max(a.Seconds(), last)
		tokens = min(b.size, tokens+(t-last)*b.refill)
		if tokens < 1 {
			t += (1 - tokens) / b.refill
			tokens = 1
		}
		tokens--
		last = t
		out[i] = time.Duration(t * float64(time.Second))
	}
	return out
}

// startOffsets: n start times, all 0 for spread 0, else uniform in [0, spread).
func startOffsets(n int, spread time.Duration, seed uint64) []time.Duration {
	out := make([]time.Duration, n)
	if spread <= 0 {
		return out
	}
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	for i := range out {
		out[i] = time.Duration(r.Int64N(int64(spread)))
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// deviceNotice stands in for the instance's kernel: the simulator plugs
// the volume in (sim.Hotplugger) and PID 1, watching for the disk, learns
// of it (WaitAttachedNudged's nudge).
type deviceNotice struct{ seen chan struct{} }

func (d deviceNotice) Attach(ctx context.Context, volumeID, imagePath, device string) error {
	select {
	case d.seen <- struct{}{}:
	default:
	}
	return nil
}

func (d deviceNotice) Detach(ctx context.Context, volumeID string) error { return nil }

// fleetConfig names a fleet race's column.
func fleetConfig(n int, spread time.Duration) string {
	if spread <= 0 {
		return fmt.Sprintf("%d claimants", n)
	}
	return fmt.Sprintf("%d claimants, boots over %v", n, spread)
}

// addFleetRows adds the floor and the per-claim figures the goals read.
func addFleetRows(rep *Report, r PoolResult) {
	c := fleetConfig(r.N, r.Spread)
	rep.Add(secPool, c, "bucket floor: what EC2's buckets alone force (wall)", "s", r.Floor.Seconds())
	if r.Floor > 0 {
		rep.Add(secPool, c, "wall / bucket floor", "x", r.Wall.Seconds()/r.Floor.Seconds())
	}
	if r.N >= fleetN {
		fleetGoalLines = append(fleetGoalLines, fleetGoals(r)...)
	}
}

// fleetGoals checks a fleet race against item 3's goals; one line each.
func fleetGoals(r PoolResult) []string {
	what := "at once"
	if r.Spread > 0 {
		what = "boots spread over " + r.Spread.String()
	}
	mark := func(ok bool) string {
		if ok {
			return "✔"
		}
		return "✘"
	}
	claimed := max(r.Claimed, 1)
	attachPer := float64(r.Calls["AttachVolume"]) / float64(claimed)
	callsPer := float64(r.TotalCalls()) / float64(claimed)
	ratio := 0.0
	if r.Floor > 0 {
		ratio = r.Wall.Seconds() / r.Floor.Seconds()
	}
	all := r.Claimed == r.N && r.Dups == 0
	return []string{
		fmt.Sprintf("%s 16.3 pool, %d claimants %s: all claimed and attached, none twice: %d of %d, %d doubly attached (goal all, 0)", mark(all), r.N, what, r.Claimed, r.N, r.Dups),
		fmt.Sprintf("%s 16.3 pool, %d claimants %s: wall %.1f s, bucket floor %.1f s, %.2f× (goal ≤ %.1f×)", mark(all && ratio > 0 && ratio <= goalWallOverFloor), r.N, what, r.Wall.Seconds(), r.Floor.Seconds(), ratio, goalWallOverFloor),
		fmt.Sprintf("%s 16.3 pool, %d claimants %s: AttachVolume requests per claim %.2f (goal ≤ %.1f)", mark(all && attachPer <= goalAttachPer), r.N, what, attachPer, goalAttachPer),
		fmt.Sprintf("%s 16.3 pool, %d claimants %s: EC2 requests in all per claim %.2f (goal ≤ %.0f)", mark(all && callsPer <= goalCallsPer), r.N, what, callsPer, goalCallsPer),
	}
}

// fleetSpreadFlag is -pool-spread.
var fleetSpreadFlag = fleetSpread

// fleetGoalLines collects the goal lines of the fleet races run.
var fleetGoalLines []string

// addFleetSpread races a fleet-sized pool (n ≥ 1000) again with its boots
// spread over -pool-spread, and records the goals of both races.
func addFleetSpread(ctx context.Context, rep *Report, n int) error {
	if n < fleetN || fleetSpreadFlag <= 0 {
		return nil
	}
	logf("pool race: %d claimants, boots spread over %v", n, fleetSpreadFlag)
	r, err := PoolRaceWith(ctx, PoolOpts{N: n, Budget: poolBudget, Spread: fleetSpreadFlag})
	if err != nil {
		if r.Claimed == 0 || r.Dups > 0 || ctx.Err() != nil {
			return err
		}
		rep.Note("pool race %s: only %d of %d claimed within %v (%v)", fleetConfig(n, fleetSpreadFlag), r.Claimed, n, poolBudget, err)
	}
	return addPoolResult(rep, r)
}

// writeFleetGoals prints the fleet races' goal lines.
func writeFleetGoals(w io.Writer) {
	if len(fleetGoalLines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n== pool at fleet scale: goals (issue 16 item 3) ==\n")
	for _, l := range fleetGoalLines {
		fmt.Fprintln(w, l)
	}
}
