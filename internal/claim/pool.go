package claim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/internal/config"
)

// Pacing of a pool claim under EC2's rate limit (see throttle.go).
const (
	// poolListWindow is the first window a refused pool listing is retried
	// in (full jitter); it doubles on each further refusal. A refused
	// listing means a hundred requests or more came together
	// (DescribeVolumes' bucket), so the fleet needs tens of seconds of
	// AttachVolume's refill anyway: coming back within a few seconds would
	// only be refused again. The longer the window, the more of the herd
	// can attach on the listing it gets then (turn), without a second one;
	// the shorter, the sooner a small herd is done.
	poolListWindow    = 60 * time.Second
	poolListWindowMax = 5 * time.Minute
	// poolFresh is how long one listing is used for further attempts after
	// a lost race: a little more than EC2's view lags. Older, a listing
	// mostly names members claimed since, and each costs an AttachVolume.
	poolFresh = 5 * time.Second
	// poolBusyWindow: a listing that shows AttachVolume's refill rate
	// (nearly) used up over this window by the pool's own members means
	// a fleet is claiming; a newcomer takes its turn (spreads) instead of
	// adding a refused request.
	poolBusyWindow = 10 * time.Second
	poolBusyShare  = 0.6
	// poolPendingGuard: this soon after its first EC2 call an instance may
	// still be pending in EC2's view (PID 1 runs before EC2 says running;
	// the view lags seconds more), and AttachVolume would answer
	// IncorrectState at the price of one of its scarce tokens (50, 5/s).
	// Within it, a pool claimant asks DescribeInstances (its own bucket,
	// 100, 20/s) first; later, it attaches straight away (a rare
	// IncorrectState is still waited out by attachLoop).
	poolPendingGuard = 10 * time.Second
	// poolPendingWait is how long a pending instance waits before it
	// attaches: pending ends seconds after PID 1 starts, and EC2's view of
	// it lags a few more.
	poolPendingWait = 5 * time.Second
)

// claimPool takes any available volume of the pool in this AZ.
//
// EC2's AttachVolume is the lock: atomic, it attaches a volume to one
// instance or answers VolumeInUse; nothing else decides who owns a member.
// The rest is about not wasting requests when a fleet boots at once, for
// EC2 serves AttachVolume at 5 a second per account:
//
//   - one DescribeVolumes lists the pool's members in this AZ (filtered, so
//     from the larger bucket; without MaxResults EC2 returns them all in
//     one answer), which says at once whether one is ours already (a
//     reboot), which are free and how busy the pool is;
//   - the member is chosen at random from every free one, so claimants
//     that listed together rarely collide, and a lost race takes another
//     member of the same listing while it is fresh instead of listing
//     again;
//   - throttling is not retried by the SDK here: a claimant that EC2
//     refused, or whose listing shows the pool being claimed at AttachVolume's
//     rate, waits a uniformly random time within what the rate limit needs
//     for the free members (free / 5 s), lists again and attaches. The
//     claimants thereby take turns at about the rate EC2 serves, and most
//     of them send one AttachVolume.
func (c *Claimer) claimPool(ctx context.Context, v config.Volume) (Claim, error) {
	var (
		contended bool // EC2 refused us, or the pool is being claimed at its rate
		spread    bool // we took our turn (waited) once already
		window    = poolListWindow
		refusedAt time.Time     // the first refused listing
		waited    time.Duration // the window of the retry that got through
		tried     = map[string]bool{}
		members   []types.Volume
		firstCall = time.Now()
	)
	for {
		vols, now, err := c.listPool(ctx, v)
		if throttled(err) {
			contended = true
			if refusedAt.IsZero() {
				refusedAt = time.Now()
			}
			c.log().Info("pool listing throttled by EC2; retrying within", "window", window)
			if !sleep(ctx, jitter(window)) {
				return Claim{}, fmt.Errorf("list %s: %w", v.Describe(), ctx.Err())
			}
			waited = window
			window = min(2*window, poolListWindowMax)
			continue
		}
		if err != nil {
			return Claim{}, err
		}
		members = vols
		listed := time.Now()
		// A member attached to us already: a reboot, or an attach whose
		// answer was lost.
		for _, vol := range vols {
			if attachedTo(vol, c.Instance.ID) != nil {
				cl, err := c.Attach(ctx, vol)
				if err == nil {
					c.tagClaimed(ctx, cl.VolumeID, vol)
				}
				return cl, err
			}
		}
		var free []types.Volume
		for _, vol := range vols {
			if vol.State == types.VolumeStateAvailable && len(vol.Attachments) == 0 && !tried[aws.ToString(vol.VolumeId)] &&
				tagValue(vol, TagMovedTo) == "" && !aws.ToBool(vol.MultiAttachEnabled) {
				free = append(free, vol)
			}
		}
		if len(free) == 0 {
			break
		}
		if !contended && busyPool(vols, now) {
			contended = true
			c.log().Info("pool being claimed at EC2's AttachVolume rate; taking a turn", "free", len(free))
		}
		if contended && !spread {
			spread = true
			if d := turn(len(free), refusedAt, waited); d > 2*time.Second {
				c.log().Info("waiting for a turn at AttachVolume", "free", len(free), "wait", d.Round(time.Millisecond))
				if !sleep(ctx, d) {
					return Claim{}, fmt.Errorf("claim from %s: %w", v.Describe(), ctx.Err())
				}
				continue // a fresh listing for the attach
			}
		}
		// A pending instance's wait does not age its listing: relisting
		// after it would double the listings of every newcomer, and more
		// than one listing a newcomer is what gets them refused; the
		// members claimed meanwhile are a few percent of a pool a fleet
		// draws on (a collision costs one VolumeInUse and the next pick).
		t0 := time.Now()
		if err := c.untilRunning(ctx, firstCall); err != nil {
			return Claim{}, fmt.Errorf("claim from %s: %w", v.Describe(), err)
		}
		listed = listed.Add(time.Since(t0))
		rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
		var refused bool
		for _, vol := range free {
			if time.Since(listed) > poolFresh {
				break
			}
			id := aws.ToString(vol.VolumeId)
			tried[id] = true
			cl, err := c.attachOnce(ctx, vol)
			var inUse *InUseError
			var thr *ThrottledError
			switch {
			case err == nil:
				c.tagClaimed(ctx, cl.VolumeID, vol)
				return cl, nil
			case errors.As(err, &thr):
				delete(tried, id) // never sent: still a candidate
				refused = true
			case errors.As(err, &inUse):
				c.log().Info("pool member taken by another instance, trying the next", "volume", id)
				continue
			default:
				// The answer may have been lost after EC2 attached one of
				// ours: look before giving up.
				if cl, ok := c.poolMemberOfMine(ctx, v); ok {
					return cl, nil
				}
				return Claim{}, err
			}
			break
		}
		if refused {
			// Throttled: take a turn within what the rate limit needs for
			// the free members, which keeps the retries at the refill
			// rate too (a shorter window only adds refusals).
			contended = true
			spread = true
			d := jitter(max(2*time.Second, turnWindow(len(free))))
			c.log().Info("AttachVolume throttled by EC2; waiting for a turn", "free", len(free), "wait", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return Claim{}, fmt.Errorf("claim from %s: %w", v.Describe(), ctx.Err())
			}
		}
	}
	if cl, ok := c.poolMemberOfMine(ctx, v); ok {
		return cl, nil
	}
	// Members held by dead instances come free soon (or by force).
	var busy []types.Volume
	for _, vol := range members {
		if len(vol.Attachments) > 0 && tagValue(vol, TagMovedTo) == "" && !aws.ToBool(vol.MultiAttachEnabled) {
			busy = append(busy, vol)
		}
	}
	for i := range busy {
		vol := busy[i]
		if err := c.freeFromDeadInstance(ctx, &vol); err != nil {
			continue
		}
		cl, err := c.Attach(ctx, vol)
		if err == nil {
			c.tagClaimed(ctx, cl.VolumeID, vol)
			return cl, nil
		}
	}
	if v.Create != nil {
		return c.createAndAttach(ctx, v, v.Pool)
	}
	return Claim{}, fmt.Errorf("pool %s is exhausted in %s: %d member(s), %d tried, none free; add volumes to the pool or add create: to the configuration",
		v.Describe(), c.Instance.AZ, len(members), len(tried)+len(busy))
}

// untilRunning returns once this instance is running in EC2's view, as far
// as it is worth asking: it asks DescribeInstances once, unless EC2 said
// running already or poolPendingGuard has passed since the claim's first
// call (since). Not running yet, it waits poolPendingWait rather than
// polling (a fleet of pending instances shares DescribeInstances' bucket)
// and then counts on running: a rare IncorrectState is still waited out
// by attachLoop.
func (c *Claimer) untilRunning(ctx context.Context, since time.Time) error {
	if c.running || time.Since(since) >= poolPendingGuard {
		return nil
	}
	st, err := c.ownState(ctx)
	c.running = true // from now on, or soon: the attach will say otherwise
	if err == nil && st == types.InstanceStateNameRunning {
		return nil
	}
	if err != nil && !throttled(err) {
		return nil // the attach will say
	}
	c.log().Info("instance not yet running in EC2's view; waiting before the attach", "state", string(st), "error", err, "wait", poolPendingWait)
	if !sleep(ctx, poolPendingWait) {
		return ctx.Err()
	}
	return nil
}

// listPool lists the pool's members in this AZ with one DescribeVolumes
// (a throttled call is returned, not retried), and EC2's clock at the
// answer (the Date header; zero when absent).
func (c *Claimer) listPool(ctx context.Context, v config.Volume) ([]types.Volume, time.Time, error) {
	in := &ec2.DescribeVolumesInput{Filters: append(tagFilters(v.Pool),
		types.Filter{Name: aws.String("availability-zone"), Values: []string{c.Instance.AZ}})}
	var vols []types.Volume
	var now time.Time
	for {
		cctx, cancel := c.call(ctx)
		out, err := c.EC2.DescribeVolumes(cctx, in, noThrottleRetry)
		cancel()
		if throttled(err) {
			return nil, now, err
		}
		if err != nil {
			return nil, now, apiError("DescribeVolumes", "list "+v.Describe(), err)
		}
		if t, ok := awsmiddleware.GetServerTime(out.ResultMetadata); ok {
			now = t
		}
		vols = append(vols, out.Volumes...)
		if aws.ToString(out.NextToken) == "" {
			return vols, now, nil
		}
		in.NextToken = out.NextToken
	}
}

// poolMemberOfMine looks (once, after EC2's view caught up) for a member
// attached to this instance: an attach whose answer was lost.
func (c *Claimer) poolMemberOfMine(ctx context.Context, v config.Volume) (Claim, bool) {
	mine, err := c.describe(ctx, &ec2.DescribeVolumesInput{Filters: append(tagFilters(v.Pool),
		types.Filter{Name: aws.String("availability-zone"), Values: []string{c.Instance.AZ}},
		types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{c.Instance.ID}})}, "find my member of "+v.Describe())
	if err != nil || len(mine) == 0 {
		return Claim{}, false
	}
	cl, err := c.Attach(ctx, mine[0])
	if err != nil {
		return Claim{}, false
	}
	c.tagClaimed(ctx, cl.VolumeID, mine[0])
	return cl, true
}

// turn is how long to wait before attaching, for a claimant among about
// free others when AttachVolume's refill rate is the limit: a uniformly
// random point of the time the refill needs for them all (free / 5 s), so
// the fleet's attaches arrive at about the rate EC2 serves them.
//
// A claimant whose listing was refused (at refusedAt) and got through on a
// retry spread over waited already is one of a herd whose listings arrive
// spread over that window, about free/waited a second. Of those, the share
// the refill serves during the window (waited / (free/5 s)) attaches at once,
// on the listing it just got; the others take a uniformly random point of
// the rest of the refill's time, which keeps the arrivals at the refill
// rate throughout and spares most a second listing.
func turn(free int, refusedAt time.Time, waited time.Duration) time.Duration {
	need := turnWindow(free)
	if refusedAt.IsZero() || waited <= 0 {
		return jitter(need)
	}
	// The herd's need when it was refused: the members claimed since
	// (about the refill rate's worth) were free then. Against today's
	// need, the share would grow as the window goes on and the attaches
	// outrun the refill at its end.
	if rand.Float64() < waited.Seconds()/(need+time.Since(refusedAt)).Seconds() {
		return 0
	}
	from := time.Until(refusedAt.Add(waited)) // the herd's listing window ends
	if from < 0 {
		from = 0
	}
	if need <= from {
		return jitter(need)
	}
	return from + jitter(need-from)
}

// turnWindow is how long AttachVolume's refill takes for free claims.
func turnWindow(free int) time.Duration {
	return time.Duration(float64(free) / attachRefill * float64(time.Second))
}

// busyPool: the listing shows the pool's members being attached at nearly
// AttachVolume's refill rate over the last poolBusyWindow (by EC2's clock,
// now; the last seconds are left out, EC2's view lags).
func busyPool(vols []types.Volume, now time.Time) bool {
	if now.IsZero() {
		return false
	}
	from, to := now.Add(-poolBusyWindow-2*time.Second), now.Add(-2*time.Second)
	n := 0
	for _, vol := range vols {
		for _, a := range vol.Attachments {
			if t := aws.ToTime(a.AttachTime); t.After(from) && !t.After(to) {
				n++
			}
		}
	}
	return float64(n) >= poolBusyShare*attachRefill*poolBusyWindow.Seconds()
}
