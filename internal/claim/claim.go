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
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

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
	// TagClaims tags a claimed pool member spotroot:instance=<id>
	// (configuration tag_claims).
	TagClaims bool
	// ConsistencyGrace bounds how long a Describe may disagree with what
	// EC2 already did (a new resource NotFound, a fresh attachment
	// missing, a dead owner still running): EC2's API is eventually
	// consistent ("Eventual consistency in the Amazon EC2 API"). 0 = 10s.
	ConsistencyGrace time.Duration

	// Reserved are device names this instance uses that DescribeInstances
	// does not list: instance-store mappings (IMDS block-device-mapping/
	// ephemeralN) and the xvdX/sdX disks a Xen instance already has.
	// They are never offered to AttachVolume.
	Reserved []string

	// Mapped are the device names IMDS lists for this instance
	// (meta-data block-device-mapping/: ami, root, ebsN, ephemeralN), its
	// mappings at launch; MappedKnown says they were read. Then the first
	// device name is chosen from them, Reserved and the names this boot
	// attached, without a DescribeInstances call: at fleet scale every
	// call counts against EC2's rate limit. A volume attached after launch
	// by something else is not listed there; AttachVolume then answers
	// "already in use" and the next choice asks DescribeInstances.
	Mapped      []string
	MappedKnown bool

	// ClockOffset, if set, is EC2's clock minus this machine's
	// (imds.Client.ClockOffset). EC2 stamps attachments by its own clock,
	// so an attachment's age is measured on it: on a guest minutes behind,
	// the local clock would make a fresh attachment look old.
	ClockOffset func() (time.Duration, bool)

	// device is the free device name chosen for this instance, kept across
	// attempts (a lost pool race does not use it up).
	device string
	// attachedDevs are the device names this claimer attached volumes on.
	attachedDevs []string
	// attachOpts are extra options for AttachVolume (attachOnce).
	attachOpts []func(*ec2.Options)
	// running: EC2 said this instance is running, or a pool claim waited
	// its pending time out (untilRunning looks no more).
	running bool
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
		c.attachedDevs = append(c.attachedDevs, aws.ToString(a.Device))
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
	return c.attachLoop(ctx, vol, what)
}

// attachOnce is Attach for a pool member: one AttachVolume request per
// attempt, no SDK retries. A refused request (throttled) comes back as a
// ThrottledError for the pool to pace itself; an unanswered one is looked
// up (attachLoop) instead of being sent again, which would spend another
// of AttachVolume's scarce tokens only to be told VolumeInUse.
func (c *Claimer) attachOnce(ctx context.Context, vol types.Volume) (Claim, error) {
	c.attachOpts = []func(*ec2.Options){noRetry}
	defer func() { c.attachOpts = nil }()
	return c.Attach(ctx, vol)
}

// attachLoop calls AttachVolume until EC2 took it, handling what EC2 does
// on a bad day: a pending instance (IncorrectState, retried), a device name
// still reserved or taken by instance storage ("already in use": the next
// free name), and an answer lost after EC2 attached the volume (the SDK's
// retry then gets VolumeInUse, or no answer arrives at all): the volume's
// own attachments decide, never the error code.
func (c *Claimer) attachLoop(ctx context.Context, vol types.Volume, what string) (Claim, error) {
	id := aws.ToString(vol.VolumeId)
	skip := map[string]bool{}
	// Pending may last longer than a stale view: twice the grace.
	deadline := time.Now().Add(2 * c.grace())
	for unknown := 0; ; {
		if c.device == "" {
			d, err := c.freeDevice(ctx, skip)
			if err != nil {
				return Claim{}, fmt.Errorf("%s: %w", what, err)
			}
			c.device = d
		}
		device := c.device
		cctx, cancel := c.call(ctx)
		var log attemptLog
		out, err := c.EC2.AttachVolume(cctx, &ec2.AttachVolumeInput{
			VolumeId: aws.String(id), InstanceId: aws.String(c.Instance.ID), Device: aws.String(device),
		}, append([]func(*ec2.Options){log.option}, c.attachOpts...)...)
		cancel()
		if err == nil {
			c.device = "" // used now
			c.attachedDevs = append(c.attachedDevs, device)
			c.log().Info("attach requested", "volume", id, "device", device, "state", string(out.State))
			return Claim{VolumeID: id, Device: device, Volume: vol}, nil
		}
		code := ErrorCode(err)
		switch {
		case code == throttleCode && !log.unclear:
			// Refused before EC2 looked at it (an earlier attempt of this
			// call would have made it unclear): nothing happened.
			return Claim{}, &ThrottledError{Op: what, Err: err}
		case code == "IncorrectState" && c.instanceNotRunning(err):
			// PID 1 runs before EC2 says running: wait, it is not "in use".
			if time.Now().After(deadline) {
				return Claim{}, apiError("AttachVolume", what+": the instance is still not 'running' after "+c.grace().String(), err)
			}
			// Wait for "running" with DescribeInstances (100 tokens, 20/s)
			// rather than spending AttachVolume's scarce ones (50, 5/s).
			c.log().Info("instance not yet running in EC2's view; waiting to retry the attach", "volume", id)
			if err := c.waitRunning(ctx, deadline); err != nil {
				return Claim{}, fmt.Errorf("%s: %w", what, err)
			}
			continue
		case code == "InvalidParameterValue" && strings.Contains(err.Error(), "already in use"):
			// An earlier attempt of ours on this name may have succeeded
			// with its answer lost; otherwise the name is held (a recent
			// detach, instance storage DescribeInstances does not list).
			if log.unclear {
				if cl, mine, _ := c.lookAfterAttach(ctx, vol, c.grace(), false); mine {
					return cl, nil
				}
			}
			c.log().Info("device name already in use; trying the next", "volume", id, "device", device)
			skip[device] = true
			c.device = ""
			continue
		case permanentAttachError(code):
			c.device = ""
			return Claim{}, apiError("AttachVolume", what, err)
		}
		// VolumeInUse or IncorrectState for the volume: a lost race, unless
		// an earlier attempt of this call went unanswered (5xx, reset,
		// timeout) and the SDK's retry found our own attachment. Then, and
		// for a call the SDK gave up on, EC2 may have attached it to us.
		if !log.unclear && (code == "VolumeInUse" || code == "IncorrectState") {
			c.device = ""
			return Claim{}, &InUseError{Volume: id, Err: err}
		}
		cl, mine, other := c.lookAfterAttach(ctx, vol, c.grace(), false)
		switch {
		case mine:
			return cl, nil
		case other != "" || code == "VolumeInUse" || code == "IncorrectState":
			c.device = ""
			return Claim{}, &InUseError{Volume: id, Instance: other, State: "attached", Err: err}
		}
		if unknown++; unknown >= 3 || ctx.Err() != nil {
			c.device = ""
			return Claim{}, apiError("AttachVolume", what, err)
		}
		c.log().Info("attach failed without attaching; retrying", "volume", id, "error", err)
	}
}

// waitRunning polls this instance's state until EC2 says running (its view
// lags, so pending may outlast the truth: the deadline bounds it).
func (c *Claimer) waitRunning(ctx context.Context, deadline time.Time) error {
	// The first look after two polls' time: an instance that runs code is
	// about to be running, and EC2's view of it lags; earlier looks only
	// count against the rate limit.
	// A refused look is the next one's to make.
	for delay := 2 * c.maxPoll(); ; delay = c.maxPoll() {
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil // the attach will say
		}
		st, err := c.ownState(ctx)
		if throttled(err) {
			continue
		}
		if err != nil {
			return nil // the attach will say
		}
		if st == types.InstanceStateNameRunning {
			c.running = true
			return nil
		}
	}
}

// ownState is this instance's state in EC2's view (filtered: the larger
// bucket).
func (c *Claimer) ownState(ctx context.Context) (types.InstanceStateName, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.DescribeInstances(cctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-id"), Values: []string{c.Instance.ID}}}}, noThrottleRetry)
	if throttled(err) {
		return "", err
	}
	if err != nil {
		return "", apiError("DescribeInstances", "describe "+c.Instance.ID, err)
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if in.State != nil {
				return in.State.Name, nil
			}
		}
	}
	return "", nil // not in EC2's view yet
}

// permanentAttachError: codes retrying or describing cannot change.
func permanentAttachError(code string) bool {
	switch code {
	case "UnauthorizedOperation", "AccessDenied", "AuthFailure", "InvalidVolume.ZoneMismatch",
		"InvalidVolume.NotFound", "InvalidInstanceID.NotFound", "AttachmentLimitExceeded",
		"IncorrectInstanceState", "InvalidParameterCombination", "OperationNotPermitted":
		return true
	}
	return strings.HasPrefix(code, "InvalidParameter") // a malformed device name or id
}

// instanceNotRunning: an IncorrectState about this instance ("Instance
// 'i-…' is not 'running'."), not about the volume.
func (c *Claimer) instanceNotRunning(err error) bool {
	var msg string
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg = ae.ErrorMessage()
	}
	return strings.Contains(msg, c.Instance.ID) || strings.Contains(strings.ToLower(msg), "instance")
}

// lookAfterAttach describes the volume for up to wait (EC2's view lags):
// mine when it is attached (or attaching) to this instance, other names
// the instance holding it otherwise (seen last; a stale view can show a
// previous holder, so other never ends the wait early unless stopAtOther).
func (c *Claimer) lookAfterAttach(ctx context.Context, vol types.Volume, wait time.Duration, stopAtOther bool) (cl Claim, mine bool, other string) {
	id := aws.ToString(vol.VolumeId)
	deadline := time.Now().Add(wait)
	// Look first after a poll's time, then at that pace: EC2's view lags
	// behind the attach it may just have made, and every look counts
	// against DescribeVolumes' rate limit.
	delay := c.maxPoll()
	if !sleep(ctx, delay) {
		return Claim{}, false, ""
	}
	for {
		v, err := c.describeOne(ctx, id, "look at "+id+" after an unclear attach")
		if err == nil && v != nil {
			if a := attachedTo(*v, c.Instance.ID); a != nil {
				c.device = ""
				c.attachedDevs = append(c.attachedDevs, aws.ToString(a.Device))
				c.log().Info("the attach went through although its answer did not say so", "volume", id, "device", aws.ToString(a.Device))
				return Claim{VolumeID: id, Device: aws.ToString(a.Device), Volume: *v}, true, ""
			}
			for _, a := range v.Attachments {
				other = aws.ToString(a.InstanceId)
			}
		}
		if (stopAtOther && other != "") || time.Now().After(deadline) || !sleep(ctx, delay) {
			return Claim{}, false, other
		}
		delay = min(delay*2, c.maxPoll())
	}
}

// attemptLog watches the attempts of one call (after the SDK's retry
// middleware): unclear is set when an attempt may have been committed
// without its answer reaching us (a 5xx, a reset, a timeout), which makes
// a later VolumeInUse possibly our own doing.
type attemptLog struct {
	attempts int
	unclear  bool
}

func (l *attemptLog) option(o *ec2.Options) {
	o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
		return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("spotrootAttemptLog",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				l.attempts++
				out, md, err := next.HandleFinalize(ctx, in)
				if err != nil && !rejected(err) && !throttled(err) {
					l.unclear = true
				}
				return out, md, err
			}), middleware.After)
	})
}

// rejected: EC2 answered 4xx, so it did not act on the request.
func rejected(err error) bool {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		s := re.HTTPStatusCode()
		return s >= 400 && s < 500
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ec2Now is EC2's clock as far as this machine knows it.
func (c *Claimer) ec2Now() time.Time {
	if c.ClockOffset != nil {
		if off, ok := c.ClockOffset(); ok {
			return time.Now().Add(off)
		}
	}
	return time.Now()
}

func (c *Claimer) grace() time.Duration {
	if c.ConsistencyGrace > 0 {
		return c.ConsistencyGrace
	}
	return 10 * time.Second
}

func (c *Claimer) pollInterval() time.Duration {
	if c.PollInterval > 0 {
		return c.PollInterval
	}
	return 200 * time.Millisecond
}

// describeOne describes one volume by a volume-id filter: EC2 answers an
// empty list rather than InvalidVolume.NotFound for a volume its view does
// not have yet, and filtered calls draw from the larger throttling bucket
// ("use pagination and filtering", EC2 API reference, Request throttling).
// nil, nil: not (yet) visible.
func (c *Claimer) describeOne(ctx context.Context, id, what string) (*types.Volume, error) {
	vols, err := c.describe(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("volume-id"), Values: []string{id}}}}, what)
	if err != nil || len(vols) == 0 {
		return nil, err
	}
	return &vols[0], nil
}

// WaitAttached polls until EC2 reports vol attached to this instance, or
// fails as soon as the attachment is gone (EC2 gave up on it).
func (c *Claimer) WaitAttached(ctx context.Context, volID string) error {
	return c.WaitAttachedNudged(ctx, volID, nil)
}

// WaitAttachedNudged is WaitAttached for a caller that also watches for
// the volume's block device: nudge fires once the kernel has the disk (an
// NVMe serial equal to the volume id, or the Xen device name asked for),
// which only EC2's attachment of this very volume to this instance brings,
// so it ends the wait without asking EC2 again. Until then EC2 is polled
// from a little after the request (an attach is never done at once), so a
// failed attachment (EC2 gave up on it) still ends the wait. At fleet scale
// every poll counts against DescribeVolumes' rate limit, and EC2's lagging
// view makes early polls see nothing anyway.
func (c *Claimer) WaitAttachedNudged(ctx context.Context, volID string, nudge <-chan struct{}) error {
	what := fmt.Sprintf("wait for %s to attach to %s", volID, c.Instance.ID)
	delay := c.pollInterval()
	if nudge != nil {
		delay = c.maxPoll() // the device is the fast signal
	}
	// EC2's view lags: right after AttachVolume the attachment may be
	// missing (or the volume NotFound, or still showing a dead owner).
	// Only a view without our attachment that lasts longer than the grace
	// means EC2 gave up on it.
	var missingSince time.Time
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: still not attached: %w", what, ctx.Err())
		case <-nudge:
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, c.maxPoll())
		v, err := c.describeOne(ctx, volID, what)
		if err != nil {
			return err
		}
		var a *types.VolumeAttachment
		if v != nil {
			a = attachedTo(*v, c.Instance.ID)
		}
		switch {
		case a != nil && a.State == types.VolumeAttachmentStateAttached:
			return nil
		case a != nil:
			missingSince = time.Time{}
		case missingSince.IsZero():
			missingSince = time.Now()
		case time.Since(missingSince) > c.grace():
			state := "not visible"
			if v != nil {
				state = string(v.State)
			}
			return fmt.Errorf("%s: the attachment is gone for %v (volume %s); EC2 could not attach it", what, c.grace(), state)
		}
	}
}

func (c *Claimer) maxPoll() time.Duration {
	if c.MaxPoll > 0 {
		return c.MaxPoll
	}
	return time.Second
}

// freeDevice picks the first of /dev/sdf…/dev/sdp that this instance does
// not map and that skip does not hold (names EC2 refused as "already in
// use": held after a detach, or instance storage DescribeInstances never
// lists). xvdX aliases sdX, so letters count, not names.
func (c *Claimer) freeDevice(ctx context.Context, skip map[string]bool) (string, error) {
	used := map[string]bool{}
	for _, d := range append(append([]string{}, c.Reserved...), c.attachedDevs...) {
		used[letter(d)] = true
	}
	if c.MappedKnown && len(skip) == 0 {
		for _, d := range c.Mapped {
			used[letter(d)] = true
		}
	} else {
		cctx, cancel := c.call(ctx)
		defer cancel()
		out, err := c.EC2.DescribeInstances(cctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
			{Name: aws.String("instance-id"), Values: []string{c.Instance.ID}}}})
		if err != nil {
			return "", apiError("DescribeInstances", "describe "+c.Instance.ID, err)
		}
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				for _, m := range in.BlockDeviceMappings {
					used[letter(aws.ToString(m.DeviceName))] = true
				}
			}
		}
	}
	for d := range skip {
		used[letter(d)] = true
	}
	for l := 'f'; l <= 'p'; l++ {
		if !used[string(l)] {
			return "/dev/sd" + string(l), nil
		}
	}
	return "", errors.New("no free device name in /dev/sdf…/dev/sdp (EC2 refused every free one as already in use)")
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
