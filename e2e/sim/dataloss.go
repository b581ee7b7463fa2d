package sim

import "time"

// DataLossEvent records an operation that, on real EBS, would lose or
// corrupt data: a forced detach from an instance that may still have the
// disk mounted. AWS: a forced detach "can lead to data loss or a corrupted
// file system ... The instance won't have an opportunity to flush file
// system caches or file system metadata"
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DetachVolume.html).
// Tests assert there are none.
type DataLossEvent struct {
	Time          time.Time
	VolumeID      string
	InstanceID    string
	InstanceState string
	Reason        string
}

// mayBeMounted reports whether an instance in this state may still have an
// attached disk mounted and dirty: its OS runs (or is shutting down).
func mayBeMounted(state string) bool {
	switch state {
	case InstancePending, InstanceRunning, InstanceStopping, InstanceShuttingDown:
		return true
	}
	return false
}

// recordForcedDetachLocked notes a forced detach of a's volume from an
// instance that may still write to it.
func (w *World) recordForcedDetachLocked(volID string, a Attachment) {
	i, ok := w.Instances[a.InstanceID]
	if !ok || !mayBeMounted(i.State) || (a.State != AttachAttached && a.State != AttachDetaching) {
		return
	}
	w.DataLoss = append(w.DataLoss, DataLossEvent{Time: time.Now().UTC(), VolumeID: volID,
		InstanceID: a.InstanceID, InstanceState: i.State,
		Reason: "forced detach while the instance is " + i.State + " with the disk attached (mounted)"})
}

// DataLossEvents returns the data-loss events recorded so far.
func (w *World) DataLossEvents() []DataLossEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]DataLossEvent(nil), w.DataLoss...)
}
