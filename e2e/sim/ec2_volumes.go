package sim

import (
	"context"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

type xmlAttachment struct {
	VolumeID            string `xml:"volumeId"`
	InstanceID          string `xml:"instanceId"`
	Device              string `xml:"device"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type xmlVolume struct {
	VolumeID           string          `xml:"volumeId"`
	Size               int             `xml:"size"`
	SnapshotID         string          `xml:"snapshotId"`
	AvailabilityZone   string          `xml:"availabilityZone"`
	Status             string          `xml:"status"`
	CreateTime         string          `xml:"createTime"`
	Attachments        []xmlAttachment `xml:"attachmentSet>item"`
	Tags               []xmlTag        `xml:"tagSet>item"`
	VolumeType         string          `xml:"volumeType"`
	Iops               int             `xml:"iops,omitempty"`
	Throughput         int             `xml:"throughput,omitempty"`
	Encrypted          bool            `xml:"encrypted"`
	MultiAttachEnabled bool            `xml:"multiAttachEnabled"`
}

func (w *World) toXMLVolume(v *Volume) xmlVolume {
	x := xmlVolume{
		VolumeID:           v.ID,
		Size:               v.SizeGiB,
		SnapshotID:         v.SnapshotID,
		AvailabilityZone:   v.AZ,
		Status:             v.State,
		CreateTime:         w.apiTime(v.CreateTime),
		Tags:               xmlTags(v.Tags),
		VolumeType:         v.Type,
		Iops:               v.Iops,
		Throughput:         v.Throughput,
		Encrypted:          v.Encrypted,
		MultiAttachEnabled: v.MultiAttach,
	}
	// EC2 reports the provisioned defaults when none were asked for.
	switch {
	case x.Iops != 0:
	case v.Type == "gp3":
		x.Iops = 3000
	case v.Type == "gp2":
		x.Iops = max(100, 3*v.SizeGiB)
	}
	if x.Throughput == 0 && v.Type == "gp3" {
		x.Throughput = 125
	}
	for _, a := range v.Attachments {
		x.Attachments = append(x.Attachments, w.toXMLAttachment(v.ID, a))
	}
	return x
}

func (w *World) toXMLAttachment(volID string, a Attachment) xmlAttachment {
	return xmlAttachment{VolumeID: volID, InstanceID: a.InstanceID, Device: a.Device,
		Status: a.State, AttachTime: w.apiTime(a.AttachTime), DeleteOnTermination: a.DeleteOnTermination}
}

type describeVolumesResponse struct {
	respBase
	Volumes   []xmlVolume `xml:"volumeSet>item"`
	NextToken string      `xml:"nextToken,omitempty"`
}

func (s *Server) describeVolumes(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("VolumeId")
	fs, e := c.filters("attachment.attach-time", "attachment.delete-on-termination", "attachment.device",
		"attachment.instance-id", "attachment.status", "availability-zone", "create-time", "encrypted",
		"multi-attach-enabled", "size", "snapshot-id", "status", "volume-id", "volume-type")
	if e != nil {
		return nil, e
	}
	if len(ids) > 0 && c.str("MaxResults") != "" {
		return nil, errf("InvalidParameterCombination", "The parameter volumesSet cannot be used with the parameter maxResults")
	}
	vols, e := byIDs(w.viewLocked().Volumes, ids, "vol", errVolumeMalformed, errVolumeNotFound)
	if e != nil {
		return nil, e
	}
	var matched []*Volume
	for _, v := range vols {
		if matchAll(fs, v.Tags, func(name string) []string { return s.World.volumeField(v, name) }) {
			matched = append(matched, v)
		}
	}
	start, end, next, e := c.page(len(matched), 5, 500)
	if e != nil {
		return nil, e
	}
	resp := &describeVolumesResponse{NextToken: next}
	for _, v := range matched[start:end] {
		resp.Volumes = append(resp.Volumes, s.World.toXMLVolume(v))
	}
	return resp, nil
}

// volumeField gives a volume's values for a DescribeVolumes filter.
func (w *World) volumeField(v *Volume, name string) []string {
	per := func(f func(a Attachment) string) []string {
		var out []string
		for _, a := range v.Attachments {
			out = append(out, f(a))
		}
		return out
	}
	switch name {
	case "attachment.attach-time":
		return per(func(a Attachment) string { return w.apiTime(a.AttachTime) })
	case "attachment.delete-on-termination":
		return per(func(a Attachment) string { return strconv.FormatBool(a.DeleteOnTermination) })
	case "attachment.device":
		return per(func(a Attachment) string { return a.Device })
	case "attachment.instance-id":
		return per(func(a Attachment) string { return a.InstanceID })
	case "attachment.status":
		return per(func(a Attachment) string { return a.State })
	case "availability-zone":
		return []string{v.AZ}
	case "create-time":
		return []string{w.apiTime(v.CreateTime)}
	case "encrypted":
		return []string{strconv.FormatBool(v.Encrypted)}
	case "multi-attach-enabled":
		return []string{strconv.FormatBool(v.MultiAttach)}
	case "size":
		return []string{strconv.Itoa(v.SizeGiB)}
	case "snapshot-id":
		return []string{v.SnapshotID}
	case "status":
		return []string{v.State}
	case "volume-id":
		return []string{v.ID}
	case "volume-type":
		return []string{v.Type}
	}
	return nil
}

// attachResponse is the body of AttachVolume and DetachVolume.
type attachResponse struct {
	respBase
	xmlAttachment
}

// ebsDevice matches the device names EC2 accepts for EBS on Linux
// (recommended /dev/sd[f-p]; /dev/xvda and /dev/sda1 are roots).
var ebsDevice = regexp.MustCompile(`^/dev/(sd[b-z][1-6]?|xvd[b-z]|xvd[b-c][a-z])$`)

func (s *Server) attachVolume(c *call) (response, *APIError) {
	w := s.World
	volID, instID, dev := c.str("VolumeId"), c.str("InstanceId"), c.str("Device")
	switch {
	case volID == "":
		return nil, errMissing("volumeId")
	case !validID(volID, "vol"):
		return nil, errVolumeMalformed(volID)
	case instID == "":
		return nil, errMissing("instanceId")
	case !validID(instID, "i"):
		return nil, errInstanceMalformed(instID)
	case dev == "":
		return nil, errMissing("device")
	}
	v, ok := w.Volumes[volID]
	if !ok {
		return nil, errVolumeNotFound(volID)
	}
	i, ok := w.Instances[instID]
	if !ok {
		return nil, errInstanceNotFound(instID)
	}
	switch i.State {
	case InstanceRunning, InstanceStopped:
	case InstancePending:
		w.stats.Pending++
		return nil, errf("IncorrectState", "Instance '%s' is not 'running'.", instID)
	default:
		return nil, errf("IncorrectInstanceState", "The instance '%s' is not in a valid state for this operation.", instID)
	}
	if !ebsDevice.MatchString(dev) {
		return nil, errInvalidParam("Value (%s) for parameter device is invalid. %s is not a valid EBS device name.", dev, dev)
	}
	if v.AZ != i.AZ {
		return nil, errf("InvalidVolume.ZoneMismatch", "The volume '%s' is not in the same availability zone as instance '%s'", volID, instID)
	}
	if v.attachment(instID) >= 0 || (v.State == VolumeInUse && !v.MultiAttach) {
		return nil, errf("VolumeInUse", "%s is already attached to an instance", volID)
	}
	if v.State != VolumeAvailable && v.State != VolumeInUse {
		return nil, errf("IncorrectState", "The volume '%s' is not 'available'.", volID)
	}
	if _, used := i.BlockDevices[dev]; used || w.deviceTakenLocked(i, dev, time.Now()) {
		w.stats.DeviceInUse++
		return nil, errInvalidParam("Invalid value '%s' for unixDevice. Attachment point %s is already in use", dev, dev)
	}
	limit := i.MaxAttachments
	if limit <= 0 {
		limit = defaultMaxAttachments
	}
	if len(i.BlockDevices) >= limit {
		return nil, errf("AttachmentLimitExceeded", "Instance '%s' has reached the limit of %d attached volumes.", instID, limit)
	}

	a := Attachment{InstanceID: instID, Device: dev, State: AttachAttaching, AttachTime: time.Now().UTC()}
	v.Attachments = append(v.Attachments, a)
	v.State = VolumeInUse
	if i.BlockDevices == nil {
		i.BlockDevices = map[string]string{}
	}
	i.BlockDevices[dev] = volID
	s.startAttachLocked(volID, instID, dev)
	return &attachResponse{xmlAttachment: s.World.toXMLAttachment(volID, a)}, nil
}

func (s *Server) detachVolume(c *call) (response, *APIError) {
	w := s.World
	volID, instID, dev := c.str("VolumeId"), c.str("InstanceId"), c.str("Device")
	force, e := c.boolean("Force")
	if e != nil {
		return nil, e
	}
	switch {
	case volID == "":
		return nil, errMissing("volumeId")
	case !validID(volID, "vol"):
		return nil, errVolumeMalformed(volID)
	case instID != "" && !validID(instID, "i"):
		return nil, errInstanceMalformed(instID)
	}
	v, ok := w.Volumes[volID]
	if !ok {
		return nil, errVolumeNotFound(volID)
	}
	if instID != "" {
		if _, ok := w.Instances[instID]; !ok {
			return nil, errInstanceNotFound(instID)
		}
	}
	if len(v.Attachments) == 0 {
		return nil, errf("IncorrectState", "Volume '%s' is in the '%s' state.", volID, v.State)
	}
	k := -1
	switch {
	case instID != "":
		k = v.attachment(instID)
	case len(v.Attachments) == 1:
		k = 0
	default:
		return nil, errMissing("instanceId")
	}
	if k < 0 || (dev != "" && v.Attachments[k].Device != dev) {
		return nil, errf("InvalidAttachment.NotFound", "The volume '%s' is not attached to instance '%s'.", volID, instID)
	}
	a := &v.Attachments[k]
	switch a.State {
	case AttachDetaching:
		if !force {
			return nil, errf("IncorrectState", "Volume '%s' is in the 'detaching' state.", volID)
		}
		// A forced retry of a stuck detach: the unplug is already under way.
		w.recordForcedDetachLocked(volID, *a)
		return &attachResponse{xmlAttachment: s.World.toXMLAttachment(volID, *a)}, nil
	case AttachAttaching:
		return nil, errf("IncorrectState", "Volume '%s' is in the 'attaching' state.", volID)
	}
	if i := w.Instances[a.InstanceID]; i != nil && a.Device == "/dev/xvda" && i.State == InstanceRunning {
		return nil, errf("OperationNotPermitted", "Unable to detach root volume '%s' from instance '%s'", volID, a.InstanceID)
	}
	if force {
		w.recordForcedDetachLocked(volID, *a)
	}
	a.State = AttachDetaching
	s.startDetachLocked(volID, a.InstanceID)
	return &attachResponse{xmlAttachment: s.World.toXMLAttachment(volID, *a)}, nil
}

type createVolumeResponse struct {
	respBase
	xmlVolume
}

var volumeTypes = []string{"standard", "gp2", "gp3", "io1", "io2", "st1", "sc1"}

func (s *Server) createVolume(c *call) (response, *APIError) {
	w := s.World
	if id, e := w.clientTokenLocked(c); e != nil || id != "" {
		if e != nil {
			return nil, e
		}
		if v, ok := w.Volumes[id]; ok {
			return &createVolumeResponse{xmlVolume: s.World.toXMLVolume(v)}, nil
		}
		return nil, errVolumeNotFound(id)
	}
	az := c.str("AvailabilityZone")
	if az == "" {
		return nil, errMissing("AvailabilityZone")
	}
	if !validZone(az, w.Region) {
		return nil, errInvalidParam("Invalid availability zone: [%s]", az)
	}
	size, hasSize, e := c.integer("Size")
	if e != nil {
		return nil, e
	}
	iops, _, e := c.integer("Iops")
	if e != nil {
		return nil, e
	}
	throughput, _, e := c.integer("Throughput")
	if e != nil {
		return nil, e
	}
	multi, e := c.boolean("MultiAttachEnabled")
	if e != nil {
		return nil, e
	}
	encrypted, e := c.boolean("Encrypted")
	if e != nil {
		return nil, e
	}
	typ := c.str("VolumeType")
	if typ == "" {
		typ = "gp2"
	}
	if !slices.Contains(volumeTypes, typ) {
		return nil, errInvalidParam("Value (%s) for parameter volumeType is invalid.", typ)
	}
	if multi && typ != "io1" && typ != "io2" {
		return nil, errf("InvalidParameterCombination", "The parameter multiAttachEnabled is only supported for volume types io1 and io2.")
	}
	tags, e := c.tagSpecs("volume")
	if e != nil {
		return nil, e
	}

	var snap *Snapshot
	if id := c.str("SnapshotId"); id != "" {
		if !validID(id, "snap") {
			return nil, errSnapshotMalformed(id)
		}
		var ok bool
		if snap, ok = w.Snapshots[id]; !ok {
			return nil, errSnapshotNotFound(id)
		}
		if snap.State != "completed" {
			return nil, errf("IncorrectState", "Snapshot is in invalid state - %s", snap.State)
		}
		if !hasSize {
			size, hasSize = snap.VolumeSize, true
		}
		if size < snap.VolumeSize {
			return nil, errInvalidParam("Volume of %dGiB is too small; minimum is %dGiB.", size, snap.VolumeSize)
		}
	}
	if !hasSize {
		return nil, errMissing("size")
	}
	if size < 1 || size > 65536 {
		return nil, errInvalidParam("Volume of %dGiB is invalid; it must be between 1 and 65536 GiB.", size)
	}

	// (ClientToken: see clientTokenLocked at the top; the SDK fills one
	// in, and a lost answer makes the SDK retry.)
	v := &Volume{ID: NewVolumeID(), AZ: az, Type: typ, SizeGiB: size, Iops: iops, Throughput: throughput,
		Encrypted: encrypted, Tags: tags, State: VolumeCreating, MultiAttach: multi,
		CreateTime: time.Now().UTC()}
	var src string
	if snap != nil {
		v.SnapshotID, src = snap.ID, snap.ImagePath
	}
	if w.DataDir != "" {
		v.ImagePath = filepath.Join(w.DataDir, v.ID+".img")
	}
	w.Volumes[v.ID] = v
	w.rememberClientTokenLocked(c, v.ID)
	s.startCreateVolumeLocked(v.ID, src, v.ImagePath, int64(size)<<30)
	return &createVolumeResponse{xmlVolume: s.World.toXMLVolume(v)}, nil
}

// startCreateVolumeLocked makes the backing file (a copy of the snapshot's,
// or sparse) and then flips the volume to available, or error.
func (s *Server) startCreateVolumeLocked(volID, src, dst string, size int64) {
	s.async(s.World.CreateLatency, func(ctx context.Context) {
		var err error
		if dst != "" {
			err = makeImage(src, dst, size)
		}
		w := s.World
		w.mu.Lock()
		defer w.mu.Unlock()
		v, ok := w.Volumes[volID]
		if !ok || v.State != VolumeCreating {
			return
		}
		if err != nil {
			s.log().Error("create volume failed", "volume", volID, "err", err)
			v.State = "error"
		} else {
			v.State = VolumeAvailable
		}
		s.saveLocked()
	})
}

func (s *Server) deleteVolume(c *call) (response, *APIError) {
	w := s.World
	volID := c.str("VolumeId")
	switch {
	case volID == "":
		return nil, errMissing("volumeId")
	case !validID(volID, "vol"):
		return nil, errVolumeMalformed(volID)
	}
	v, ok := w.Volumes[volID]
	if !ok {
		return nil, errVolumeNotFound(volID)
	}
	if len(v.Attachments) > 0 {
		return nil, errf("VolumeInUse", "Volume %s is currently attached to %s", volID, v.Attachments[0].InstanceID)
	}
	if v.State == VolumeDeleting {
		return &returnResponse{Return: true}, nil
	}
	v.State = VolumeDeleting
	path := v.ImagePath
	// Only files the simulator made are ours to remove.
	owned := w.DataDir != "" && path != "" && strings.HasPrefix(path, filepath.Clean(w.DataDir)+string(filepath.Separator))
	s.async(w.CreateLatency, func(ctx context.Context) {
		if owned {
			if err := removeImage(path); err != nil {
				s.log().Warn("delete volume image", "volume", volID, "err", err)
			}
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if v, ok := w.Volumes[volID]; ok && v.State == VolumeDeleting {
			delete(w.Volumes, volID)
			s.saveLocked()
		}
	})
	return &returnResponse{Return: true}, nil
}

// validZone reports whether az is region plus one zone letter.
func validZone(az, region string) bool {
	l, ok := strings.CutPrefix(az, region)
	return ok && len(l) == 1 && l[0] >= 'a' && l[0] <= 'z'
}
