package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// VolumeCreateOpts is `spotroot volume create`.
type VolumeCreateOpts struct {
	FromInstance string // snapshot this instance's root volume
	FromSnapshot string
	Empty        bool
	SizeGiB      int32 // with Empty (or larger than the source)
	Name         string
	Pool         string
	AZ           string
	Type         string // "" = gp3
	DryRun       bool
	// TagKey/TagValue is an extra managed tag (iam-policy --tag-key);
	// spotroot:managed=true is always set.
	TagKey, TagValue string
}

// CreateVolume creates the tagged persistent volume, waits until it is
// available and returns its id. With DryRun it only prints the plan (it
// still reads EC2 to resolve the source and the zone).
func CreateVolume(ctx context.Context, c EC2, region string, o VolumeCreateOpts, out io.Writer) (string, error) {
	n := 0
	for _, set := range []bool{o.FromInstance != "", o.FromSnapshot != "", o.Empty} {
		if set {
			n++
		}
	}
	if n != 1 {
		return "", errors.New("volume create: give exactly one of --from-instance i-…, --from-snapshot snap-… or --size N --empty")
	}
	if o.Name == "" {
		return "", errors.New("volume create: --name is required (the volume's Name tag, which the instance's user-data names)")
	}
	if o.Empty && o.SizeGiB <= 0 {
		return "", errors.New("volume create --empty: --size N (GiB) is required")
	}
	if o.Type == "" {
		o.Type = "gp3"
	}
	what := "volume " + o.Name
	var snapID, srcVol, srcDesc string
	var srcSize int32
	switch {
	case o.FromInstance != "":
		inst, err := describeInstance(ctx, c, o.FromInstance)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		root := aws.ToString(inst.RootDeviceName)
		for _, b := range inst.BlockDeviceMappings {
			if aws.ToString(b.DeviceName) == root && b.Ebs != nil {
				srcVol = aws.ToString(b.Ebs.VolumeId)
			}
		}
		if srcVol == "" {
			return "", fmt.Errorf("%s: instance %s has no EBS volume at its root device %s: use --from-snapshot", what, o.FromInstance, root)
		}
		if o.AZ == "" && inst.Placement != nil {
			o.AZ = aws.ToString(inst.Placement.AvailabilityZone)
		}
		vols, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{srcVol}})
		if err != nil {
			return "", fmt.Errorf("%s: describe root volume %s of %s: %w", what, srcVol, o.FromInstance, err)
		}
		if len(vols.Volumes) == 1 {
			srcSize = aws.ToInt32(vols.Volumes[0].Size)
		}
		srcDesc = fmt.Sprintf("root volume %s (%s, %d GiB) of instance %s", srcVol, root, srcSize, o.FromInstance)
	case o.FromSnapshot != "":
		snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{o.FromSnapshot}})
		if err != nil {
			return "", fmt.Errorf("%s: describe snapshot %s: %w", what, o.FromSnapshot, err)
		}
		if len(snaps.Snapshots) != 1 {
			return "", fmt.Errorf("%s: snapshot %s not found in %s", what, o.FromSnapshot, region)
		}
		snapID, srcSize = o.FromSnapshot, aws.ToInt32(snaps.Snapshots[0].VolumeSize)
		srcDesc = fmt.Sprintf("snapshot %s (%d GiB)", snapID, srcSize)
	}
	if o.AZ == "" {
		return "", fmt.Errorf("%s: --az is required with --from-snapshot and --empty (the zone the instances will run in)", what)
	}
	size := o.SizeGiB
	if size == 0 {
		size = srcSize
	}
	if size < srcSize {
		return "", fmt.Errorf("%s: --size %d is smaller than the source's %d GiB", what, size, srcSize)
	}
	// The boot path claims by tag: a second volume with the same Name in
	// the zone would make it refuse to choose.
	if o.Pool == "" {
		ex, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{filter("tag:Name", o.Name), filter("availability-zone", o.AZ)}})
		if err != nil {
			return "", fmt.Errorf("%s: check for an existing volume named %s in %s: %w", what, o.Name, o.AZ, err)
		}
		if len(ex.Volumes) > 0 {
			return "", fmt.Errorf("%s: %s already has a volume named %s (%s): pick another --name, or use --pool for interchangeable volumes",
				what, o.AZ, o.Name, aws.ToString(ex.Volumes[0].VolumeId))
		}
	}
	tags := VolumeTags(o.Name, o.Pool)
	if o.TagKey != "" && o.TagValue != "" {
		tags[o.TagKey] = o.TagValue // the key `spotroot iam-policy --tag-key` scopes AttachVolume to
	}

	if o.DryRun {
		fmt.Fprintf(out, "plan for volume %s in %s (dry run; nothing is created):\n", o.Name, o.AZ)
		step := 1
		if srcVol != "" {
			fmt.Fprintf(out, "  %d. CreateSnapshot of %s, tags %s; wait until completed\n", step, srcDesc, fmtTags(tags))
			step++
			srcDesc = "that snapshot"
		}
		src := "empty"
		if srcDesc != "" {
			src = "from " + srcDesc
		}
		fmt.Fprintf(out, "  %d. CreateVolume %s, %d GiB %s in %s, tags %s; wait until available\n", step, src, size, o.Type, o.AZ, fmtTags(tags))
		fmt.Fprintf(out, "  then print the volume id; instances claim it with user-data from: spotroot userdata --volume %s\n", o.Name)
		return "", nil
	}

	if srcVol != "" {
		snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(srcVol),
			Description:       aws.String("spotroot: " + srcDesc),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: sdkTags(tags)}}})
		if err != nil {
			return "", fmt.Errorf("%s: create snapshot of %s: %w", what, srcDesc, err)
		}
		snapID = aws.ToString(snap.SnapshotId)
		fmt.Fprintf(out, "snapshot %s of %s: waiting until completed\n", snapID, srcVol)
		if err := waitFor(ctx, "snapshot "+snapID, func() (bool, error) {
			s, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snapID}})
			if err != nil || len(s.Snapshots) != 1 {
				return false, err
			}
			switch s.Snapshots[0].State {
			case types.SnapshotStateCompleted:
				return true, nil
			case types.SnapshotStateError:
				return false, fmt.Errorf("snapshot %s failed: %s", snapID, aws.ToString(s.Snapshots[0].StateMessage))
			}
			return false, nil
		}); err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
	}
	in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String(o.AZ), Size: aws.Int32(size), VolumeType: types.VolumeType(o.Type),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: sdkTags(tags)}}}
	if snapID != "" {
		in.SnapshotId = aws.String(snapID)
	}
	v, err := c.CreateVolume(ctx, in)
	if err != nil {
		src := "empty"
		if snapID != "" {
			src = "from " + snapID
		}
		return "", fmt.Errorf("create volume %s %s in %s: %w", o.Name, src, o.AZ, err)
	}
	id := aws.ToString(v.VolumeId)
	fmt.Fprintf(out, "volume %s: waiting until available\n", id)
	if err := waitFor(ctx, "volume "+id, func() (bool, error) {
		d, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		if err != nil || len(d.Volumes) != 1 {
			return false, err
		}
		switch d.Volumes[0].State {
		case types.VolumeStateAvailable:
			return true, nil
		case types.VolumeStateError:
			return false, fmt.Errorf("volume %s failed to create (state error)", id)
		}
		return false, nil
	}); err != nil {
		return id, fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintln(out, id)
	return id, nil
}

// waitFor polls cond every PollInterval until it is true, fails, or ctx ends.
func waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	start := time.Now()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: gave up after %v: %w (it may still complete; check with spotroot status)", what, time.Since(start).Round(time.Second), ctx.Err())
		case <-time.After(PollInterval):
		}
	}
}

func describeInstance(ctx context.Context, c EC2, id string) (types.Instance, error) {
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return types.Instance{}, fmt.Errorf("describe instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			return i, nil
		}
	}
	return types.Instance{}, fmt.Errorf("instance %s not found", id)
}

func fmtTags(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// ResolveVolume finds the persistent volume by id or by its Name tag.
func ResolveVolume(ctx context.Context, c EC2, ref string) (types.Volume, error) {
	in := &ec2.DescribeVolumesInput{}
	if strings.HasPrefix(ref, "vol-") {
		in.VolumeIds = []string{ref}
	} else {
		in.Filters = []types.Filter{filter("tag:Name", ref)}
	}
	out, err := c.DescribeVolumes(ctx, in)
	if err != nil {
		return types.Volume{}, fmt.Errorf("find volume %s: %w", ref, err)
	}
	switch len(out.Volumes) {
	case 0:
		return types.Volume{}, fmt.Errorf("find volume %s: no such volume (create it with spotroot volume create --name %s)", ref, ref)
	case 1:
		return out.Volumes[0], nil
	}
	var ids []string
	for _, v := range out.Volumes {
		ids = append(ids, aws.ToString(v.VolumeId)+" in "+aws.ToString(v.AvailabilityZone))
	}
	return types.Volume{}, fmt.Errorf("find volume %s: %d volumes carry Name=%s (%s): pass the vol-… id", ref, len(ids), ref, strings.Join(ids, ", "))
}
