package claim

import (
	"context"
	"fmt"
	"sort"
	"strings"

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
