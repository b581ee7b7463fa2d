package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
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

// VolumeResult is what volume create made (or, in a dry run, would make).
type VolumeResult struct {
	Name       string            `json:"name"`
	VolumeID   string            `json:"volume_id,omitempty"`
	SnapshotID string            `json:"snapshot_id,omitempty"`
	AZ         string            `json:"availability_zone"`
	SizeGiB    int32             `json:"size_gib"`
	Type       string            `json:"type"`
	Tags       map[string]string `json:"tags"`
	DryRun     bool              `json:"dry_run,omitempty"`
	Plan       []string          `json:"plan,omitempty"`
	// UserData is the command that prints the user-data claiming it.
	UserData string `json:"userdata_command"`
}

// WaitTimeout is returned when volume create gives up waiting: the
// snapshot or volume may still complete, and Resume says how to go on.
type WaitTimeout struct {
	What    string
	Elapsed time.Duration
	Resume  string
	Err     error
}

func (e *WaitTimeout) Error() string {
	return fmt.Sprintf("gave up waiting for %s after %v (it may still complete); to go on: %s", e.What, e.Elapsed.Round(time.Second), e.Resume)
}

func (e *WaitTimeout) Unwrap() error { return e.Err }

// ProgressEvery is how often a long wait reports its progress.
var ProgressEvery = 15 * time.Second

// CreateVolume creates the tagged persistent volume and waits until it is
// available. Progress (with percent and elapsed time on the snapshot
// wait) goes to out; the result is returned, for stdout. With DryRun it
// only plans (it still reads EC2 to resolve the source and the zone).
func CreateVolume(ctx context.Context, c EC2, region string, o VolumeCreateOpts, out io.Writer) (VolumeResult, error) {
	var res VolumeResult
	n := 0
	for _, set := range []bool{o.FromInstance != "", o.FromSnapshot != "", o.Empty} {
		if set {
			n++
		}
	}
	if n != 1 {
		return res, errors.New("volume create: give exactly one of --from-instance i-…, --from-snapshot snap-… or --size N --empty")
	}
	if o.Name == "" {
		return res, errors.New("volume create: --name is required (the volume's Name tag, which the instance's user-data names)")
	}
	if o.Empty && o.SizeGiB <= 0 {
		return res, errors.New("volume create --empty: --size N (GiB) is required")
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
			return res, fmt.Errorf("%s: %w", what, err)
		}
		root := aws.ToString(inst.RootDeviceName)
		for _, b := range inst.BlockDeviceMappings {
			if aws.ToString(b.DeviceName) == root && b.Ebs != nil {
				srcVol = aws.ToString(b.Ebs.VolumeId)
			}
		}
		if srcVol == "" {
			return res, fmt.Errorf("%s: instance %s has no EBS volume at its root device %s: use --from-snapshot", what, o.FromInstance, root)
		}
		if o.AZ == "" && inst.Placement != nil {
			o.AZ = aws.ToString(inst.Placement.AvailabilityZone)
		}
		vols, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{srcVol}})
		if err != nil {
			return res, fmt.Errorf("%s: describe root volume %s of %s: %w", what, srcVol, o.FromInstance, err)
		}
		if len(vols.Volumes) == 1 {
			srcSize = aws.ToInt32(vols.Volumes[0].Size)
		}
		srcDesc = fmt.Sprintf("root volume %s (%s, %d GiB) of instance %s", srcVol, root, srcSize, o.FromInstance)
	case o.FromSnapshot != "":
		snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{o.FromSnapshot}})
		if err != nil {
			return res, fmt.Errorf("%s: describe snapshot %s: %w", what, o.FromSnapshot, err)
		}
		if len(snaps.Snapshots) != 1 {
			return res, fmt.Errorf("%s: snapshot %s not found in %s", what, o.FromSnapshot, region)
		}
		snapID, srcSize = o.FromSnapshot, aws.ToInt32(snaps.Snapshots[0].VolumeSize)
		srcDesc = fmt.Sprintf("snapshot %s (%d GiB)", snapID, srcSize)
	}
	if o.AZ == "" {
		return res, fmt.Errorf("%s: --az is required with --from-snapshot and --empty (the zone the instances will run in)", what)
	}
	size := o.SizeGiB
	if size == 0 {
		size = srcSize
	}
	if size < srcSize {
		return res, fmt.Errorf("%s: --size %d is smaller than the source's %d GiB", what, size, srcSize)
	}
	// The boot path claims by tag: a second volume with the same Name in
	// the zone would make it refuse to choose.
	if o.Pool == "" {
		ex, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{filter("tag:Name", o.Name), filter("availability-zone", o.AZ)}})
		if err != nil {
			return res, fmt.Errorf("%s: check for an existing volume named %s in %s: %w", what, o.Name, o.AZ, err)
		}
		if len(ex.Volumes) > 0 {
			return res, fmt.Errorf("%s: %s already has a volume named %s (%s): pick another --name, or use --pool for interchangeable volumes",
				what, o.AZ, o.Name, aws.ToString(ex.Volumes[0].VolumeId))
		}
	}
	tags := VolumeTags(o.Name, o.Pool)
	if o.TagKey != "" && o.TagValue != "" {
		tags[o.TagKey] = o.TagValue // the key `spotroot iam-policy --tag-key` scopes AttachVolume to
	}

	res = VolumeResult{Name: o.Name, AZ: o.AZ, SizeGiB: size, Type: o.Type, Tags: tags, DryRun: o.DryRun, SnapshotID: snapID,
		UserData: "spotroot userdata --volume " + o.Name}
	if o.Pool != "" {
		res.UserData = "spotroot userdata --pool " + o.Pool
	}
	if o.DryRun {
		if srcVol != "" {
			res.Plan = append(res.Plan, fmt.Sprintf("CreateSnapshot of %s, tags %s; wait until completed", srcDesc, fmtTags(tags)))
			srcDesc = "that snapshot"
		}
		src := "empty"
		if srcDesc != "" {
			src = "from " + srcDesc
		}
		res.Plan = append(res.Plan, fmt.Sprintf("CreateVolume %s, %d GiB %s in %s, tags %s; wait until available", src, size, o.Type, o.AZ, fmtTags(tags)))
		return res, nil
	}
	resumeArgs := fmt.Sprintf("--name %s --az %s --type %s --size %d", o.Name, o.AZ, o.Type, size)
	if o.Pool != "" {
		resumeArgs += " --pool " + o.Pool
	}
	if snapID != "" {
		// A snapshot given by the operator may still be pending.
		if err := waitSnapshot(ctx, c, snapID, out, "spotroot volume create --from-snapshot "+snapID+" "+resumeArgs); err != nil {
			return res, fmt.Errorf("%s: %w", what, err)
		}
	}
	if srcVol != "" {
		snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(srcVol),
			Description:       aws.String("spotroot: " + srcDesc),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: sdkTags(tags)}}})
		if err != nil {
			return res, fmt.Errorf("%s: create snapshot of %s: %w", what, srcDesc, err)
		}
		snapID = aws.ToString(snap.SnapshotId)
		res.SnapshotID = snapID
		fmt.Fprintf(out, "snapshot %s of %s: waiting until completed\n", snapID, srcVol)
		if err := waitSnapshot(ctx, c, snapID, out, "spotroot volume create --from-snapshot "+snapID+" "+resumeArgs); err != nil {
			return res, fmt.Errorf("%s: %w", what, err)
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
		return res, fmt.Errorf("create volume %s %s in %s: %w", o.Name, src, o.AZ, err)
	}
	id := aws.ToString(v.VolumeId)
	res.VolumeID = id
	fmt.Fprintf(out, "volume %s: waiting until available\n", id)
	if err := waitFor(ctx, "volume "+id, out, "spotroot status --volume "+id, func() (bool, string, error) {
		// A filter, not an id: a new volume is NotFound for a while (EC2's
		// eventual consistency); an empty answer means "not yet".
		d, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{filter("volume-id", id)}})
		if err != nil || len(d.Volumes) != 1 {
			return false, "", err
		}
		switch d.Volumes[0].State {
		case types.VolumeStateAvailable:
			return true, "", nil
		case types.VolumeStateError:
			return false, "", fmt.Errorf("volume %s failed to create (state error)", id)
		}
		return false, string(d.Volumes[0].State), nil
	}); err != nil {
		return res, fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintf(out, "volume %s: available\n", id)
	return res, nil
}

// waitSnapshot waits until snapID is completed, reporting its progress.
func waitSnapshot(ctx context.Context, c EC2, snapID string, out io.Writer, resume string) error {
	return waitFor(ctx, "snapshot "+snapID, out, resume, func() (bool, string, error) {
		// A filter, not an id: a new snapshot is NotFound for a while.
		s, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []types.Filter{filter("snapshot-id", snapID)}})
		if err != nil || len(s.Snapshots) != 1 {
			return false, "", err
		}
		switch s.Snapshots[0].State {
		case types.SnapshotStateCompleted:
			return true, "100%", nil
		case types.SnapshotStateError:
			return false, "", fmt.Errorf("snapshot %s failed: %s", snapID, aws.ToString(s.Snapshots[0].StateMessage))
		}
		return false, aws.ToString(s.Snapshots[0].Progress), nil
	})
}

// waitFor polls cond every PollInterval until it is true, fails, or ctx
// ends. cond also returns the progress ("45%", or a state); every
// ProgressEvery (and whenever a percentage first appears) a line with it
// and the elapsed time goes to out. When ctx ends first it returns a
// *WaitTimeout naming resume, the command that picks up from here.
func waitFor(ctx context.Context, what string, out io.Writer, resume string, cond func() (bool, string, error)) error {
	start := time.Now()
	var lastLine time.Time
	lastProgress := ""
	for {
		ok, prog, err := cond()
		if err != nil {
			// A call cut by the deadline is the timeout, not a failure:
			// the operation goes on in EC2 and the resume command applies.
			if ctx.Err() != nil {
				return &WaitTimeout{What: what, Elapsed: time.Since(start), Resume: resume, Err: ctx.Err()}
			}
			return err
		}
		if ok {
			return nil
		}
		since := time.Since(lastLine)
		if prog != "" && (lastLine.IsZero() || prog != lastProgress && since >= ProgressEvery || since >= 4*ProgressEvery) {
			elapsed := time.Since(start)
			line := fmt.Sprintf("%s: %s after %s", what, prog, fmtElapsed(elapsed))
			if pct, ok := parsePercent(prog); ok && pct > 0 && pct < 100 {
				left := time.Duration(float64(elapsed) * float64(100-pct) / float64(pct))
				line += fmt.Sprintf(", about %s left", fmtElapsed(left))
			}
			fmt.Fprintln(out, line)
			lastLine, lastProgress = time.Now(), prog
		}
		select {
		case <-ctx.Done():
			return &WaitTimeout{What: what, Elapsed: time.Since(start), Resume: resume, Err: ctx.Err()}
		case <-time.After(PollInterval):
		}
	}
}

func parsePercent(s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	return n, err == nil && strings.HasSuffix(s, "%")
}

// fmtElapsed prints 4m05s, 1h02m00s or 850ms.
func fmtElapsed(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm%02ds", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
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
