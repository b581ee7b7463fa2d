//go:build !pid1

package ops

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/spotroot/spotroot/internal/claim"
)

// OperatorBuild: this build has the SDK's default credential chain.
const OperatorBuild = true

// Client builds an EC2 client from the SDK's default credential chain
// (environment, shared config and credentials files, SSO, web identity,
// container and instance roles).
func (a *AWSFlags) Client(ctx context.Context) (*ec2.Client, string, error) {
	var opts []func(*config.LoadOptions) error
	if a.Region != "" {
		opts = append(opts, config.WithRegion(a.Region))
	}
	if a.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(a.Profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("load AWS configuration (profile %q): %w", a.Profile, err)
	}
	if cfg.Region == "" {
		return nil, "", fmt.Errorf("no AWS region: pass --region or set AWS_REGION")
	}
	c := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if a.Endpoint != "" {
			o.BaseEndpoint = aws.String(a.Endpoint)
		}
		// EC2 answers a request signed more than five minutes behind its
		// clock with RequestExpired, which the SDK does not retry although
		// it learned the skew from the answer's Date header; one retry
		// signs with the corrected time (see claim.RetryableCodes).
		o.Retryer = retry.AddWithErrorCodes(o.Retryer, "RequestExpired")
		// Connections kept across calls although the SDK closes its
		// request body early (claim.OwnBody).
		o.HTTPClient = claim.OwnBody(o.HTTPClient)
	})
	return c, cfg.Region, nil
}
