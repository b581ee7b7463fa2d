package claim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// EC2 throttles each API per account and region with a token bucket
// ("Request throttling for the Amazon EC2 API",
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/throttling.html):
// AttachVolume, a mutating action, holds 50 tokens and refills 5 a second
// by default; a filtered DescribeVolumes holds 100 and refills 20. A fleet
// that boots at once is served at AttachVolume's refill rate whatever its
// clients do; what they choose is how many requests they waste on the way.
const (
	// attachRefill is the default AttachVolume refill rate (tokens/s). An
	// account with a raised limit only finishes sooner than the spread
	// assumes.
	attachRefill = 5.0
	// throttleCode is EC2's answer when a bucket is empty.
	throttleCode = "RequestLimitExceeded"
)

// ThrottledError: EC2 refused the request for the account's rate limit
// (RequestLimitExceeded) and did not act on it.
type ThrottledError struct {
	Op  string
	Err error
}

func (e *ThrottledError) Error() string { return fmt.Sprintf("%s: throttled by EC2: %v", e.Op, e.Err) }
func (e *ThrottledError) Unwrap() error { return e.Err }

func throttled(err error) bool { return err != nil && ErrorCode(err) == throttleCode }

// noThrottleRetry makes one call return RequestLimitExceeded at once
// instead of retrying it: the pool claim decides when to come back from
// what it knows (how many members are free), which the SDK's backoff
// (2^attempt seconds, capped) does not, and a thousand claimants retrying
// on a five-second cap only keep the bucket empty. Lost answers (5xx,
// resets) are still retried.
func noThrottleRetry(o *ec2.Options) {
	if o.Retryer != nil {
		o.Retryer = throttleFails{o.Retryer}
	}
}

type throttleFails struct{ aws.Retryer }

func (r throttleFails) IsErrorRetryable(err error) bool {
	if throttled(err) {
		return false
	}
	return r.Retryer.IsErrorRetryable(err)
}

func (r throttleFails) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := r.Retryer.(aws.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return r.Retryer.GetInitialToken(), nil
}

// noRetry makes one call a single attempt.
func noRetry(o *ec2.Options) {
	if o.Retryer != nil {
		o.Retryer = aws.NopRetryer{}
	}
}

// onlyThrottleRetry retries one call when EC2 refused it for the rate
// limit (it did not act on it), not when the answer went missing: for a
// best-effort tag, which an answer lost after EC2 applied it leaves in
// place all the same.
func onlyThrottleRetry(o *ec2.Options) {
	if o.Retryer != nil {
		o.Retryer = throttleOnly{o.Retryer}
	}
}

type throttleOnly struct{ aws.Retryer }

func (r throttleOnly) IsErrorRetryable(err error) bool { return throttled(err) }

func (r throttleOnly) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := r.Retryer.(aws.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return r.Retryer.GetInitialToken(), nil
}

// jitter returns a uniformly random duration in [0, d): "full jitter",
// which spreads the claimants that were refused together over the whole
// window instead of bringing them back together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}
