package claim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/internal/config"
)

// Claim finds (or makes) the volume v names and attaches it to this
// instance, handling the cases operators meet: a pool of interchangeable
// volumes, a volume still attached to the dead previous instance, a volume
// in another AZ, no volume yet. It returns once the attach was requested;
// WaitAttached confirms it.
func (c *Claimer) Claim(ctx context.Context, v config.Volume) (Claim, error) {
	if len(v.Pool) > 0 {
		return c.claimPool(ctx, v)
	}
	vol, err := c.Find(ctx, v)
	var notFound *NotFoundError
	var otherAZ *OtherAZError
	switch {
	case errors.As(err, &notFound) && v.Create != nil:
		return c.createAndAttach(ctx, v, v.Tag)
	case errors.As(err, &otherAZ) && c.CrossAZ != "fail":
		if len(otherAZ.Volumes) > 1 {
			return Claim{}, fmt.Errorf("%d volumes in other AZs have %s (%s); refusing to guess which to move", len(otherAZ.Volumes), v.Describe(), ids(otherAZ.Volumes))
		}
		return c.moveAndAttach(ctx, otherAZ.Volumes[0])
	case errors.As(err, &otherAZ) && len(otherAZ.Volumes) == 1 && tagValue(otherAZ.Volumes[0], TagMovingTo) != "":
		// cross_az: fail, but a move is under way: say how far it is.
		return Claim{}, c.moveProgress(ctx, otherAZ.Volumes[0], "cross_az: fail; only a boot in "+tagValue(otherAZ.Volumes[0], TagMovingTo)+" with cross_az: move resumes it", moveState{})
	case err != nil:
		return Claim{}, err
	}
	if vol.State == types.VolumeStateCreating {
		// Made by a boot cut right after CreateVolume (create: or a move).
		if err := c.waitAvailable(ctx, aws.ToString(vol.VolumeId), &vol); err != nil {
			return Claim{}, fmt.Errorf("wait for %s, still being created: %w", aws.ToString(vol.VolumeId), err)
		}
	}
	if err := c.freeFromDeadInstance(ctx, &vol); err != nil {
		// EC2's view may still show an owner running that was just
		// terminated: look once more after the consistency grace.
		var inUse *InUseError
		if !errors.As(err, &inUse) || !sleep(ctx, c.grace()) {
			return Claim{}, err
		}
		if vol, err = c.Find(ctx, v); err != nil {
			return Claim{}, err
		}
		if err := c.freeFromDeadInstance(ctx, &vol); err != nil {
			return Claim{}, err
		}
	}
	c.finishMove(ctx, vol)
	cl, err := c.Attach(ctx, vol)
	if err != nil {
		return Claim{}, err
	}
	if err := c.checkNotMoving(ctx, cl); err != nil {
		return Claim{}, err
	}
	// A volume named by id or tag needs no claim tag: it is found by its
	// own tags (and the default IAM policy grants no CreateTags on it).
	return cl, nil
}

// waitAvailable polls until the volume is available (no attachments). A
// volume EC2's view does not show (yet: a new one is NotFound for a while)
// is waited for within the consistency grace.
func (c *Claimer) waitAvailable(ctx context.Context, id string, into *types.Volume) error {
	var missingSince time.Time
	return c.poll(ctx, func() (bool, error) {
		v, err := c.describeOne(ctx, id, "wait for "+id+" to become available")
		if err != nil {
			return false, err
		}
		if v == nil {
			if missingSince.IsZero() {
				missingSince = time.Now()
			} else if time.Since(missingSince) > c.grace() {
				return false, fmt.Errorf("volume %s disappeared (not visible for %v)", id, c.grace())
			}
			return false, nil
		}
		missingSince = time.Time{}
		if v.State == types.VolumeStateAvailable && len(v.Attachments) == 0 {
			*into = *v
			return true, nil
		}
		if v.State == types.VolumeStateError {
			return false, fmt.Errorf("volume %s is in state error", id)
		}
		return false, nil
	})
}

// poll calls check with growing delays until it is done, fails, or ctx ends.
func (c *Claimer) poll(ctx context.Context, check func() (bool, error)) error {
	delay := c.PollInterval
	if delay == 0 {
		delay = 200 * time.Millisecond
	}
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, c.maxPoll())
	}
}

// tagClaimed records the claim on the volume (spotroot:instance=<id>, so
// operators see who held which member last) when TagClaims asks; best effort (the IAM policy may
// not allow it, and the boot must not fail for a tag), skipped when vol
// carries it already, and not sent again when its answer is lost (EC2
// applied it, or the tag is missing: it is informational).
func (c *Claimer) tagClaimed(ctx context.Context, volID string, vol types.Volume) {
	if !c.TagClaims || tagValue(vol, TagInstance) == c.Instance.ID {
		return
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.EC2.CreateTags(cctx, &ec2.CreateTagsInput{Resources: []string{volID},
		Tags: []types.Tag{{Key: aws.String(TagInstance), Value: aws.String(c.Instance.ID)}}}, onlyThrottleRetry)
	if err != nil {
		c.log().Warn("could not tag the claimed volume", "volume", volID, "tag", TagInstance, "error", apiError("CreateTags", "tag "+volID, err))
	}
}
