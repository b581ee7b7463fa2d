package sim

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type xmlSnapshot struct {
	SnapshotID  string   `xml:"snapshotId"`
	VolumeID    string   `xml:"volumeId"`
	Status      string   `xml:"status"`
	StartTime   string   `xml:"startTime"`
	Progress    string   `xml:"progress"`
	OwnerID     string   `xml:"ownerId"`
	VolumeSize  int      `xml:"volumeSize"`
	Description string   `xml:"description"`
	Encrypted   bool     `xml:"encrypted"`
	StorageTier string   `xml:"storageTier"`
	Tags        []xmlTag `xml:"tagSet>item"`
}

func (s *Server) toXMLSnapshotLocked(sn *Snapshot) xmlSnapshot {
	return xmlSnapshot{
		SnapshotID:  sn.ID,
		VolumeID:    sn.VolumeID,
		Status:      sn.State,
		StartTime:   s.World.apiTime(sn.StartTime),
		Progress:    s.snapshotProgressLocked(sn),
		OwnerID:     s.World.AccountID,
		VolumeSize:  sn.VolumeSize,
		Description: sn.Description,
		StorageTier: "standard",
		Tags:        xmlTags(sn.Tags),
	}
}

type createSnapshotResponse struct {
	respBase
	xmlSnapshot
}

func (s *Server) createSnapshot(c *call) (response, *APIError) {
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
	if v.State != VolumeAvailable && v.State != VolumeInUse {
		return nil, errf("IncorrectState", "The volume '%s' is not 'available' or 'in-use'.", volID)
	}
	tags, e := c.tagSpecs("snapshot")
	if e != nil {
		return nil, e
	}
	sn := &Snapshot{ID: NewSnapshotID(), VolumeID: volID, VolumeSize: v.SizeGiB, State: "pending",
		Progress: "0%", Description: c.str("Description"), StartTime: time.Now().UTC(), Tags: tags}
	if w.DataDir != "" && v.ImagePath != "" {
		sn.ImagePath = filepath.Join(w.DataDir, sn.ID+".img")
	}
	w.Snapshots[sn.ID] = sn
	// Like EBS the snapshot is point-in-time but completes later; here the
	// copy happens after CreateLatency, crash-consistent like EBS.
	src, dst, id := v.ImagePath, sn.ImagePath, sn.ID
	s.async(w.CreateLatency, func(ctx context.Context) {
		var err error
		if dst != "" {
			err = makeImage(src, dst, 0)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		sn, ok := w.Snapshots[id]
		if !ok {
			return
		}
		if err != nil {
			s.log().Error("create snapshot failed", "snapshot", id, "volume", volID, "err", err)
			sn.State = "error"
		} else {
			sn.State, sn.Progress = "completed", "100%"
		}
		s.saveLocked()
	})
	return &createSnapshotResponse{xmlSnapshot: s.toXMLSnapshotLocked(sn)}, nil
}

type describeSnapshotsResponse struct {
	respBase
	Snapshots []xmlSnapshot `xml:"snapshotSet>item"`
	NextToken string        `xml:"nextToken,omitempty"`
}

func (s *Server) describeSnapshots(c *call) (response, *APIError) {
	w := s.World
	ids := c.list("SnapshotId")
	fs, e := c.filters("description", "owner-id", "progress", "snapshot-id", "start-time", "status",
		"volume-id", "volume-size")
	if e != nil {
		return nil, e
	}
	snaps, e := byIDs(w.viewLocked().Snapshots, ids, "snap", errSnapshotMalformed, errSnapshotNotFound)
	if e != nil {
		return nil, e
	}
	// Every snapshot belongs to the world's account, so Owner/RestorableBy
	// only ever narrow to the same set (or nothing for other accounts).
	for _, o := range c.list("Owner") {
		if o != "self" && o != w.AccountID {
			snaps = nil
		}
	}
	var matched []*Snapshot
	for _, sn := range snaps {
		field := func(name string) []string {
			switch name {
			case "description":
				return []string{sn.Description}
			case "owner-id":
				return []string{w.AccountID}
			case "progress":
				return []string{sn.Progress}
			case "snapshot-id":
				return []string{sn.ID}
			case "start-time":
				return []string{s.World.apiTime(sn.StartTime)}
			case "status":
				return []string{sn.State}
			case "volume-id":
				return []string{sn.VolumeID}
			case "volume-size":
				return []string{strconv.Itoa(sn.VolumeSize)}
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
	resp := &describeSnapshotsResponse{NextToken: next}
	for _, sn := range matched[start:end] {
		resp.Snapshots = append(resp.Snapshots, s.toXMLSnapshotLocked(sn))
	}
	return resp, nil
}

// deleteSnapshot removes a snapshot (and its image, if the simulator made
// it). A snapshot an AMI still uses cannot be deleted, as on EC2.
func (s *Server) deleteSnapshot(c *call) (response, *APIError) {
	w := s.World
	id := c.str("SnapshotId")
	switch {
	case id == "":
		return nil, errMissing("snapshotId")
	case !validID(id, "snap"):
		return nil, errSnapshotMalformed(id)
	}
	sn, ok := w.Snapshots[id]
	if !ok {
		return nil, errSnapshotNotFound(id)
	}
	for _, img := range w.Images {
		if img.RootSnapshotID == id {
			return nil, errf("InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s", id, img.ID)
		}
	}
	delete(w.Snapshots, id)
	if path := sn.ImagePath; path != "" && w.DataDir != "" && strings.HasPrefix(path, filepath.Clean(w.DataDir)+string(filepath.Separator)) {
		if err := removeImage(path); err != nil {
			s.log().Warn("delete snapshot image", "snapshot", id, "err", err)
		}
	}
	return &returnResponse{Return: true}, nil
}

// snapshotProgressLocked is what DescribeSnapshots reports while a snapshot
// is pending: EBS reports a percentage that grows as the blocks are copied
// ("progress: The progress of the snapshot, as a percentage",
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Snapshot.html)
// and sits below 100% until the state is completed. Here it grows with the
// time spent of CreateLatency.
func (s *Server) snapshotProgressLocked(sn *Snapshot) string {
	lat := s.World.CreateLatency
	if sn.State != "pending" || lat <= 0 || sn.StartTime.IsZero() {
		return sn.Progress
	}
	pct := int(time.Since(sn.StartTime) * 100 / lat)
	if pct > 99 {
		pct = 99
	}
	if pct < 0 {
		pct = 0
	}
	return fmt.Sprintf("%d%%", pct)
}
