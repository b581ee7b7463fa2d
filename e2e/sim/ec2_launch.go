package sim

import (
	"encoding/base64"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Subnet is a VPC subnet; instances launched into it land in its zone.
type Subnet struct {
	ID           string
	VpcID        string
	AZ           string
	CIDR         string
	DefaultForAZ bool
	Tags         map[string]string `json:",omitempty"`
}

// SpotRequest is a Spot Instance request. The simulator fulfils it at once:
// the instance exists (running, no VM until the harness boots it) when
// RequestSpotInstances returns.
type SpotRequest struct {
	ID                   string
	Type                 string // one-time or persistent
	State                string // open, active, cancelled, closed
	StatusCode           string // fulfilled, …
	InterruptionBehavior string // terminate, stop, hibernate
	InstanceID           string
	AZ                   string
	ImageID              string
	InstanceType         string
	SubnetID             string
	KeyName              string            `json:",omitempty"`
	SecurityGroupIDs     []string          `json:",omitempty"`
	IamInstanceProfile   string            `json:",omitempty"`
	UserData             string            `json:",omitempty"` // base64, as sent
	Tags                 map[string]string `json:",omitempty"`
	CreateTime           time.Time
}

// LaunchTemplate is version 1 of a launch template; Data keeps the
// LaunchTemplateData.* request parameters (without that prefix) as sent.
type LaunchTemplate struct {
	ID         string
	Name       string
	CreateTime time.Time
	Data       map[string]string
	Tags       map[string]string `json:",omitempty"`
	// Versions holds versions 2, 3, … (CreateLaunchTemplateVersion), each
	// the complete LaunchTemplateData of that version.
	Versions []map[string]string `json:",omitempty"`
}

// launchDefaults gives a fresh world the default VPC's subnets.
func (w *World) launchDefaults() {
	if w.Subnets == nil {
		w.Subnets = map[string]*Subnet{}
		vpc := "vpc-" + derivedHex(w.AccountID+"/"+w.Region, "vpc", 17)
		for k, z := range []string{"a", "b", "c"} {
			az := w.Region + z
			id := "subnet-" + derivedHex(w.AccountID+"/"+az, "subnet", 17)
			w.Subnets[id] = &Subnet{ID: id, VpcID: vpc, AZ: az, CIDR: fmt.Sprintf("172.31.%d.0/20", 16*k), DefaultForAZ: true}
		}
	}
	if w.SpotRequests == nil {
		w.SpotRequests = map[string]*SpotRequest{}
	}
	if w.LaunchTemplates == nil {
		w.LaunchTemplates = map[string]*LaunchTemplate{}
	}
}

// AddSubnet adds a subnet; ID, AZ and VpcID are required.
func (w *World) AddSubnet(sn Subnet) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := checkID(sn.ID, "subnet"); err != nil {
		return fmt.Errorf("add subnet: %w", err)
	}
	if !validZone(sn.AZ, w.Region) {
		return fmt.Errorf("add subnet %s: zone %q is not in region %s", sn.ID, sn.AZ, w.Region)
	}
	c := sn
	c.Tags = maps.Clone(sn.Tags)
	w.Subnets[sn.ID] = &c
	return w.saveLocked()
}

// SpotRequest returns a copy of the Spot request.
func (w *World) SpotRequest(id string) (SpotRequest, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.SpotRequests[id]
	if !ok {
		return SpotRequest{}, false
	}
	c := *r
	c.Tags = maps.Clone(r.Tags)
	c.SecurityGroupIDs = slices.Clone(r.SecurityGroupIDs)
	return c, true
}

// LaunchTemplate returns a copy of the launch template named name.
func (w *World) LaunchTemplate(name string) (LaunchTemplate, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, lt := range w.LaunchTemplates {
		if lt.Name == name {
			c := *lt
			c.Data, c.Tags = maps.Clone(lt.Data), maps.Clone(lt.Tags)
			return c, true
		}
	}
	return LaunchTemplate{}, false
}

// --- DescribeSubnets

type xmlSubnet struct {
	SubnetID                string   `xml:"subnetId"`
	SubnetArn               string   `xml:"subnetArn"`
	State                   string   `xml:"state"`
	VpcID                   string   `xml:"vpcId"`
	OwnerID                 string   `xml:"ownerId"`
	CidrBlock               string   `xml:"cidrBlock"`
	AvailableIPAddressCount int      `xml:"availableIpAddressCount"`
	AvailabilityZone        string   `xml:"availabilityZone"`
	AvailabilityZoneID      string   `xml:"availabilityZoneId"`
	DefaultForAz            bool     `xml:"defaultForAz"`
	MapPublicIPOnLaunch     bool     `xml:"mapPublicIpOnLaunch"`
	Tags                    []xmlTag `xml:"tagSet>item"`
}

type describeSubnetsResponse struct {
	respBase
	Subnets   []xmlSubnet `xml:"subnetSet>item"`
	NextToken string      `xml:"nextToken,omitempty"`
}

func (s *Server) describeSubnets(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("SubnetId")
	fs, e := c.filters("availability-zone", "availabilityZone", "availability-zone-id", "cidr-block", "default-for-az",
		"defaultForAz", "state", "subnet-id", "vpc-id")
	if e != nil {
		return nil, e
	}
	subs, e := byIDs(w.Subnets, ids, "subnet", nil, func(id string) *APIError {
		return errf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
	})
	if e != nil {
		return nil, e
	}
	var matched []*Subnet
	for _, sn := range subs {
		field := func(name string) []string {
			switch name {
			case "availability-zone", "availabilityZone":
				return []string{sn.AZ}
			case "availability-zone-id":
				return []string{zoneID(sn.AZ, w.Region)}
			case "cidr-block":
				return []string{sn.CIDR}
			case "default-for-az", "defaultForAz":
				return []string{strconv.FormatBool(sn.DefaultForAZ)}
			case "state":
				return []string{"available"}
			case "subnet-id":
				return []string{sn.ID}
			case "vpc-id":
				return []string{sn.VpcID}
			}
			return nil
		}
		if matchAll(fs, sn.Tags, field) {
			matched = append(matched, sn)
		}
	}
	start, end, next, e := c.page(len(matched), 5, 1000)
	if e != nil {
		return nil, e
	}
	resp := &describeSubnetsResponse{NextToken: next}
	for _, sn := range matched[start:end] {
		resp.Subnets = append(resp.Subnets, xmlSubnet{
			SubnetID: sn.ID, SubnetArn: "arn:aws:ec2:" + w.Region + ":" + w.AccountID + ":subnet/" + sn.ID,
			State: "available", VpcID: sn.VpcID, OwnerID: w.AccountID, CidrBlock: sn.CIDR,
			AvailableIPAddressCount: 4091, AvailabilityZone: sn.AZ, AvailabilityZoneID: zoneID(sn.AZ, w.Region),
			DefaultForAz: sn.DefaultForAZ, MapPublicIPOnLaunch: sn.DefaultForAZ, Tags: xmlTags(sn.Tags),
		})
	}
	return resp, nil
}

// --- RequestSpotInstances / DescribeSpotInstanceRequests

type xmlSpotStatus struct {
	Code       string `xml:"code"`
	UpdateTime string `xml:"updateTime"`
	Message    string `xml:"message"`
}

type xmlGroup struct {
	GroupID string `xml:"groupId"`
}

type xmlLaunchSpec struct {
	ImageID            string         `xml:"imageId"`
	InstanceType       string         `xml:"instanceType"`
	KeyName            string         `xml:"keyName,omitempty"`
	SubnetID           string         `xml:"subnetId,omitempty"`
	Groups             []xmlGroup     `xml:"groupSet>item"`
	IamInstanceProfile *xmlIamProfile `xml:"iamInstanceProfile,omitempty"`
	Placement          xmlPlacement   `xml:"placement"`
}

type xmlSpotRequest struct {
	SpotInstanceRequestID        string        `xml:"spotInstanceRequestId"`
	SpotPrice                    string        `xml:"spotPrice"`
	Type                         string        `xml:"type"`
	State                        string        `xml:"state"`
	Status                       xmlSpotStatus `xml:"status"`
	LaunchSpecification          xmlLaunchSpec `xml:"launchSpecification"`
	InstanceID                   string        `xml:"instanceId,omitempty"`
	CreateTime                   string        `xml:"createTime"`
	ProductDescription           string        `xml:"productDescription"`
	LaunchedAvailabilityZone     string        `xml:"launchedAvailabilityZone,omitempty"`
	InstanceInterruptionBehavior string        `xml:"instanceInterruptionBehavior"`
	Tags                         []xmlTag      `xml:"tagSet>item"`
}

func (s *Server) toXMLSpotRequestLocked(r *SpotRequest) xmlSpotRequest {
	w := s.World
	x := xmlSpotRequest{
		SpotInstanceRequestID: r.ID, SpotPrice: "0.100000", Type: r.Type, State: r.State,
		Status:     xmlSpotStatus{Code: r.StatusCode, UpdateTime: s.World.apiTime(r.CreateTime), Message: "Your spot request is fulfilled."},
		InstanceID: r.InstanceID, CreateTime: s.World.apiTime(r.CreateTime), ProductDescription: "Linux/UNIX",
		LaunchedAvailabilityZone: r.AZ, InstanceInterruptionBehavior: r.InterruptionBehavior, Tags: xmlTags(r.Tags),
		LaunchSpecification: xmlLaunchSpec{ImageID: r.ImageID, InstanceType: r.InstanceType, KeyName: r.KeyName,
			SubnetID: r.SubnetID, Placement: xmlPlacement{AvailabilityZone: r.AZ, Tenancy: "default"}},
	}
	for _, g := range r.SecurityGroupIDs {
		x.LaunchSpecification.Groups = append(x.LaunchSpecification.Groups, xmlGroup{GroupID: g})
	}
	if r.IamInstanceProfile != "" {
		x.LaunchSpecification.IamInstanceProfile = &xmlIamProfile{Arn: "arn:aws:iam::" + w.AccountID + ":instance-profile/" + r.IamInstanceProfile}
	}
	return x
}

type requestSpotInstancesResponse struct {
	respBase
	Requests []xmlSpotRequest `xml:"spotInstanceRequestSet>item"`
}

func newSpotRequestID() string {
	return "sir-" + randHex(8)
}

func (s *Server) requestSpotInstances(c *call) (response, *APIError) {
	w := s.World
	const ls = "LaunchSpecification."
	count, has, e := c.integer("InstanceCount")
	if e != nil {
		return nil, e
	}
	if !has {
		count = 1
	}
	if count < 1 || count > 20 {
		return nil, errInvalidParam("Value (%d) for parameter instanceCount is invalid.", count)
	}
	typ := c.str("Type")
	if typ == "" {
		typ = "one-time"
	}
	if typ != "one-time" && typ != "persistent" {
		return nil, errInvalidParam("Value (%s) for parameter type is invalid.", typ)
	}
	behavior := c.str("InstanceInterruptionBehavior")
	if behavior == "" {
		behavior = "terminate"
	}
	switch behavior {
	case "terminate":
	case "stop", "hibernate":
		if typ != "persistent" {
			return nil, errf("InvalidParameterCombination", "The instance interruption behavior '%s' is only supported for persistent requests.", behavior)
		}
	default:
		return nil, errInvalidParam("Value (%s) for parameter instanceInterruptionBehavior is invalid.", behavior)
	}
	image, itype := c.str(ls+"ImageId"), c.str(ls+"InstanceType")
	switch {
	case image == "":
		return nil, errMissing("LaunchSpecification.ImageId")
	case !validID(image, "ami"):
		return nil, errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", image)
	case itype == "":
		return nil, errMissing("LaunchSpecification.InstanceType")
	}
	if m, ok := w.Images[image]; !ok || m.State != "available" {
		return nil, errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", image)
	}
	subnet := c.str(ls + "SubnetId")
	az, e := w.placementLocked(c.str(ls+"Placement.AvailabilityZone"), subnet)
	if e != nil {
		return nil, e
	}
	ud := c.str(ls + "UserData")
	raw, err := base64.StdEncoding.DecodeString(ud)
	if err != nil {
		return nil, errInvalidParam("Invalid BASE64 encoding of user data.")
	}
	if len(raw) > 16384 {
		return nil, errInvalidParam("User data is limited to 16384 bytes")
	}
	profile := c.str(ls + "IamInstanceProfile.Name")
	if arn := c.str(ls + "IamInstanceProfile.Arn"); profile == "" && arn != "" {
		profile = arn[strings.LastIndex(arn, "/")+1:]
	}
	tags, e := c.tagSpecs("spot-instances-request")
	if e != nil {
		return nil, e
	}
	resp := &requestSpotInstancesResponse{}
	now := time.Now().UTC()
	for range count {
		r := &SpotRequest{ID: newSpotRequestID(), Type: typ, State: "active", StatusCode: "fulfilled",
			InterruptionBehavior: behavior, AZ: az, ImageID: image, InstanceType: itype, SubnetID: subnet,
			KeyName: c.str(ls + "KeyName"), SecurityGroupIDs: c.list(ls + "SecurityGroupId"),
			IamInstanceProfile: profile, UserData: ud, Tags: tags, CreateTime: now}
		i := &Instance{ID: NewInstanceID(), AZ: az, ImageID: image, InstanceType: itype, State: InstanceRunning,
			Role: profile, UserData: raw, Lifecycle: "spot",
			BlockDevices: map[string]string{"/dev/xvda": NewVolumeID()}}
		w.instanceDefaults(i)
		w.Instances[i.ID] = i
		w.attachBlockDevicesLocked(i)
		r.InstanceID = i.ID
		w.SpotRequests[r.ID] = r
		resp.Requests = append(resp.Requests, s.toXMLSpotRequestLocked(r))
	}
	return resp, nil
}

type describeSpotInstanceRequestsResponse struct {
	respBase
	Requests  []xmlSpotRequest `xml:"spotInstanceRequestSet>item"`
	NextToken string           `xml:"nextToken,omitempty"`
}

func (s *Server) describeSpotInstanceRequests(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("SpotInstanceRequestId")
	fs, e := c.filters("instance-id", "state", "type", "spot-instance-request-id", "launched-availability-zone")
	if e != nil {
		return nil, e
	}
	var reqs []*SpotRequest
	if len(ids) > 0 {
		for _, id := range ids {
			r, ok := w.SpotRequests[id]
			if !ok {
				return nil, errf("InvalidSpotInstanceRequestID.NotFound", "The spot instance request ID '%s' does not exist", id)
			}
			reqs = append(reqs, r)
		}
	} else {
		for _, id := range slices.Sorted(maps.Keys(w.SpotRequests)) {
			reqs = append(reqs, w.SpotRequests[id])
		}
	}
	var matched []*SpotRequest
	for _, r := range reqs {
		field := func(name string) []string {
			switch name {
			case "instance-id":
				return []string{r.InstanceID}
			case "state":
				return []string{r.State}
			case "type":
				return []string{r.Type}
			case "spot-instance-request-id":
				return []string{r.ID}
			case "launched-availability-zone":
				return []string{r.AZ}
			}
			return nil
		}
		if matchAll(fs, r.Tags, field) {
			matched = append(matched, r)
		}
	}
	start, end, next, e := c.page(len(matched), 5, 1000)
	if e != nil {
		return nil, e
	}
	resp := &describeSpotInstanceRequestsResponse{NextToken: next}
	for _, r := range matched[start:end] {
		resp.Requests = append(resp.Requests, s.toXMLSpotRequestLocked(r))
	}
	return resp, nil
}

// --- CreateLaunchTemplate

type xmlLaunchTemplate struct {
	LaunchTemplateID     string   `xml:"launchTemplateId"`
	LaunchTemplateName   string   `xml:"launchTemplateName"`
	CreateTime           string   `xml:"createTime"`
	CreatedBy            string   `xml:"createdBy"`
	DefaultVersionNumber int      `xml:"defaultVersionNumber"`
	LatestVersionNumber  int      `xml:"latestVersionNumber"`
	Tags                 []xmlTag `xml:"tagSet>item"`
}

type createLaunchTemplateResponse struct {
	respBase
	LaunchTemplate xmlLaunchTemplate `xml:"launchTemplate"`
}

var launchTemplateName = regexp.MustCompile(`^[a-zA-Z0-9().\-/_]{3,128}$`)

func (s *Server) createLaunchTemplate(c *call) (response, *APIError) {
	w := s.World
	name := c.str("LaunchTemplateName")
	switch {
	case name == "":
		return nil, errMissing("LaunchTemplateName")
	case !launchTemplateName.MatchString(name):
		return nil, errInvalidParam("Launch template name must be between 3 and 128 characters, and may contain only letters, numbers, and the following characters: - ( ) . / _.")
	}
	for _, lt := range w.LaunchTemplates {
		if lt.Name == name {
			return nil, errf("InvalidLaunchTemplateName.AlreadyExistsException", "Launch template name already in use.")
		}
	}
	data := map[string]string{}
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
	if img, ok := data["ImageId"]; ok && !validID(img, "ami") {
		return nil, errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", img)
	}
	if mt, ok := data["InstanceMarketOptions.MarketType"]; ok && mt != "spot" && mt != "capacity-block" {
		return nil, errInvalidParam("Value (%s) for parameter MarketType is invalid.", mt)
	}
	tags, e := c.tagSpecs("launch-template")
	if e != nil {
		return nil, e
	}
	lt := &LaunchTemplate{ID: "lt-" + randHex(17), Name: name, CreateTime: time.Now().UTC(), Data: data, Tags: tags}
	w.LaunchTemplates[lt.ID] = lt
	return &createLaunchTemplateResponse{LaunchTemplate: xmlLaunchTemplate{
		LaunchTemplateID: lt.ID, LaunchTemplateName: name, CreateTime: s.World.apiTime(lt.CreateTime),
		CreatedBy: "arn:aws:iam::" + w.AccountID + ":user/operator", DefaultVersionNumber: 1, LatestVersionNumber: 1,
		Tags: xmlTags(tags),
	}}, nil
}
