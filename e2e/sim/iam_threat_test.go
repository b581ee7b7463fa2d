package sim

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/spotroot/spotroot/internal/iampolicy"
)

// The threat model of docs/security.md, each "cannot" made as a call by an
// instance holding the role that `spotroot iam-policy` prints, and seen
// denied by the simulator's IAM evaluation.

const managedKey, managedValue = iampolicy.DefaultTagKey, iampolicy.DefaultTagValue

func withPolicy(t *testing.T, e *env, o iampolicy.Options) {
	t.Helper()
	b, err := iampolicy.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.w.SetRolePolicy(e.inst.Role, string(b)); err != nil {
		t.Fatal(err)
	}
}

// denied checks err is UnauthorizedOperation and decodes it to action and
// resource (and the statement, when want is not "").
func denied(t *testing.T, what string, err error, action, resource, stmt string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "UnauthorizedOperation" {
		t.Fatalf("%s: want UnauthorizedOperation, got %v", what, err)
	}
	d, derr := iampolicy.DecodeMessage(ae.ErrorMessage())
	if derr != nil {
		t.Fatalf("%s: %v", what, derr)
	}
	if d.Context.Action != action || !strings.Contains(d.Context.Resource, resource) || (stmt != "" && d.Statement() != stmt) {
		t.Errorf("%s: decoded action %q resource %q statement %q, want %q %q %q", what, d.Context.Action, d.Context.Resource, d.Statement(), action, resource, stmt)
	}
}

// everything is every capability at once: the "cannot"s must hold even
// then (except where docs/security.md says a capability allows it).
var everything = iampolicy.Options{Create: true, CreateFrom: []string{"ami", "empty"}, CreateTags: map[string]string{"Name": "mine"},
	CrossAZMove: true, DeleteMoved: true, ClaimTags: true}

func TestThreatModel(t *testing.T) {
	ctx := context.Background()
	for _, pol := range []struct {
		name string
		o    iampolicy.Options
	}{{"claim-only", iampolicy.Options{}}, {"all-but-detach", everything}} {
		t.Run(pol.name, func(t *testing.T) {
			e := newEnv(t)
			withPolicy(t, e, pol.o)
			managed := map[string]string{managedKey: managedValue, "Name": "mine"}
			victim := e.addInstance("us-east-1a", func(i *Instance) { i.UserData = []byte("secret") })
			vol := e.addVolume("us-east-1a", managed)

			// Attach a managed volume to another instance.
			_, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(victim), Device: aws.String("/dev/sdf")})
			denied(t, "attach to another instance", err, "ec2:AttachVolume", "instance/"+victim, "")
			// … while attaching it to itself works (the control).
			if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")}); err != nil {
				t.Fatalf("attach a managed volume to itself: %v", err)
			}
			// Attach an unmanaged volume to itself.
			plain := e.addVolume("us-east-1a", map[string]string{"Name": "not-ours"})
			_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(plain), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdg")})
			denied(t, "attach an unmanaged volume", err, "ec2:AttachVolume", "volume/"+plain, "SpotrootAttachManagedVolumes")

			// Detach a managed volume from another running instance.
			held := e.addVolume("us-east-1a", managed)
			owner := e.addInstance("us-east-1a", func(i *Instance) {
				i.BlockDevices = map[string]string{"/dev/sdf": held}
				i.Tags = map[string]string{managedKey: managedValue}
			})
			_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(held), InstanceId: aws.String(owner), Force: aws.Bool(true)})
			denied(t, "detach from a running instance", err, "ec2:DetachVolume", held, "")

			// Read another instance's user-data (the operator can: the
			// action exists and works).
			_, err = e.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(victim), Attribute: types.InstanceAttributeNameUserData})
			denied(t, "read another instance's user-data", err, "ec2:DescribeInstanceAttribute", "instance/"+victim, "")
			out, err := e.op.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(victim), Attribute: types.InstanceAttributeNameUserData})
			if err != nil || out.UserData == nil || aws.ToString(out.UserData.Value) != base64.StdEncoding.EncodeToString([]byte("secret")) {
				t.Fatalf("operator DescribeInstanceAttribute userData: %+v %v", out, err)
			}

			// Retag a volume into the managed set, or out of it, or onto
			// another selector.
			_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{plain}, Tags: tagsOf(managedKey, managedValue)})
			denied(t, "tag a volume into the managed set", err, "ec2:CreateTags", plain, "SpotrootNeverRetagVolumes")
			_, err = e.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{vol}, Tags: tagsOf(managedKey, managedValue)})
			denied(t, "untag a managed volume", err, "ec2:DeleteTags", vol, "SpotrootNeverRetagVolumes")
			_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{vol}, Tags: tagsOf("Name", "victim-root")})
			denied(t, "retag onto another selector", err, "ec2:CreateTags", vol, "SpotrootNeverRetagVolumes")
			// Tag another instance spotroot:boot (itself: allowed).
			_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{victim}, Tags: tagsOf(iampolicy.TagBoot, "failed:claim")})
			denied(t, "tag another instance", err, "ec2:CreateTags", victim, "")
			if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{e.inst.ID}, Tags: tagsOf(iampolicy.TagBoot, "failed:claim")}); err != nil {
				t.Errorf("tag itself %s: %v", iampolicy.TagBoot, err)
			}

			// Create a volume another instance would boot as its root.
			_, err = e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), Size: aws.Int32(1),
				TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tagsOf(managedKey, managedValue, "Name", "victim-root")}}})
			denied(t, "create a volume tagged like another's root", err, "ec2:CreateVolume", "volume/", "")
			if pol.o.Create {
				// Its own selector: allowed.
				if _, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
					TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tagsOf(managedKey, managedValue, "Name", "mine")}}}); err != nil {
					t.Errorf("create its own volume: %v", err)
				}
				// Without the managed tag: denied.
				_, err = e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
					TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tagsOf("Name", "mine")}}})
				denied(t, "create without the managed tag", err, "ec2:CreateVolume", "volume/", "SpotrootCreateManagedVolumes")
			}

			// The audit log saw every denial, with the caller and the
			// resources, and the operator's call.
			evs, err := e.s.AuditEvents()
			if err != nil {
				t.Fatal(err)
			}
			var n int
			for _, ev := range evs {
				if ev.ErrorCode == "UnauthorizedOperation" {
					n++
					if ev.UserIdentity.SourceInstance != e.inst.ID || ev.UserIdentity.Type != "AssumedRole" || len(ev.Resources) == 0 {
						t.Errorf("audit event %+v", ev)
					}
				}
			}
			if n < 8 {
				t.Errorf("audit log has %d denials, want at least 8", n)
			}
		})
	}
}

// Detach from a dead owner: the capability allows exactly managed volumes
// of managed instances.
func TestDetachDeadOwnerScope(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	withPolicy(t, e, iampolicy.Options{DetachDeadOwner: true})
	held := e.addVolume("us-east-1a", map[string]string{managedKey: managedValue})
	unmanagedOwner := e.addInstance("us-east-1a", func(i *Instance) { i.State = InstanceStopped; i.BlockDevices = map[string]string{"/dev/sdf": held} })
	_, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(held), InstanceId: aws.String(unmanagedOwner), Force: aws.Bool(true)})
	denied(t, "detach from an unmanaged instance", err, "ec2:DetachVolume", "instance/"+unmanagedOwner, "SpotrootDetachManagedVolumes")
	e.w.Update(func(w *World) error {
		w.Instances[unmanagedOwner].Tags = map[string]string{managedKey: managedValue}
		return nil
	})
	if _, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(held), InstanceId: aws.String(unmanagedOwner), Force: aws.Bool(true)}); err != nil {
		t.Errorf("detach from a managed dead owner: %v", err)
	}
}

// The partition of the world's region must be the policy's.
func TestPartitionMismatch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	withPolicy(t, e, iampolicy.Options{Partition: "aws-cn"})
	vol := e.addVolume("us-east-1a", map[string]string{managedKey: managedValue})
	_, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")})
	denied(t, "aws-cn policy in us-east-1", err, "ec2:AttachVolume", "volume/"+vol, "")
}

// DryRun authorises first: DryRunOperation when allowed,
// UnauthorizedOperation when not, and nothing changes.
func TestDryRunAuthorizes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	withPolicy(t, e, iampolicy.Options{})
	vol := e.addVolume("us-east-1a", map[string]string{managedKey: managedValue})
	_, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf"), DryRun: aws.Bool(true)})
	wantAPIError(t, err, "DryRunOperation", 412)
	_, err = e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(vol), DryRun: aws.Bool(true)})
	wantAPIError(t, err, "UnauthorizedOperation", 403)
	if v, _ := e.w.Volume(vol); v.State != VolumeAvailable {
		t.Errorf("a dry run changed the volume: %+v", v)
	}
	evs, _ := e.s.AuditEvents()
	if last := evs[len(evs)-1]; !last.DryRun || last.EventName != "DeleteVolume" || last.ErrorCode != "UnauthorizedOperation" {
		t.Errorf("last audit event %+v", last)
	}
}

// A volume encrypted with a customer-managed key attaches only when the
// role may create grants on that key (--kms-key).
func TestKMSKeyForEncryptedVolumes(t *testing.T) {
	ctx := context.Background()
	const key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	e := newEnv(t)
	vol := NewVolumeID()
	if err := e.w.AddVolume(Volume{ID: vol, AZ: "us-east-1a", Encrypted: true, KmsKeyID: key, Tags: map[string]string{managedKey: managedValue}}); err != nil {
		t.Fatal(err)
	}
	withPolicy(t, e, iampolicy.Options{})
	_, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")})
	denied(t, "attach without the key", err, "kms:CreateGrant", key, "")
	withPolicy(t, e, iampolicy.Options{KMSKeys: []string{key}})
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(e.inst.ID), Device: aws.String("/dev/sdf")}); err != nil {
		t.Errorf("attach with --kms-key: %v", err)
	}
}
