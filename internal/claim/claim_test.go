package claim

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/spotroot/spotroot/internal/config"
)

// fakeEC2 is an in-memory EC2 with just enough behaviour for the claim
// logic; the wire format is covered by the simulator's tests.
type fakeEC2 struct {
	EC2       // unimplemented methods panic: these tests do not call them
	mu        sync.Mutex
	vols      []types.Volume
	devices   []string // block device names already used by the instance
	attachErr error
	calls     []string
	// attachAfter is how many DescribeVolumes calls an attachment stays "attaching".
	attachAfter int
	describes   int
}

func (f *fakeEC2) DescribeVolumes(_ context.Context, in *ec2.DescribeVolumesInput, _ ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "DescribeVolumes")
	f.describes++
	var out []types.Volume
	for i, v := range f.vols {
		if len(in.VolumeIds) > 0 && aws.ToString(v.VolumeId) != in.VolumeIds[0] {
			continue
		}
		if !matches(v, in.Filters) {
			continue
		}
		for j := range v.Attachments {
			if f.describes > f.attachAfter {
				f.vols[i].Attachments[j].State = types.VolumeAttachmentStateAttached
			}
		}
		out = append(out, f.vols[i])
	}
	if len(in.VolumeIds) > 0 && len(out) == 0 {
		return nil, &smithy.GenericAPIError{Code: "InvalidVolume.NotFound", Message: "no"}
	}
	return &ec2.DescribeVolumesOutput{Volumes: out}, nil
}

func matches(v types.Volume, fs []types.Filter) bool {
	for _, f := range fs {
		switch aws.ToString(f.Name) {
		case "volume-id":
			if aws.ToString(v.VolumeId) != f.Values[0] {
				return false
			}
			continue
		case "availability-zone":
			if aws.ToString(v.AvailabilityZone) != f.Values[0] {
				return false
			}
			continue
		}
		key := strings.TrimPrefix(aws.ToString(f.Name), "tag:")
		ok := false
		for _, t := range v.Tags {
			if aws.ToString(t.Key) == key && aws.ToString(t.Value) == f.Values[0] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (f *fakeEC2) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "DescribeInstances")
	var bdm []types.InstanceBlockDeviceMapping
	for _, d := range f.devices {
		bdm = append(bdm, types.InstanceBlockDeviceMapping{DeviceName: aws.String(d)})
	}
	return &ec2.DescribeInstancesOutput{Reservations: []types.Reservation{{Instances: []types.Instance{{BlockDeviceMappings: bdm}}}}}, nil
}

func (f *fakeEC2) AttachVolume(_ context.Context, in *ec2.AttachVolumeInput, _ ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "AttachVolume "+aws.ToString(in.Device))
	if f.attachErr != nil {
		return nil, f.attachErr
	}
	for i, v := range f.vols {
		if aws.ToString(v.VolumeId) == aws.ToString(in.VolumeId) {
			f.vols[i].State = types.VolumeStateInUse
			f.vols[i].Attachments = []types.VolumeAttachment{{InstanceId: in.InstanceId, Device: in.Device, State: types.VolumeAttachmentStateAttaching}}
		}
	}
	f.describes = 0
	return &ec2.AttachVolumeOutput{State: types.VolumeAttachmentStateAttaching}, nil
}

func (f *fakeEC2) DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error) {
	return nil, errors.New("not used")
}

func (f *fakeEC2) CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	return &ec2.CreateTagsOutput{}, nil
}

func vol(id, az string, tags map[string]string) types.Volume {
	v := types.Volume{VolumeId: aws.String(id), AvailabilityZone: aws.String(az), State: types.VolumeStateAvailable}
	for k, val := range tags {
		v.Tags = append(v.Tags, types.Tag{Key: aws.String(k), Value: aws.String(val)})
	}
	return v
}

var home = config.Volume{Tag: map[string]string{"Name": "home-root"}, Mount: "/"}

func claimer(f *fakeEC2) *Claimer {
	return &Claimer{EC2: f, Instance: Instance{ID: "i-0123456789abcdef0", AZ: "us-east-1a"}, PollInterval: time.Millisecond}
}

func TestFindAttachWait(t *testing.T) {
	f := &fakeEC2{
		vols:        []types.Volume{vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", map[string]string{"Name": "home-root"}), vol("vol-0bbbbbbbbbbbbbbbb", "us-east-1a", map[string]string{"Name": "other"})},
		devices:     []string{"/dev/xvda", "/dev/sdf", "xvdg"},
		attachAfter: 2,
	}
	c := claimer(f)
	ctx := context.Background()
	v, err := c.Find(ctx, home)
	if err != nil || aws.ToString(v.VolumeId) != "vol-0aaaaaaaaaaaaaaaa" {
		t.Fatalf("Find = %v, %v", aws.ToString(v.VolumeId), err)
	}
	cl, err := c.Attach(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Device != "/dev/sdh" || cl.AlreadyAttached {
		t.Fatalf("claim = %+v (sdf and xvdg are taken: want /dev/sdh)", cl)
	}
	if err := c.WaitAttached(ctx, cl.VolumeID); err != nil {
		t.Fatal(err)
	}
	if f.describes < 3 {
		t.Fatalf("WaitAttached returned before EC2 said attached (%d describes)", f.describes)
	}
	// A reboot of the same instance finds its volume attached already.
	v, _ = c.Find(ctx, home)
	cl, err = c.Attach(ctx, v)
	if err != nil || !cl.AlreadyAttached || cl.Device != "/dev/sdh" {
		t.Fatalf("re-claim = %+v, %v", cl, err)
	}
}

func TestFindErrors(t *testing.T) {
	ctx := context.Background()
	f := &fakeEC2{vols: []types.Volume{vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1b", map[string]string{"Name": "home-root"})}}
	if _, err := claimer(f).Find(ctx, home); err == nil || !strings.Contains(err.Error(), "is in us-east-1b, but this instance is in us-east-1a") {
		t.Errorf("other AZ err = %v", err)
	}
	f = &fakeEC2{}
	if _, err := claimer(f).Find(ctx, home); err == nil || !strings.Contains(err.Error(), "no EBS volume has tag Name=home-root") {
		t.Errorf("none err = %v", err)
	}
	if _, err := claimer(f).Find(ctx, config.Volume{ID: "vol-0ccccccccccccccccc"}); err == nil || !strings.Contains(err.Error(), "no EBS volume has vol-0ccccccccccccccccc") {
		t.Errorf("missing id err = %v", err)
	}
	f = &fakeEC2{vols: []types.Volume{
		vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", map[string]string{"Name": "home-root"}),
		vol("vol-0bbbbbbbbbbbbbbbb", "us-east-1a", map[string]string{"Name": "home-root"}),
	}}
	if _, err := claimer(f).Find(ctx, home); err == nil || !strings.Contains(err.Error(), "2 volumes in us-east-1a have tag Name=home-root") {
		t.Errorf("ambiguous err = %v", err)
	}
}

func TestAttachRefusals(t *testing.T) {
	ctx := context.Background()
	other := vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", nil)
	other.State = types.VolumeStateInUse
	other.Attachments = []types.VolumeAttachment{{InstanceId: aws.String("i-0ffffffffffffffff"), State: types.VolumeAttachmentStateAttached}}
	f := &fakeEC2{}
	if _, err := claimer(f).Attach(ctx, other); err == nil || !strings.Contains(err.Error(), "attached to i-0ffffffffffffffff") {
		t.Errorf("in use err = %v", err)
	}
	multi := vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", nil)
	multi.MultiAttachEnabled = aws.Bool(true)
	if _, err := claimer(f).Attach(ctx, multi); err == nil || !strings.Contains(err.Error(), "Multi-Attach") {
		t.Errorf("multi-attach err = %v", err)
	}
	f = &fakeEC2{vols: []types.Volume{vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", nil)},
		attachErr: &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized"}}
	_, err := claimer(f).Attach(ctx, f.vols[0])
	if err == nil || !strings.Contains(err.Error(), "attach vol-0aaaaaaaaaaaaaaaa to i-0123456789abcdef0: UnauthorizedOperation: the instance role may not call ec2:AttachVolume") {
		t.Errorf("denied err = %v", err)
	}
	if len(f.calls) == 0 || f.calls[len(f.calls)-1] != "AttachVolume /dev/sdf" {
		t.Errorf("calls = %v", f.calls)
	}
}

func TestWaitAttachedFailsWhenAttachmentVanishes(t *testing.T) {
	f := &fakeEC2{vols: []types.Volume{vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", nil)}}
	c := claimer(f)
	c.ConsistencyGrace = 50 * time.Millisecond
	start := time.Now()
	err := c.WaitAttached(context.Background(), "vol-0aaaaaaaaaaaaaaaa")
	if err == nil || !strings.Contains(err.Error(), "the attachment is gone for 50ms") {
		t.Fatalf("err = %v", err)
	}
	// One view without the attachment is not enough: EC2 is eventually
	// consistent, so it must have looked for the whole grace.
	if time.Since(start) < 50*time.Millisecond || f.describes < 3 {
		t.Fatalf("gave up after %v and %d describes, before the grace", time.Since(start), f.describes)
	}
}

func TestWaitAttachedNudge(t *testing.T) {
	f := &fakeEC2{vols: []types.Volume{vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", nil)}, attachAfter: 1}
	c := claimer(f)
	c.PollInterval, c.MaxPoll = time.Hour, time.Hour // only a nudge can make it poll again
	if _, err := c.Attach(context.Background(), f.vols[0]); err != nil {
		t.Fatal(err)
	}
	nudge := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- c.WaitAttachedNudged(context.Background(), "vol-0aaaaaaaaaaaaaaaa", nudge) }()
	select {
	case err := <-done:
		t.Fatalf("returned before EC2 said attached: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	nudge <- struct{}{}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a nudge did not make it poll again")
	}
}
