package claim

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aws/smithy-go"

	"github.com/spotroot/spotroot/internal/iampolicy"
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
		return &deniedError{msg: deniedMessage(op, what, code, err), err: err}
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

// deniedError reports a denied call without the encoded authorization
// message (kilobytes of base64 on one console line); Unwrap keeps it.
type deniedError struct {
	msg string
	err error
}

func (e *deniedError) Error() string { return e.msg }
func (e *deniedError) Unwrap() error { return e.err }

// deniedMessage names the denied action (the decoded one when EC2's message
// can be read: a create may fail on its implicit ec2:CreateTags), the
// resource and statement when known, and the `spotroot iam-policy` flag
// that grants what op needs.
func deniedMessage(op, what, code string, err error) string {
	action, detail := iamAction[op], ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if d, derr := iampolicy.DecodeMessage(ae.ErrorMessage()); derr == nil {
			if d.Context.Action != "" {
				action = d.Context.Action
			}
			if d.Context.Resource != "" && d.Context.Resource != "*" {
				detail += " on " + d.Context.Resource
			}
			switch {
			case d.ExplicitDeny:
				detail += " (explicit Deny " + d.Statement() + ")"
			case d.Statement() != "":
				detail += " (" + d.Statement() + " does not match)"
			}
		}
	}
	grant := "grant it: spotroot iam-policy --config <your user-data>"
	f := iampolicy.FlagFor(op)
	if strings.HasPrefix(action, "kms:") {
		f = iampolicy.FlagFor(action) // the volume's key, not the EC2 action
	}
	if f != "" {
		grant = "grant it: spotroot iam-policy " + f + " (or --config <your user-data>)"
	}
	return fmt.Sprintf("%s: %s: the instance role may not call %s%s; %s", what, code, action, detail, grant)
}
