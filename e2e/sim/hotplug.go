package sim

import (
	"context"
	"fmt"
	"time"
)

// Hotplugger plugs volumes into a running VM. The QEMU harness implements
// it over QMP; calls for different volumes may run concurrently.
type Hotplugger interface {
	// Attach adds imagePath as an NVMe disk with serial "vol<hex>"
	// (volumeID without the dash), as EBS on Nitro does.
	Attach(ctx context.Context, volumeID, imagePath, device string) error
	// Detach unplugs the volume and returns once the device is gone.
	Detach(ctx context.Context, volumeID string) error
}

// hotplugTimeout bounds one hot-plug call so a wedged VM cannot leave an
// attachment in a transitional state forever.
const hotplugTimeout = 60 * time.Second

// startAttachLocked schedules the second half of AttachVolume: after the
// latency, plug the volume into the bound VM and mark it attached, or drop
// the attachment when that fails. Called with World.mu held.
func (s *Server) startAttachLocked(volID, instID, device string) {
	w := s.World
	delay := w.AttachLatency
	f, faulted := w.takeFaultLocked(FaultHotplugAttach)
	delay += f.Delay
	s.async(delay, func(ctx context.Context) {
		w.mu.Lock()
		v, ok := w.Volumes[volID]
		if !ok || !attachmentIn(v, instID, AttachAttaching) {
			w.mu.Unlock()
			return // detached, deleted or terminated meanwhile
		}
		imagePath := v.ImagePath
		w.mu.Unlock()

		var err error
		hp := s.hotplugger(instID)
		switch {
		case faulted && f.Code != "":
			err = f.apiError()
		case hp != nil:
			hctx, cancel := context.WithTimeout(ctx, hotplugTimeout)
			err = hp.Attach(hctx, volID, imagePath, device)
			cancel()
		}

		w.mu.Lock()
		defer w.mu.Unlock()
		v, ok = w.Volumes[volID]
		if !ok || !attachmentIn(v, instID, AttachAttaching) {
			s.log().Warn("attachment vanished during hot-plug", "volume", volID, "instance", instID, "err", err)
			return
		}
		if err != nil {
			s.log().Error("attach volume failed, dropping attachment", "volume", volID,
				"instance", instID, "device", device, "err", fmt.Errorf("hot-plug %s into %s: %w", volID, instID, err))
			w.dropAttachmentLocked(v, instID)
		} else {
			v.Attachments[v.attachment(instID)].State = AttachAttached
			s.log().Info("volume attached", "volume", volID, "instance", instID, "device", device, "hotplug", hp != nil)
		}
		s.saveLocked()
	})
}

// startDetachLocked schedules the second half of DetachVolume: unplug from
// the bound VM, then remove the attachment; on failure the attachment goes
// back to attached. Called with World.mu held.
func (s *Server) startDetachLocked(volID, instID string) {
	w := s.World
	delay := w.DetachLatency
	f, faulted := w.takeFaultLocked(FaultHotplugDetach)
	delay += f.Delay
	s.async(delay, func(ctx context.Context) {
		w.mu.Lock()
		v, ok := w.Volumes[volID]
		if !ok || !attachmentIn(v, instID, AttachDetaching) {
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()

		var err error
		hp := s.hotplugger(instID)
		switch {
		case faulted && f.Code != "":
			err = f.apiError()
		case hp != nil:
			hctx, cancel := context.WithTimeout(ctx, hotplugTimeout)
			err = hp.Detach(hctx, volID)
			cancel()
		}

		w.mu.Lock()
		defer w.mu.Unlock()
		v, ok = w.Volumes[volID]
		if !ok || !attachmentIn(v, instID, AttachDetaching) {
			return
		}
		if err != nil {
			s.log().Error("detach volume failed, still attached", "volume", volID, "instance", instID,
				"err", fmt.Errorf("hot-unplug %s from %s: %w", volID, instID, err))
			v.Attachments[v.attachment(instID)].State = AttachAttached
		} else {
			w.dropAttachmentLocked(v, instID)
			s.log().Info("volume detached", "volume", volID, "instance", instID, "hotplug", hp != nil)
		}
		s.saveLocked()
	})
}

func attachmentIn(v *Volume, instID, state string) bool {
	k := v.attachment(instID)
	return k >= 0 && v.Attachments[k].State == state
}

// dropAttachmentLocked removes the attachment and the instance's block
// device entry for it.
func (w *World) dropAttachmentLocked(v *Volume, instID string) {
	if k := v.attachment(instID); k >= 0 {
		dev := v.Attachments[k].Device
		w.holdDeviceLocked(instID, dev)
		if i, ok := w.Instances[instID]; ok && i.BlockDevices[dev] == v.ID {
			delete(i.BlockDevices, dev)
		}
	}
	v.removeAttachment(instID)
}
