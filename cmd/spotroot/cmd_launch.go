package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/spotroot/spotroot/internal/ops"
)

func init() {
	register(command{name: "launch", summary: "launch a Spot instance (or write a launch template) for a volume", run: launchCmd})
}

const launchUsage = `usage: spotroot launch --volume NAME|vol-… --instance-type T [--image ami-…]
                      [--subnet subnet-…] [--security-group sg-…]… [--key-name K]
                      [--iam-instance-profile NAME|ARN] [--persistent | --launch-template NAME]
                      [--tag-key K --tag-value V] [--dry-run]

Finds the volume and its zone, picks a subnet there (the zone's default
subnet unless --subnet), renders the user-data that makes spotroot claim
the volume, and launches a Spot instance with RunInstances
(InstanceMarketOptions: one-time, interruption terminate; --persistent:
persistent, interruption stop, so the same instance comes back). The
instance carries its tags from its first second (TagSpecifications):
Name, spotroot:volume=NAME and the managed tag K=V (default
spotroot:managed=true, as 'spotroot volume create' and 'spotroot iam-policy'
use). --launch-template NAME creates that launch template, or adds a version
if it exists, for an Auto Scaling group or EC2 Fleet (Spot comes from the
group's MixedInstancesPolicy; with a volume pool every instance claims a free
member). --image defaults to your newest AMI named spotroot*. --dry-run sends
the request with EC2's DryRun flag and reports DryRunOperation (it would
succeed) or UnauthorizedOperation (you may not), changing nothing.

Flags:
`

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func launchCmd(args []string, stdio stdio) int {
	fs := flag.NewFlagSet("launch", flag.ContinueOnError)
	fs.SetOutput(stdio.err)
	var a ops.AWSFlags
	a.Register(fs)
	var o ops.LaunchOpts
	var sgs listFlag
	fs.StringVar(&o.Volume, "volume", "", "the persistent volume: its Name tag or vol-… id")
	fs.StringVar(&o.InstanceType, "instance-type", "", "instance type, e.g. m7i.large")
	fs.StringVar(&o.Image, "image", "", "AMI with spotroot installed (default: your newest AMI named spotroot*)")
	fs.StringVar(&o.Subnet, "subnet", "", "subnet (must be in the volume's zone)")
	fs.Var(&sgs, "security-group", "security group id (repeatable)")
	fs.StringVar(&o.KeyName, "key-name", "", "EC2 key pair name")
	fs.StringVar(&o.IamInstanceProfile, "iam-instance-profile", "", "instance profile name or ARN (its role needs 'spotroot iam-policy')")
	fs.BoolVar(&o.Persistent, "persistent", false, "persistent Spot request; instances stop on interruption")
	fs.StringVar(&o.LaunchTemplate, "launch-template", "", "create this launch template (or add a version to it) instead of launching an instance")
	fs.BoolVar(&o.DryRun, "dry-run", false, "send the request with EC2's DryRun flag: checks permissions, changes nothing")
	fs.StringVar(&o.TagKey, "tag-key", ops.ManagedKey, "tag key that marks managed volumes and instances (as in spotroot iam-policy)")
	fs.StringVar(&o.TagValue, "tag-value", ops.ManagedValue, "its value")
	output := outputFlag(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), launchUsage); fs.PrintDefaults() }
	if code, done := parse(fs, args); done {
		return code
	}
	o.SecurityGroups = sgs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := launch(ctx, &a, o, stdio, *output == "json"); err != nil {
		fmt.Fprintf(stdio.err, "spotroot launch: %v\n", err)
		return 1
	}
	return 0
}
