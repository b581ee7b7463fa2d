package sim

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// What each EC2 action authorises, from AWS's Service Authorization
// Reference, "Actions, resources, and condition keys for Amazon EC2"
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html):
//
//	AttachVolume, DetachVolume   instance*, volume*
//	CreateVolume                 volume* (new), snapshot (the source, if any:
//	                             "Enhancing resource-level permission for
//	                             creating an Amazon EBS volume from a snapshot",
//	                             https://aws.amazon.com/blogs/storage/enhancing-resource-level-permission-for-creating-an-amazon-ebs-volume-from-a-snapshot)
//	CreateSnapshot               snapshot* (new), volume* (the source)
//	CreateTags, DeleteTags       each resource named (ec2:CreateAction for
//	                             tags given in a create's TagSpecifications)
//	DeleteVolume / DeleteSnapshot  volume* / snapshot*
//	DescribeInstanceAttribute    instance* (ec2:Attribute)
//	RunInstances                 instance*, image*, volume*, subnet,
//	                             security-group, launch-template
//	RequestSpotInstances         spot-instances-request*, image, subnet
//	CreateLaunchTemplate(Version) launch-template*
//	Describe* (others)           no resource-level permissions: "*"
//
// A create that carries TagSpecifications is also authorised as
// ec2:CreateTags on the new resources with ec2:CreateAction set, as EC2
// does ("Grant permission to tag resources during creation",
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html).

// partition is the ARN partition of a region.
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

func (w *World) arnLocked(typ, id string) string {
	acct := w.AccountID
	if typ == "snapshot" || typ == "image" {
		acct = ""
	}
	return fmt.Sprintf("arn:%s:ec2:%s:%s:%s/%s", partition(w.Region), w.Region, acct, typ, id)
}

// instanceARNLocked is what ec2:SourceInstanceARN holds for requests made
// with an instance's role credentials.
func (w *World) instanceARNLocked(id string) string { return w.arnLocked("instance", id) }

func tagKeys(tags map[string]string) map[string][]string {
	k := map[string][]string{}
	for key, v := range tags {
		k["aws:ResourceTag/"+key] = []string{v}
		k["ec2:ResourceTag/"+key] = []string{v}
	}
	return k
}

func requestTagKeys(tags map[string]string, into map[string][]string) {
	keys := make([]string, 0, len(tags))
	for k, v := range tags {
		into["aws:RequestTag/"+k] = []string{v}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		into["aws:TagKeys"] = keys
	}
}

// volumeResourceLocked describes an existing volume (unknown ids get an
// ARN and no keys: conditions on them fail, as on EC2).
func (w *World) volumeResourceLocked(id string) authzResource {
	r := authzResource{ARN: w.arnLocked("volume", id), Keys: map[string][]string{"ec2:VolumeID": {id}}}
	if v, ok := w.Volumes[id]; ok {
		for k, val := range tagKeys(v.Tags) {
			r.Keys[k] = val
		}
		r.Keys["ec2:AvailabilityZone"] = []string{v.AZ}
		r.Keys["ec2:Encrypted"] = []string{strconv.FormatBool(v.Encrypted)}
		r.Keys["ec2:VolumeType"] = []string{v.Type}
		r.Keys["ec2:VolumeSize"] = []string{strconv.Itoa(v.SizeGiB)}
		if v.SnapshotID != "" {
			r.Keys["ec2:ParentSnapshot"] = []string{w.arnLocked("snapshot", v.SnapshotID)}
		}
	}
	return r
}

func (w *World) instanceResourceLocked(id string) authzResource {
	r := authzResource{ARN: w.arnLocked("instance", id), Keys: map[string][]string{"ec2:InstanceID": {id}}}
	if i, ok := w.Instances[id]; ok {
		for k, val := range tagKeys(i.Tags) {
			r.Keys[k] = val
		}
		r.Keys["ec2:AvailabilityZone"] = []string{i.AZ}
		r.Keys["ec2:InstanceType"] = []string{i.InstanceType}
	}
	return r
}

func (w *World) snapshotResourceLocked(id string) authzResource {
	r := authzResource{ARN: w.arnLocked("snapshot", id), Keys: map[string][]string{"ec2:SnapshotID": {id}}}
	if s, ok := w.Snapshots[id]; ok {
		for k, val := range tagKeys(s.Tags) {
			r.Keys[k] = val
		}
		r.Keys["ec2:Owner"] = []string{w.AccountID}
		r.Keys["ec2:VolumeSize"] = []string{strconv.Itoa(s.VolumeSize)}
		if s.VolumeID != "" {
			r.Keys["ec2:ParentVolume"] = []string{w.arnLocked("volume", s.VolumeID)}
		}
	}
	return r
}

func (w *World) imageResourceLocked(id string) authzResource {
	r := authzResource{ARN: w.arnLocked("image", id), Keys: map[string][]string{"ec2:ImageID": {id}}}
	if m, ok := w.Images[id]; ok {
		for k, val := range tagKeys(m.Tags) {
			r.Keys[k] = val
		}
	}
	return r
}

func (w *World) anyResourceLocked(id string) authzResource {
	switch idPrefix(id) {
	case "vol":
		return w.volumeResourceLocked(id)
	case "i":
		return w.instanceResourceLocked(id)
	case "snap":
		return w.snapshotResourceLocked(id)
	case "ami":
		return w.imageResourceLocked(id)
	case "lt":
		r := authzResource{ARN: w.arnLocked("launch-template", id), Keys: map[string][]string{}}
		if lt, ok := w.LaunchTemplates[id]; ok {
			r.Keys = tagKeys(lt.Tags)
		}
		return r
	}
	return authzResource{ARN: w.arnLocked("resource", id), Keys: map[string][]string{}}
}

// specTags reads every TagSpecification.N (any resource type) into one map
// per resource type.
func (c *call) specTags() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, n := range c.indexes("TagSpecification") {
		p := fmt.Sprintf("TagSpecification.%d", n)
		rt := c.params.Get(p + ".ResourceType")
		if out[rt] == nil {
			out[rt] = map[string]string{}
		}
		for _, t := range c.tagList(p + ".Tag") {
			out[rt][t.Key] = t.Value
		}
	}
	return out
}

// authzRequestsLocked lists what c must be allowed to do: the action on
// its resources and, for a create with tags, CreateTags on the new ones.
func (s *Server) authzRequestsLocked(c *call) []authzRequest {
	w := s.World
	ctx := map[string][]string{
		"aws:PrincipalArn":     {c.caller.principal},
		"aws:RequestedRegion":  {w.Region},
		"ec2:Region":           {w.Region},
		"aws:SecureTransport":  {strconv.FormatBool(c.secure)},
		"aws:PrincipalAccount": {w.AccountID},
	}
	if c.caller.instanceID != "" {
		ctx["ec2:SourceInstanceARN"] = []string{w.instanceARNLocked(c.caller.instanceID)}
	}
	action := "ec2:" + c.action
	req := authzRequest{Action: action, Context: ctx}
	var created []authzResource // new resources a create tags
	var createdTags map[string]string
	newRes := func(typ string, keys map[string][]string) authzResource {
		if keys == nil {
			keys = map[string][]string{}
		}
		// The id of a resource being created is not known yet.
		return authzResource{ARN: w.arnLocked(typ, "*"), Keys: keys}
	}
	withCtx := func(extra map[string][]string) map[string][]string {
		m := map[string][]string{}
		for k, v := range ctx {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	switch c.action {
	case "AttachVolume", "DetachVolume":
		req.Resources = append(req.Resources, w.volumeResourceLocked(c.str("VolumeId")))
		inst := c.str("InstanceId")
		if inst == "" {
			if v, ok := w.Volumes[c.str("VolumeId")]; ok && len(v.Attachments) == 1 {
				inst = v.Attachments[0].InstanceID
			}
		}
		if inst != "" {
			req.Resources = append(req.Resources, w.instanceResourceLocked(inst))
		}
	case "CreateVolume":
		tags := c.specTags()["volume"]
		keys := map[string][]string{
			"ec2:AvailabilityZone": {c.str("AvailabilityZone")},
			"ec2:Encrypted":        {strconv.FormatBool(strings.EqualFold(c.str("Encrypted"), "true"))},
		}
		if t := c.str("VolumeType"); t != "" {
			keys["ec2:VolumeType"] = []string{t}
		}
		if sz := c.str("Size"); sz != "" {
			keys["ec2:VolumeSize"] = []string{sz}
		}
		if sn := c.str("SnapshotId"); sn != "" {
			keys["ec2:ParentSnapshot"] = []string{w.arnLocked("snapshot", sn)}
		}
		v := newRes("volume", keys)
		req.Context = withCtx(nil)
		requestTagKeys(tags, req.Context)
		req.Resources = append(req.Resources, v)
		if sn := c.str("SnapshotId"); sn != "" {
			req.Resources = append(req.Resources, w.snapshotResourceLocked(sn))
		}
		created, createdTags = []authzResource{v}, tags
	case "CreateSnapshot":
		tags := c.specTags()["snapshot"]
		sn := newRes("snapshot", map[string][]string{"ec2:ParentVolume": {w.arnLocked("volume", c.str("VolumeId"))}})
		req.Context = withCtx(nil)
		requestTagKeys(tags, req.Context)
		req.Resources = append(req.Resources, sn, w.volumeResourceLocked(c.str("VolumeId")))
		created, createdTags = []authzResource{sn}, tags
	case "CreateTags", "DeleteTags":
		tags := map[string]string{}
		for _, t := range c.tagList("Tag") {
			tags[t.Key] = t.Value
		}
		req.Context = withCtx(nil)
		requestTagKeys(tags, req.Context)
		for _, id := range c.list("ResourceId") {
			req.Resources = append(req.Resources, w.anyResourceLocked(id))
		}
	case "DeleteVolume":
		req.Resources = append(req.Resources, w.volumeResourceLocked(c.str("VolumeId")))
	case "DeleteSnapshot":
		req.Resources = append(req.Resources, w.snapshotResourceLocked(c.str("SnapshotId")))
	case "DescribeInstanceAttribute":
		req.Context = withCtx(map[string][]string{"ec2:Attribute": {c.str("Attribute")}})
		req.Resources = append(req.Resources, w.instanceResourceLocked(c.str("InstanceId")))
	case "RunInstances":
		specs := c.specTags()
		all := map[string]string{}
		for _, t := range specs {
			for k, v := range t {
				all[k] = v
			}
		}
		req.Context = withCtx(nil)
		requestTagKeys(all, req.Context)
		inst := newRes("instance", map[string][]string{"ec2:InstanceType": {c.str("InstanceType")}})
		vol := newRes("volume", nil)
		req.Resources = append(req.Resources, inst, vol)
		if img := c.str("ImageId"); img != "" {
			req.Resources = append(req.Resources, w.imageResourceLocked(img))
		}
		if sn := c.str("SubnetId"); sn != "" {
			req.Resources = append(req.Resources, authzResource{ARN: w.arnLocked("subnet", sn), Keys: map[string][]string{}})
		}
		for _, g := range c.list("SecurityGroupId") {
			req.Resources = append(req.Resources, authzResource{ARN: w.arnLocked("security-group", g), Keys: map[string][]string{}})
		}
		if lt := c.str("LaunchTemplate.LaunchTemplateId"); lt != "" {
			req.Resources = append(req.Resources, w.anyResourceLocked(lt))
		}
		if len(all) > 0 {
			created, createdTags = []authzResource{inst, vol}, all
		}
	case "RequestSpotInstances":
		tags := c.specTags()["spot-instances-request"]
		req.Context = withCtx(nil)
		requestTagKeys(tags, req.Context)
		r := newRes("spot-instances-request", nil)
		req.Resources = append(req.Resources, r)
		if img := c.str("LaunchSpecification.ImageId"); img != "" {
			req.Resources = append(req.Resources, w.imageResourceLocked(img))
		}
		created, createdTags = []authzResource{r}, tags
	case "CreateLaunchTemplate":
		tags := c.specTags()["launch-template"]
		req.Context = withCtx(nil)
		requestTagKeys(tags, req.Context)
		lt := newRes("launch-template", nil)
		req.Resources = append(req.Resources, lt)
		created, createdTags = []authzResource{lt}, tags
	case "CreateLaunchTemplateVersion":
		id := c.str("LaunchTemplateId")
		if id == "" {
			for _, lt := range w.LaunchTemplates {
				if lt.Name == c.str("LaunchTemplateName") {
					id = lt.ID
				}
			}
		}
		if id == "" {
			id = "lt-unknown"
		}
		req.Resources = append(req.Resources, w.anyResourceLocked(id))
	default:
		req.Resources = []authzResource{{ARN: "*", Keys: map[string][]string{}}}
	}
	reqs := []authzRequest{req}
	// Attaching a volume encrypted with a customer-managed key: EC2 creates
	// a grant on the key with the caller's credentials, so the caller needs
	// kms:CreateGrant on it, through EC2
	// (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption-requirements.html).
	if c.action == "AttachVolume" {
		if v, ok := w.Volumes[c.str("VolumeId")]; ok && v.Encrypted && v.KmsKeyID != "" {
			reqs = append(reqs, authzRequest{Action: "kms:CreateGrant",
				Context: withCtx(map[string][]string{
					"kms:ViaService":            {"ec2." + w.Region + ".amazonaws.com"},
					"kms:GrantIsForAWSResource": {"true"},
					"kms:CallerAccount":         {w.AccountID},
				}),
				Resources: []authzResource{{ARN: v.KmsKeyID, Keys: map[string][]string{}}}})
		}
	}
	if len(createdTags) > 0 {
		tctx := withCtx(map[string][]string{"ec2:CreateAction": {c.action}})
		requestTagKeys(createdTags, tctx)
		reqs = append(reqs, authzRequest{Action: "ec2:CreateTags", Context: tctx, Resources: created})
	}
	return reqs
}

// authorizeLocked evaluates the caller's policy for c: DenyActions first
// (an organisation-wide Deny, like an SCP), then the role's policy
// document. The operator key is unrestricted. It records the resources
// authorised on c for the audit log.
// authorizeLocked runs before the existence check, as EC2's does: a call
// on a resource that no longer exists (a retried DeleteVolume whose first
// attempt committed) carries no aws:ResourceTag keys, so a permission
// scoped by them does not match and the answer is UnauthorizedOperation,
// not NotFound (the well-known trap of tag-scoped policies: "the resource
// doesn't exist ..., so it doesn't have a Name tag attached to it.
// Therefore, the role can't act on it", https://denizgenc.co.uk/microblog/2025-08-27.html;
// IAM's condition operators on missing keys,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_IfExists).
func (s *Server) authorizeLocked(c *call) *APIError {
	w := s.World
	reqs := s.authzRequestsLocked(c)
	for _, r := range reqs {
		for _, res := range r.Resources {
			c.authorized = append(c.authorized, res.ARN)
		}
	}
	if w.deniedLocked(c.action) {
		return unauthorizedFor("ec2:"+c.action, c.caller.principal, authzDecision{ExplicitDeny: true,
			Resource: reqs[0].Resources[0].ARN, Statement: "World.DenyActions"})
	}
	if c.caller.instanceID == "" {
		return nil
	}
	i, ok := w.Instances[c.caller.instanceID]
	if !ok {
		return newError("AuthFailure", "")
	}
	doc, ok := w.RolePolicies[i.Role]
	if !ok {
		return nil // a role nobody gave a policy: unrestricted (tests that predate policies)
	}
	p, err := ParsePolicy(doc)
	if err != nil {
		s.log().Error("role policy", "role", i.Role, "err", err)
		return unauthorizedFor("ec2:"+c.action, c.caller.principal, authzDecision{Resource: "*", Reason: err.Error()})
	}
	for _, r := range reqs {
		if d := p.evaluate(r); !d.Allowed {
			return unauthorizedFor(r.Action, c.caller.principal, d)
		}
	}
	return nil
}

// SetRolePolicy sets the policy document of an IAM role (checked as IAM
// would check it).
func (w *World) SetRolePolicy(role, doc string) error {
	if _, err := ParsePolicy(doc); err != nil {
		return fmt.Errorf("role %s: %w", role, err)
	}
	return w.Update(func(w *World) error {
		if w.RolePolicies == nil {
			w.RolePolicies = map[string]string{}
		}
		w.RolePolicies[role] = doc
		return nil
	})
}
