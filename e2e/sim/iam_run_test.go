package sim

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// RunInstances with Spot market options and instance tags, launch template
// versions, as spotroot launch uses them.
func TestRunInstancesSpot(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ami := NewImageID()
	e.w.AddImage(Image{ID: ami})
	run := func(typ types.SpotInstanceType, b types.InstanceInterruptionBehavior) (*ec2.RunInstancesOutput, error) {
		return e.op.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeM7iLarge,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			InstanceMarketOptions: &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot,
				SpotOptions: &types.SpotMarketOptions{SpotInstanceType: typ, InstanceInterruptionBehavior: b}},
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tagsOf("spotroot:managed", "true")}}})
	}
	out, err := run(types.SpotInstanceTypePersistent, types.InstanceInterruptionBehaviorStop)
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	if i, _ := e.w.Instance(id); i.Lifecycle != "spot" || i.Tags["spotroot:managed"] != "true" || out.Instances[0].InstanceLifecycle != types.InstanceLifecycleTypeSpot {
		t.Errorf("instance %+v", i)
	}
	_, err = run(types.SpotInstanceTypePersistent, types.InstanceInterruptionBehaviorTerminate)
	wantAPIError(t, err, "InvalidParameterCombination", 400)
	_, err = run(types.SpotInstanceTypeOneTime, types.InstanceInterruptionBehaviorStop)
	wantAPIError(t, err, "InvalidParameterCombination", 400)
	_, err = e.op.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), DryRun: aws.Bool(true)})
	wantAPIError(t, err, "DryRunOperation", 412)

	data := &types.RequestLaunchTemplateData{ImageId: aws.String(ami), InstanceType: types.InstanceTypeM7iLarge}
	if _, err := e.op.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("lt-web"), LaunchTemplateData: data}); err != nil {
		t.Fatal(err)
	}
	v, err := e.op.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{LaunchTemplateName: aws.String("lt-web"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(ami), InstanceType: types.InstanceTypeM6iLarge}})
	if err != nil || aws.ToInt64(v.LaunchTemplateVersion.VersionNumber) != 2 {
		t.Fatalf("version: %+v %v", v, err)
	}
	out, err = e.op.RunInstances(ctx, &ec2.RunInstancesInput{MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		LaunchTemplate: &types.LaunchTemplateSpecification{LaunchTemplateName: aws.String("lt-web"), Version: aws.String("$Latest")}})
	if err != nil || out.Instances[0].InstanceType != types.InstanceTypeM6iLarge {
		t.Fatalf("run from $Latest: %+v %v", out, err)
	}
	_, err = e.op.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{LaunchTemplateName: aws.String("nope"), LaunchTemplateData: data})
	wantAPIError(t, err, "InvalidLaunchTemplateName.NotFoundException", 400)
}
