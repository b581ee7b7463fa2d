package qemu

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// NVMeSerial is the NVMe serial a volume is attached with: its id without
// the dash (vol-0123456789abcdef0 → vol0123456789abcdef0), as on EC2 Nitro.
func NVMeSerial(volumeID string) string { return strings.Replace(volumeID, "-", "", 1) }

func nodeName(volumeID string) string { return "node-" + volumeID }
func deviceID(volumeID string) string { return "dev-" + volumeID }

// Attach hot-plugs imagePath (raw) as an NVMe controller with serial
// NVMeSerial(volumeID) on a free PCIe root port. device (e.g. /dev/sdf, the
// name given to AttachVolume) is only recorded; like on Nitro the guest sees
// an NVMe namespace. Attach returns when QEMU has added the device, not when
// the guest has noticed it.
func (vm *VM) Attach(ctx context.Context, volumeID, imagePath, device string) error {
	abs, err := filepath.Abs(imagePath)
	if err != nil {
		return err
	}
	vm.mu.Lock()
	if _, ok := vm.attached[volumeID]; ok {
		vm.mu.Unlock()
		return fmt.Errorf("attach %s: already attached to this VM", volumeID)
	}
	port := ""
	used := map[string]bool{}
	for _, p := range vm.attached {
		used[p] = true
	}
	for _, p := range vm.ports {
		if !used[p] {
			port = p
			break
		}
	}
	if port == "" {
		vm.mu.Unlock()
		return fmt.Errorf("attach %s: all %d hot-plug slots in use", volumeID, len(vm.ports))
	}
	vm.attached[volumeID] = port // reserve
	vm.mu.Unlock()

	release := func() {
		vm.mu.Lock()
		delete(vm.attached, volumeID)
		vm.mu.Unlock()
	}
	if vm.exitedNow() {
		release()
		return fmt.Errorf("attach %s: VM is not running", volumeID)
	}
	node := nodeName(volumeID)
	if _, err := vm.qmp.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "raw", "node-name": node,
		"file": map[string]any{"driver": "file", "filename": abs},
	}); err != nil {
		release()
		return fmt.Errorf("attach %s (%s): %w", volumeID, abs, err)
	}
	if _, err := vm.qmp.Execute(ctx, "device_add", map[string]any{
		"driver": "nvme", "id": deviceID(volumeID), "bus": port, "drive": node,
		"serial": NVMeSerial(volumeID),
	}); err != nil {
		_, _ = vm.qmp.Execute(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": node})
		release()
		return fmt.Errorf("attach %s: %w", volumeID, err)
	}
	return nil
}

// Detach unplugs a volume: device_del, wait for the guest to release it
// (DEVICE_DELETED), blockdev-del. If QEMU has exited the volume is free
// already and Detach returns nil.
func (vm *VM) Detach(ctx context.Context, volumeID string) error {
	vm.mu.Lock()
	_, ok := vm.attached[volumeID]
	vm.mu.Unlock()
	if !ok {
		return fmt.Errorf("detach %s: not attached to this VM", volumeID)
	}
	done := func() {
		vm.mu.Lock()
		delete(vm.attached, volumeID)
		vm.mu.Unlock()
	}
	if vm.exitedNow() {
		done()
		return nil
	}
	dev := deviceID(volumeID)
	deleted, err := vm.qmp.DeviceDeleted(dev)
	if err != nil {
		return fmt.Errorf("detach %s: %w", volumeID, err)
	}
	if _, err := vm.qmp.Execute(ctx, "device_del", map[string]any{"id": dev}); err != nil {
		vm.qmp.CancelDeviceDeleted(dev)
		if vm.exitedNow() {
			done()
			return nil
		}
		return fmt.Errorf("detach %s: %w", volumeID, err)
	}
	select {
	case <-deleted:
	case <-vm.qmp.Done():
		done()
		return nil // QEMU went away: nothing holds the volume any more
	case <-ctx.Done():
		vm.qmp.CancelDeviceDeleted(dev)
		return fmt.Errorf("detach %s: guest did not release the device: %w", volumeID, ctx.Err())
	}
	// The node can linger for a moment after DEVICE_DELETED.
	for i := 0; ; i++ {
		_, err := vm.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": nodeName(volumeID)})
		if err == nil {
			break
		}
		if i >= 20 || ctx.Err() != nil {
			return fmt.Errorf("detach %s: %w", volumeID, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	done()
	return nil
}

// Attached returns the volumes attached through Attach, by root port.
func (vm *VM) Attached() map[string]string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	m := map[string]string{}
	for v, p := range vm.attached {
		m[v] = p
	}
	return m
}

func (vm *VM) exitedNow() bool {
	select {
	case <-vm.exited:
		return true
	case <-vm.qmp.Done():
		return true
	default:
		return false
	}
}
