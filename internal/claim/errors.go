package claim

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aws/smithy-go"
)

// iamAction maps an operation to the IAM action an operator must grant.
var iamAction = map[string]string{
	"DescribeVolumes":   "ec2:DescribeVolumes",
	"DescribeInstances": "ec2:DescribeInstances",
	"AttachVolume":      "ec2:AttachVolume",
	"DetachVolume":      "ec2:DetachVolume",
	"CreateTags":        "ec2:CreateTags",
	"CreateSnapshot":    "ec2:CreateSnapshot",
	"DescribeSnapshots": "ec2:DescribeSnapshots",
	"DeleteSnapshot":    "ec2:DeleteSnapshot",
	"CreateVolume":      "ec2:CreateVolume",
	"DeleteVolume":      "ec2:DeleteVolume",
	"DescribeImages":    "ec2:DescribeImages",
}

// apiError wraps an EC2 error with what was being done and, where the cause
// is the instance's permissions or credentials, what to change.
func apiError(op, what string, err error) error {
	switch code := ErrorCode(err); code {
	case "UnauthorizedOperation", "AccessDenied", "AccessDeniedException":
		return fmt.Errorf("%s: %s: the instance role may not call %s; grant it (see `spotroot iam-policy`): %w", what, code, iamAction[op], err)
	case "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException":
		return fmt.Errorf("%s: %s: the instance-profile credentials were rejected; check the instance profile: %w", what, code, err)
	}
	if isCredentialsError(err) {
		return fmt.Errorf("%s: no instance-profile credentials (attach an IAM instance profile to the instance): %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ErrorCode returns the EC2 error code of err, or "".
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// isCredentialsError reports whether the SDK could not get credentials at
// all (no instance profile), which it reports only as text.
func isCredentialsError(err error) bool {
	s := err.Error()
	for _, sub := range []string{"failed to refresh cached credentials", "no EC2 IMDS role found", "failed to retrieve credentials"} {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
