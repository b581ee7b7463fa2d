package ops

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
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
	Persistent         bool   // persistent request, interruption behaviour stop
	LaunchTemplate     string // write a launch template of this name instead
	DryRun             bool
}

// Launch resolves the volume, zone, subnet and image, renders the
// user-data, and requests a Spot instance or writes a launch template.
func Launch(ctx context.Context, c EC2, o LaunchOpts, out io.Writer) error {
	if o.Volume == "" || o.InstanceType == "" {
		return fmt.Errorf("launch: --volume NAME|vol-… and --instance-type are required")
	}
	if o.Persistent && o.LaunchTemplate != "" {
		return fmt.Errorf("launch: --persistent and --launch-template exclude each other (an Auto Scaling group or EC2 Fleet replaces instances itself)")
	}
	vol, err := ResolveVolume(ctx, c, o.Volume)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	volID, az := aws.ToString(vol.VolumeId), aws.ToString(vol.AvailabilityZone)
	tags := tagMap(vol.Tags)
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
	instTags := map[string]string{"Name": name, ManagedKey: ManagedValue, VolumeKey: name}
	if p := tags[PoolKey]; p != "" {
		instTags[PoolKey] = p
	}
	var profile *types.IamInstanceProfileSpecification
	if o.IamInstanceProfile != "" {
		profile = &types.IamInstanceProfileSpecification{Name: aws.String(o.IamInstanceProfile)}
		if strings.HasPrefix(o.IamInstanceProfile, "arn:") {
			profile = &types.IamInstanceProfileSpecification{Arn: aws.String(o.IamInstanceProfile)}
		}
	}

	if o.LaunchTemplate != "" {
		data := &types.RequestLaunchTemplateData{
			ImageId: aws.String(image), InstanceType: types.InstanceType(o.InstanceType), UserData: aws.String(ud64),
			SecurityGroupIds: o.SecurityGroups,
			InstanceMarketOptions: &types.LaunchTemplateInstanceMarketOptionsRequest{MarketType: types.MarketTypeSpot,
				SpotOptions: &types.LaunchTemplateSpotMarketOptionsRequest{SpotInstanceType: types.SpotInstanceTypeOneTime,
					InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate}},
			Placement: &types.LaunchTemplatePlacementRequest{AvailabilityZone: aws.String(az)},
			MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
				HttpTokens: types.LaunchTemplateHttpTokensStateRequired, HttpEndpoint: types.LaunchTemplateInstanceMetadataEndpointStateEnabled},
			TagSpecifications: []types.LaunchTemplateTagSpecificationRequest{{ResourceType: types.ResourceTypeInstance, Tags: sdkTags(instTags)}},
		}
		if o.KeyName != "" {
			data.KeyName = aws.String(o.KeyName)
		}
		if profile != nil {
			data.IamInstanceProfile = &types.LaunchTemplateIamInstanceProfileSpecificationRequest{Name: profile.Name, Arn: profile.Arn}
		}
		in := &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String(o.LaunchTemplate), LaunchTemplateData: data,
			VersionDescription: aws.String("spotroot launch --volume " + name),
			TagSpecifications:  []types.TagSpecification{{ResourceType: types.ResourceTypeLaunchTemplate, Tags: sdkTags(map[string]string{ManagedKey: ManagedValue, VolumeKey: name})}}}
		if o.DryRun {
			fmt.Fprintf(out, "dry run: would call CreateLaunchTemplate (volume %s in %s; give the Auto Scaling group or EC2 Fleet subnet %s):\n", volID, az, subnet)
			printRequest(out, in, ud)
			return nil
		}
		lt, err := c.CreateLaunchTemplate(ctx, in)
		if err != nil {
			return fmt.Errorf("create launch template %s for volume %s: %w", o.LaunchTemplate, volID, err)
		}
		fmt.Fprintf(out, "launch template %s (%s), version 1: use it in an Auto Scaling group or EC2 Fleet in subnet %s (%s)\n",
			aws.ToString(lt.LaunchTemplate.LaunchTemplateName), aws.ToString(lt.LaunchTemplate.LaunchTemplateId), subnet, az)
		return nil
	}

	spec := &types.RequestSpotLaunchSpecification{ImageId: aws.String(image), InstanceType: types.InstanceType(o.InstanceType),
		SubnetId: aws.String(subnet), SecurityGroupIds: o.SecurityGroups, UserData: aws.String(ud64), IamInstanceProfile: profile}
	if o.KeyName != "" {
		spec.KeyName = aws.String(o.KeyName)
	}
	in := &ec2.RequestSpotInstancesInput{InstanceCount: aws.Int32(1), Type: types.SpotInstanceTypeOneTime,
		InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate, LaunchSpecification: spec,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSpotInstancesRequest, Tags: sdkTags(instTags)}}}
	if o.Persistent {
		in.Type, in.InstanceInterruptionBehavior = types.SpotInstanceTypePersistent, types.InstanceInterruptionBehaviorStop
	}
	if o.DryRun {
		fmt.Fprintf(out, "dry run: would call RequestSpotInstances (volume %s in %s, subnet %s), then tag the instance %s:\n", volID, az, subnet, fmtTags(instTags))
		printRequest(out, in, ud)
		return nil
	}
	res, err := c.RequestSpotInstances(ctx, in)
	if err != nil {
		return fmt.Errorf("request spot instance for volume %s in %s: %w", volID, az, err)
	}
	for _, r := range res.SpotInstanceRequests {
		iid := aws.ToString(r.InstanceId)
		fmt.Fprintf(out, "spot request %s: %s", aws.ToString(r.SpotInstanceRequestId), r.State)
		if iid != "" {
			// The instance role's policy scopes AttachVolume to tagged instances.
			if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{iid}, Tags: sdkTags(instTags)}); err != nil {
				return fmt.Errorf("tag instance %s of spot request %s: %w (tag it %s yourself, or it cannot attach the volume)", iid, aws.ToString(r.SpotInstanceRequestId), err, fmtTags(instTags))
			}
			fmt.Fprintf(out, ", instance %s", iid)
		} else {
			fmt.Fprintf(out, " (tag the instance %s once it is fulfilled)", fmtTags(instTags))
		}
		fmt.Fprintln(out)
	}
	return nil
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
		for k, e := range x {
			if p := prune(e); p == nil {
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
