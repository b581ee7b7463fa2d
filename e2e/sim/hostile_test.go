package sim

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// hostile turns one part of the profile back on for env (newEnv turns all
// of it off for the single-call tests).
func (e *env) hostile(fn func(h *Hostile)) {
	e.t.Helper()
	if err := e.w.Update(func(w *World) error { fn(w.Hostile); return nil }); err != nil {
		e.t.Fatal(err)
	}
}

func TestDefaultHostileIsOnAndDisableWantsAReason(t *testing.T) {
	w, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	h := w.Hostile
	if h == nil || h.ConsistencyLag == 0 || h.LostResponses == 0 || !h.Throttle || h.CredentialDelay == 0 ||
		h.DeviceHold == 0 || !h.InstanceStore || h.PendingFor == 0 {
		t.Fatalf("a fresh world is not hostile: %+v", h)
	}
	if err := w.DisableHostile(HostileThrottle, " "); err == nil {
		t.Fatal("disabled a behaviour without a reason")
	}
	if err := w.DisableHostile(HostileThrottle, "because"); err != nil || w.Hostile.Throttle || w.Hostile.Off[HostileThrottle] != "because" {
		t.Fatalf("disable: %v, %+v", err, w.Hostile)
	}
	t.Setenv("SPOTROOT_SEED", "42")
	if w2, _ := Load(""); w2.HostileSeed() != 42 || w2.Hostile.ClockSkew != 0 {
		t.Fatalf("SPOTROOT_SEED=42 gave seed %d skew %v", w2.HostileSeed(), w2.Hostile.ClockSkew)
	}
}

// EC2's documented buckets: DescribeVolumes without filter or pagination
// draws from 50 tokens, filtered from its own 100.
func TestThrottlingBuckets(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) { h.Throttle = true })
	ctx := context.Background()
	n := 0
	for ; n < 60; n++ {
		if _, err := e.op.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
			wantAPIError(t, err, "RequestLimitExceeded", 503)
			break
		}
	}
	if n < 50 || n > 52 {
		t.Fatalf("unfiltered DescribeVolumes throttled after %d calls, want 50 (+ refill)", n)
	}
	f := &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("availability-zone"), Values: []string{"us-east-1a"}}}}
	for k := range 90 {
		if _, err := e.op.DescribeVolumes(ctx, f); err != nil {
			t.Fatalf("filtered call %d throttled although its bucket holds 100: %v", k, err)
		}
	}
	if st := e.w.Stats(); st.Throttled["DescribeVolumes"] != 1 {
		t.Fatalf("throttled = %v", st.Throttled)
	}
}

// A volume created a moment ago is NotFound in a lagging view, then shows.
func TestLaggingViewHidesNewVolume(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) { h.ConsistencyLag, h.ConsistencyOldest = 300*time.Millisecond, true })
	ctx := context.Background()
	out, err := e.op.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.op.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(out.VolumeId)}})
	wantAPIError(t, err, "InvalidVolume.NotFound", 400)
	time.Sleep(400 * time.Millisecond)
	if _, err := e.op.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(out.VolumeId)}}); err != nil {
		t.Fatalf("still NotFound after the lag: %v", err)
	}
	if e.w.Stats().StaleReads == 0 {
		t.Fatal("no stale read counted")
	}
}

// A lost answer: the call committed (the attachment exists) though the
// client saw a 500 or no answer; a retried CreateVolume with the same
// ClientToken returns the first volume.
func TestLostAnswerCommits(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) { h.LostResponses, h.LostStall = 1, 10*time.Millisecond })
	ctx := context.Background()
	vol := e.addVolume("us-east-1a", nil)
	_, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")})
	if err == nil {
		t.Fatal("the answer was not lost")
	}
	if v, _ := e.w.Volume(vol); len(v.Attachments) != 1 || v.Attachments[0].InstanceID != e.inst.ID {
		t.Fatalf("the lost AttachVolume did not commit: %+v", v.Attachments)
	}
	in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), ClientToken: aws.String("tok-1")}
	e.op.CreateVolume(ctx, in)
	e.op.CreateVolume(ctx, in)
	n := 0
	e.w.View(func(w *World) {
		for _, v := range w.Volumes {
			if v.SizeGiB == 1 {
				n++
			}
		}
	})
	if n != 1 {
		t.Fatalf("two CreateVolume calls with one ClientToken made %d volumes", n)
	}
}

// A skewed guest: behind gets RequestExpired, ahead SignatureDoesNotMatch,
// and the Date header carries EC2's clock.
func TestClockSkewAnswers(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		skew   time.Duration
		code   string
		status int
	}{{7 * time.Minute, "RequestExpired", 400}, {-7 * time.Minute, "SignatureDoesNotMatch", 403}} {
		e.hostile(func(h *Hostile) { h.ClockSkew = c.skew })
		_, err := e.op.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{})
		wantAPIError(t, err, c.code, c.status)
	}
}

// Device names: instance storage occupies a name DescribeInstances does
// not list (IMDS does); a detached name is held; xvdX is sdX.
func TestDeviceNamesHeldAndInstanceStore(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) { h.InstanceStore, h.InstanceStoreAt, h.DeviceHold = true, "/dev/sdf", time.Minute })
	id := e.addInstance("us-east-1a", func(i *Instance) { i.InstanceType = "m5d.large" })
	ctx := context.Background()
	vol := e.addVolume("us-east-1a", nil)
	attach := func(dev string) error {
		_, err := e.op.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(id), Device: aws.String(dev)})
		return err
	}
	wantAPIError(t, attach("/dev/xvdf"), "InvalidParameterValue", 400)
	out, err := e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range out.Reservations[0].Instances[0].BlockDeviceMappings {
		if strings.HasSuffix(aws.ToString(m.DeviceName), "sdf") {
			t.Fatal("DescribeInstances lists the instance-store name")
		}
	}
	if err := attach("/dev/sdg"); err != nil {
		t.Fatal(err)
	}
	e.waitVolume(vol, func(v Volume) bool { return len(v.Attachments) == 1 && v.Attachments[0].State == AttachAttached })
	if _, err := e.op.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	e.waitVolume(vol, func(v Volume) bool { return len(v.Attachments) == 0 })
	wantAPIError(t, attach("/dev/sdg"), "InvalidParameterValue", 400)
	if err := attach("/dev/sdh"); err != nil {
		t.Fatal(err)
	}
	if st := e.w.Stats(); st.DeviceInUse != 2 {
		t.Fatalf("already-in-use answers = %d, want 2", st.DeviceInUse)
	}
	inst, _ := e.w.Instance(id)
	if len(inst.InstanceStore) != 1 || inst.InstanceStore[0] != "/dev/sdf" {
		t.Fatalf("instance store = %v", inst.InstanceStore)
	}
}

// Credentials: 404 first, then keys with a real Expiration that rotate;
// the old key works until it expires.
func TestCredentialsLateAndRotating(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) {
		h.CredentialDelay, h.CredentialRotate, h.CredentialLifetime = 200*time.Millisecond, 200*time.Millisecond, 600*time.Millisecond
	})
	ctx := context.Background()
	md := e.imdsClient()
	get := func() (string, error) {
		out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "iam/security-credentials/" + e.inst.Role})
		if err != nil {
			return "", err
		}
		defer out.Content.Close()
		b := make([]byte, 4096)
		n, _ := out.Content.Read(b)
		return string(b[:n]), nil
	}
	if _, err := get(); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("first ask: %v, want 404", err)
	}
	time.Sleep(250 * time.Millisecond)
	doc, err := get()
	if err != nil || !strings.Contains(doc, `"Expiration"`) {
		t.Fatalf("after the delay: %q, %v", doc, err)
	}
	first, _ := e.w.Instance(e.inst.ID)
	time.Sleep(250 * time.Millisecond)
	get()
	now, _ := e.w.Instance(e.inst.ID)
	if now.Credentials.AccessKeyID == first.Credentials.AccessKeyID || len(now.OldCredentials) == 0 {
		t.Fatal("keys did not rotate")
	}
	// The instance's SDK client still holds the first keys: accepted until
	// they expire, refused after.
	if _, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
		t.Fatalf("old key refused before its expiry: %v", err)
	}
	if time.Until(first.Credentials.Expires) > time.Second {
		t.Fatalf("expiry %v is not the 600ms lifetime", time.Until(first.Credentials.Expires))
	}
}

// A lagging DescribeInstances renders its block-device mappings from the
// volumes of the same moment: a mapping that has no attachment would have
// an empty attachTime, on which the SDK fails the whole call (CI run of
// stop 18: "unable to parse time string" after a detach). Every view of
// an instance around a detach must parse.
func TestLaggingInstanceViewAroundDetachParses(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) { h.ConsistencyLag = 300 * time.Millisecond })
	ctx := context.Background()
	vol := e.addVolume("us-east-1a", nil)
	if _, err := e.op.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol),
		InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	e.waitVolume(vol, func(v Volume) bool { return len(v.Attachments) == 1 && v.Attachments[0].State == AttachAttached })
	if _, err := e.op.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	e.waitVolume(vol, func(v Volume) bool { return v.State == VolumeAvailable })
	seen := map[int]bool{}
	for end := time.Now().Add(400 * time.Millisecond); time.Now().Before(end); {
		out, err := e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{e.inst.ID}})
		if err != nil {
			t.Fatalf("DescribeInstances around a detach: %v", err)
		}
		for _, b := range out.Reservations[0].Instances[0].BlockDeviceMappings {
			if b.Ebs == nil || b.Ebs.AttachTime == nil {
				t.Fatalf("mapping %s without an attach time", aws.ToString(b.DeviceName))
			}
		}
		seen[len(out.Reservations[0].Instances[0].BlockDeviceMappings)] = true
	}
	if !seen[1] {
		t.Fatalf("never saw the detached state (mapping counts seen: %v)", seen)
	}
}

// EC2 reports its resources' times by its own clock, the one its Date
// header carries: with the guests' clock 7 minutes off, an attachment made
// now is stamped now by EC2's clock, not by the guests'.
func TestTimesFollowEC2Clock(t *testing.T) {
	e := newEnv(t)
	e.hostile(func(h *Hostile) { h.ClockSkew = 7 * time.Minute })
	now := time.Now()
	x := e.w.toXMLAttachment("vol-1", Attachment{InstanceID: "i-1", AttachTime: now})
	got, err := time.Parse("2006-01-02T15:04:05.000Z", x.AttachTime)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.Sub(now.Add(7 * time.Minute)); d < -time.Second || d > time.Second {
		t.Fatalf("AttachTime %s, want EC2's clock %s", got, now.Add(7*time.Minute).UTC())
	}
}
