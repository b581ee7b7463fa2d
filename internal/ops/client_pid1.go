//go:build pid1

package ops

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// ErrPID1Build: the boot agent build leaves out the SDK's default
// credential chain (SSO, STS, shared config: ~2.5 MiB) to keep PID 1 lean.
var ErrPID1Build = errors.New("this spotroot is the boot-agent build (-tags pid1), which has no AWS credential chain; " +
	"run operator commands with the full build (make build-ops, or spotroot-ops-* from make release)")

// Client is unavailable in the pid1 build.
func (a *AWSFlags) Client(context.Context) (*ec2.Client, string, error) {
	return nil, "", ErrPID1Build
}
