package sim

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

var ctx = context.Background()

func tagFilter(key, value string) types.Filter {
	return types.Filter{Name: aws.String("tag:" + key), Values: []string{value}}
}

func TestDescribeVolumesByTag(t *testing.T) {
	e := newEnv(t)
	want := e.addVolume("us-east-1a", map[string]string{"Name": "home-root", "owner": "me"})
	e.addVolume("us-east-1a", map[string]string{"Name": "scratch"})
	e.addVolume("us-east-1b", map[string]string{"Name": "home-root"})

	out, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		tagFilter("Name", "home-root"),
		{Name: aws.String("availability-zone"), Values: []string{"us-east-1a"}},
		{Name: aws.String("status"), Values: []string{"available", "in-use"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Volumes) != 1 {
		t.Fatalf("got %d volumes, want 1: %+v", len(out.Volumes), out.Volumes)
	}
	v := out.Volumes[0]
	if aws.ToString(v.VolumeId) != want || aws.ToInt32(v.Size) != 10 || aws.ToString(v.AvailabilityZone) != "us-east-1a" ||
		v.State != types.VolumeStateAvailable || v.VolumeType != types.VolumeTypeGp3 || aws.ToInt32(v.Iops) != 3000 ||
		aws.ToBool(v.MultiAttachEnabled) || v.CreateTime == nil || time.Since(*v.CreateTime) > time.Minute ||
		len(v.Attachments) != 0 {
		t.Errorf("volume = %+v", v)
	}
	tags := map[string]string{}
	for _, tg := range v.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags["Name"] != "home-root" || tags["owner"] != "me" || len(tags) != 2 {
		t.Errorf("tags = %v", tags)
	}

	// Wildcards, tag-key, and the root volume's attachment filter.
	count := func(fs ...types.Filter) int {
		t.Helper()
		out, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: fs})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Volumes)
	}
	if n := count(tagFilter("Name", "home-*")); n != 2 {
		t.Errorf("home-* matched %d, want 2", n)
	}
	if n := count(types.Filter{Name: aws.String("tag-key"), Values: []string{"owner"}}); n != 1 {
		t.Errorf("tag-key owner matched %d, want 1", n)
	}
	if n := count(types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{e.inst.ID}}); n != 1 {
		t.Errorf("attachment.instance-id matched %d, want 1 (the root)", n)
	}
	if n := count(tagFilter("Name", "nothing")); n != 0 {
		t.Errorf("unmatched tag matched %d", n)
	}
	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
	wantAPIError(t, err, "InvalidParameterValue", 400)

	// By id, and the id errors.
	byID, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{want}})
	if err != nil || len(byID.Volumes) != 1 || aws.ToString(byID.Volumes[0].VolumeId) != want {
		t.Fatalf("by id: %+v %v", byID, err)
	}
	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{NewVolumeID()}})
	wantAPIError(t, err, "InvalidVolume.NotFound", 400)
	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{"vol-123"}})
	wantAPIError(t, err, "InvalidVolumeID.Malformed", 400)
}

func TestDescribeVolumesPagination(t *testing.T) {
	e := newEnv(t)
	for range 11 {
		e.addVolume("us-east-1a", map[string]string{"batch": "yes"})
	}
	p := ec2.NewDescribeVolumesPaginator(e.ec2, &ec2.DescribeVolumesInput{MaxResults: aws.Int32(5)})
	var ids []string
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(out.Volumes) > 5 {
			t.Fatalf("page of %d > MaxResults", len(out.Volumes))
		}
		for _, v := range out.Volumes {
			ids = append(ids, aws.ToString(v.VolumeId))
		}
	}
	// 11 batch volumes plus the instance's root.
	slices.Sort(ids)
	if len(ids) != 12 || len(slices.Compact(ids)) != 12 || pages != 3 {
		t.Errorf("got %d ids (%d unique) in %d pages, want 12 in 3", len(ids), len(slices.Compact(ids)), pages)
	}
	_, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{MaxResults: aws.Int32(2)})
	wantAPIError(t, err, "InvalidParameterValue", 400)
}

func TestAttachDetachWithHotplug(t *testing.T) {
	e := newEnv(t)
	e.s.Bind(e.inst.ID, e.hp)
	vol := e.addVolume("us-east-1a", map[string]string{"Name": "home-root"})

	out, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol),
		InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")})
	if err != nil {
		t.Fatal(err)
	}
	if out.State != types.VolumeAttachmentStateAttaching || aws.ToString(out.VolumeId) != vol ||
		aws.ToString(out.InstanceId) != e.inst.ID || aws.ToString(out.Device) != "/dev/sdf" || out.AttachTime == nil {
		t.Errorf("AttachVolume output = %+v", out)
	}

	// Wait through the API, as spotroot does.
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}})
		if err != nil {
			t.Fatal(err)
		}
		v := d.Volumes[0]
		if v.State != types.VolumeStateInUse || len(v.Attachments) != 1 {
			t.Fatalf("during attach: %+v", v)
		}
		if a := v.Attachments[0]; a.State == types.VolumeAttachmentStateAttached {
			if aws.ToString(a.InstanceId) != e.inst.ID || aws.ToString(a.Device) != "/dev/sdf" || aws.ToBool(a.DeleteOnTermination) {
				t.Errorf("attachment = %+v", a)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("attachment never became attached")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got, want := e.hp.Calls(), []string{"attach " + vol + " /images/" + vol + ".img /dev/sdf"}; !slices.Equal(got, want) {
		t.Errorf("hot-plug calls = %q, want %q", got, want)
	}

	// The instance shows it in its block device mapping.
	di, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{e.inst.ID}})
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	for _, b := range di.Reservations[0].Instances[0].BlockDeviceMappings {
		devs = append(devs, aws.ToString(b.DeviceName)+"="+aws.ToString(b.Ebs.VolumeId)+":"+string(b.Ebs.Status))
	}
	if want := []string{"/dev/sdf=" + vol + ":attached", "/dev/xvda=" + e.rootVol + ":attached"}; !slices.Equal(devs, want) {
		t.Errorf("block devices = %q, want %q", devs, want)
	}

	// Attached already: to this instance or to another.
	other := e.addInstance("us-east-1a", nil)
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(other), Device: aws.String("/dev/sdf")})
	wantAPIError(t, err, "VolumeInUse", 400)
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdg")})
	wantAPIError(t, err, "VolumeInUse", 400)

	dout, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol), Force: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if dout.State != types.VolumeAttachmentStateDetaching {
		t.Errorf("DetachVolume state = %s", dout.State)
	}
	v := e.waitVolume(vol, func(v Volume) bool { return v.State == VolumeAvailable })
	if len(v.Attachments) != 0 {
		t.Errorf("attachments after detach: %+v", v.Attachments)
	}
	if calls := e.hp.Calls(); len(calls) != 2 || calls[1] != "detach "+vol {
		t.Errorf("hot-plug calls = %q", calls)
	}
	if i, _ := e.w.Instance(e.inst.ID); i.BlockDevices["/dev/sdf"] != "" {
		t.Errorf("block devices after detach: %v", i.BlockDevices)
	}
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)})
	wantAPIError(t, err, "IncorrectState", 400)
}

func TestAttachWithoutHotplugAndLatency(t *testing.T) {
	e := newEnv(t)
	e.w.Update(func(w *World) error { w.AttachLatency = 40 * time.Millisecond; return nil })
	vol := e.addVolume("us-east-1a", nil)
	start := time.Now()
	if _, err := e.op.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol),
		InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/xvdf")}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.w.Volume(vol); v.Attachments[0].State != AttachAttaching {
		t.Fatalf("state right after AttachVolume = %s", v.Attachments[0].State)
	}
	e.waitVolume(vol, func(v Volume) bool { return len(v.Attachments) == 1 && v.Attachments[0].State == AttachAttached })
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("attached after %v, before the 40ms latency", d)
	}
	if n := len(e.hp.Calls()); n != 0 {
		t.Errorf("unbound instance got %d hot-plug calls", n)
	}
}

func TestHotplugFailureDropsAttachment(t *testing.T) {
	e := newEnv(t)
	e.hp.set(errors.New("qmp: device_add failed"), nil)
	e.s.Bind(e.inst.ID, e.hp)
	vol := e.addVolume("us-east-1a", nil)
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol),
		InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	v := e.waitVolume(vol, func(v Volume) bool { return v.State == VolumeAvailable })
	if len(v.Attachments) != 0 || len(e.hp.Calls()) != 1 {
		t.Errorf("after failed hot-plug: %+v, calls %q", v, e.hp.Calls())
	}
	if i, _ := e.w.Instance(e.inst.ID); i.BlockDevices["/dev/sdf"] != "" {
		t.Errorf("failed attach left block device: %v", i.BlockDevices)
	}

	// The pseudo-fault fails it without reaching the VM.
	e.hp.set(nil, nil)
	e.w.SetFault(FaultHotplugAttach, Fault{Code: "InternalError"})
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol),
		InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	e.s.Wait()
	if v, _ := e.w.Volume(vol); v.State != VolumeAvailable || len(e.hp.Calls()) != 1 {
		t.Errorf("after hot-plug fault: %s, calls %q", v.State, e.hp.Calls())
	}
}

func TestAttachDetachErrors(t *testing.T) {
	e := newEnv(t)
	volA := e.addVolume("us-east-1a", nil)
	volB := e.addVolume("us-east-1b", nil)
	creating := NewVolumeID()
	e.w.AddVolume(Volume{ID: creating, AZ: "us-east-1a", State: VolumeCreating})
	pending := e.addInstance("us-east-1a", func(i *Instance) { i.State = InstancePending })
	dead := e.addInstance("us-east-1a", nil)
	e.w.TerminateInstance(dead)
	full := e.addInstance("us-east-1a", func(i *Instance) {
		i.MaxAttachments = 1
		i.BlockDevices = map[string]string{"/dev/xvda": NewVolumeID()}
	})

	attach := func(vol, inst, dev string) error {
		_, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String(dev)})
		return err
	}
	for _, tc := range []struct {
		name, vol, inst, dev, code string
	}{
		{"zone mismatch", volB, e.inst.ID, "/dev/sdf", "InvalidVolume.ZoneMismatch"},
		{"volume creating", creating, e.inst.ID, "/dev/sdf", "IncorrectState"},
		{"instance pending", volA, pending, "/dev/sdf", "IncorrectState"},
		{"instance terminated", volA, dead, "/dev/sdf", "IncorrectInstanceState"},
		{"bad device", volA, e.inst.ID, "/dev/nvme1n1", "InvalidParameterValue"},
		{"root device taken", volA, e.inst.ID, "/dev/xvda", "InvalidParameterValue"},
		{"no such volume", NewVolumeID(), e.inst.ID, "/dev/sdf", "InvalidVolume.NotFound"},
		{"malformed volume", "vol-xyz", e.inst.ID, "/dev/sdf", "InvalidVolumeID.Malformed"},
		{"no such instance", volA, NewInstanceID(), "/dev/sdf", "InvalidInstanceID.NotFound"},
		{"malformed instance", volA, "i-nope", "/dev/sdf", "InvalidInstanceID.Malformed"},
		{"limit", volA, full, "/dev/sdf", "AttachmentLimitExceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantAPIError(t, attach(tc.vol, tc.inst, tc.dev), tc.code, 400)
		})
	}
	if v, _ := e.w.Volume(volA); v.State != VolumeAvailable || len(v.Attachments) != 0 {
		t.Errorf("failed attaches changed the volume: %+v", v)
	}

	// Detach errors.
	_, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volA)})
	wantAPIError(t, err, "IncorrectState", 400)
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(e.rootVol), InstanceId: aws.String(full)})
	wantAPIError(t, err, "InvalidAttachment.NotFound", 400)
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(NewVolumeID())})
	wantAPIError(t, err, "InvalidVolume.NotFound", 400)
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(e.rootVol)})
	wantAPIError(t, err, "OperationNotPermitted", 400)

	// Detach while attaching is refused.
	hold := make(chan struct{})
	e.hp.set(nil, hold)
	e.s.Bind(e.inst.ID, e.hp)
	if err := attach(volA, e.inst.ID, "/dev/sdg"); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volA)})
	wantAPIError(t, err, "IncorrectState", 400)
	close(hold)
	e.waitVolume(volA, func(v Volume) bool { return len(v.Attachments) == 1 && v.Attachments[0].State == AttachAttached })
}

func TestFaultInjection(t *testing.T) {
	e := newEnv(t)
	describe := func() error {
		_, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
		return err
	}
	if err := e.w.SetFault("DescribeVolumes", Fault{Code: "RequestLimitExceeded", Times: 2}); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, describe(), "RequestLimitExceeded", 503)
	wantAPIError(t, describe(), "RequestLimitExceeded", 503)
	if err := describe(); err != nil {
		t.Fatalf("third call after Times=2: %v", err)
	}

	e.w.SetFault("DescribeVolumes", Fault{Code: "InternalError", Times: -1})
	for range 3 {
		wantAPIError(t, describe(), "InternalError", 500)
	}
	e.w.ClearFault("DescribeVolumes")
	if err := describe(); err != nil {
		t.Fatal(err)
	}

	e.w.SetFault("DescribeVolumes", Fault{Code: "Unavailable", Status: 418, Message: "teapot"})
	err := describe()
	wantAPIError(t, err, "Unavailable", 418)
	if !strings.Contains(err.Error(), "teapot") {
		t.Errorf("message not passed: %v", err)
	}

	e.w.SetFault("DescribeVolumes", Fault{Delay: 60 * time.Millisecond, Times: 1})
	start := time.Now()
	if err := describe(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 60*time.Millisecond {
		t.Errorf("delay fault: call took %v", d)
	}

	e.w.Update(func(w *World) error { w.DenyActions = []string{"ec2:AttachVolume"}; return nil })
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(e.rootVol),
		InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")})
	wantAPIError(t, err, "UnauthorizedOperation", 403)
	if msg := err.Error(); !strings.Contains(msg, "ec2:AttachVolume") || !strings.Contains(msg, "assumed-role/spotroot-test/"+e.inst.ID) ||
		!strings.Contains(msg, "Encoded authorization failure message") {
		t.Errorf("UnauthorizedOperation message: %s", msg)
	}
	if err := describe(); err != nil {
		t.Errorf("undenied action failed: %v", err)
	}

	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{DryRun: aws.Bool(true)})
	wantAPIError(t, err, "DryRunOperation", 412)
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	call := func(c *ec2.Client) error {
		_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
		return err
	}
	if err := call(e.op); err != nil {
		t.Fatalf("operator: %v", err)
	}
	wantAPIError(t, call(e.client(credentials.NewStaticCredentialsProvider("AKIAUNKNOWN000000000", "secret", ""))), "AuthFailure", 401)
	ic := e.inst.Credentials
	wantAPIError(t, call(e.client(credentials.NewStaticCredentialsProvider(ic.AccessKeyID, "wrong-secret", ic.Token))),
		"SignatureDoesNotMatch", 403)
	wantAPIError(t, call(e.client(credentials.NewStaticCredentialsProvider(ic.AccessKeyID, ic.SecretAccessKey, "other-token"))),
		"AuthFailure", 401)
	eu := ec2.NewFromConfig(aws.Config{Region: "eu-west-1", BaseEndpoint: aws.String(e.ec2URL),
		Credentials: credentials.NewStaticCredentialsProvider(ic.AccessKeyID, ic.SecretAccessKey, ic.Token)})
	wantAPIError(t, call(eu), "AuthFailure", 401)

	// Unsigned and tampered raw requests.
	resp, err := http.PostForm(e.ec2URL, url.Values{"Action": {"DescribeVolumes"}, "Version": {"2016-11-15"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), "<Response><Errors><Error><Code>AuthFailure</Code>") ||
		!strings.Contains(string(body), "<RequestID>") {
		t.Errorf("unsigned request: %d %s", resp.StatusCode, body)
	}
}

func TestDescribeInstances(t *testing.T) {
	e := newEnv(t)
	stopped := e.addInstance("us-east-1b", func(i *Instance) { i.State = InstanceStopped })

	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{e.inst.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
		t.Fatalf("reservations = %+v", out.Reservations)
	}
	i := out.Reservations[0].Instances[0]
	if aws.ToString(i.InstanceId) != e.inst.ID || i.State == nil || aws.ToInt32(i.State.Code) != 16 ||
		i.State.Name != types.InstanceStateNameRunning || aws.ToString(i.Placement.AvailabilityZone) != "us-east-1a" ||
		aws.ToString(i.ImageId) != e.inst.ImageID || string(i.InstanceType) != "m7i.large" ||
		i.InstanceLifecycle != types.InstanceLifecycleTypeSpot || aws.ToString(i.PrivateIpAddress) != "169.254.2.15" ||
		aws.ToString(i.RootDeviceName) != "/dev/xvda" || i.IamInstanceProfile == nil ||
		i.LaunchTime == nil || !i.LaunchTime.Equal(e.inst.LaunchTime) {
		t.Errorf("instance = %+v", i)
	}
	if len(i.Tags) != 1 || aws.ToString(i.Tags[0].Key) != "Name" || aws.ToString(i.Tags[0].Value) != "vm1" {
		t.Errorf("tags = %+v", i.Tags)
	}
	if len(i.BlockDeviceMappings) != 1 || aws.ToString(i.BlockDeviceMappings[0].Ebs.VolumeId) != e.rootVol ||
		!aws.ToBool(i.BlockDeviceMappings[0].Ebs.DeleteOnTermination) {
		t.Errorf("block devices = %+v", i.BlockDeviceMappings)
	}

	running, err := e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{"running"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(running.Reservations) != 1 || aws.ToString(running.Reservations[0].Instances[0].InstanceId) != e.inst.ID {
		t.Errorf("running filter: %+v", running.Reservations)
	}
	inB, err := e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("availability-zone"), Values: []string{"us-east-1b"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(inB.Reservations) != 1 || aws.ToString(inB.Reservations[0].Instances[0].InstanceId) != stopped ||
		inB.Reservations[0].Instances[0].State.Name != types.InstanceStateNameStopped {
		t.Errorf("zone filter: %+v", inB.Reservations)
	}
	_, err = e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{NewInstanceID()}})
	wantAPIError(t, err, "InvalidInstanceID.NotFound", 400)
}

func TestTagsAndVolumeLifecycle(t *testing.T) {
	e := newEnv(t)
	dataDir := t.TempDir()
	e.w.Update(func(w *World) error { w.DataDir = dataDir; return nil })

	// A snapshot-backed world: source volume with data.
	src := NewVolumeID()
	srcImg := filepath.Join(t.TempDir(), "src.img")
	if err := os.WriteFile(srcImg, []byte("persistent root contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.w.AddVolume(Volume{ID: src, AZ: "us-east-1a", SizeGiB: 1, ImagePath: srcImg})

	snap, err := e.op.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(src), Description: aws.String("base"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	snapID := aws.ToString(snap.SnapshotId)
	if snap.State != types.SnapshotStatePending || aws.ToString(snap.VolumeId) != src || aws.ToInt32(snap.VolumeSize) != 1 {
		t.Errorf("CreateSnapshot = %+v", snap)
	}
	e.s.Wait()
	ds, err := e.op.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []types.Filter{tagFilter("k", "v")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Snapshots) != 1 || aws.ToString(ds.Snapshots[0].SnapshotId) != snapID || ds.Snapshots[0].State != types.SnapshotStateCompleted ||
		aws.ToString(ds.Snapshots[0].Description) != "base" {
		t.Fatalf("DescribeSnapshots = %+v", ds.Snapshots)
	}

	cv, err := e.op.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String(snapID),
		Size: aws.Int32(2), VolumeType: types.VolumeTypeGp3,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("home-root")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	newVol := aws.ToString(cv.VolumeId)
	if cv.State != types.VolumeStateCreating || aws.ToInt32(cv.Size) != 2 || aws.ToString(cv.SnapshotId) != snapID || len(cv.Tags) != 1 {
		t.Errorf("CreateVolume = %+v", cv)
	}
	v := e.waitVolume(newVol, func(v Volume) bool { return v.State == VolumeAvailable })
	f, err := os.Open(v.ImagePath)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 24)
	io.ReadFull(f, head)
	st, _ := f.Stat()
	f.Close()
	if st.Size() != 2<<30 || string(head) != "persistent root contents" {
		t.Errorf("restored image: %d bytes, starts %q", st.Size(), head)
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks; blocks > 1024 {
		t.Errorf("restored image is not sparse: %d blocks", blocks)
	}
	_, err = e.op.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-west-2a"), Size: aws.Int32(1)})
	wantAPIError(t, err, "InvalidParameterValue", 400)
	_, err = e.op.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String(NewSnapshotID())})
	wantAPIError(t, err, "InvalidSnapshot.NotFound", 400)

	// Tags: add, replace, delete by key and value.
	if _, err := e.op.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{newVol, e.inst.ID},
		Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("renamed")}, {Key: aws.String("x"), Value: aws.String("1")}}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.w.Volume(newVol); v.Tags["Name"] != "renamed" || v.Tags["x"] != "1" {
		t.Errorf("volume tags = %v", v.Tags)
	}
	if i, _ := e.w.Instance(e.inst.ID); i.Tags["x"] != "1" || i.Tags["Name"] != "renamed" {
		t.Errorf("instance tags = %v", i.Tags)
	}
	if _, err := e.op.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{newVol},
		Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("not-this")}, {Key: aws.String("x")}}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.w.Volume(newVol); v.Tags["Name"] != "renamed" || len(v.Tags) != 1 {
		t.Errorf("tags after delete = %v", v.Tags)
	}
	_, err = e.op.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{NewVolumeID()}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	wantAPIError(t, err, "InvalidVolume.NotFound", 400)

	// DeleteVolume: refused while attached, then removes volume and file.
	_, err = e.op.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(e.rootVol)})
	wantAPIError(t, err, "VolumeInUse", 400)
	if _, err := e.op.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(newVol)}); err != nil {
		t.Fatal(err)
	}
	e.s.Wait()
	if _, ok := e.w.Volume(newVol); ok {
		t.Error("volume still there after DeleteVolume")
	}
	if _, err := os.Stat(v.ImagePath); !os.IsNotExist(err) {
		t.Errorf("image file after DeleteVolume: %v", err)
	}
	if _, err := os.Stat(srcImg); err != nil {
		t.Errorf("harness image touched: %v", err)
	}

	// Images.
	ami := NewImageID()
	e.w.AddImage(Image{ID: ami, Name: "spotroot-test-ami", RootSnapshotID: snapID, Tags: map[string]string{"os": "debian"}})
	di, err := e.op.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{
		{Name: aws.String("name"), Values: []string{"spotroot-*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(di.Images) != 1 || aws.ToString(di.Images[0].ImageId) != ami || di.Images[0].State != types.ImageStateAvailable ||
		aws.ToString(di.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId) != snapID ||
		aws.ToInt32(di.Images[0].BlockDeviceMappings[0].Ebs.VolumeSize) != 1 {
		t.Errorf("DescribeImages = %+v", di.Images)
	}
	_, err = e.op.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{NewImageID()}})
	wantAPIError(t, err, "InvalidAMIID.NotFound", 400)
}
