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
	case err != nil:
		return Claim{}, err
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
	// A volume named by id or tag needs no claim tag: it is found by its
	// own tags (and the default IAM policy grants no CreateTags on it).
	return c.Attach(ctx, vol)
}

// freeFromDeadInstance handles a volume still attached to another
// instance: a running one keeps it (error); a terminated, stopping or
// stopped one releases it, by itself within WaitDetach or, with
// ForceDetach, forcibly. vol is refreshed.
func (c *Claimer) freeFromDeadInstance(ctx context.Context, vol *types.Volume) error {
	id := aws.ToString(vol.VolumeId)
	var other *types.VolumeAttachment
	for i := range vol.Attachments {
		if aws.ToString(vol.Attachments[i].InstanceId) != c.Instance.ID {
			other = &vol.Attachments[i]
		}
	}
	if other == nil {
		return nil
	}
	owner := aws.ToString(other.InstanceId)
	state, err := c.instanceState(ctx, owner)
	if err != nil {
		return err
	}
	switch state {
	case "running", "pending":
		return &InUseError{Volume: id, Instance: owner + " (" + state + ")", State: string(other.State)}
	}
	c.log().Info("volume still attached to a dead instance; waiting for the detach", "volume", id, "instance", owner, "state", state)
	wctx, cancel := context.WithTimeout(ctx, c.waitDetach())
	err = c.waitAvailable(wctx, id, vol)
	cancel()
	if err == nil {
		return nil
	}
	if !c.ForceDetach {
		return fmt.Errorf("volume %s is still %s to %s (%s) after %v; set force_detach: true to detach it forcibly", id, other.State, owner, state, c.waitDetach())
	}
	c.log().Warn("force-detaching volume from dead instance", "volume", id, "instance", owner, "state", state)
	cctx, ccancel := c.call(ctx)
	_, err = c.EC2.DetachVolume(cctx, &ec2.DetachVolumeInput{VolumeId: aws.String(id), InstanceId: aws.String(owner), Force: aws.Bool(true)})
	ccancel()
	if err != nil && ErrorCode(err) != "IncorrectState" && ErrorCode(err) != "InvalidAttachment.NotFound" {
		return apiError("DetachVolume", fmt.Sprintf("force-detach %s from %s", id, owner), err)
	}
	return c.waitAvailable(ctx, id, vol)
}

func (c *Claimer) waitDetach() time.Duration {
	if c.WaitDetach > 0 {
		return c.WaitDetach
	}
	return 30 * time.Second
}

// instanceState returns the state name of an instance; one EC2 no longer
// knows is terminated.
func (c *Claimer) instanceState(ctx context.Context, id string) (string, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.DescribeInstances(cctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if ErrorCode(err) == "InvalidInstanceID.NotFound" {
		return "terminated", nil
	}
	if err != nil {
		return "", apiError("DescribeInstances", "describe "+id, err)
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if in.State != nil {
				return string(in.State.Name), nil
			}
		}
	}
	return "terminated", nil
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

// tagClaimed records the claim on the volume; best effort (the IAM policy
// may not allow it, and the boot must not fail for a tag).
func (c *Claimer) tagClaimed(ctx context.Context, volID string) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.EC2.CreateTags(cctx, &ec2.CreateTagsInput{Resources: []string{volID},
		Tags: []types.Tag{{Key: aws.String(TagInstance), Value: aws.String(c.Instance.ID)}}})
	if err != nil {
		c.log().Warn("could not tag the claimed volume", "volume", volID, "tag", TagInstance, "error", apiError("CreateTags", "tag "+volID, err))
	}
}
