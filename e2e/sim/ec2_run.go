package sim

import (
	"encoding/base64"
	"maps"
	"strconv"
	"strings"
	"time"
)

// RunInstances (Spot through InstanceMarketOptions), CreateLaunchTemplateVersion
// and DescribeInstanceAttribute. They register themselves so the
// dispatcher's table in ec2.go stays as it is.
func init() {
	ec2Actions["RunInstances"] = ec2Action{(*Server).runInstances, true}
	ec2Actions["CreateLaunchTemplateVersion"] = ec2Action{(*Server).createLaunchTemplateVersion, true}
	ec2Actions["DescribeInstanceAttribute"] = ec2Action{(*Server).describeInstanceAttribute, false}
}

// findLaunchTemplateLocked resolves LaunchTemplateId or LaunchTemplateName
// (under prefix) as EC2 does.
func (w *World) findLaunchTemplateLocked(c *call, prefix string) (*LaunchTemplate, *APIError) {
	id, name := c.str(prefix+"LaunchTemplateId"), c.str(prefix+"LaunchTemplateName")
	for _, lt := range w.LaunchTemplates {
		if (id != "" && lt.ID == id) || (id == "" && name != "" && lt.Name == name) {
			return lt, nil
		}
	}
	if id == "" && name == "" {
		return nil, errMissing("LaunchTemplateId or LaunchTemplateName")
	}
	if id != "" {
		return nil, errf("InvalidLaunchTemplateId.NotFound", "The specified launch template, with template ID %s, does not exist.", id)
	}
	return nil, errf("InvalidLaunchTemplateName.NotFoundException", "The specified launch template, with template name %s, does not exist.", name)
}

// version returns the data of version v ("", "$Default" = 1, "$Latest").
func (lt *LaunchTemplate) version(v string) (map[string]string, int, bool) {
	switch v {
	case "", "$Default", "1":
		return lt.Data, 1, true
	case "$Latest":
		if len(lt.Versions) == 0 {
			return lt.Data, 1, true
		}
		return lt.Versions[len(lt.Versions)-1], len(lt.Versions) + 1, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > len(lt.Versions)+1 {
		return nil, 0, false
	}
	if n == 1 {
		return lt.Data, 1, true
	}
	return lt.Versions[n-2], n, true
}

type xmlLaunchTemplateVersion struct {
	LaunchTemplateID   string `xml:"launchTemplateId"`
	LaunchTemplateName string `xml:"launchTemplateName"`
	VersionNumber      int    `xml:"versionNumber"`
	VersionDescription string `xml:"versionDescription,omitempty"`
	CreateTime         string `xml:"createTime"`
	DefaultVersion     bool   `xml:"defaultVersion"`
}

type createLaunchTemplateVersionResponse struct {
	respBase
	Version xmlLaunchTemplateVersion `xml:"launchTemplateVersion"`
}

func (s *Server) createLaunchTemplateVersion(c *call) (response, *APIError) {
	w := s.World
	lt, e := w.findLaunchTemplateLocked(c, "")
	if e != nil {
		return nil, e
	}
	data := map[string]string{}
	if src := c.str("SourceVersion"); src != "" {
		base, _, ok := lt.version(src)
		if !ok {
			return nil, errf("InvalidLaunchTemplateVersion.NotFound", "The specified launch template version %s does not exist.", src)
		}
		maps.Copy(data, base)
	}
	for k, v := range c.params {
		if rest, ok := strings.CutPrefix(k, "LaunchTemplateData."); ok && len(v) > 0 {
			data[rest] = v[0]
		}
	}
	if len(data) == 0 {
		return nil, errMissing("LaunchTemplateData")
	}
	if ud, ok := data["UserData"]; ok {
		if _, err := base64.StdEncoding.DecodeString(ud); err != nil {
			return nil, errInvalidParam("Invalid BASE64 encoding of user data.")
		}
	}
	lt.Versions = append(lt.Versions, data)
	return &createLaunchTemplateVersionResponse{Version: xmlLaunchTemplateVersion{
		LaunchTemplateID: lt.ID, LaunchTemplateName: lt.Name, VersionNumber: len(lt.Versions) + 1,
		VersionDescription: c.str("VersionDescription"), CreateTime: s.World.apiTime(time.Now()),
	}}, nil
}

type runInstancesResponse struct {
	respBase
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

// runInstances launches instances, Spot when InstanceMarketOptions says so
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html,
// API_SpotMarketOptions.html: a persistent request needs the interruption
// behaviour stop or hibernate; stop and hibernate need a persistent
// request). Parameters not given come from the launch template.
func (s *Server) runInstances(c *call) (response, *APIError) {
	w := s.World
	get := func(k string) string { return c.str(k) }
	if c.str("LaunchTemplate.LaunchTemplateId") != "" || c.str("LaunchTemplate.LaunchTemplateName") != "" {
		lt, e := w.findLaunchTemplateLocked(c, "LaunchTemplate.")
		if e != nil {
			return nil, e
		}
		data, _, ok := lt.version(c.str("LaunchTemplate.Version"))
		if !ok {
			return nil, errf("InvalidLaunchTemplateVersion.NotFound", "The specified launch template version %s does not exist.", c.str("LaunchTemplate.Version"))
		}
		get = func(k string) string {
			if v := c.str(k); v != "" {
				return v
			}
			// Template data names: SecurityGroupIds.N vs SecurityGroupId.N.
			return data[strings.Replace(k, "SecurityGroupId.", "SecurityGroupIds.", 1)]
		}
	}
	minN, maxN := 1, 1
	if v := c.str("MinCount"); v != "" {
		minN, _ = strconv.Atoi(v)
	}
	if v := c.str("MaxCount"); v != "" {
		maxN, _ = strconv.Atoi(v)
	}
	if c.str("MinCount") == "" || c.str("MaxCount") == "" {
		return nil, errMissing("MinCount and MaxCount")
	}
	if minN < 1 || maxN < minN {
		return nil, errInvalidParam("Value (%d) for parameter maxCount is invalid.", maxN)
	}
	image, itype := get("ImageId"), get("InstanceType")
	switch {
	case image == "":
		return nil, errMissing("ImageId")
	case !validID(image, "ami"):
		return nil, errImageMalformed(image)
	}
	if m, ok := w.Images[image]; !ok || m.State != "available" {
		return nil, errImageNotFound(image)
	}
	if itype == "" {
		itype = "m1.small" // EC2's default
	}
	spot := false
	typ, behavior := "one-time", "terminate"
	switch mt := get("InstanceMarketOptions.MarketType"); mt {
	case "":
	case "spot":
		spot = true
		if v := get("InstanceMarketOptions.SpotOptions.SpotInstanceType"); v != "" {
			typ = v
		}
		if v := get("InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"); v != "" {
			behavior = v
		}
		switch {
		case typ != "one-time" && typ != "persistent":
			return nil, errInvalidParam("Value (%s) for parameter SpotInstanceType is invalid.", typ)
		case behavior != "terminate" && behavior != "stop" && behavior != "hibernate":
			return nil, errInvalidParam("Value (%s) for parameter InstanceInterruptionBehavior is invalid.", behavior)
		case typ == "persistent" && behavior == "terminate", typ == "one-time" && behavior != "terminate":
			return nil, errf("InvalidParameterCombination", "A persistent Spot Instance request requires the interruption behavior stop or hibernate, and stop or hibernate requires a persistent request.")
		}
	default:
		return nil, errInvalidParam("Value (%s) for parameter MarketType is invalid.", mt)
	}
	subnet := get("SubnetId")
	az, e := w.placementLocked(get("Placement.AvailabilityZone"), subnet)
	if e != nil {
		return nil, e
	}
	raw, err := base64.StdEncoding.DecodeString(get("UserData"))
	if err != nil {
		return nil, errInvalidParam("Invalid BASE64 encoding of user data.")
	}
	if len(raw) > 16384 {
		return nil, errInvalidParam("User data is limited to 16384 bytes")
	}
	profile := get("IamInstanceProfile.Name")
	if arn := get("IamInstanceProfile.Arn"); profile == "" && arn != "" {
		profile = arn[strings.LastIndex(arn, "/")+1:]
	}
	// Tags: the request's TagSpecifications, else the template's.
	specs := c.specTags()
	for rt := range specs {
		switch rt {
		case "instance", "volume", "spot-instances-request", "network-interface":
		default:
			return nil, errInvalidParam("'%s' is not a valid taggable resource type for this operation.", rt)
		}
	}
	instTags := specs["instance"]
	if instTags == nil && get("TagSpecifications.1.ResourceType") == "instance" {
		instTags = map[string]string{}
		for n := 1; ; n++ {
			k := get("TagSpecifications.1.Tags." + strconv.Itoa(n) + ".Key")
			if k == "" {
				break
			}
			instTags[k] = get("TagSpecifications.1.Tags." + strconv.Itoa(n) + ".Value")
		}
	}
	resp := &runInstancesResponse{ReservationID: "r-" + randHex(17), OwnerID: w.AccountID}
	now := time.Now().UTC()
	for range maxN {
		i := &Instance{ID: NewInstanceID(), AZ: az, ImageID: image, InstanceType: itype, State: InstanceRunning,
			Role: profile, UserData: raw, Lifecycle: "on-demand", Tags: maps.Clone(instTags),
			BlockDevices: map[string]string{"/dev/xvda": NewVolumeID()}}
		if spot {
			i.Lifecycle = "spot"
		}
		w.instanceDefaults(i)
		w.Instances[i.ID] = i
		w.attachBlockDevicesLocked(i)
		if rootTags := specs["volume"]; len(rootTags) > 0 {
			w.Volumes[i.BlockDevices["/dev/xvda"]].Tags = maps.Clone(rootTags)
		}
		if spot {
			r := &SpotRequest{ID: newSpotRequestID(), Type: typ, State: "active", StatusCode: "fulfilled",
				InterruptionBehavior: behavior, InstanceID: i.ID, AZ: az, ImageID: image, InstanceType: itype,
				SubnetID: subnet, IamInstanceProfile: profile, UserData: get("UserData"),
				Tags: maps.Clone(specs["spot-instances-request"]), CreateTime: now}
			w.SpotRequests[r.ID] = r
		}
		resp.Instances = append(resp.Instances, s.toXMLInstanceLocked(i, w.Volumes))
	}
	return resp, nil
}

type xmlAttributeValue struct {
	Value string `xml:"value"`
}

type describeInstanceAttributeResponse struct {
	respBase
	InstanceID   string             `xml:"instanceId"`
	UserData     *xmlAttributeValue `xml:"userData,omitempty"`
	InstanceType *xmlAttributeValue `xml:"instanceType,omitempty"`
}

// describeInstanceAttribute answers the attributes spotroot's threat model
// is about: userData (which IAM must never let one instance read of
// another) and instanceType.
func (s *Server) describeInstanceAttribute(c *call) (response, *APIError) {
	w := s.World
	id, attr := c.str("InstanceId"), c.str("Attribute")
	switch {
	case id == "":
		return nil, errMissing("instanceId")
	case !validID(id, "i"):
		return nil, errInstanceMalformed(id)
	case attr == "":
		return nil, errMissing("attribute")
	}
	i, ok := w.Instances[id]
	if !ok {
		return nil, errInstanceNotFound(id)
	}
	resp := &describeInstanceAttributeResponse{InstanceID: id}
	switch attr {
	case "userData":
		resp.UserData = &xmlAttributeValue{Value: base64.StdEncoding.EncodeToString(i.UserData)}
	case "instanceType":
		resp.InstanceType = &xmlAttributeValue{Value: i.InstanceType}
	default:
		return nil, errInvalidParam("Value (%s) for parameter attribute is invalid.", attr)
	}
	return resp, nil
}

// placementLocked is the zone of a launch: the subnet's, which a named
// zone must match, else the named zone or the region's "a" zone.
func (w *World) placementLocked(az, subnet string) (string, *APIError) {
	if subnet != "" {
		sn, ok := w.Subnets[subnet]
		if !ok {
			return "", errf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", subnet)
		}
		if az != "" && az != sn.AZ {
			return "", errf("InvalidParameterCombination", "The specified Availability Zone %s does not match subnet %s's zone %s.", az, subnet, sn.AZ)
		}
		az = sn.AZ
	}
	if az == "" {
		az = w.Region + "a"
	}
	if !validZone(az, w.Region) {
		return "", errInvalidParam("Invalid availability zone: [%s]", az)
	}
	return az, nil
}
