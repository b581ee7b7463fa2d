// Package iampolicy derives the least-privilege IAM policy of the instance
// role spotroot boots with, from the capabilities a configuration needs.
//
// Resource types and condition keys follow AWS's Service Authorization
// Reference, "Actions, resources, and condition keys for Amazon EC2"
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html):
// AttachVolume and DetachVolume authorise the volume and the instance,
// CreateVolume the new volume and the snapshot it is made from,
// CreateSnapshot the source volume and the new snapshot, CreateTags each
// tagged resource (with ec2:CreateAction when the tags come with a create),
// and the Describe actions support no resource-level permissions.
package iampolicy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// The tag that marks the volumes (and the snapshots made from them) an
// instance may claim. `spotroot volume create` and `spotroot launch` write
// it; every volume and snapshot the boot path creates carries it.
const (
	DefaultTagKey   = "spotroot:managed"
	DefaultTagValue = "true"
)

// Tag keys the boot path writes after a resource exists.
const (
	TagInstance  = "spotroot:instance"   // pool winner (claim tags)
	TagMovedTo   = "spotroot:moved-to"   // old volume of a cross-AZ move
	TagMovingTo  = "spotroot:moving-to"  // original of a cross-AZ move under way
	TagMovedFrom = "spotroot:moved-from" // the move's snapshot and copy
	TagCreatedBy = "spotroot:created-by"
	// TagBoot is the instance's own boot state (spotroot:boot=failed:<phase>).
	TagBoot = "spotroot:boot"
)

// Capabilities beyond claiming an existing volume, each one flag of
// `spotroot iam-policy`.
type Options struct {
	Partition string // aws (default), aws-cn, aws-us-gov
	TagKey    string // default DefaultTagKey
	TagValue  string // default DefaultTagValue

	// Create lets the instance create its volume (config: create:).
	Create bool
	// CreateTags are the tags a created volume must carry (the volume's
	// tag or pool selector, from --config); nil leaves them open.
	CreateTags map[string]string
	// CreateFrom lists the sources: "ami", "empty" or snap-… ids.
	CreateFrom []string
	// CrossAZMove: snapshot a volume in another zone and copy it here.
	CrossAZMove bool
	// DetachDeadOwner: force-detach a volume from a stopped or
	// terminated instance (config: force_detach: true).
	DetachDeadOwner bool
	// DeleteMoved: delete the old volume and the snapshot after a move.
	DeleteMoved bool
	// ClaimTags: tag a claimed pool member spotroot:instance=<id>.
	ClaimTags bool
	// KMSKeys are ARNs of customer-managed keys the volumes are
	// encrypted with.
	KMSKeys []string
}

// Flags name the iam-policy flag of each capability, for error messages.
const (
	FlagCreate          = "--create"
	FlagCrossAZMove     = "--cross-az-move"
	FlagDetachDeadOwner = "--detach-dead-owner"
	FlagDeleteMoved     = "--delete-moved"
	FlagClaimTags       = "--claim-tags"
	FlagKMSKey          = "--kms-key"
)

// Policy is an IAM policy document.
type Policy struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM statement; Why is what --explain prints.
type Statement struct {
	Sid       string                    `json:"Sid"`
	Effect    string                    `json:"Effect"`
	Action    []string                  `json:"Action"`
	Resource  []string                  `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
	Why       string                    `json:"-"`
	Flag      string                    `json:"-"` // "" = always present
}

// Partitions are the partitions a policy can be rendered for.
var Partitions = []string{"aws", "aws-cn", "aws-us-gov"}

func (o *Options) fill() error {
	if o.Partition == "" {
		o.Partition = "aws"
	}
	if !slices.Contains(Partitions, o.Partition) {
		return fmt.Errorf("partition %q is not one of %s", o.Partition, strings.Join(Partitions, ", "))
	}
	if o.TagKey == "" {
		o.TagKey = DefaultTagKey
	}
	if o.TagValue == "" {
		o.TagValue = DefaultTagValue
	}
	if strings.HasPrefix(o.TagKey, "aws:") {
		return fmt.Errorf("tag key %q: keys starting aws: are reserved by AWS", o.TagKey)
	}
	if o.Create && (o.TagKey != DefaultTagKey || o.TagValue != DefaultTagValue) && o.CreateTags[o.TagKey] != o.TagValue {
		// Volumes the boot path creates carry spotroot:managed=true and
		// their selector's tags: a policy requiring another tag would deny
		// every create.
		return fmt.Errorf("%s with --tag-key %s: the volumes spotroot creates carry %s=%s and their tag or pool selector; put %s: %s in the volume's selector and pass --config",
			FlagCreate, o.TagKey, DefaultTagKey, DefaultTagValue, o.TagKey, o.TagValue)
	}
	if o.DeleteMoved && !o.CrossAZMove {
		return fmt.Errorf("%s needs %s (it deletes what a move leaves behind)", FlagDeleteMoved, FlagCrossAZMove)
	}
	for _, k := range o.KMSKeys {
		if !strings.HasPrefix(k, "arn:") || !strings.Contains(k, ":kms:") {
			return fmt.Errorf("KMS key %q is not a key ARN (arn:%s:kms:REGION:ACCOUNT:key/ID)", k, o.Partition)
		}
	}
	for _, f := range o.CreateFrom {
		if f != "ami" && f != "empty" && !strings.HasPrefix(f, "snap-") {
			return fmt.Errorf("create source %q is not ami, empty or a snap-… id", f)
		}
	}
	return nil
}

// Build returns the policy for o.
func Build(o Options) (Policy, error) {
	if err := o.fill(); err != nil {
		return Policy{}, err
	}
	arn := func(typ string) string {
		acct := "*"
		if typ == "snapshot" || typ == "image" {
			acct = "" // snapshot and image ARNs carry no account
		}
		return fmt.Sprintf("arn:%s:ec2:*:%s:%s/*", o.Partition, acct, typ)
	}
	vol, snap := arn("volume"), arn("snapshot")
	// The calling instance itself: the policy variable resolves to the
	// instance a request with its role credentials comes from, and to
	// nothing (no match) for any other caller.
	self := "${ec2:SourceInstanceARN}"
	managed := map[string]any{"aws:ResourceTag/" + o.TagKey: o.TagValue}
	var st []Statement
	add := func(s Statement) { st = append(st, s) }

	describe := []string{"ec2:DescribeInstances", "ec2:DescribeVolumes"}
	why := "find the volume (DescribeVolumes), pick a free device name and learn the state of a volume's previous owner (DescribeInstances). " +
		"EC2's Describe actions support no resource-level permissions, so they are granted on *; DescribeInstanceAttribute (any instance's user-data) is not granted"
	if o.Create && slices.Contains(o.CreateFrom, "ami") {
		describe = append(describe, "ec2:DescribeImages")
		why += "; DescribeImages finds the root snapshot of the instance's AMI (create from: ami)"
	}
	if o.CrossAZMove {
		describe = append(describe, "ec2:DescribeSnapshots")
		why += "; DescribeSnapshots waits for the move's snapshot"
	}
	sort.Strings(describe)
	add(Statement{Sid: "SpotrootDescribe", Effect: "Allow", Action: describe, Resource: []string{"*"}, Why: why})
	add(Statement{Sid: "SpotrootAttachManagedVolumes", Effect: "Allow", Action: []string{"ec2:AttachVolume"}, Resource: []string{vol},
		Condition: map[string]map[string]any{"StringEquals": managed},
		Why:       fmt.Sprintf("AttachVolume authorises the volume: only volumes tagged %s=%s", o.TagKey, o.TagValue)})
	add(Statement{Sid: "SpotrootAttachToItself", Effect: "Allow", Action: []string{"ec2:AttachVolume"}, Resource: []string{self},
		Why: "AttachVolume also authorises the instance: only the calling instance itself (ec2:SourceInstanceARN), never another one"})
	add(Statement{Sid: "SpotrootTagOwnBootState", Effect: "Allow", Action: []string{"ec2:CreateTags"}, Resource: []string{self},
		Condition: map[string]map[string]any{"ForAllValues:StringEquals": {"aws:TagKeys": []string{TagBoot}}},
		Why:       "on a fallback the instance tags itself " + TagBoot + "=failed:<phase> so operators see it in the console; only that key, only on itself"})
	add(Statement{Sid: "SpotrootNeverRetagVolumes", Effect: "Deny", Action: []string{"ec2:CreateTags", "ec2:DeleteTags"}, Resource: []string{vol, snap},
		Condition: map[string]map[string]any{
			"ForAnyValue:StringNotEquals": {"aws:TagKeys": []string{TagInstance, TagMovingTo, TagMovedTo}},
			"Null":                        {"ec2:CreateAction": "true"},
		},
		Why: "explicit Deny (wins over any other policy on the role): outside a create, no tag of a volume or snapshot may change except spotroot's own " +
			TagInstance + ", " + TagMovingTo + " and " + TagMovedTo + ", so an instance cannot tag a volume into the managed set, out of it, or onto another instance's selector"})

	if o.Create || o.CrossAZMove {
		cond := map[string]any{"aws:RequestTag/" + o.TagKey: o.TagValue}
		why := fmt.Sprintf("every volume spotroot creates carries %s=%s in CreateVolume's TagSpecifications", o.TagKey, o.TagValue)
		for k, v := range o.CreateTags {
			cond["aws:RequestTag/"+k] = v
		}
		if len(o.CreateTags) > 0 {
			why += " and the configured selector " + kvs(o.CreateTags) + ", so it cannot create a volume another configuration would boot"
		}
		flag := FlagCreate
		if !o.Create {
			flag = FlagCrossAZMove
		}
		add(Statement{Sid: "SpotrootCreateManagedVolumes", Effect: "Allow", Action: []string{"ec2:CreateVolume"}, Resource: []string{vol},
			Condition: map[string]map[string]any{"StringEquals": cond}, Why: why, Flag: flag})
		actions, res := []string{"CreateVolume"}, []string{vol}
		if o.CrossAZMove {
			actions, res = append(actions, "CreateSnapshot"), append(res, snap)
		}
		add(Statement{Sid: "SpotrootTagOnCreate", Effect: "Allow", Action: []string{"ec2:CreateTags"}, Resource: res,
			Condition: map[string]map[string]any{"StringEquals": {"ec2:CreateAction": actions}},
			Why:       "tags given in a create's TagSpecifications need CreateTags too, allowed only as part of " + strings.Join(actions, "/"), Flag: flag})
	}
	if o.Create {
		var snaps []string
		ami := false
		for _, f := range o.CreateFrom {
			switch {
			case f == "ami":
				ami = true
			case strings.HasPrefix(f, "snap-"):
				snaps = append(snaps, fmt.Sprintf("arn:%s:ec2:*::snapshot/%s", o.Partition, f))
			}
		}
		if len(snaps) > 0 {
			add(Statement{Sid: "SpotrootCreateFromNamedSnapshots", Effect: "Allow", Action: []string{"ec2:CreateVolume"}, Resource: snaps,
				Why: "CreateVolume authorises the source snapshot: only the snapshots the configuration names", Flag: FlagCreate})
		}
		if ami {
			add(Statement{Sid: "SpotrootCreateFromManagedAMISnapshots", Effect: "Allow", Action: []string{"ec2:CreateVolume"}, Resource: []string{snap},
				Condition: map[string]map[string]any{"StringEquals": managed},
				Why: fmt.Sprintf("create from: ami copies the AMI's root snapshot, which must be tagged %s=%s (the Packer example's snapshot_tags; or aws ec2 create-tags)",
					o.TagKey, o.TagValue), Flag: FlagCreate})
		}
	}
	if o.CrossAZMove {
		add(Statement{Sid: "SpotrootSnapshotManagedVolumes", Effect: "Allow", Action: []string{"ec2:CreateSnapshot"}, Resource: []string{vol},
			Condition: map[string]map[string]any{"StringEquals": managed},
			Why:       "a cross-AZ move snapshots the volume in the other zone: only managed volumes", Flag: FlagCrossAZMove})
		add(Statement{Sid: "SpotrootCreateManagedSnapshots", Effect: "Allow", Action: []string{"ec2:CreateSnapshot"}, Resource: []string{snap},
			Condition: map[string]map[string]any{"StringEquals": {"aws:RequestTag/" + o.TagKey: o.TagValue}},
			Why:       "the move's snapshot carries the volume's tags, the managed tag among them", Flag: FlagCrossAZMove})
		add(Statement{Sid: "SpotrootCopyManagedSnapshots", Effect: "Allow", Action: []string{"ec2:CreateVolume"}, Resource: []string{snap},
			Condition: map[string]map[string]any{"StringEquals": managed, "Null": {"aws:ResourceTag/" + TagMovedFrom: "false"}},
			Why:       "the copy is created from the move's own snapshot (managed, tagged " + TagMovedFrom + ")", Flag: FlagCrossAZMove})
		add(Statement{Sid: "SpotrootMarkMovedVolumes", Effect: "Allow", Action: []string{"ec2:CreateTags"}, Resource: []string{vol},
			Condition: map[string]map[string]any{"StringEquals": managed, "ForAllValues:StringEquals": {"aws:TagKeys": []string{TagMovingTo, TagMovedTo}}},
			Why: "the move protocol marks the original " + TagMovingTo + "=<zone> before its snapshot and " + TagMovedTo +
				"=<copy> when the copy is complete, so every cut leaves exactly one claimable volume; only those keys", Flag: FlagCrossAZMove})
	}
	if o.DetachDeadOwner {
		add(Statement{Sid: "SpotrootDetachManagedVolumes", Effect: "Allow", Action: []string{"ec2:DetachVolume"},
			Resource:  []string{vol, arn("instance")},
			Condition: map[string]map[string]any{"StringEquals": managed},
			Why: fmt.Sprintf("force_detach: DetachVolume authorises the volume and the previous owner, both tagged %s=%s (spotroot launch tags instances). "+
				"IAM has no condition key for instance state: spotroot itself only detaches from stopped or terminated owners", o.TagKey, o.TagValue),
			Flag: FlagDetachDeadOwner})
	}
	if o.DeleteMoved {
		add(Statement{Sid: "SpotrootDeleteMovedVolumes", Effect: "Allow", Action: []string{"ec2:DeleteVolume"}, Resource: []string{vol},
			Condition: map[string]map[string]any{"StringEquals": managed, "Null": {"aws:ResourceTag/" + TagMovedTo: "false"}},
			Why:       "delete_moved: only managed volumes already marked " + TagMovedTo, Flag: FlagDeleteMoved})
		add(Statement{Sid: "SpotrootDeleteMoveSnapshots", Effect: "Allow", Action: []string{"ec2:DeleteSnapshot"}, Resource: []string{snap},
			Condition: map[string]map[string]any{"StringEquals": managed, "Null": {"aws:ResourceTag/" + TagMovedFrom: "false"}},
			Why:       "delete_moved: only the move's own snapshots (tagged " + TagMovedFrom + ")", Flag: FlagDeleteMoved})
	}
	if o.ClaimTags {
		add(Statement{Sid: "SpotrootTagClaimedVolumes", Effect: "Allow", Action: []string{"ec2:CreateTags"}, Resource: []string{vol},
			Condition: map[string]map[string]any{"StringEquals": managed, "ForAllValues:StringEquals": {"aws:TagKeys": []string{TagInstance}}},
			Why:       "a pool winner is tagged " + TagInstance + "=<instance id> so operators see who holds which member; only that key", Flag: FlagClaimTags})
	}
	if len(o.KMSKeys) > 0 {
		keys := slices.Clone(o.KMSKeys)
		sort.Strings(keys)
		via := map[string]any{"kms:ViaService": "ec2.*.amazonaws.com"}
		add(Statement{Sid: "SpotrootUseVolumeKeys", Effect: "Allow",
			Action: []string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"}, Resource: keys,
			Condition: map[string]map[string]any{"StringLike": via},
			Why:       "volumes encrypted with a customer-managed key: EC2 uses the key on the caller's behalf when it creates or copies them; only through EC2", Flag: FlagKMSKey})
		add(Statement{Sid: "SpotrootGrantVolumeKeysToEC2", Effect: "Allow", Action: []string{"kms:CreateGrant"}, Resource: keys,
			Condition: map[string]map[string]any{"StringLike": via, "Bool": {"kms:GrantIsForAWSResource": "true"}},
			Why:       "attaching an encrypted volume makes EC2 create a grant on its key for the instance; only grants for AWS resources, only through EC2", Flag: FlagKMSKey})
	}
	return Policy{Version: "2012-10-17", Statement: st}, nil
}

// Render returns the policy document as indented JSON.
func Render(o Options) ([]byte, error) {
	p, err := Build(o)
	if err != nil {
		return nil, err
	}
	return p.JSON()
}

// JSON is the policy document, indented, with a final newline.
func (p Policy) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Explain writes, for each statement, its Sid, effect, actions and why it
// is there (and the flag that adds it).
func (p Policy) Explain() string {
	var b strings.Builder
	for _, s := range p.Statement {
		fmt.Fprintf(&b, "%s (%s %s on %s)", s.Sid, s.Effect, strings.Join(s.Action, ", "), strings.Join(s.Resource, ", "))
		if s.Flag != "" {
			fmt.Fprintf(&b, " [%s]", s.Flag)
		}
		fmt.Fprintf(&b, "\n    %s\n", s.Why)
	}
	return b.String()
}

// Actions lists every action the policy allows, sorted.
func (p Policy) Actions() []string {
	seen := map[string]bool{}
	for _, s := range p.Statement {
		if s.Effect == "Allow" {
			for _, a := range s.Action {
				seen[a] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// FlagFor names the iam-policy flag that grants action (as the boot path
// calls it), or "" when the default policy has it.
func FlagFor(action string) string {
	if strings.HasPrefix(action, "kms:") {
		return FlagKMSKey + " <key ARN>"
	}
	switch strings.TrimPrefix(action, "ec2:") {
	case "CreateVolume", "DescribeImages":
		return FlagCreate
	case "CreateSnapshot", "DescribeSnapshots":
		return FlagCrossAZMove
	case "DetachVolume":
		return FlagDetachDeadOwner
	case "DeleteVolume", "DeleteSnapshot":
		return FlagDeleteMoved
	case "CreateTags":
		return FlagClaimTags + " or " + FlagCrossAZMove
	}
	return ""
}

func kvs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
