package sim

import (
	"maps"
	"slices"
	"strconv"
)

type xmlInstanceState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xmlPlacement struct {
	AvailabilityZone string `xml:"availabilityZone"`
	GroupName        string `xml:"groupName"`
	Tenancy          string `xml:"tenancy"`
}

type xmlEbsInstanceBlockDevice struct {
	VolumeID            string `xml:"volumeId"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type xmlInstanceBlockDevice struct {
	DeviceName string                    `xml:"deviceName"`
	Ebs        xmlEbsInstanceBlockDevice `xml:"ebs"`
}

type xmlIamProfile struct {
	Arn string `xml:"arn"`
	ID  string `xml:"id"`
}

type xmlInstance struct {
	InstanceID         string                   `xml:"instanceId"`
	ImageID            string                   `xml:"imageId"`
	InstanceState      xmlInstanceState         `xml:"instanceState"`
	PrivateDNSName     string                   `xml:"privateDnsName"`
	DNSName            string                   `xml:"dnsName"`
	Reason             string                   `xml:"reason"`
	AmiLaunchIndex     int                      `xml:"amiLaunchIndex"`
	InstanceType       string                   `xml:"instanceType"`
	LaunchTime         string                   `xml:"launchTime"`
	Placement          xmlPlacement             `xml:"placement"`
	PrivateIPAddress   string                   `xml:"privateIpAddress,omitempty"`
	Architecture       string                   `xml:"architecture"`
	RootDeviceType     string                   `xml:"rootDeviceType"`
	RootDeviceName     string                   `xml:"rootDeviceName"`
	BlockDeviceMapping []xmlInstanceBlockDevice `xml:"blockDeviceMapping>item"`
	InstanceLifecycle  string                   `xml:"instanceLifecycle,omitempty"`
	VirtualizationType string                   `xml:"virtualizationType"`
	IamInstanceProfile *xmlIamProfile           `xml:"iamInstanceProfile,omitempty"`
	Tags               []xmlTag                 `xml:"tagSet>item"`
	Hypervisor         string                   `xml:"hypervisor"`
	EbsOptimized       bool                     `xml:"ebsOptimized"`
	EnaSupport         bool                     `xml:"enaSupport"`
}

type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

type describeInstancesResponse struct {
	respBase
	Reservations []xmlReservation `xml:"reservationSet>item"`
	NextToken    string           `xml:"nextToken,omitempty"`
}

func (s *Server) describeInstances(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("InstanceId")
	fs, e := c.filters("availability-zone", "block-device-mapping.device-name", "block-device-mapping.volume-id",
		"image-id", "instance-id", "instance-lifecycle", "instance-state-code", "instance-state-name",
		"instance-type", "private-ip-address")
	if e != nil {
		return nil, e
	}
	// One view for the instances and the volumes they render their
	// attachments from: a lagging instance next to the live volumes would
	// name a device whose attachment is already gone.
	view := w.viewLocked()
	insts, e := byIDs(view.Instances, ids, "i", errInstanceMalformed, errInstanceNotFound)
	if e != nil {
		return nil, e
	}
	var matched []*Instance
	for _, i := range insts {
		if matchAll(fs, i.Tags, func(name string) []string { return instanceField(i, name) }) {
			matched = append(matched, i)
		}
	}
	start, end, next, e := c.page(len(matched), 5, 1000)
	if e != nil {
		return nil, e
	}
	resp := &describeInstancesResponse{NextToken: next}
	for _, i := range matched[start:end] {
		// One reservation per instance: each VM is its own RunInstances.
		resp.Reservations = append(resp.Reservations, xmlReservation{
			ReservationID: reservationID(i.ID),
			OwnerID:       w.AccountID,
			Instances:     []xmlInstance{s.toXMLInstanceLocked(i, view.Volumes)},
		})
	}
	return resp, nil
}

func (s *Server) toXMLInstanceLocked(i *Instance, volumes map[string]*Volume) xmlInstance {
	w := s.World
	x := xmlInstance{
		InstanceID:         i.ID,
		ImageID:            i.ImageID,
		InstanceState:      xmlInstanceState{Code: instanceStateCodes[i.State], Name: i.State},
		InstanceType:       i.InstanceType,
		LaunchTime:         s.World.apiTime(i.LaunchTime),
		Placement:          xmlPlacement{AvailabilityZone: i.AZ, Tenancy: "default"},
		Architecture:       "x86_64",
		RootDeviceType:     "ebs",
		RootDeviceName:     "/dev/xvda",
		VirtualizationType: "hvm",
		Tags:               xmlTags(i.Tags),
		Hypervisor:         "xen",
		EnaSupport:         true,
	}
	if i.Lifecycle == "spot" {
		x.InstanceLifecycle = "spot"
	}
	if i.State != InstanceTerminated {
		x.PrivateDNSName = hostnameFor(i.PrivateIP, w.Region)
		x.PrivateIPAddress = i.PrivateIP
	}
	if i.Role != "" {
		x.IamInstanceProfile = &xmlIamProfile{
			Arn: "arn:aws:iam::" + w.AccountID + ":instance-profile/" + i.Role,
			ID:  "AIPA" + derivedHex(i.ID, "profile", 17),
		}
	}
	for _, dev := range slices.Sorted(maps.Keys(i.BlockDevices)) {
		vid := i.BlockDevices[dev]
		// EC2 lists a mapping only with its attachment, and always with
		// its attachTime: the SDK fails the whole DescribeInstances on an
		// empty timestamp, so a mapping without one is left out.
		v, ok := volumes[vid]
		if !ok {
			continue
		}
		k := v.attachment(i.ID)
		if k < 0 {
			continue
		}
		a := v.Attachments[k]
		x.BlockDeviceMapping = append(x.BlockDeviceMapping, xmlInstanceBlockDevice{DeviceName: dev,
			Ebs: xmlEbsInstanceBlockDevice{VolumeID: vid, Status: a.State, AttachTime: s.World.apiTime(a.AttachTime), DeleteOnTermination: a.DeleteOnTermination}})
	}
	return x
}

// instanceField gives an instance's values for a DescribeInstances filter.
func instanceField(i *Instance, name string) []string {
	switch name {
	case "availability-zone":
		return []string{i.AZ}
	case "block-device-mapping.device-name":
		return slices.Collect(maps.Keys(i.BlockDevices))
	case "block-device-mapping.volume-id":
		return slices.Collect(maps.Values(i.BlockDevices))
	case "image-id":
		return []string{i.ImageID}
	case "instance-id":
		return []string{i.ID}
	case "instance-lifecycle":
		return []string{i.Lifecycle}
	case "instance-state-code":
		return []string{strconv.Itoa(instanceStateCodes[i.State])}
	case "instance-state-name":
		return []string{i.State}
	case "instance-type":
		return []string{i.InstanceType}
	case "private-ip-address":
		return []string{i.PrivateIP}
	}
	return nil
}
