package ops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// LaunchOpts is `spotroot launch`.
type LaunchOpts struct {
	Volume             string // NAME or vol-…
	InstanceType       string
	Image              string // "" = newest own AMI named spotroot*
	Subnet             string // "" = the default (or first) subnet in the volume's zone
	SecurityGroups     []string
	KeyName            string
	IamInstanceProfile string
	Persistent         bool   // persistent Spot, interruption behaviour stop
	LaunchTemplate     string // create this launch template (or add a version) instead
	DryRun             bool   // send EC2's DryRun: is it allowed?
	// TagKey/TagValue mark the instance as managed (the tag
	// `spotroot iam-policy --detach-dead-owner` scopes DetachVolume to);
	// "" = spotroot:managed=true.
	TagKey, TagValue string
}

// LaunchEC2 is what Launch calls.
type LaunchEC2 interface {
	EC2
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	CreateLaunchTemplateVersion(context.Context, *ec2.CreateLaunchTemplateVersionInput, ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateVersionOutput, error)
}

// Launch resolves the volume, zone, subnet and image, renders the
// user-data, and launches a Spot instance with RunInstances (the instance
// carries its tags from its first second: TagSpecifications) or writes a
// launch template for an Auto Scaling group or EC2 Fleet. With DryRun the
// request is sent with EC2's DryRun flag, which checks permissions and
// parameters and changes nothing.
func Launch(ctx context.Context, c LaunchEC2, o LaunchOpts, out io.Writer) error {
	if o.Volume == "" || o.InstanceType == "" {
		return fmt.Errorf("launch: --volume NAME|vol-… and --instance-type are required")
	}
	if o.Persistent && o.LaunchTemplate != "" {
		return fmt.Errorf("launch: --persistent and --launch-template exclude each other (an Auto Scaling group or EC2 Fleet replaces instances itself)")
	}
	if o.TagKey == "" {
		o.TagKey = ManagedKey
	}
	if o.TagValue == "" {
		o.TagValue = ManagedValue
	}
	vol, err := ResolveVolume(ctx, c, o.Volume)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	volID, az := aws.ToString(vol.VolumeId), aws.ToString(vol.AvailabilityZone)
	tags := tagMap(vol.Tags)
	if tags[o.TagKey] != o.TagValue {
		return fmt.Errorf("launch onto %s: the volume is not tagged %s=%s, so the instance role (spotroot iam-policy --tag-key %s --tag-value %s) may not attach it; tag it or pass the key the volume carries",
			volID, o.TagKey, o.TagValue, o.TagKey, o.TagValue)
	}
	name := tags["Name"]
	if name == "" {
		name = volID
	}
	subnet, err := pickSubnet(ctx, c, az, o.Subnet)
	if err != nil {
		return fmt.Errorf("launch onto %s: %w", volID, err)
	}
	image := o.Image
	if image == "" {
		if image, err = newestImage(ctx, c); err != nil {
			return fmt.Errorf("launch onto %s: %w", volID, err)
		}
	}
	udOpts := UserDataOpts{Volume: name}
	if tags["Name"] == "" || strings.HasPrefix(o.Volume, "vol-") {
		udOpts.Volume = volID
	}
	if p := tags[PoolKey]; p != "" && o.LaunchTemplate != "" {
		udOpts = UserDataOpts{Pool: p}
	}
	ud, err := CloudConfig(udOpts)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	ud64 := base64.StdEncoding.EncodeToString(ud)
	instTags := map[string]string{"Name": name, o.TagKey: o.TagValue, VolumeKey: name}
	if p := tags[PoolKey]; p != "" {
		instTags[PoolKey] = p
	}
	metadata := &types.InstanceMetadataOptionsRequest{HttpTokens: types.HttpTokensStateRequired, HttpEndpoint: types.InstanceMetadataEndpointStateEnabled}

	if o.LaunchTemplate != "" {
		return launchTemplate(ctx, c, o, launchTemplateData(o, image, ud64, az, instTags), name, volID, az, subnet, ud, out)
	}

	spot := &types.SpotMarketOptions{SpotInstanceType: types.SpotInstanceTypeOneTime,
		InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate}
	if o.Persistent {
		spot.SpotInstanceType, spot.InstanceInterruptionBehavior = types.SpotInstanceTypePersistent, types.InstanceInterruptionBehaviorStop
	}
	in := &ec2.RunInstancesInput{ImageId: aws.String(image), InstanceType: types.InstanceType(o.InstanceType),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String(subnet), SecurityGroupIds: o.SecurityGroups,
		UserData: aws.String(ud64), MetadataOptions: metadata,
		InstanceMarketOptions: &types.InstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot, SpotOptions: spot},
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeInstance, Tags: sdkTags(instTags)},
			{ResourceType: types.ResourceTypeSpotInstancesRequest, Tags: sdkTags(instTags)},
		}}
	if o.KeyName != "" {
		in.KeyName = aws.String(o.KeyName)
	}
	if o.IamInstanceProfile != "" {
		in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Name: aws.String(o.IamInstanceProfile)}
		if strings.HasPrefix(o.IamInstanceProfile, "arn:") {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: aws.String(o.IamInstanceProfile)}
		}
	}
	if o.DryRun {
		in.DryRun = aws.Bool(true)
		_, err := c.RunInstances(ctx, in)
		in.DryRun = nil
		return reportDryRun(out, "RunInstances", fmt.Sprintf("volume %s in %s, subnet %s", volID, az, subnet), err, in, ud)
	}
	res, err := c.RunInstances(ctx, in)
	if err != nil {
		return fmt.Errorf("run a Spot instance for volume %s in %s: %w", volID, az, err)
	}
	for _, i := range res.Instances {
		fmt.Fprintf(out, "instance %s (%s, Spot %s) in %s, tagged %s: it boots onto volume %s\n",
			aws.ToString(i.InstanceId), i.InstanceType, spot.SpotInstanceType, az, fmtTags(instTags), volID)
	}
	return nil
}

// launchTemplateData is the template for an Auto Scaling group or EC2
// Fleet. It has no InstanceMarketOptions: a group that mixes instance
// types chooses Spot through its MixedInstancesPolicy, and Auto Scaling
// rejects templates that request Spot themselves
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/create-launch-template-for-auto-scaling.html).
func launchTemplateData(o LaunchOpts, image, ud64, az string, instTags map[string]string) *types.RequestLaunchTemplateData {
	data := &types.RequestLaunchTemplateData{
		ImageId: aws.String(image), InstanceType: types.InstanceType(o.InstanceType), UserData: aws.String(ud64),
		SecurityGroupIds: o.SecurityGroups,
		MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpTokens: types.LaunchTemplateHttpTokensStateRequired, HttpEndpoint: types.LaunchTemplateInstanceMetadataEndpointStateEnabled},
		TagSpecifications: []types.LaunchTemplateTagSpecificationRequest{{ResourceType: types.ResourceTypeInstance, Tags: sdkTags(instTags)}},
	}
	if o.KeyName != "" {
		data.KeyName = aws.String(o.KeyName)
	}
	if p := o.IamInstanceProfile; p != "" {
		data.IamInstanceProfile = &types.LaunchTemplateIamInstanceProfileSpecificationRequest{Name: aws.String(p)}
		if strings.HasPrefix(p, "arn:") {
			data.IamInstanceProfile = &types.LaunchTemplateIamInstanceProfileSpecificationRequest{Arn: aws.String(p)}
		}
	}
	return data
}

// launchTemplate creates the template, or adds a version when one of that
// name exists.
func launchTemplate(ctx context.Context, c LaunchEC2, o LaunchOpts, data *types.RequestLaunchTemplateData, name, volID, az, subnet string, ud []byte, out io.Writer) error {
	desc := aws.String("spotroot launch --volume " + name)
	in := &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String(o.LaunchTemplate), LaunchTemplateData: data,
		VersionDescription: desc,
		TagSpecifications:  []types.TagSpecification{{ResourceType: types.ResourceTypeLaunchTemplate, Tags: sdkTags(map[string]string{o.TagKey: o.TagValue, VolumeKey: name})}}}
	where := fmt.Sprintf("volume %s in %s; give the Auto Scaling group or EC2 Fleet subnet %s, and Spot through its MixedInstancesPolicy", volID, az, subnet)
	if o.DryRun {
		in.DryRun = aws.Bool(true)
		_, err := c.CreateLaunchTemplate(ctx, in)
		in.DryRun = nil
		if ErrorCode(err) == "InvalidLaunchTemplateName.AlreadyExistsException" {
			vin := &ec2.CreateLaunchTemplateVersionInput{LaunchTemplateName: aws.String(o.LaunchTemplate), LaunchTemplateData: data, VersionDescription: desc, DryRun: aws.Bool(true)}
			_, err = c.CreateLaunchTemplateVersion(ctx, vin)
			vin.DryRun = nil
			return reportDryRun(out, "CreateLaunchTemplateVersion", where, err, vin, ud)
		}
		return reportDryRun(out, "CreateLaunchTemplate", where, err, in, ud)
	}
	lt, err := c.CreateLaunchTemplate(ctx, in)
	if ErrorCode(err) == "InvalidLaunchTemplateName.AlreadyExistsException" {
		v, verr := c.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
			LaunchTemplateName: aws.String(o.LaunchTemplate), LaunchTemplateData: data, VersionDescription: desc})
		if verr != nil {
			return fmt.Errorf("add a version to launch template %s for volume %s: %w", o.LaunchTemplate, volID, verr)
		}
		fmt.Fprintf(out, "launch template %s (%s): added version %d; a group using $Latest launches it (%s)\n", o.LaunchTemplate,
			aws.ToString(v.LaunchTemplateVersion.LaunchTemplateId), aws.ToInt64(v.LaunchTemplateVersion.VersionNumber), where)
		return nil
	}
	if err != nil {
		return fmt.Errorf("create launch template %s for volume %s: %w", o.LaunchTemplate, volID, err)
	}
	fmt.Fprintf(out, "launch template %s (%s), version 1 (%s)\n",
		aws.ToString(lt.LaunchTemplate.LaunchTemplateName), aws.ToString(lt.LaunchTemplate.LaunchTemplateId), where)
	return nil
}

// reportDryRun turns EC2's answer to a DryRun request into a report:
// DryRunOperation means the call would have succeeded.
func reportDryRun(out io.Writer, action, what string, err error, in any, ud []byte) error {
	switch code := ErrorCode(err); code {
	case "DryRunOperation":
		fmt.Fprintf(out, "dry run: EC2 answered DryRunOperation: %s would succeed (%s):\n", action, what)
		printRequest(out, in, ud)
		return nil
	case "UnauthorizedOperation":
		fmt.Fprintf(out, "dry run: EC2 answered UnauthorizedOperation: you may not call %s (%s):\n", action, what)
		printRequest(out, in, ud)
		return fmt.Errorf("dry run of %s: %w", action, err)
	case "":
		if err == nil {
			return fmt.Errorf("dry run of %s: EC2 did not answer DryRunOperation: was the request sent for real?", action)
		}
	}
	return fmt.Errorf("dry run of %s: %w", action, err)
}

// ErrorCode returns the EC2 error code of err, or "".
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// printRequest prints an SDK input as JSON and the user-data in clear.
func printRequest(out io.Writer, in any, ud []byte) {
	raw, _ := json.Marshal(in)
	var v any
	json.Unmarshal(raw, &v)
	b, _ := json.MarshalIndent(prune(v), "", "  ")
	fmt.Fprintf(out, "%s\nuser-data (base64 in the request):\n%s", b, ud)
}

func pickSubnet(ctx context.Context, c EC2, az, want string) (string, error) {
	in := &ec2.DescribeSubnetsInput{Filters: []types.Filter{filter("availability-zone", az)}}
	if want != "" {
		in = &ec2.DescribeSubnetsInput{SubnetIds: []string{want}}
	}
	out, err := c.DescribeSubnets(ctx, in)
	if err != nil {
		return "", fmt.Errorf("find a subnet in %s: %w", az, err)
	}
	subs := out.Subnets
	if want != "" {
		if len(subs) != 1 || aws.ToString(subs[0].AvailabilityZone) != az {
			got := "not found"
			if len(subs) == 1 {
				got = "in " + aws.ToString(subs[0].AvailabilityZone)
			}
			return "", fmt.Errorf("subnet %s is %s, but the volume is in %s: pick a subnet in %s (EBS volumes attach only within their zone)", want, got, az, az)
		}
		return want, nil
	}
	if len(subs) == 0 {
		return "", fmt.Errorf("no subnet in %s: create one or pass --subnet", az)
	}
	sort.Slice(subs, func(i, j int) bool {
		di, dj := aws.ToBool(subs[i].DefaultForAz), aws.ToBool(subs[j].DefaultForAz)
		if di != dj {
			return di
		}
		return aws.ToString(subs[i].SubnetId) < aws.ToString(subs[j].SubnetId)
	})
	return aws.ToString(subs[0].SubnetId), nil
}

func newestImage(ctx context.Context, c EC2) (string, error) {
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{filter("name", "spotroot*")}})
	if err != nil {
		return "", fmt.Errorf("find an AMI named spotroot*: %w", err)
	}
	if len(out.Images) == 0 {
		return "", fmt.Errorf("no AMI of yours is named spotroot*: pass --image ami-… (an image with spotroot installed: spotroot install)")
	}
	imgs := out.Images
	sort.Slice(imgs, func(i, j int) bool { return aws.ToString(imgs[i].CreationDate) > aws.ToString(imgs[j].CreationDate) })
	return aws.ToString(imgs[0].ImageId), nil
}

// prune drops nulls and empty lists/objects, so a dry run shows only what
// is sent.
func prune(v any) any {
	switch x := v.(type) {
	case map[string]any:
		// The SDK fills in an idempotency token when the request is sent.
		delete(x, "ClientToken")
		for k, e := range x {
			if p := prune(e); p == nil || p == "" {
				delete(x, k)
			} else {
				x[k] = p
			}
		}
		if len(x) == 0 {
			return nil
		}
	case []any:
		var out []any
		for _, e := range x {
			if p := prune(e); p != nil {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return v
}
