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
	register(command{name: "launch", summary: "request a Spot instance (or write a launch template) for a volume", run: launchCmd})
}

const launchUsage = `usage: spotroot launch --volume NAME|vol-… --instance-type T [--image ami-…]
                      [--subnet subnet-…] [--security-group sg-…]… [--key-name K]
                      [--iam-instance-profile NAME|ARN] [--persistent | --launch-template NAME]
                      [--dry-run]

Finds the volume and its zone, picks a subnet there (the zone's default
subnet unless --subnet), renders the user-data that makes spotroot claim
the volume, and requests a one-time Spot instance (interruption: terminate).
--persistent makes a persistent request whose instances stop on
interruption. --launch-template NAME writes an EC2 launch template instead,
for an Auto Scaling group or EC2 Fleet (with a volume pool, every instance
claims a free volume of the pool). The instance is tagged
spotroot:managed=true and spotroot:volume=NAME, which the IAM policy of
'spotroot iam-policy' requires for AttachVolume. --image defaults to your
newest AMI named spotroot*. --dry-run prints the request without sending it.

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
	fs.StringVar(&o.LaunchTemplate, "launch-template", "", "write an EC2 launch template of this name instead of requesting an instance")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print the request, send nothing")
	output := outputFlag(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), launchUsage); fs.PrintDefaults() }
	if code, done := parse(fs, args); done {
		return code
	}
	o.SecurityGroups = sgs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, _, err := a.Client(ctx)
	if err == nil && *output == "json" {
		err = launchJSON(ctx, c, o, stdio)
	} else if err == nil {
		err = ops.Launch(ctx, c, o, stdio.out)
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot launch: %v\n", err)
		return 1
	}
	return 0
}
