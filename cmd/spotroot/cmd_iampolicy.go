package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/iampolicy"
)

func init() {
	register(command{name: "iam-policy", summary: "print the least-privilege IAM policy for the instance role", run: iamPolicyCmd})
}

const iamPolicyUsage = `usage: spotroot iam-policy [--config user-data.yaml] [--create] [--cross-az-move]
                          [--detach-dead-owner] [--delete-moved] [--claim-tags]
                          [--kms-key ARN]… [--partition aws|aws-cn|aws-us-gov]
                          [--tag-key K --tag-value V] [--explain]

Prints the IAM policy (JSON) for the role of the instances' profile. With no
flags it grants exactly what claiming an existing volume needs:
  - ec2:DescribeInstances and ec2:DescribeVolumes (EC2 cannot scope them);
  - ec2:AttachVolume of volumes tagged K=V (default spotroot:managed=true,
    which 'spotroot volume create' writes) to the calling instance itself
    (ec2:SourceInstanceARN), never to another instance;
  - ec2:CreateTags of the key spotroot:boot on the instance itself (its boot
    state on a fallback);
  - an explicit Deny of any other tag change on volumes and snapshots.
--config derives the capabilities a configuration needs (create:, cross_az,
force_detach, delete_moved, pools); the flags add them one by one. --explain
prints why each statement is there instead of the policy.

Flags:
`

type kmsFlag []string

func (l *kmsFlag) String() string     { return strings.Join(*l, ",") }
func (l *kmsFlag) Set(s string) error { *l = append(*l, s); return nil }

func iamPolicyCmd(args []string, stdio stdio) int {
	fs := flag.NewFlagSet("iam-policy", flag.ContinueOnError)
	fs.SetOutput(stdio.err)
	var o iampolicy.Options
	var kms kmsFlag
	cfgPath := fs.String("config", "", "derive the capabilities from this user-data (or image config) file")
	fs.StringVar(&o.TagKey, "tag-key", iampolicy.DefaultTagKey, "tag key that marks the volumes instances may claim")
	fs.StringVar(&o.TagValue, "tag-value", iampolicy.DefaultTagValue, "its value")
	fs.StringVar(&o.Partition, "partition", "aws", "ARN partition: aws, aws-cn or aws-us-gov")
	create := fs.Bool("create", false, "let the instance create its volume (create:), from an AMI, a snapshot or empty")
	fs.BoolVar(&o.CrossAZMove, "cross-az-move", false, "let it copy a volume from another zone (cross_az: move)")
	fs.BoolVar(&o.DetachDeadOwner, "detach-dead-owner", false, "let it force-detach a volume from a dead owner (force_detach: true)")
	fs.BoolVar(&o.DeleteMoved, "delete-moved", false, "let it delete the old volume and snapshot after a move (delete_moved: true)")
	fs.BoolVar(&o.ClaimTags, "claim-tags", false, "let it tag a claimed pool member spotroot:instance=<id>")
	fs.Var(&kms, "kms-key", "ARN of a customer-managed KMS key the volumes are encrypted with (repeatable)")
	explain := fs.Bool("explain", false, "explain each statement instead of printing the policy")
	fs.Usage = func() { fmt.Fprint(fs.Output(), iamPolicyUsage); fs.PrintDefaults() }
	if code, done := parse(fs, args); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stdio.err, "spotroot iam-policy: %v\n", err)
		return exitUsage
	}
	if o.TagKey == "" || o.TagValue == "" {
		return fail(errors.New("--tag-key and --tag-value must not be empty"))
	}
	if *cfgPath != "" {
		b, err := os.ReadFile(*cfgPath)
		if err != nil {
			fmt.Fprintf(stdio.err, "spotroot iam-policy: %v\n", err)
			return exitFail
		}
		c, err := config.Load(nil, b, "")
		if errors.Is(err, config.ErrNotConfigured) {
			// Maybe an image config file (/etc/spotroot/config.yaml).
			c, err = config.Load(b, nil, "")
		}
		if err != nil {
			fmt.Fprintf(stdio.err, "spotroot iam-policy: %s: %v\n", *cfgPath, err)
			return exitFail
		}
		d := iampolicy.ForConfig(c)
		d.Partition, d.TagKey, d.TagValue = o.Partition, o.TagKey, o.TagValue
		// Flags add to what the configuration needs.
		d.CrossAZMove = d.CrossAZMove || o.CrossAZMove
		d.DetachDeadOwner = d.DetachDeadOwner || o.DetachDeadOwner
		d.DeleteMoved = d.DeleteMoved || o.DeleteMoved
		d.ClaimTags = d.ClaimTags || o.ClaimTags
		if *create && !d.Create {
			d.Create, d.CreateFrom = true, []string{"ami", "empty"}
		}
		o = d
	} else if *create {
		o.Create, o.CreateFrom = true, []string{"ami", "empty"}
	}
	o.KMSKeys = kms
	p, err := iampolicy.Build(o)
	if err != nil {
		return fail(err)
	}
	if *explain {
		fmt.Fprintf(stdio.out, "Allowed actions: %s\n\n%s", strings.Join(p.Actions(), ", "), p.Explain())
		return 0
	}
	b, err := p.JSON()
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot iam-policy: %v\n", err)
		return 1
	}
	stdio.out.Write(b)
	return 0
}
