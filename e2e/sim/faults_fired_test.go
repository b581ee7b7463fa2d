package sim

import (
	"path/filepath"
	"testing"
)

// FaultsFired counts each injected failure that hit a call, so scenarios
// can prove their fault fired.
func TestFaultsFired(t *testing.T) {
	w, err := Load(filepath.Join(t.TempDir(), "world.json"))
	if err != nil {
		t.Fatal(err)
	}
	w.SetFault("AttachVolume", Fault{Code: "RequestLimitExceeded", Times: 2})
	w.Update(func(w *World) error { w.DenyActions = []string{"ec2:DetachVolume"}; return nil })
	w.mu.Lock()
	for range 3 {
		w.takeFaultLocked("AttachVolume")
	}
	w.takeFaultLocked("DescribeVolumes")
	w.deniedLocked("DetachVolume")
	w.deniedLocked("AttachVolume")
	w.mu.Unlock()
	for key, want := range map[string]int{"AttachVolume": 2, "DescribeVolumes": 0, FiredDeny + "DetachVolume": 1, FiredDeny + "AttachVolume": 0} {
		if got := w.Fired(key); got != want {
			t.Errorf("Fired(%q) = %d, want %d", key, got, want)
		}
	}
}
