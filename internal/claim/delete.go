package claim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// deleteVolume and deleteSnapshot delete without a blind retry.
// DeleteVolume and DeleteSnapshot take no ClientToken, and when EC2
// committed a delete but its answer was lost, the SDK's retry is judged
// against a resource that no longer exists: a permission scoped by the
// resource's tags (aws:ResourceTag, as every spotroot policy is) cannot
// match a resource without tags, so the retry is denied
// (UnauthorizedOperation), not NotFound. An unclear failure is therefore
// judged by describing the resource, allowing for EC2's lagging views,
// before asking again; a denial of a resource that is gone is the same
// committed delete.
func (c *Claimer) deleteVolume(ctx context.Context, id string) error {
	return c.deleteOnce(ctx, "DeleteVolume", id, "InvalidVolume.NotFound",
		func(ctx context.Context) error {
			_, err := c.EC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)}, noSDKRetry)
			return err
		},
		func(ctx context.Context) (bool, error) {
			vols, err := c.describe(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}}, "look up "+id)
			return len(vols) > 0, err
		})
}

func (c *Claimer) deleteSnapshot(ctx context.Context, id string) error {
	return c.deleteOnce(ctx, "DeleteSnapshot", id, "InvalidSnapshot.NotFound",
		func(ctx context.Context) error {
			_, err := c.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}, noSDKRetry)
			return err
		},
		func(ctx context.Context) (bool, error) {
			out, err := c.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
			if ErrorCode(err) == "InvalidSnapshot.NotFound" {
				return false, nil
			}
			if err != nil {
				return true, apiError("DescribeSnapshots", "look up "+id, err)
			}
			return len(out.Snapshots) > 0, nil
		})
}

func noSDKRetry(o *ec2.Options) { o.RetryMaxAttempts = 1 }

func (c *Claimer) deleteOnce(ctx context.Context, op, id, notFound string,
	del func(context.Context) error, exists func(context.Context) (bool, error)) error {
	what := "delete " + id
	for attempt := 1; ; attempt++ {
		cctx, cancel := c.call(ctx)
		err := del(cctx)
		cancel()
		code := ErrorCode(err)
		switch {
		case err == nil, code == notFound:
			return nil
		case code == "RequestLimitExceeded" && attempt < 5:
			// Throttled: not carried out. Full jitter, as the SDK's own.
			if !sleep(ctx, time.Duration(rand.Int64N(int64(time.Second)<<attempt))) {
				return fmt.Errorf("%s: %w", what, ctx.Err())
			}
			continue
		case code == "UnauthorizedOperation" && attempt == 1,
			code != "UnauthorizedOperation" && !unclear(err):
			// A first denial is the policy's answer: nothing of ours
			// deleted it before.
			return apiError(op, what, err)
		}
		// Unclear, or denied (maybe because an earlier attempt already
		// deleted it): gone within the lag is a committed delete.
		for deadline := time.Now().Add(lagWait); ; {
			cctx, cancel := c.call(ctx)
			there, lerr := exists(cctx)
			cancel()
			if lerr == nil && !there {
				return nil
			}
			if time.Now().After(deadline) || !sleep(ctx, c.maxPoll()) {
				break
			}
		}
		if attempt == 3 || ctx.Err() != nil {
			return apiError(op, what, err)
		}
	}
}
