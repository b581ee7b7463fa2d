package sim

import (
	"context"
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestDescribeSubnets(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	out, err := e.op.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{
		Filters: []types.Filter{{Name: aws.String("availability-zone"), Values: []string{"us-east-1b"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Subnets) != 1 || aws.ToString(out.Subnets[0].AvailabilityZone) != "us-east-1b" ||
		!aws.ToBool(out.Subnets[0].DefaultForAz) || aws.ToString(out.Subnets[0].VpcId) == "" {
		t.Fatalf("subnets in us-east-1b: %+v", out.Subnets)
	}
	all, err := e.op.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil || len(all.Subnets) != 3 {
		t.Fatalf("all subnets: %d, %v; want the default VPC's 3", len(all.Subnets), err)
	}
	_, err = e.op.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{"subnet-0123456789abcdef0"}})
	wantAPIError(t, err, "InvalidSubnetID.NotFound", http.StatusBadRequest)
	_, err = e.op.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
	wantAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
}

func addAMI(t *testing.T, e *env) string {
	t.Helper()
	id := NewImageID()
	if err := e.w.AddImage(Image{ID: id, Name: "spotroot-ami"}); err != nil {
		t.Fatal(err)
	}
	return id
}

func subnetIn(t *testing.T, e *env, az string) string {
	t.Helper()
	out, err := e.op.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{
		Filters: []types.Filter{{Name: aws.String("availability-zone"), Values: []string{az}}}})
	if err != nil || len(out.Subnets) == 0 {
		t.Fatalf("no subnet in %s: %v", az, err)
	}
	return aws.ToString(out.Subnets[0].SubnetId)
}

func TestRequestSpotInstances(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ami := addAMI(t, e)
	subnet := subnetIn(t, e, "us-east-1b")
	ud := "#cloud-config\nspotroot: {volume: {tag: {Name: x}}}\n"
	out, err := e.op.RequestSpotInstances(ctx, &ec2.RequestSpotInstancesInput{
		Type:                         types.SpotInstanceTypePersistent,
		InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorStop,
		LaunchSpecification: &types.RequestSpotLaunchSpecification{
			ImageId: aws.String(ami), InstanceType: types.InstanceTypeM7iLarge, SubnetId: aws.String(subnet),
			SecurityGroupIds:   []string{"sg-0123456789abcdef0"},
			IamInstanceProfile: &types.IamInstanceProfileSpecification{Name: aws.String("spotroot")},
			UserData:           aws.String(base64.StdEncoding.EncodeToString([]byte(ud))),
		},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSpotInstancesRequest, Tags: tagsOf("spotroot:volume", "x")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.SpotInstanceRequests) != 1 {
		t.Fatalf("%d requests", len(out.SpotInstanceRequests))
	}
	r := out.SpotInstanceRequests[0]
	if r.Type != types.SpotInstanceTypePersistent || r.InstanceInterruptionBehavior != types.InstanceInterruptionBehaviorStop ||
		r.State != types.SpotInstanceStateActive || aws.ToString(r.LaunchedAvailabilityZone) != "us-east-1b" ||
		aws.ToString(r.InstanceId) == "" || len(r.Tags) != 1 {
		t.Fatalf("request %+v", r)
	}
	inst, ok := e.w.Instance(aws.ToString(r.InstanceId))
	if !ok || inst.AZ != "us-east-1b" || string(inst.UserData) != ud || inst.Role != "spotroot" || inst.Lifecycle != "spot" {
		t.Fatalf("instance %+v", inst)
	}
	d, err := e.op.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{SpotInstanceRequestIds: []string{aws.ToString(r.SpotInstanceRequestId)}})
	if err != nil || len(d.SpotInstanceRequests) != 1 || aws.ToString(d.SpotInstanceRequests[0].InstanceId) != inst.ID {
		t.Fatalf("describe: %+v %v", d, err)
	}
	di, err := e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst.ID}})
	if err != nil || len(di.Reservations) != 1 {
		t.Fatalf("describe instance: %v", err)
	}

	// Errors, as EC2 words them.
	spec := func(m func(*types.RequestSpotLaunchSpecification)) *types.RequestSpotLaunchSpecification {
		s := &types.RequestSpotLaunchSpecification{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro}
		m(s)
		return s
	}
	_, err = e.op.RequestSpotInstances(ctx, &ec2.RequestSpotInstancesInput{InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorStop,
		LaunchSpecification: spec(func(*types.RequestSpotLaunchSpecification) {})})
	wantAPIError(t, err, "InvalidParameterCombination", http.StatusBadRequest)
	_, err = e.op.RequestSpotInstances(ctx, &ec2.RequestSpotInstancesInput{LaunchSpecification: spec(func(s *types.RequestSpotLaunchSpecification) {
		s.ImageId = aws.String("ami-0123456789abcdef0")
	})})
	wantAPIError(t, err, "InvalidAMIID.NotFound", http.StatusBadRequest)
	_, err = e.op.RequestSpotInstances(ctx, &ec2.RequestSpotInstancesInput{LaunchSpecification: spec(func(s *types.RequestSpotLaunchSpecification) {
		s.SubnetId = aws.String("subnet-0123456789abcdef0")
	})})
	wantAPIError(t, err, "InvalidSubnetID.NotFound", http.StatusBadRequest)
	_, err = e.op.RequestSpotInstances(ctx, &ec2.RequestSpotInstancesInput{LaunchSpecification: spec(func(s *types.RequestSpotLaunchSpecification) {
		s.UserData = aws.String("not base64!")
	})})
	wantAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	_, err = e.op.RequestSpotInstances(ctx, &ec2.RequestSpotInstancesInput{DryRun: aws.Bool(true), LaunchSpecification: spec(func(*types.RequestSpotLaunchSpecification) {})})
	wantAPIError(t, err, "DryRunOperation", http.StatusPreconditionFailed)
}

func TestCreateLaunchTemplate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ud := base64.StdEncoding.EncodeToString([]byte("#cloud-config\n"))
	in := &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("spotroot-home"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{
			ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: types.InstanceTypeM7iLarge, UserData: aws.String(ud),
			InstanceMarketOptions: &types.LaunchTemplateInstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot,
				SpotOptions: &types.LaunchTemplateSpotMarketOptionsRequest{SpotInstanceType: types.SpotInstanceTypeOneTime}},
			TagSpecifications: []types.LaunchTemplateTagSpecificationRequest{{ResourceType: types.ResourceTypeInstance, Tags: tagsOf("spotroot:volume", "home")}},
		},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeLaunchTemplate, Tags: tagsOf("Name", "spotroot-home")}},
	}
	out, err := e.op.CreateLaunchTemplate(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	lt := out.LaunchTemplate
	if aws.ToString(lt.LaunchTemplateName) != "spotroot-home" || aws.ToInt64(lt.LatestVersionNumber) != 1 || len(lt.Tags) != 1 {
		t.Fatalf("template %+v", lt)
	}
	stored, ok := e.w.LaunchTemplate("spotroot-home")
	if !ok || stored.ID != aws.ToString(lt.LaunchTemplateId) || stored.Data["UserData"] != ud ||
		stored.Data["InstanceMarketOptions.MarketType"] != "spot" || stored.Data["TagSpecification.1.Tag.1.Key"] != "spotroot:volume" {
		t.Fatalf("stored %+v", stored)
	}
	_, err = e.op.CreateLaunchTemplate(ctx, in)
	wantAPIError(t, err, "InvalidLaunchTemplateName.AlreadyExistsException", http.StatusBadRequest)
	_, err = e.op.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("x"), LaunchTemplateData: in.LaunchTemplateData})
	wantAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
}
