package claim

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/iampolicy"
)

// createAndAttach makes the volume v describes (none exists yet), tagged so
// the next boot finds it, and attaches it.
func (c *Claimer) createAndAttach(ctx context.Context, v config.Volume, tags map[string]string) (Claim, error) {
	spec := v.Create
	in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String(c.Instance.AZ)}
	if spec.SizeGiB > 0 {
		in.Size = aws.Int32(int32(spec.SizeGiB))
	}
	volType := spec.Type
	if volType == "" {
		volType = "gp3"
	}
	in.VolumeType = types.VolumeType(volType)
	if spec.IOPS > 0 {
		in.Iops = aws.Int32(int32(spec.IOPS))
	}
	if spec.Throughput > 0 {
		in.Throughput = aws.Int32(int32(spec.Throughput))
	}
	from := spec.From
	if from == "" {
		from = "ami"
	}
	switch {
	case from == "ami":
		snap, err := c.imageRootSnapshot(ctx)
		if err != nil {
			return Claim{}, err
		}
		in.SnapshotId = aws.String(snap)
	case strings.HasPrefix(from, "snap-"):
		in.SnapshotId = aws.String(from)
	}
	// The managed tag and the claim go in the request itself: the IAM
	// policy requires the one (aws:RequestTag) and allows no retagging
	// after the create.
	all := map[string]string{TagCreatedBy: c.Instance.ID, TagInstance: c.Instance.ID,
		iampolicy.DefaultTagKey: iampolicy.DefaultTagValue}
	for k, val := range tags {
		all[k] = val
	}
	in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: toTags(all)}}
	what := fmt.Sprintf("create %s volume for %s in %s from %s", volType, v.Describe(), c.Instance.AZ, from)
	id, err := c.createVolume(ctx, in, what)
	if err != nil {
		return Claim{}, err
	}
	c.log().Info("created volume", "volume", id, "from", from, "type", volType)
	var vol types.Volume
	if err := c.waitAvailable(ctx, id, &vol); err != nil {
		return Claim{}, fmt.Errorf("%s: wait for %s: %w", what, id, err)
	}
	cl, err := c.Attach(ctx, vol)
	if err != nil {
		return Claim{}, err
	}
	cl.Created = true
	if from == "empty" {
		cl.NeedsFormat = true
		cl.FSType = spec.FSType
		if cl.FSType == "" {
			cl.FSType = "ext4"
		}
	}
	return cl, nil
}

func (c *Claimer) createVolume(ctx context.Context, in *ec2.CreateVolumeInput, what string) (string, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.CreateVolume(cctx, in)
	if err != nil {
		return "", apiError("CreateVolume", what, err)
	}
	return aws.ToString(out.VolumeId), nil
}

// imageRootSnapshot returns the snapshot behind the root device of the
// instance's own AMI.
func (c *Claimer) imageRootSnapshot(ctx context.Context) (string, error) {
	what := "find the root snapshot of " + c.ImageID
	if c.ImageID == "" {
		return "", fmt.Errorf("%s: the instance's image id is unknown", what)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.DescribeImages(cctx, &ec2.DescribeImagesInput{ImageIds: []string{c.ImageID}})
	if err != nil {
		return "", apiError("DescribeImages", what, err)
	}
	for _, img := range out.Images {
		for _, m := range img.BlockDeviceMappings {
			if aws.ToString(m.DeviceName) == aws.ToString(img.RootDeviceName) && m.Ebs != nil && m.Ebs.SnapshotId != nil {
				return aws.ToString(m.Ebs.SnapshotId), nil
			}
		}
	}
	return "", fmt.Errorf("%s: the image has no EBS root snapshot (instance-store AMI?); use create.from: empty or a snap-… id", what)
}

// moveAndAttach copies a volume from another AZ into this one (snapshot,
// then a new volume with the same tags, size and type), marks the old one
// so it is never claimed again, and attaches the copy.
func (c *Claimer) moveAndAttach(ctx context.Context, old types.Volume) (Claim, error) {
	oldID := aws.ToString(old.VolumeId)
	what := fmt.Sprintf("move %s from %s to %s", oldID, aws.ToString(old.AvailabilityZone), c.Instance.AZ)
	for _, a := range old.Attachments {
		state, err := c.instanceState(ctx, aws.ToString(a.InstanceId))
		if err != nil {
			return Claim{}, err
		}
		if state == "running" || state == "pending" {
			return Claim{}, fmt.Errorf("%s: %w", what, &InUseError{Volume: oldID, Instance: aws.ToString(a.InstanceId) + " (" + state + ")", State: string(a.State)})
		}
	}
	c.log().Info("volume is in another AZ: copying it through a snapshot", "volume", oldID, "from", aws.ToString(old.AvailabilityZone), "to", c.Instance.AZ)
	start := time.Now()
	// The snapshot and the copy carry the volume's own tags (the managed
	// tag among them, which the IAM policy requires in both requests).
	tags := map[string]string{}
	for _, t := range old.Tags {
		k := aws.ToString(t.Key)
		if !strings.HasPrefix(k, "aws:") && k != TagInstance && k != TagMovedTo {
			tags[k] = aws.ToString(t.Value)
		}
	}
	tags[TagMovedFrom] = oldID
	cctx, cancel := c.call(ctx)
	snap, err := c.EC2.CreateSnapshot(cctx, &ec2.CreateSnapshotInput{
		VolumeId:    aws.String(oldID),
		Description: aws.String("spotroot: " + what),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot,
			Tags: toTags(tags)}},
	})
	cancel()
	if err != nil {
		return Claim{}, apiError("CreateSnapshot", what, err)
	}
	snapID := aws.ToString(snap.SnapshotId)
	if err := c.waitSnapshot(ctx, snapID); err != nil {
		return Claim{}, fmt.Errorf("%s: %w", what, err)
	}
	tags[TagInstance] = c.Instance.ID
	in := &ec2.CreateVolumeInput{
		AvailabilityZone:  aws.String(c.Instance.AZ),
		SnapshotId:        aws.String(snapID),
		Size:              old.Size,
		VolumeType:        old.VolumeType,
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
	newID, err := c.createVolume(ctx, in, what)
	if err != nil {
		return Claim{}, err
	}
	var vol types.Volume
	if err := c.waitAvailable(ctx, newID, &vol); err != nil {
		return Claim{}, fmt.Errorf("%s: wait for the copy %s: %w", what, newID, err)
	}
	tctx, tcancel := c.call(ctx)
	_, err = c.EC2.CreateTags(tctx, &ec2.CreateTagsInput{Resources: []string{oldID},
		Tags: []types.Tag{{Key: aws.String(TagMovedTo), Value: aws.String(newID)}}})
	tcancel()
	if err != nil {
		// Without the mark the old volume would still match the tag and
		// make the next lookup ambiguous: fail rather than half-move.
		return Claim{}, apiError("CreateTags", fmt.Sprintf("%s: mark %s %s=%s", what, oldID, TagMovedTo, newID), err)
	}
	c.log().Info("moved volume", "from", oldID, "to", newID, "snapshot", snapID, "took", time.Since(start).Round(time.Millisecond).String())
	if c.DeleteMoved {
		c.deleteMoved(ctx, oldID, snapID)
	}
	cl, err := c.Attach(ctx, vol)
	if err != nil {
		return Claim{}, err
	}
	cl.Created, cl.MovedFrom = true, oldID
	return cl, nil
}

// waitSnapshot polls until the snapshot completed. It asks with a
// snapshot-id filter: a snapshot just created is NotFound for a while
// (eventual consistency), and an empty answer is waited for within the
// consistency grace instead of failing.
func (c *Claimer) waitSnapshot(ctx context.Context, id string) error {
	var missingSince time.Time
	return c.poll(ctx, func() (bool, error) {
		cctx, cancel := c.call(ctx)
		defer cancel()
		out, err := c.EC2.DescribeSnapshots(cctx, &ec2.DescribeSnapshotsInput{Filters: []types.Filter{
			{Name: aws.String("snapshot-id"), Values: []string{id}}}})
		if err != nil {
			return false, apiError("DescribeSnapshots", "wait for snapshot "+id, err)
		}
		if len(out.Snapshots) == 0 {
			if missingSince.IsZero() {
				missingSince = time.Now()
			} else if time.Since(missingSince) > c.grace() {
				return false, fmt.Errorf("snapshot %s disappeared (not visible for %v)", id, c.grace())
			}
			return false, nil
		}
		missingSince = time.Time{}
		for _, s := range out.Snapshots {
			switch s.State {
			case types.SnapshotStateCompleted:
				return true, nil
			case types.SnapshotStateError:
				return false, fmt.Errorf("snapshot %s failed: %s", id, aws.ToString(s.StateMessage))
			}
		}
		return false, nil
	})
}

// deleteMoved removes what a move left behind; failures only warn.
func (c *Claimer) deleteMoved(ctx context.Context, oldID, snapID string) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	if _, err := c.EC2.DeleteVolume(cctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(oldID)}); err != nil {
		c.log().Warn("could not delete the moved volume", "volume", oldID, "error", apiError("DeleteVolume", "delete "+oldID, err))
	}
	if _, err := c.EC2.DeleteSnapshot(cctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snapID)}); err != nil {
		c.log().Warn("could not delete the move's snapshot", "snapshot", snapID, "error", apiError("DeleteSnapshot", "delete "+snapID, err))
	}
}

func toTags(m map[string]string) []types.Tag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]types.Tag, len(keys))
	for i, k := range keys {
		out[i] = types.Tag{Key: aws.String(k), Value: aws.String(m[k])}
	}
	return out
}
