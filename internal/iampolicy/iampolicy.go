// Package iampolicy renders the least-privilege IAM policy of the instance
// role spotroot boots with.
package iampolicy

import "encoding/json"

// Policy is an IAM policy document.
type Policy struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM statement.
type Statement struct {
	Sid       string                    `json:"Sid"`
	Effect    string                    `json:"Effect"`
	Action    []string                  `json:"Action"`
	Resource  []string                  `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

// Render returns the policy for instances and volumes tagged key=value:
//   - Describe* on * (EC2 cannot scope Describe calls);
//   - AttachVolume/DetachVolume only when both the volume and the instance
//     carry key=value (EC2 authorizes both resources of the call);
//   - CreateVolume/CreateSnapshot only when the request tags the new
//     resource key=value (and snapshots only of tagged volumes);
//   - CreateTags as part of those creates (ec2:CreateAction), and outside
//     one only the claim/move protocol keys (ProtocolTagKeys) on volumes
//     already carrying key=value;
//   - an explicit deny of CreateTags outside a create that touch key, a
//     pool key or the keys that make a volume a move's copy, and of any
//     DeleteTags of spotroot:* or key, so an instance cannot tag its way
//     to someone else's volume.
//
// ProtocolTagKeys are the tags spotroot writes on an existing volume: the
// claim (spotroot:instance) and the cross-AZ move (spotroot:moving-to,
// spotroot:moved-to).
var ProtocolTagKeys = []string{"spotroot:instance", "spotroot:moving-to", "spotroot:moved-to"}

func Render(key, value string) ([]byte, error) {
	tagged := map[string]map[string]any{"StringEquals": {"aws:ResourceTag/" + key: value}}
	onCreate := map[string]map[string]any{"StringEquals": {"aws:RequestTag/" + key: value}}
	p := Policy{Version: "2012-10-17", Statement: []Statement{
		{Sid: "SpotrootDescribe", Effect: "Allow", Action: []string{"ec2:Describe*"}, Resource: []string{"*"}},
		{Sid: "SpotrootAttachTaggedVolumes", Effect: "Allow", Action: []string{"ec2:AttachVolume", "ec2:DetachVolume"},
			Resource: []string{"arn:aws:ec2:*:*:volume/*"}, Condition: tagged},
		{Sid: "SpotrootAttachToTaggedInstances", Effect: "Allow", Action: []string{"ec2:AttachVolume", "ec2:DetachVolume"},
			Resource: []string{"arn:aws:ec2:*:*:instance/*"}, Condition: tagged},
		{Sid: "SpotrootCreateTaggedVolumes", Effect: "Allow", Action: []string{"ec2:CreateVolume"},
			Resource: []string{"arn:aws:ec2:*:*:volume/*"}, Condition: onCreate},
		{Sid: "SpotrootCreateVolumesFromSnapshots", Effect: "Allow", Action: []string{"ec2:CreateVolume"},
			Resource: []string{"arn:aws:ec2:*::snapshot/*"}, Condition: tagged},
		{Sid: "SpotrootSnapshotTaggedVolumes", Effect: "Allow", Action: []string{"ec2:CreateSnapshot"},
			Resource: []string{"arn:aws:ec2:*:*:volume/*"}, Condition: tagged},
		{Sid: "SpotrootCreateTaggedSnapshots", Effect: "Allow", Action: []string{"ec2:CreateSnapshot"},
			Resource: []string{"arn:aws:ec2:*::snapshot/*"}, Condition: onCreate},
		{Sid: "SpotrootTagOnCreate", Effect: "Allow", Action: []string{"ec2:CreateTags"},
			Resource:  []string{"arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*::snapshot/*"},
			Condition: map[string]map[string]any{"StringEquals": {"ec2:CreateAction": []string{"CreateVolume", "CreateSnapshot"}}}},
		// The claim and the cross-AZ move protocol write these on volumes
		// already in scope (README: the move protocol); nothing else.
		{Sid: "SpotrootClaimAndMoveTags", Effect: "Allow", Action: []string{"ec2:CreateTags"},
			Resource: []string{"arn:aws:ec2:*:*:volume/*"},
			Condition: map[string]map[string]any{
				"StringEquals":              {"aws:ResourceTag/" + key: value},
				"ForAllValues:StringEquals": {"aws:TagKeys": ProtocolTagKeys},
			}},
		{Sid: "SpotrootDenyTagChanges", Effect: "Deny", Action: []string{"ec2:CreateTags"}, Resource: []string{"*"},
			Condition: map[string]map[string]any{
				"ForAnyValue:StringLike": {"aws:TagKeys": []string{key, "spotroot:pool*", "spotroot:moved-from", "spotroot:created-by"}},
				"Null":                   {"ec2:CreateAction": "true"},
			}},
		{Sid: "SpotrootDenyTagRemoval", Effect: "Deny", Action: []string{"ec2:DeleteTags"}, Resource: []string{"*"},
			Condition: map[string]map[string]any{
				"ForAnyValue:StringLike": {"aws:TagKeys": []string{"spotroot:*", key}},
			}},
	}}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
