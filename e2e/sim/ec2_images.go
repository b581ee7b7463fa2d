package sim

type xmlEbsBlockDevice struct {
	SnapshotID          string `xml:"snapshotId,omitempty"`
	VolumeSize          int    `xml:"volumeSize,omitempty"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	VolumeType          string `xml:"volumeType"`
	Encrypted           bool   `xml:"encrypted"`
}

type xmlBlockDevice struct {
	DeviceName string            `xml:"deviceName"`
	Ebs        xmlEbsBlockDevice `xml:"ebs"`
}

type xmlImage struct {
	ImageID            string           `xml:"imageId"`
	ImageLocation      string           `xml:"imageLocation"`
	ImageState         string           `xml:"imageState"`
	ImageOwnerID       string           `xml:"imageOwnerId"`
	CreationDate       string           `xml:"creationDate"`
	IsPublic           bool             `xml:"isPublic"`
	Architecture       string           `xml:"architecture"`
	ImageType          string           `xml:"imageType"`
	Name               string           `xml:"name"`
	Description        string           `xml:"description,omitempty"`
	RootDeviceType     string           `xml:"rootDeviceType"`
	RootDeviceName     string           `xml:"rootDeviceName"`
	BlockDeviceMapping []xmlBlockDevice `xml:"blockDeviceMapping>item"`
	VirtualizationType string           `xml:"virtualizationType"`
	Tags               []xmlTag         `xml:"tagSet>item"`
	Hypervisor         string           `xml:"hypervisor"`
	EnaSupport         bool             `xml:"enaSupport"`
	BootMode           string           `xml:"bootMode"`
}

type describeImagesResponse struct {
	respBase
	Images    []xmlImage `xml:"imagesSet>item"`
	NextToken string     `xml:"nextToken,omitempty"`
}

func (s *Server) describeImages(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("ImageId")
	fs, e := c.filters("architecture", "block-device-mapping.snapshot-id", "description", "image-id",
		"name", "owner-id", "root-device-name", "state")
	if e != nil {
		return nil, e
	}
	imgs, e := byIDs(w.Images, ids, "ami", errImageMalformed, errImageNotFound)
	if e != nil {
		return nil, e
	}
	for _, o := range c.list("Owner") {
		if o != "self" && o != w.AccountID {
			imgs = nil
		}
	}
	var matched []*Image
	for _, m := range imgs {
		field := func(name string) []string {
			switch name {
			case "architecture":
				return []string{m.Architecture}
			case "block-device-mapping.snapshot-id":
				return []string{m.RootSnapshotID}
			case "description":
				return []string{m.Description}
			case "image-id":
				return []string{m.ID}
			case "name":
				return []string{m.Name}
			case "owner-id":
				return []string{w.AccountID}
			case "root-device-name":
				return []string{m.RootDeviceName}
			case "state":
				return []string{m.State}
			}
			return nil
		}
		if matchAll(fs, m.Tags, field) {
			matched = append(matched, m)
		}
	}
	start, end, next, e := c.page(len(matched), 5, 1000)
	if e != nil {
		return nil, e
	}
	resp := &describeImagesResponse{NextToken: next}
	for _, m := range matched[start:end] {
		x := xmlImage{
			ImageID:            m.ID,
			ImageLocation:      w.AccountID + "/" + m.Name,
			ImageState:         m.State,
			ImageOwnerID:       w.AccountID,
			CreationDate:       s.World.apiTime(m.CreationDate),
			Architecture:       m.Architecture,
			ImageType:          "machine",
			Name:               m.Name,
			Description:        m.Description,
			RootDeviceType:     "ebs",
			RootDeviceName:     m.RootDeviceName,
			VirtualizationType: "hvm",
			Tags:               xmlTags(m.Tags),
			Hypervisor:         "xen",
			EnaSupport:         true,
			BootMode:           "uefi-preferred",
		}
		root := xmlBlockDevice{DeviceName: m.RootDeviceName, Ebs: xmlEbsBlockDevice{
			SnapshotID: m.RootSnapshotID, DeleteOnTermination: true, VolumeType: "gp3"}}
		if sn, ok := w.Snapshots[m.RootSnapshotID]; ok {
			root.Ebs.VolumeSize = sn.VolumeSize
		}
		x.BlockDeviceMapping = []xmlBlockDevice{root}
		resp.Images = append(resp.Images, x)
	}
	return resp, nil
}
