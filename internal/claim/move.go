package claim

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The cross-AZ move is a protocol written in tags, so that a boot cut at
// any step leaves exactly one volume a later boot will claim, and the next
// boot in the target AZ resumes the move instead of starting another:
//
//  1. the original gets spotroot:moving-to=<az>: from now on no boot claims
//     it; a boot in <az> resumes the move, any other boot names the move
//     and boots the image's init.
//  2. a snapshot tagged spotroot:moved-from=<original> (an existing one is
//     reused).
//  3. the copy, created with ClientToken "spotroot-move-<original>" (a
//     retry, or a second mover, gets the same volume or
//     IdempotentParameterMismatch, never a second copy), tagged like the
//     original plus spotroot:moved-from=<original>. A copy is claimable
//     only once its original names it in spotroot:moved-to.
//  4. the commit: the original gets spotroot:moved-to=<copy>. One tag write
//     retires the original and makes the copy claimable.
//  5. leftovers: snapshots of the move other than the copy's; with
//     delete_moved the original and all its snapshots.
const (
	TagMovingTo = "spotroot:moving-to"
)

// MoveInProgressError: the volume is being moved and this boot cannot (or
// may no longer) take part; the message says how far the move is.
type MoveInProgressError struct {
	Volume, From, To string
	Copy             string // "" until created
	Snapshot         string
	Progress         string
	Reason           string
}

func (e *MoveInProgressError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "move of volume %s from %s to %s is under way", e.Volume, e.From, e.To)
	switch {
	case e.Copy != "":
		fmt.Fprintf(&b, " (copy %s from snapshot %s)", e.Copy, e.Snapshot)
	case e.Snapshot != "" && e.Progress != "":
		fmt.Fprintf(&b, " (snapshot %s %s)", e.Snapshot, e.Progress)
	case e.Snapshot != "":
		fmt.Fprintf(&b, " (snapshot %s)", e.Snapshot)
	default:
		b.WriteString(" (no snapshot yet)")
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	return b.String()
}

// moveToken is the ClientToken of the copy: one per original volume, so
// every mover of that volume asks for the same copy.
func moveToken(oldID string) string { return "spotroot-move-" + oldID }

// MoveBudgetFor is the default time a boot waits for a move of a volume of
// sizeGiB: a first snapshot copies every written block, so the budget grows
// with the size (5 minutes + 20 s per GiB: 8 GiB ≈ 8 min, 100 GiB ≈ 38 min).
// Past it the boot goes on with the image's init; the next one resumes.
func MoveBudgetFor(sizeGiB int32) time.Duration {
	return 5*time.Minute + time.Duration(sizeGiB)*20*time.Second
}

// budgetContext bounds ctx by d, ignoring ctx's own deadline (the move's
// budget is its own) but not its cancellation.
func budgetContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	return bctx, func() { stop(); cancel() }
}

// classify splits the volumes a selector matched into the claimable ones
// and the originals of moves under way; copies not yet committed and
// retired originals are neither.
func (c *Claimer) classify(ctx context.Context, vols []types.Volume) (live, moving []types.Volume, err error) {
	byID := map[string]types.Volume{}
	for _, v := range vols {
		byID[aws.ToString(v.VolumeId)] = v
	}
	for _, v := range vols {
		switch {
		case tagValue(v, TagMovedTo) != "":
			// retired: a copy replaced it
		case tagValue(v, TagMovingTo) != "":
			moving = append(moving, v)
		case tagValue(v, TagMovedFrom) != "":
			origID := tagValue(v, TagMovedFrom)
			orig, ok := byID[origID]
			if !ok {
				found, err := c.describe(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{origID}}, "look up "+origID+", the original of "+aws.ToString(v.VolumeId))
				if err != nil {
					return nil, nil, err
				}
				if len(found) == 0 {
					live = append(live, v) // the original is gone (delete_moved)
					continue
				}
				orig = found[0]
			}
			if tagValue(orig, TagMovedTo) == aws.ToString(v.VolumeId) {
				live = append(live, v)
			}
			// else: a copy of a move not committed yet (or a stray of a
			// lost race); the move's resumer decides.
		default:
			live = append(live, v)
		}
	}
	return live, moving, nil
}

// moveAndAttach moves old (in another AZ, maybe mid-move) here and attaches
// the copy. A boot that cannot finish within the budget returns a
// MoveInProgressError; the next boot resumes.
func (c *Claimer) moveAndAttach(ctx context.Context, old types.Volume) (Claim, error) {
	budget := c.MoveBudget
	if budget <= 0 {
		budget = MoveBudgetFor(aws.ToInt32(old.Size))
	}
	mctx, cancel := budgetContext(ctx, budget)
	defer cancel()
	var st moveState
	cl, err := c.move(ctx, mctx, old, budget, &st)
	// Whatever step the budget ran out in (a call cut by it, a wait), the
	// boot's one line says how far the move is; the next boot resumes.
	var mip *MoveInProgressError
	if err != nil && !st.committed && mctx.Err() != nil && ctx.Err() == nil && !errors.As(err, &mip) {
		return Claim{}, c.moveProgress(ctx, old, fmt.Sprintf("this boot's budget (%v) ran out; the next boot resumes it", budget), st)
	}
	return cl, err
}

// moveState is how far this boot took a move: what it made or found, which
// a Describe call right after may not show yet (eventual consistency), and
// whether it committed.
type moveState struct {
	snapshot, copy string
	committed      bool
}

// move is moveAndAttach within the move's budget (mctx); st records its
// steps.
func (c *Claimer) move(ctx, mctx context.Context, old types.Volume, budget time.Duration, st *moveState) (Claim, error) {
	oldID := aws.ToString(old.VolumeId)
	from := aws.ToString(old.AvailabilityZone)
	what := fmt.Sprintf("move %s from %s to %s", oldID, from, c.Instance.AZ)
	// A copy whose own move was cut before its clean-up.
	c.finishMove(mctx, old)
	// 0. The original's owner must be done with it (the detach rules).
	prevOwners := map[string]bool{}
	for _, a := range old.Attachments {
		prevOwners[aws.ToString(a.InstanceId)] = true
	}
	if err := c.freeFromDeadInstance(mctx, &old); err != nil {
		return Claim{}, fmt.Errorf("%s: %w", what, err)
	}
	// 1. Mark the move, unless resuming ours.
	switch to := tagValue(old, TagMovingTo); to {
	case c.Instance.AZ:
		c.log().Info("resuming the move of the volume", "volume", oldID, "from", from, "to", to)
	case "":
		if err := c.tag(mctx, oldID, TagMovingTo, c.Instance.AZ, what); err != nil {
			return Claim{}, err
		}
		// Last writer wins: a mover from another AZ that wrote after us
		// owns the move. Tags are eventually consistent, so the read that
		// decides comes only after the consistency grace: read at once, each
		// of two movers can see the other's older tag (or none) and both
		// back off, or both see their own and both move.
		if !sleep(mctx, c.grace()) {
			return Claim{}, fmt.Errorf("%s: %w", what, mctx.Err())
		}
		vols, err := c.describe(mctx, &ec2.DescribeVolumesInput{VolumeIds: []string{oldID}}, what)
		if err != nil {
			return Claim{}, err
		}
		if len(vols) == 1 {
			if to := tagValue(vols[0], TagMovingTo); to != "" && to != c.Instance.AZ {
				return Claim{}, &MoveInProgressError{Volume: oldID, From: from, To: to, Reason: "another instance started it at the same time"}
			}
		}
	default:
		return Claim{}, c.moveProgress(mctx, old, "", moveState{})
	}
	c.log().Info("volume is in another AZ: copying it through a snapshot", "volume", oldID, "from", from, "to", c.Instance.AZ, "budget", budget.String())
	start := time.Now()

	// 3 first: a copy from an earlier boot (or another mover)?
	copies, err := c.describe(mctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("tag:" + TagMovedFrom), Values: []string{oldID}}}}, what+": find an earlier copy")
	if err != nil {
		return Claim{}, err
	}
	var copyVol *types.Volume
	for i := range copies {
		if aws.ToString(copies[i].AvailabilityZone) == c.Instance.AZ {
			copyVol = &copies[i]
		}
	}
	if copyVol == nil && len(copies) > 0 {
		return Claim{}, c.moveProgress(mctx, old, "another instance copies it to "+aws.ToString(copies[0].AvailabilityZone), moveState{})
	}
	var snapID string
	if copyVol == nil {
		// 2. The snapshot: reuse one of an earlier boot.
		var made bool
		snapID, made, err = c.moveSnapshot(mctx, old, what)
		if err != nil {
			return Claim{}, err
		}
		st.snapshot = snapID
		if err := c.waitSnapshot(mctx, snapID); err != nil {
			return Claim{}, fmt.Errorf("%s: %w", what, err)
		}
		// 3. The copy, idempotent across boots and movers.
		in := copyInput(old, c.Instance.AZ, snapID)
		cctx, ccancel := c.call(mctx)
		out, err := c.EC2.CreateVolume(cctx, in)
		ccancel()
		switch {
		case ErrorCode(err) == "IdempotentParameterMismatch":
			if made {
				c.dropIfUnused(ctx, oldID, snapID)
			}
			return Claim{}, c.moveProgress(mctx, old, "another instance is copying it", moveState{})
		case err != nil:
			return Claim{}, apiError("CreateVolume", what, err)
		}
		if az := aws.ToString(out.AvailabilityZone); az != c.Instance.AZ {
			if made {
				c.dropIfUnused(ctx, oldID, snapID)
			}
			return Claim{}, c.moveProgress(mctx, old, "another instance copies it to "+az, moveState{})
		}
		copyVol = &types.Volume{VolumeId: out.VolumeId, SnapshotId: out.SnapshotId}
	}
	newID := aws.ToString(copyVol.VolumeId)
	st.copy, st.snapshot = newID, aws.ToString(copyVol.SnapshotId)
	var vol types.Volume
	if err := c.waitAvailable(mctx, newID, &vol); err != nil {
		return Claim{}, fmt.Errorf("%s: wait for the copy %s: %w", what, newID, err)
	}
	snapID = aws.ToString(vol.SnapshotId)
	// 5a. Snapshots of the move other than the copy's are not needed.
	c.dropMoveSnapshots(mctx, oldID, snapID)
	// 4. The commit, unless the original was attached meanwhile (by a
	// boot in its own AZ that found it before step 1): the copy would
	// miss its writes. That boot lets go by itself (checkNotMoving).
	if cur, err := c.describe(mctx, &ec2.DescribeVolumesInput{VolumeIds: []string{oldID}}, what); err != nil {
		return Claim{}, err
	} else if len(cur) == 1 {
		for _, a := range cur[0].Attachments {
			// (A previous owner's attachment is a lagging view of the
			// release step 0 waited for.)
			if by := aws.ToString(a.InstanceId); !prevOwners[by] {
				return Claim{}, c.abandonMove(ctx, old, newID, by)
			}
		}
	}
	// The commit.
	if err := c.tag(mctx, oldID, TagMovedTo, newID, what+": commit"); err != nil {
		return Claim{}, err
	}
	st.committed = true
	c.log().Info("moved volume", "from", oldID, "to", newID, "snapshot", snapID, "took", time.Since(start).Round(time.Millisecond).String())
	// 5b.
	if c.DeleteMoved {
		c.deleteMoved(mctx, oldID, snapID)
	}
	// The move may have outlived the boot's claim deadline (its budget is
	// its own); the attach gets a fresh one.
	actx, acancel := budgetContext(ctx, 2*time.Minute)
	defer acancel()
	cl, err := c.Attach(actx, vol)
	if err != nil {
		return Claim{}, err
	}
	cl.Created, cl.MovedFrom = true, oldID
	// No claim tag: the copy is found by its own tags, like any volume
	// named by id or tag (and the policy grants CreateTags on it only for
	// the move's own keys).
	return cl, nil
}

// copyInput is the CreateVolume request for the copy of old: same tags,
// size, type and performance.
func copyInput(old types.Volume, az, snapID string) *ec2.CreateVolumeInput {
	oldID := aws.ToString(old.VolumeId)
	tags := userTags(old)
	tags[TagMovedFrom] = oldID
	in := &ec2.CreateVolumeInput{
		AvailabilityZone:  aws.String(az),
		SnapshotId:        aws.String(snapID),
		Size:              old.Size,
		VolumeType:        old.VolumeType,
		ClientToken:       aws.String(moveToken(oldID)),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: toTags(tags)}},
	}
	if in.VolumeType == "" {
		in.VolumeType = types.VolumeTypeGp3
	}
	if in.VolumeType == types.VolumeTypeGp3 || in.VolumeType == types.VolumeTypeIo1 || in.VolumeType == types.VolumeTypeIo2 {
		in.Iops = old.Iops
	}
	if in.VolumeType == types.VolumeTypeGp3 {
		in.Throughput = old.Throughput
	}
	return in
}

// moveSnapshots lists the snapshots of a move of oldID, oldest first.
func (c *Claimer) moveSnapshots(ctx context.Context, oldID string) ([]types.Snapshot, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.DescribeSnapshots(cctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag:" + TagMovedFrom), Values: []string{oldID}}}})
	if err != nil {
		return nil, apiError("DescribeSnapshots", "find the snapshots of the move of "+oldID, err)
	}
	var snaps []types.Snapshot
	for _, s := range out.Snapshots {
		if s.State != types.SnapshotStateError {
			snaps = append(snaps, s)
		}
	}
	sort.Slice(snaps, func(i, j int) bool {
		return aws.ToTime(snaps[i].StartTime).Before(aws.ToTime(snaps[j].StartTime))
	})
	return snaps, nil
}

// moveSnapshot returns the move's snapshot, made now (made) unless an
// earlier boot made one.
func (c *Claimer) moveSnapshot(ctx context.Context, old types.Volume, what string) (id string, made bool, err error) {
	oldID := aws.ToString(old.VolumeId)
	snaps, err := c.moveSnapshots(ctx, oldID)
	if err != nil {
		return "", false, err
	}
	if len(snaps) > 0 {
		id := aws.ToString(snaps[0].SnapshotId)
		c.log().Info("resuming with the snapshot of an earlier boot", "snapshot", id, "progress", aws.ToString(snaps[0].Progress))
		return id, false, nil
	}
	// The original's own tags too: an IAM policy scoped by a tag
	// (aws:RequestTag) must see it on the request.
	snapTags := userTags(old)
	snapTags[TagMovedFrom], snapTags[TagMovingTo] = oldID, c.Instance.AZ
	in := &ec2.CreateSnapshotInput{
		VolumeId:          aws.String(oldID),
		Description:       aws.String("spotroot: " + what),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: toTags(snapTags)}},
	}
	// CreateSnapshot takes no ClientToken: a retry after an answer lost
	// once EC2 had committed (a 5xx, a reset, a timeout) makes a second
	// snapshot. So the SDK does not retry it; an unclear failure is judged
	// by looking for the snapshot (by its tag, allowing for EC2's lagging
	// views) before asking again.
	for attempt := 1; ; attempt++ {
		cctx, cancel := c.call(ctx)
		snap, err := c.EC2.CreateSnapshot(cctx, in, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
		cancel()
		if err == nil {
			return aws.ToString(snap.SnapshotId), true, nil
		}
		if !unclear(err) || attempt == 3 {
			return "", false, apiError("CreateSnapshot", what, err)
		}
		c.log().Info("the snapshot request got no clear answer; looking for the snapshot before asking again", "volume", oldID, "error", err)
		deadline := time.Now().Add(lagWait)
		for time.Now().Before(deadline) {
			if snaps, err := c.moveSnapshots(ctx, oldID); err == nil && len(snaps) > 0 {
				return aws.ToString(snaps[0].SnapshotId), true, nil
			}
			if !sleep(ctx, c.maxPoll()) {
				return "", false, fmt.Errorf("%s: %w", what, ctx.Err())
			}
		}
	}
}

// lagWait is how long a resource EC2 created may stay invisible to
// Describe calls (eventual consistency) before spotroot concludes it was
// not created.
const lagWait = 10 * time.Second

// unclear reports whether a failed call may have been carried out: a
// server error, throttling aside, or no answer at all.
func unclear(err error) bool {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		code := re.HTTPStatusCode()
		return code == 0 || code >= 500 // 0: no answer arrived
	}
	return ErrorCode(err) == "" // transport: reset, timeout
}

// moveProgress describes a move under way (for the one line a boot prints
// before the image's init). What this boot made or found (known) is named
// even while EC2's views do not show it yet.
func (c *Claimer) moveProgress(ctx context.Context, old types.Volume, reason string, known moveState) error {
	oldID := aws.ToString(old.VolumeId)
	e := &MoveInProgressError{Volume: oldID, From: aws.ToString(old.AvailabilityZone), To: tagValue(old, TagMovingTo), Reason: reason}
	if e.To == "" {
		e.To = c.Instance.AZ
	}
	if e.Reason == "" && e.To != c.Instance.AZ {
		e.Reason = "only a boot in " + e.To + " resumes it"
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	e.Snapshot, e.Copy = known.snapshot, known.copy
	if snaps, err := c.moveSnapshots(pctx, oldID); err == nil {
		for i, s := range snaps {
			if id := aws.ToString(s.SnapshotId); id == known.snapshot || (known.snapshot == "" && i == 0) {
				e.Snapshot, e.Progress = id, aws.ToString(s.Progress)
				if s.State == types.SnapshotStateCompleted {
					e.Progress = "completed"
				}
			}
		}
	}
	if e.Copy == "" {
		if copies, err := c.describe(pctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("tag:" + TagMovedFrom), Values: []string{oldID}}}}, "find the copy of "+oldID); err == nil && len(copies) > 0 {
			e.Copy, e.Snapshot = aws.ToString(copies[0].VolumeId), aws.ToString(copies[0].SnapshotId)
		}
	}
	return e
}

// dropMoveSnapshots deletes the move's snapshots other than keep (a crashed
// boot's or a lost racer's); failures only warn.
func (c *Claimer) dropMoveSnapshots(ctx context.Context, oldID, keep string) {
	snaps, err := c.moveSnapshots(ctx, oldID)
	if err != nil {
		c.log().Warn("could not list the move's snapshots", "error", err)
		return
	}
	for _, s := range snaps {
		c.dropSnapshot(ctx, aws.ToString(s.SnapshotId), keep)
	}
}

// dropIfUnused deletes a snapshot a lost racer made, unless the move's copy
// was made from it (the winner may have picked it up).
func (c *Claimer) dropIfUnused(ctx context.Context, oldID, snapID string) {
	// The copy exists (that is why we lost), but may not be visible yet.
	var copies []types.Volume
	for deadline := time.Now().Add(lagWait); ; {
		var err error
		copies, err = c.describe(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("tag:" + TagMovedFrom), Values: []string{oldID}}}}, "find the copy of "+oldID)
		if err == nil && len(copies) > 0 {
			break
		}
		if time.Now().After(deadline) || !sleep(ctx, c.maxPoll()) {
			return // cannot tell: a later boot's clean-up (finishMove) removes it
		}
	}
	for _, v := range copies {
		if aws.ToString(v.SnapshotId) == snapID {
			return
		}
	}
	c.dropSnapshot(ctx, snapID, "")
}

func (c *Claimer) dropSnapshot(ctx context.Context, id, keep string) {
	if id == "" || id == keep {
		return
	}
	if err := c.deleteSnapshot(ctx, id); err != nil {
		c.log().Warn("could not delete a snapshot the move does not need", "snapshot", id, "error", err)
	}
}

// tag sets one tag on a resource.
func (c *Claimer) tag(ctx context.Context, id, key, value, what string) error {
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.EC2.CreateTags(cctx, &ec2.CreateTagsInput{Resources: []string{id},
		Tags: []types.Tag{{Key: aws.String(key), Value: aws.String(value)}}})
	if err != nil {
		return apiError("CreateTags", fmt.Sprintf("%s: tag %s %s=%s", what, id, key, value), err)
	}
	return nil
}

func (c *Claimer) waitSnapshot(ctx context.Context, id string) error {
	last := time.Now()
	return c.poll(ctx, func() (bool, error) {
		cctx, cancel := c.call(ctx)
		defer cancel()
		out, err := c.EC2.DescribeSnapshots(cctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if ErrorCode(err) == "InvalidSnapshot.NotFound" {
			// A new snapshot may not be visible yet (eventual
			// consistency); one deleted meanwhile ends with the budget.
			return false, nil
		}
		if err != nil {
			return false, apiError("DescribeSnapshots", "wait for snapshot "+id, err)
		}
		for _, s := range out.Snapshots {
			switch s.State {
			case types.SnapshotStateCompleted:
				return true, nil
			case types.SnapshotStateError:
				return false, fmt.Errorf("snapshot %s failed: %s", id, aws.ToString(s.StateMessage))
			}
			if time.Since(last) > 30*time.Second {
				last = time.Now()
				c.log().Info("moving the volume: snapshot in progress", "snapshot", id, "progress", aws.ToString(s.Progress))
			}
		}
		return false, nil
	})
}

// deleteMoved removes what a move left behind; failures only warn.
func (c *Claimer) deleteMoved(ctx context.Context, oldID, snapID string) {
	if err := c.deleteVolume(ctx, oldID); err != nil {
		c.log().Warn("could not delete the moved volume", "volume", oldID, "error", err)
	}
	c.dropSnapshot(ctx, snapID, "")
}

// finishMove completes the clean-up of a committed move whose boot was cut
// before it (or that a lagging view hid a racer's snapshot from): the
// move's snapshots other than the copy's source go; with delete_moved, the
// retired original (if still there) and all of them. Best effort.
func (c *Claimer) finishMove(ctx context.Context, vol types.Volume) {
	origID := tagValue(vol, TagMovedFrom)
	if origID == "" {
		return
	}
	orig, err := c.describe(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{origID}}, "look up "+origID)
	if err != nil || len(orig) > 1 || (len(orig) == 1 && tagValue(orig[0], TagMovedTo) != aws.ToString(vol.VolumeId)) {
		return
	}
	if !c.DeleteMoved {
		c.dropMoveSnapshots(ctx, origID, aws.ToString(vol.SnapshotId))
		return
	}
	if len(orig) == 1 {
		c.log().Info("finishing the clean-up of an earlier move (delete_moved)", "volume", origID)
		c.deleteMoved(ctx, origID, "")
	}
	c.dropMoveSnapshots(ctx, origID, "")
}

// abandonMove undoes a move whose original was attached by another boot
// before the commit: the copy and the snapshots are stale. The mark goes
// last, so a failed clean-up leaves the move visibly under way.
func (c *Claimer) abandonMove(ctx context.Context, old types.Volume, copyID, by string) error {
	oldID := aws.ToString(old.VolumeId)
	e := &MoveInProgressError{Volume: oldID, From: aws.ToString(old.AvailabilityZone), To: c.Instance.AZ, Copy: copyID,
		Reason: "abandoned: " + by + " attached the original meanwhile"}
	if err := c.deleteVolume(ctx, copyID); err != nil {
		e.Reason += fmt.Sprintf("; the stale copy %s could not be deleted (%v): delete it, then remove the tag %s from %s", copyID, err, TagMovingTo, oldID)
		return e
	}
	c.dropMoveSnapshots(ctx, oldID, "")
	if err := c.tag(ctx, oldID, TagMovingTo, "", "abandon the move"); err != nil {
		e.Reason += "; " + err.Error()
	}
	return e
}

// checkNotMoving runs after this boot attached vol: if a mover marked it
// meanwhile (it found the volume free just before we attached), this boot
// lets go (the disk is not mounted yet, a plain detach is safe) so that
// either the move or the next boot wins, never both.
func (c *Claimer) checkNotMoving(ctx context.Context, cl Claim) error {
	vols, err := c.describe(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{cl.VolumeID}}, "re-check "+cl.VolumeID)
	if err != nil || len(vols) != 1 || tagValue(vols[0], TagMovingTo) == "" {
		return err
	}
	to := tagValue(vols[0], TagMovingTo)
	c.log().Warn("a move of the volume started while it was being attached here; letting go", "volume", cl.VolumeID, "to", to)
	if err := c.WaitAttached(ctx, cl.VolumeID); err == nil {
		if err := c.detach(ctx, cl.VolumeID, c.Instance.ID, false); err != nil {
			return err
		}
	}
	var vol types.Volume
	if err := c.waitAvailable(ctx, cl.VolumeID, &vol); err != nil {
		return err
	}
	return &MoveInProgressError{Volume: cl.VolumeID, From: aws.ToString(vols[0].AvailabilityZone), To: to,
		Reason: "it started while this boot attached the volume; this boot let go"}
}

// userTags are the tags a move carries over: all but AWS's and the
// move's own bookkeeping.
func userTags(v types.Volume) map[string]string {
	tags := map[string]string{}
	for _, t := range v.Tags {
		k := aws.ToString(t.Key)
		// The move's own bookkeeping stays behind; the managed tag and
		// the selector (spotroot:pool among them) travel: the IAM policy
		// requires them on the request (aws:RequestTag) and the copy must
		// match the same selector.
		switch k {
		case TagInstance, TagMovedTo, TagMovedFrom, TagMovingTo, "spotroot:boot":
			continue
		}
		if !strings.HasPrefix(k, "aws:") {
			tags[k] = aws.ToString(t.Value)
		}
	}
	return tags
}
