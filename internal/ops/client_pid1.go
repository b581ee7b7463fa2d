//go:build pid1

package ops

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// OperatorBuild is false in the boot-agent build: commands test it before
// calling Client, so the code after that (volume create, status --volume:
// their EC2 operations' serializers) is dead and not linked into PID 1.
const OperatorBuild = false

// Client is unavailable in the pid1 build.
func (a *AWSFlags) Client(context.Context) (*ec2.Client, string, error) {
	return nil, "", ErrPID1Build
}
