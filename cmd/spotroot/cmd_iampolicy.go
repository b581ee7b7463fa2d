package main

import (
	"flag"
	"fmt"

	"github.com/spotroot/spotroot/internal/iampolicy"
	"github.com/spotroot/spotroot/internal/ops"
)

func init() {
	register(command{name: "iam-policy", summary: "print the least-privilege IAM policy for the instance role", run: iamPolicyCmd})
}

const iamPolicyUsage = `usage: spotroot iam-policy [--tag-key K --tag-value V]

Prints the IAM policy (JSON) for the role of the instances' profile:
  - ec2:Describe* on * (EC2 cannot scope Describe calls);
  - ec2:AttachVolume/DetachVolume only when both the volume and the instance
    carry the tag K=V (default spotroot:managed=true, which 'spotroot volume
    create' and 'spotroot launch' set);
  - ec2:CreateVolume/CreateSnapshot only when the request tags the new
    resource K=V, and CreateTags only as part of those creates;
  - an explicit Deny of CreateTags/DeleteTags on spotroot:* keys (and K)
    outside a create, so an instance cannot tag its way to another volume.

Flags:
`

func iamPolicyCmd(args []string, stdio stdio) int {
	fs := flag.NewFlagSet("iam-policy", flag.ContinueOnError)
	fs.SetOutput(stdio.err)
	key := fs.String("tag-key", ops.ManagedKey, "tag key that marks spotroot volumes and instances")
	value := fs.String("tag-value", ops.ManagedValue, "its value")
	fs.Usage = func() { fmt.Fprint(fs.Output(), iamPolicyUsage); fs.PrintDefaults() }
	if code, done := parse(fs, args); done {
		return code
	}
	if *key == "" || *value == "" {
		fmt.Fprintln(stdio.err, "spotroot iam-policy: --tag-key and --tag-value must not be empty")
		return 2
	}
	b, err := iampolicy.Render(*key, *value)
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot iam-policy: %v\n", err)
		return 1
	}
	stdio.out.Write(b)
	return 0
}
