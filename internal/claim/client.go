package claim

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// EC2 is the subset of the EC2 API spotroot calls while booting.
type EC2 interface {
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	AttachVolume(context.Context, *ec2.AttachVolumeInput, ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	CreateSnapshot(context.Context, *ec2.CreateSnapshotInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
}

// ClientOptions configure the EC2 client used from PID 1.
type ClientOptions struct {
	Region   string
	Endpoint string // "" = the SDK's regional endpoint
	IMDS     *imds.Client
	// Resolver resolves the endpoint's host name; PID 1 has no resolv.conf it
	// can trust, so the network phase supplies one built from the DHCP lease.
	Resolver *net.Resolver
	// DualStack uses EC2's dual-stack endpoint, ec2.<region>.api.aws, which
	// resolves to IPv6 as well ("Amazon EC2 service endpoints": the IPv4
	// endpoint ec2.<region>.amazonaws.com has no AAAA record), for instances
	// without IPv4. Ignored when Endpoint is set.
	DualStack bool
}

// NewClient builds the EC2 client by hand: config.LoadDefaultConfig would
// read files and environment that do not exist in PID 1, and adds ~2 MiB.
// Credentials come from the instance profile through IMDS.
func NewClient(o ClientOptions) *ec2.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Resolver: o.Resolver}
	transport := &http.Transport{
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 20 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	cfg := aws.Config{
		Region:     o.Region,
		HTTPClient: &http.Client{Transport: transport},
		Credentials: aws.NewCredentialsCache(ec2rolecreds.New(func(ro *ec2rolecreds.Options) {
			ro.Client = o.IMDS
		})),
		// Throttling (RequestLimitExceeded) and 5xx are retried with jittered
		// exponential backoff by the standard retryer.
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = 8
				so.MaxBackoff = 4 * time.Second
			})
		},
	}
	return ec2.NewFromConfig(cfg, func(eo *ec2.Options) {
		if o.Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.Endpoint)
		} else if o.DualStack {
			eo.EndpointOptions.UseDualStackEndpoint = aws.DualStackEndpointStateEnabled
		}
	})
}
