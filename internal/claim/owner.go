package claim

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The detach rules. A volume still attached to another instance is only
// ever taken from an owner that can no longer write to it:
//
//	running, pending      never touched (InUseError)
//	stopping, shutting-down
//	                      wait: the OS may still be flushing; never forced
//	stopped               a plain DetachVolume (never forced): a stopped
//	                      instance keeps its volumes forever otherwise
//	terminated            wait for EC2 to release it; force only after
//	                      timeouts.detach, only with force_detach: true
//	NotFound              unknown while the attachment is younger than
//	                      NotFoundGrace (eventual consistency: a just-launched
//	                      owner is NotFound too), terminated after
//
// AWS documents a forced detach as "a last resort to detach a volume from a
// failed instance ... can lead to data loss or a corrupted file system"
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DetachVolume.html);
// the EBS CSI driver never forces one (pkg/cloud/cloud.go DetachDisk sends
// DetachVolume without Force and takes IncorrectState and
// InvalidAttachment.NotFound as "already detached", as detach below does)
// and treats DescribeInstances as eventually consistent
// (kubernetes-sigs/aws-ebs-csi-driver#801; on forcing,
// kubernetes/kubernetes#38824; and
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/query-api-troubleshooting.html#eventual-consistency).

// DefaultNotFoundGrace is how old an attachment must be before an owner EC2
// answers InvalidInstanceID.NotFound for counts as gone. EC2 keeps
// terminated instances visible for about an hour, so a NotFound owner of an
// old attachment is long gone; a young one may be a launch EC2 has not
// propagated yet.
const DefaultNotFoundGrace = 5 * time.Minute

// owner states beyond EC2's own names.
const (
	stateUnknown = "unknown" // NotFound, attachment too young to tell
	stateGone    = "gone"    // NotFound, attachment old: terminated
)

func (c *Claimer) notFoundGrace() time.Duration {
	if c.NotFoundGrace > 0 {
		return c.NotFoundGrace
	}
	return DefaultNotFoundGrace
}

// ownerState is the state of the instance behind attachment a.
func (c *Claimer) ownerState(ctx context.Context, a types.VolumeAttachment) (string, error) {
	state, err := c.instanceState(ctx, aws.ToString(a.InstanceId))
	if err != nil || state != stateUnknown {
		return state, err
	}
	if t := aws.ToTime(a.AttachTime); !t.IsZero() && c.ec2Now().Sub(t) > c.notFoundGrace() {
		return stateGone, nil
	}
	return stateUnknown, nil
}

// freeFromDeadInstance applies the detach rules to a volume attached to
// another instance; on success vol is refreshed and available.
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
	deadline := time.Now().Add(c.waitDetach())
	state, err := c.ownerState(ctx, *other)
	if err != nil {
		return err
	}
	// Wait while the owner is on its way down: its OS may be flushing.
	for state == "stopping" || state == "shutting-down" {
		c.log().Info("volume still attached to a dead instance; waiting for the detach (never forced while its OS may be flushing)", "volume", id, "instance", owner, "state", state)
		if time.Now().After(deadline) {
			return &InUseError{Volume: id, Instance: owner + " (" + state + ")", State: string(other.State),
				Err: fmt.Errorf("still %s after %v; spotroot never forces a detach from an instance that may still be writing", state, c.waitDetach())}
		}
		if done, err := c.released(ctx, id, vol, min(time.Until(deadline), c.maxPoll()*2)); err != nil || done {
			return err
		}
		if state, err = c.ownerState(ctx, *other); err != nil {
			return err
		}
	}
	switch state {
	case "running", "pending", stateUnknown:
		return &InUseError{Volume: id, Instance: owner + " (" + state + ")", State: string(other.State)}
	case "stopped":
		// A stopped instance never lets go by itself; its OS flushed and
		// unmounted on the way down, so a plain detach is safe.
		c.log().Info("volume attached to a stopped instance; detaching it (not forced)", "volume", id, "instance", owner)
		if err := c.detach(ctx, id, owner, false); err != nil {
			return err
		}
		wctx, cancel := context.WithDeadline(ctx, time.Now().Add(c.waitDetach()))
		defer cancel()
		if err := c.waitAvailable(wctx, id, vol); err != nil {
			return fmt.Errorf("detach %s from stopped %s: not released after %v: %w", id, owner, c.waitDetach(), err)
		}
		return nil
	}
	// terminated (or gone): EC2 releases the volume by itself, normally in
	// seconds.
	c.log().Info("volume still attached to a terminated instance; waiting for EC2 to release it", "volume", id, "instance", owner, "state", state)
	if done, err := c.released(ctx, id, vol, time.Until(deadline)); err != nil || done {
		return err
	}
	if !c.ForceDetach {
		return fmt.Errorf("volume %s is still %s to terminated %s after %v; set force_detach: true to detach it forcibly", id, other.State, owner, c.waitDetach())
	}
	// Look again right before forcing: only a terminated owner qualifies.
	if state, err = c.ownerState(ctx, *other); err != nil {
		return err
	}
	if state != "terminated" && state != stateGone {
		return &InUseError{Volume: id, Instance: owner + " (" + state + ")", State: string(other.State),
			Err: fmt.Errorf("the owner is %s now; not forcing", state)}
	}
	c.log().Warn("force-detaching volume from terminated instance", "volume", id, "instance", owner, "waited", c.waitDetach().String())
	target := owner
	if state == stateGone {
		target = "" // EC2 no longer knows the instance: name only the volume
	}
	if err := c.detach(ctx, id, target, true); err != nil {
		return err
	}
	return c.waitAvailable(ctx, id, vol)
}

// released waits up to d for the volume to become available.
func (c *Claimer) released(ctx context.Context, id string, vol *types.Volume, d time.Duration) (bool, error) {
	if d <= 0 {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := c.waitAvailable(wctx, id, vol)
	switch {
	case err == nil:
		return true, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	case wctx.Err() != nil:
		return false, nil
	}
	return false, err
}

func (c *Claimer) detach(ctx context.Context, id, owner string, force bool) error {
	cctx, cancel := c.call(ctx)
	in := &ec2.DetachVolumeInput{VolumeId: aws.String(id), Force: aws.Bool(force)}
	if owner != "" {
		in.InstanceId = aws.String(owner)
	}
	_, err := c.EC2.DetachVolume(cctx, in)
	cancel()
	switch ErrorCode(err) {
	case "InvalidAttachment.NotFound", "IncorrectState":
		// Detached meanwhile, or a detach already under way: the wait
		// that follows tells.
		return nil
	}
	if err == nil {
		return nil
	}
	verb := "detach"
	if force {
		verb = "force-detach"
	}
	return apiError("DetachVolume", fmt.Sprintf("%s %s from %s", verb, id, owner), err)
}

func (c *Claimer) waitDetach() time.Duration {
	if c.WaitDetach > 0 {
		return c.WaitDetach
	}
	return 30 * time.Second
}

// instanceState returns the state name of an instance, stateUnknown when
// EC2 does not know it (see ownerState).
func (c *Claimer) instanceState(ctx context.Context, id string) (string, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.DescribeInstances(cctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if ErrorCode(err) == "InvalidInstanceID.NotFound" {
		return stateUnknown, nil
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
	return stateUnknown, nil
}
