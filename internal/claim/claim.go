// Package claim finds the instance's EBS volume and attaches it: by id, by
// tag, in the instance's own AZ, on a free device name, waiting for EC2 to
// report the attachment.
package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/internal/config"
)

// Instance is the claiming instance.
type Instance struct {
	ID, AZ string
}

// Claimer claims volumes for one instance.
type Claimer struct {
	EC2      EC2
	Instance Instance
	Log      *slog.Logger
	// CallTimeout bounds each API call, retries included.
	CallTimeout time.Duration
	// PollInterval is the first delay between state checks; it grows to MaxPoll.
	PollInterval time.Duration
	MaxPoll      time.Duration
	// ImageID is the instance's AMI, for create.from: ami.
	ImageID string
	// ForceDetach force-detaches a volume still attached to a dead instance
	// once WaitDetach has passed.
	ForceDetach bool
	WaitDetach  time.Duration
	// NotFoundGrace: see DefaultNotFoundGrace (0 = the default).
	NotFoundGrace time.Duration
	// MoveBudget bounds one boot's wait for a cross-AZ move (0 = scaled by
	// the volume's size, see MoveBudgetFor); the move resumes next boot.
	MoveBudget time.Duration
	// CrossAZ is "move" (default) or "fail".
	CrossAZ     string
	DeleteMoved bool

	// device is the free device name chosen for this instance, kept across
	// attempts (a lost pool race does not use it up).
	device string
}

// Claim is an attached volume.
type Claim struct {
	VolumeID string
	Device   string // the API device name, e.g. /dev/sdf
	// AlreadyAttached means the volume was attached to this instance before
	// spotroot ran (a reboot of the same instance).
	AlreadyAttached bool
	Volume          types.Volume
	// Created is set when spotroot made the volume; NeedsFormat when it is
	// empty and must be formatted before use.
	Created     bool
	NeedsFormat bool
	FSType      string // for NeedsFormat
	// MovedFrom is the volume this one was copied from (another AZ).
	MovedFrom string
}

// Tag keys spotroot reads and writes on volumes.
const (
	TagInstance  = "spotroot:instance"
	TagMovedTo   = "spotroot:moved-to"
	TagMovedFrom = "spotroot:moved-from"
	TagCreatedBy = "spotroot:created-by"
)

func (c *Claimer) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Claimer) call(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.CallTimeout
	if d == 0 {
		d = 30 * time.Second
	}
	return context.WithTimeout(ctx, d)
}

// Find returns the volume v names, in this instance's AZ.
func (c *Claimer) Find(ctx context.Context, v config.Volume) (types.Volume, error) {
	in := &ec2.DescribeVolumesInput{}
	switch {
	case v.ID != "":
		in.VolumeIds = []string{v.ID}
	case len(v.Tag) > 0:
		in.Filters = tagFilters(v.Tag)
	default:
		return types.Volume{}, fmt.Errorf("find %s: pools are not supported by this build", v.Describe())
	}
	vols, err := c.describe(ctx, in, "find "+v.Describe())
	if err != nil {
		return types.Volume{}, err
	}
	if len(vols) == 0 {
		return types.Volume{}, &NotFoundError{What: v.Describe()}
	}
	// A volume named by id that was moved lives on as its copy (and the
	// copy's copy): follow spotroot:moved-to.
	for hops := 0; v.ID != "" && len(vols) == 1 && tagValue(vols[0], TagMovedTo) != "" && hops < 8; hops++ {
		next := tagValue(vols[0], TagMovedTo)
		c.log().Info("the configured volume was moved to another AZ; following it", "volume", aws.ToString(vols[0].VolumeId), "moved-to", next)
		if vols, err = c.describe(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{next}}, "find "+next+", the copy of "+v.Describe()); err != nil {
			return types.Volume{}, err
		}
		if len(vols) == 0 {
			return types.Volume{}, &NotFoundError{What: v.Describe() + " (moved to " + next + ", which does not exist)"}
		}
	}
	live, moving, err := c.classify(ctx, vols)
	if err != nil {
		return types.Volume{}, err
	}
	var here, elsewhere []types.Volume
	for _, vol := range live {
		if aws.ToString(vol.AvailabilityZone) == c.Instance.AZ {
			here = append(here, vol)
		} else {
			elsewhere = append(elsewhere, vol)
		}
	}
	if len(here) == 0 && len(elsewhere) == 0 && len(moving) > 0 {
		// The original of a move under way: only a boot in the target
		// AZ takes part (resumes it).
		return types.Volume{}, &OtherAZError{What: v.Describe(), Volumes: moving, AZ: c.Instance.AZ}
	}
	switch len(here) {
	case 0:
		if len(elsewhere) == 0 {
			return types.Volume{}, &NotFoundError{What: v.Describe()}
		}
		return types.Volume{}, &OtherAZError{What: v.Describe(), Volumes: elsewhere, AZ: c.Instance.AZ}
	case 1:
		return here[0], nil
	}
	// Several volumes carry the tag: one already attached to us wins (reboot).
	for _, vol := range here {
		if attachedTo(vol, c.Instance.ID) != nil {
			return vol, nil
		}
	}
	return types.Volume{}, fmt.Errorf("%d volumes in %s have %s (%s): a root tag must name exactly one; use a pool for interchangeable volumes",
		len(here), c.Instance.AZ, v.Describe(), ids(here))
}

// Attach attaches vol to this instance on a free device name, unless it is
// attached already, and waits until EC2 reports it attached.
func (c *Claimer) Attach(ctx context.Context, vol types.Volume) (Claim, error) {
	id := aws.ToString(vol.VolumeId)
	what := fmt.Sprintf("attach %s to %s", id, c.Instance.ID)
	if aws.ToBool(vol.MultiAttachEnabled) {
		return Claim{}, fmt.Errorf("%s: the volume has Multi-Attach enabled; spotroot refuses to use it (another instance could mount it too)", what)
	}
	if a := attachedTo(vol, c.Instance.ID); a != nil {
		c.log().Info("volume already attached to this instance", "volume", id, "device", aws.ToString(a.Device))
		cl := Claim{VolumeID: id, Device: aws.ToString(a.Device), AlreadyAttached: true, Volume: vol}
		if a.State == types.VolumeAttachmentStateAttached {
			return cl, nil
		}
		return cl, c.WaitAttached(ctx, id)
	}
	for _, a := range vol.Attachments {
		return Claim{}, &InUseError{Volume: id, Instance: aws.ToString(a.InstanceId), State: string(a.State)}
	}
	if vol.State != types.VolumeStateAvailable {
		return Claim{}, fmt.Errorf("%s: volume state is %q, not available", what, vol.State)
	}
	if c.device == "" {
		d, err := c.freeDevice(ctx)
		if err != nil {
			return Claim{}, fmt.Errorf("%s: %w", what, err)
		}
		c.device = d
	}
	device := c.device
	cctx, cancel := c.call(ctx)
	out, err := c.EC2.AttachVolume(cctx, &ec2.AttachVolumeInput{
		VolumeId: aws.String(id), InstanceId: aws.String(c.Instance.ID), Device: aws.String(device),
	})
	cancel()
	if err != nil {
		if code := ErrorCode(err); code == "VolumeInUse" || code == "IncorrectState" {
			return Claim{}, &InUseError{Volume: id, Err: err}
		}
		c.device = "" // maybe taken meanwhile: choose again next time
		return Claim{}, apiError("AttachVolume", what, err)
	}
	c.device = "" // used now
	c.log().Info("attach requested", "volume", id, "device", device, "state", string(out.State))
	return Claim{VolumeID: id, Device: device, Volume: vol}, nil
}

// WaitAttached polls until EC2 reports vol attached to this instance, or
// fails as soon as the attachment is gone (EC2 gave up on it).
func (c *Claimer) WaitAttached(ctx context.Context, volID string) error {
	return c.WaitAttachedNudged(ctx, volID, nil)
}

// WaitAttachedNudged is WaitAttached, polling again at once whenever nudge
// fires: the block device appearing means EC2 is about to say "attached",
// and the growing poll interval would otherwise overshoot by up to a second.
func (c *Claimer) WaitAttachedNudged(ctx context.Context, volID string, nudge <-chan struct{}) error {
	what := fmt.Sprintf("wait for %s to attach to %s", volID, c.Instance.ID)
	delay := c.PollInterval
	if delay == 0 {
		delay = 200 * time.Millisecond
	}
	for {
		vols, err := c.describe(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{volID}}, what)
		if err != nil {
			return err
		}
		if len(vols) == 1 {
			a := attachedTo(vols[0], c.Instance.ID)
			switch {
			case a == nil:
				return fmt.Errorf("%s: the attachment disappeared (volume %s); EC2 could not attach it", what, vols[0].State)
			case a.State == types.VolumeAttachmentStateAttached:
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: still not attached: %w", what, ctx.Err())
		case <-nudge:
			delay = c.PollInterval
			if delay == 0 {
				delay = 200 * time.Millisecond
			}
			continue
		case <-time.After(delay):
		}
		delay = min(delay*2, c.maxPoll())
	}
}

func (c *Claimer) maxPoll() time.Duration {
	if c.MaxPoll > 0 {
		return c.MaxPoll
	}
	return time.Second
}

// freeDevice picks the first of /dev/sdf…/dev/sdp that this instance does
// not use (EC2 rejects a name in use, and xvdX aliases sdX on Xen).
func (c *Claimer) freeDevice(ctx context.Context) (string, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.DescribeInstances(cctx, &ec2.DescribeInstancesInput{InstanceIds: []string{c.Instance.ID}})
	if err != nil {
		return "", apiError("DescribeInstances", "describe "+c.Instance.ID, err)
	}
	used := map[string]bool{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			for _, m := range in.BlockDeviceMappings {
				used[letter(aws.ToString(m.DeviceName))] = true
			}
		}
	}
	for l := 'f'; l <= 'p'; l++ {
		if !used[string(l)] {
			return "/dev/sd" + string(l), nil
		}
	}
	return "", errors.New("no free device name in /dev/sdf…/dev/sdp")
}

// letter returns the drive letter of /dev/sdX, /dev/xvdX, xvdX…
func letter(dev string) string {
	dev = strings.TrimPrefix(dev, "/dev/")
	for _, p := range []string{"xvd", "sd"} {
		if rest, ok := strings.CutPrefix(dev, p); ok && len(rest) > 0 {
			return rest[:1]
		}
	}
	return dev
}

func (c *Claimer) describe(ctx context.Context, in *ec2.DescribeVolumesInput, what string) ([]types.Volume, error) {
	var vols []types.Volume
	p := ec2.NewDescribeVolumesPaginator(c.EC2, in)
	for p.HasMorePages() {
		cctx, cancel := c.call(ctx)
		out, err := p.NextPage(cctx)
		cancel()
		if err != nil {
			if ErrorCode(err) == "InvalidVolume.NotFound" {
				return nil, nil
			}
			return nil, apiError("DescribeVolumes", what, err)
		}
		vols = append(vols, out.Volumes...)
	}
	return vols, nil
}

func attachedTo(v types.Volume, instanceID string) *types.VolumeAttachment {
	for i := range v.Attachments {
		if aws.ToString(v.Attachments[i].InstanceId) == instanceID {
			return &v.Attachments[i]
		}
	}
	return nil
}

func tagValue(v types.Volume, key string) string {
	for _, t := range v.Tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

func tagFilters(tags map[string]string) []types.Filter {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fs := make([]types.Filter, 0, len(keys))
	for _, k := range keys {
		fs = append(fs, types.Filter{Name: aws.String("tag:" + k), Values: []string{tags[k]}})
	}
	return fs
}

func ids(vols []types.Volume) string {
	s := make([]string, len(vols))
	for i, v := range vols {
		s[i] = aws.ToString(v.VolumeId)
	}
	return strings.Join(s, ", ")
}
