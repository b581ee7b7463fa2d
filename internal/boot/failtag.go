package boot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
)

// BootTagKey is the tag an instance puts on itself when its boot fails
// and falls back to the image's own init (or powers off): value
// "failed:<phase>". A blank image root passes EC2 and load-balancer health
// checks; this makes the failure visible from outside (`spotroot status
// --volume`, the console, `aws ec2 describe-instances --filters
// Name=tag:spotroot:boot,Values=failed:*`). The IAM policy of `spotroot
// iam-policy` allows ec2:CreateTags of exactly this key on the instance
// itself (ec2:SourceInstanceARN equals the resource).
const BootTagKey = "spotroot:boot"

// FailTagTimeout bounds the whole tagging attempt: a failed boot must not
// wait on an EC2 that may be the reason it failed.
var FailTagTimeout = 15 * time.Second

type instanceTagger interface {
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// TagFailure tags instanceID spotroot:boot=failed:<phase>, best effort and
// within FailTagTimeout; the error is for the log only.
func TagFailure(ctx context.Context, c instanceTagger, instanceID, phase string) error {
	ctx, cancel := context.WithTimeout(ctx, FailTagTimeout)
	defer cancel()
	value := "failed:" + phase
	_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{
		Resources: []string{instanceID},
		Tags:      []types.Tag{{Key: aws.String(BootTagKey), Value: aws.String(value)}},
	}, func(o *ec2.Options) {
		// A few retries within FailTagTimeout: a fresh instance's first
		// call meets late credentials, a skewed clock (RequestExpired is
		// retried once the SDK has read EC2's Date) and lost answers.
		o.RetryMaxAttempts = 5
	})
	if err != nil {
		return fmt.Errorf("tag %s %s=%s: %w", instanceID, BootTagKey, value, err)
	}
	return nil
}

// armFailTag makes fail() tag the instance once its identity is known and
// the network is up (before that, EC2 cannot be reached anyway).
func (b *booter) armFailTag(w *world) {
	if w.id.InstanceID == "" || w.handle == nil || b.imds == nil {
		return
	}
	endpoint := ""
	switch {
	case b.cfg != nil:
		endpoint = b.cfg.EC2Endpoint
	case b.early != nil && b.early.EC2Endpoint != "":
		// The command line (or image file) wins, as in the configuration.
		endpoint = b.early.EC2Endpoint
	case config.EndpointHint(b.userData) != "":
		// The configuration failed; its (https://) endpoint may still be readable.
		endpoint = config.EndpointHint(b.userData)
	}
	region, instanceSDK, resolver, dual := w.id.Region, b.imds.SDK(), w.handle.Resolver(), b.dualStack(w)
	clockOffset := b.imds.ClockOffset
	id := w.id.InstanceID
	b.failTag = func(phase string) {
		start := time.Now()
		// The claim's own client when it talks to the same endpoint: its
		// connection and credentials are there already. Otherwise one built
		// now (a boot that hands over never pays for it), with the same CA
		// bundle: without one the call fails and only warns.
		var c instanceTagger
		if w.ec2 != nil && w.ec2Endpoint == endpoint {
			c = w.ec2
		} else {
			// The lease's resolver, and without IPv4 the dual-stack
			// endpoint (the only one reachable over IPv6), as the claim.
			o := claim.ClientOptions{Region: region, Endpoint: endpoint, IMDS: instanceSDK, Resolver: resolver, DualStack: dual, ClockOffset: clockOffset}
			if !strings.HasPrefix(endpoint, "http://") {
				o.Verify = b.verifyEC2
			}
			c = claim.NewClient(o)
		}
		if err := TagFailure(context.Background(), c, id, phase); err != nil {
			b.slog.Warn("could not mark the failed boot on the instance", "error", err)
			return
		}
		b.slog.Info("marked the failed boot on the instance", "tag", BootTagKey+"=failed:"+phase, "ms", time.Since(start).Milliseconds())
	}
}

// markFailed tags the instance (when armed), after the FAILED line.
func (b *booter) markFailed(phase string) {
	if b.failTag != nil {
		b.failTag(phase)
		b.failTag = nil
	}
}
