// Package ops implements spotroot's operator commands: creating the
// persistent volume, launching Spot instances onto it, rendering user-data
// and reporting status. They talk to EC2 with the AWS SDK's default
// credential chain; nothing here is used by the PID 1 boot path.
package ops

import (
	"context"
	"errors"
	"flag"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// EndpointEnv overrides the EC2 endpoint (VPC endpoints, the simulator).
const EndpointEnv = "SPOTROOT_EC2_ENDPOINT"

// EC2 is the part of the EC2 API the operator commands call.
type EC2 interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	CreateSnapshot(context.Context, *ec2.CreateSnapshotInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	RequestSpotInstances(context.Context, *ec2.RequestSpotInstancesInput, ...func(*ec2.Options)) (*ec2.RequestSpotInstancesOutput, error)
	CreateLaunchTemplate(context.Context, *ec2.CreateLaunchTemplateInput, ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateOutput, error)
}

// ErrPID1Build: the boot agent build leaves out the SDK's default
// credential chain (SSO, STS, shared config: ~2.5 MiB) to keep PID 1 lean.
var ErrPID1Build = errors.New("this spotroot is the boot-agent build (-tags pid1), which has no AWS credential chain; " +
	"run operator commands with the full build (make build-ops, or spotroot-ops-* from make release)")

// AWSFlags are the connection flags every operator command takes.
type AWSFlags struct {
	Region, Profile, Endpoint string
}

// Register adds --region, --profile and --endpoint to fs.
func (a *AWSFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&a.Region, "region", "", "AWS region (default: AWS_REGION, the profile's region)")
	fs.StringVar(&a.Profile, "profile", "", "shared config profile (default: AWS_PROFILE or default)")
	fs.StringVar(&a.Endpoint, "endpoint", os.Getenv(EndpointEnv), "EC2 endpoint URL (env "+EndpointEnv+"; default: the regional endpoint)")
}

// Waits poll EC2 this often (tests shorten it).
var PollInterval = 5 * time.Second
