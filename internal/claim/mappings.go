package claim

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/internal/safego"
)

// mappingsAhead is this instance's DescribeInstances, asked while the
// volume is still being looked up: the free device name does not depend on
// which volume is found, so the two calls need not wait for each other.
// The answer is used once, by the first freeDevice; later ones (a name EC2
// refused, a second volume) ask again.
type mappingsAhead struct {
	ch chan mappingsAnswer
}

type mappingsAnswer struct {
	out *ec2.DescribeInstancesOutput
	err error
}

// describeSelf is the DescribeInstances of this instance.
func (c *Claimer) describeSelf(ctx context.Context) (*ec2.DescribeInstancesOutput, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	out, err := c.EC2.DescribeInstances(cctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-id"), Values: []string{c.Instance.ID}}}})
	if err != nil {
		return nil, apiError("DescribeInstances", "describe "+c.Instance.ID, err)
	}
	return out, nil
}

// askMappingsAhead starts describeSelf in the background, unless a device
// name is already chosen (or asked for).
func (c *Claimer) askMappingsAhead(ctx context.Context) {
	if c.device != "" || c.ahead != nil {
		return
	}
	a := &mappingsAhead{ch: make(chan mappingsAnswer, 1)}
	c.ahead = a
	safego.Go("describe instance ahead", func() {
		out, err := c.describeSelf(ctx)
		a.ch <- mappingsAnswer{out, err}
	})
}

// mappings returns the answer asked ahead, once, or asks now.
func (c *Claimer) mappings(ctx context.Context) (*ec2.DescribeInstancesOutput, error) {
	if a := c.ahead; a != nil {
		c.ahead = nil
		select {
		case r := <-a.ch:
			if r.err == nil {
				return r.out, nil
			}
			// Failed ahead (its context may be gone): ask again now.
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.describeSelf(ctx)
}
