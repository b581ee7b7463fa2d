package e2e_test

// The crash matrix where a real guest matters: QEMU is killed (SIGKILL, no
// clean shutdown) the moment the console shows the step, then EC2
// terminates the instance (shutting-down, then terminated) and a
// replacement boots. Each asserts the replacement boots the persistent
// root with the data written before the cut (testinit's boot counter), the
// volume is the only one carrying the identity, and no data-loss event.

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/blockdev"
)

// cutAt boots a new instance and kills QEMU as soon as a console line
// matches at; it reports whether the line came. The instance is left
// running for the caller to terminate.
func cutAt(t *testing.T, w *harness.World, o harness.BootOpts, at string) (string, bool) {
	t.Helper()
	o.Until, o.PowerOffTimeout, o.Keep = regexp.MustCompile(at), time.Millisecond, true
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	r, _ := w.Boot(context.Background(), o)
	if r == nil || r.Line == "" {
		console := ""
		if r != nil {
			console = r.Console
		}
		t.Fatalf("the boot never reached %q:\n%s", at, console)
	}
	t.Logf("cut at: %s", r.Line)
	return r.InstanceID, true
}

// terminateLater is EC2 ending the killed instance: shutting-down (the
// volume still attached) until the replacement has looked at it, then
// terminated. The trigger is the replacement's own DescribeInstances of
// the dead owner in the audit log, plus a few seconds in which it must
// wait rather than force: a fixed timer raced the guest's boot speed
// (under a loaded TCG host the replacement reached the claim after the
// old instance was already gone, so the wait was never exercised).
func terminateLater(t *testing.T, w *harness.World, id string) {
	t.Helper()
	if err := w.Sim.SetInstanceState(id, sim.InstanceShuttingDown); err != nil {
		t.Fatal(err)
	}
	path := sim.AuditPath(w.Sim.Path())
	looked := func() bool {
		evs, _ := sim.ReadAudit(path)
		for _, e := range evs {
			if e.EventName != "DescribeInstances" || e.UserIdentity.SourceInstance == "" || e.UserIdentity.SourceInstance == id {
				continue
			}
			for _, v := range e.RequestParameters {
				if v == id {
					return true
				}
			}
		}
		return false
	}
	stop, done := make(chan struct{}), make(chan struct{})
	// The test joins the goroutine: it ends with the test, never outlives it.
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		wait := func(d time.Duration) bool {
			select {
			case <-stop:
				return false
			case <-time.After(d):
				return true
			}
		}
		for deadline := time.Now().Add(3 * time.Minute); !looked() && time.Now().Before(deadline); {
			if !wait(200 * time.Millisecond) {
				return
			}
		}
		if wait(6 * time.Second) {
			_ = w.Sim.TerminateInstance(id)
		}
	}()
}

// noForcedDetach: the replacement never forced the volume off the dead
// instance (the audit log holds every DetachVolume and its parameters).
func noForcedDetach(t *testing.T, w *harness.World) {
	t.Helper()
	for _, e := range audit(t, w) {
		if e.EventName == "DetachVolume" && strings.EqualFold(e.RequestParameters["Force"], "true") {
			t.Errorf("forced detach by %s: %v", e.UserIdentity.SourceInstance, e.RequestParameters)
		}
	}
}

func checkOneIdentity(t *testing.T, w *harness.World) {
	t.Helper()
	if ev := w.Sim.DataLossEvents(); len(ev) != 0 {
		t.Errorf("data-loss events: %+v", ev)
	}
	n := 0
	w.Sim.View(func(sw *sim.World) {
		for _, v := range sw.Volumes {
			if v.Tags["Name"] == harness.VolumeName && v.Tags["spotroot:moved-to"] == "" {
				n++
			}
		}
	})
	if n != 1 {
		t.Errorf("%d volumes carry the identity, want 1", n)
	}
}

// buildDirtyXFSVolume is buildXFSVolume with a boot counter of 1 written
// and the log left dirty, as a Spot termination leaves it.
func buildDirtyXFSVolume(t *testing.T, w *harness.World, out string) {
	t.Helper()
	for _, tool := range []string{"mkfs.xfs", "xfs_io", "unshare", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, "requires root tools: "+tool+" (xfsprogs)")
		}
	}
	script := `set -e
truncate -s 320M "$IMG"
mkfs.xfs -q -f -L xroot "$IMG"
mount -o loop "$IMG" "$MNT"
mkdir -p "$MNT/sbin" "$MNT/dev" "$MNT/proc" "$MNT/sys" "$MNT/run" "$MNT/tmp" "$MNT/etc/spotroot-test" "$MNT/var/lib/spotroot-test"
cp "$INIT" "$MNT/sbin/init"
echo persistent > "$MNT/etc/spotroot-test/kind"
echo 1 > "$MNT/var/lib/spotroot-test/counter"
sync
xfs_io -x -c 'shutdown -f' "$MNT"
umount "$MNT"`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "IMG="+out, "MNT="+t.TempDir(), "INIT="+w.Env.TestinitBin)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build dirty xfs volume: %v\n%s", err, b)
	}
	if exec.Command("xfs_repair", "-n", out).Run() == nil {
		t.Fatal("the xfs volume's log is not dirty: the scenario would prove nothing")
	}
}

func TestCrashQEMU(t *testing.T) {
	xfsAMI := func(t *testing.T, w *harness.World) string {
		return customAMI(t, w, images.AMIOpts{HostTools: append(append([]string{}, images.DefaultHostTools...), "xfs_repair")})
	}
	ud := userData(tagRoot + "  timeouts: {detach: 60s}\n")
	scenarios := []struct {
		name string
		run  func(t *testing.T)
	}{
		// The claim: the VM dies right after EC2 attached the volume; the
		// replacement waits for the dead owner to be released.
		{"cut-after-attach", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			id, _ := cutAt(t, w, harness.BootOpts{UserData: ud}, `^spotroot: attach ok`)
			terminateLater(t, w, id)
			r := bootOpts(t, w, harness.BootOpts{UserData: ud})
			expect(t, r, "persistent", execPersistent, `volume still attached to a dead instance; waiting for the detach .*state=shutting-down`)
			checkPersistent(t, r, 1)
			noForcedDetach(t, w)
			checkOneIdentity(t, w)
		}},
		// The persistent init ran (and wrote its counter), then power is
		// cut instead of its clean power-off.
		{"cut-at-persistent-init", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			id, _ := cutAt(t, w, harness.BootOpts{UserData: ud}, `^TESTINIT `)
			terminateLater(t, w, id)
			r := bootOpts(t, w, harness.BootOpts{UserData: ud})
			checkPersistent(t, r, 2)
			checkOneIdentity(t, w)
		}},
		// The disk fixes: the check, then the UUID rewrite of a volume
		// made from the AMI's snapshot, each cut while it runs.
		{"cut-during-fsck", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			id, _ := cutAt(t, w, harness.BootOpts{UserData: ud}, `checking the filesystem device=`)
			terminateLater(t, w, id)
			r := bootOpts(t, w, harness.BootOpts{UserData: ud})
			checkPersistent(t, r, 1)
			checkOneIdentity(t, w)
		}},
		{"cut-during-uuid-rewrite", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			amiFS := cloneAMIUUID(t, w)
			id, _ := cutAt(t, w, harness.BootOpts{UserData: ud}, `the volume has the image root's filesystem UUID`)
			terminateLater(t, w, id)
			r := bootOpts(t, w, harness.BootOpts{UserData: ud})
			checkPersistent(t, r, 1)
			checkOneIdentity(t, w)
			v, _ := w.Sim.Volume(w.VolumeID)
			vf, err := os.Open(v.ImagePath)
			if err != nil {
				t.Fatal(err)
			}
			defer vf.Close()
			if c, err := blockdev.Choose(vf, 512, ""); err != nil || c.FS.UUID == amiFS.UUID {
				t.Errorf("after the replacement the volume's filesystem is %+v (%v); want a UUID other than the image's %s", c.FS, err, amiFS.UUID)
			}
		}},
		// XFS after an unclean shutdown: the log is replayed by a mount
		// before xfs_repair -n (which refuses a dirty log) and the
		// persistent root boots with its data.
		{"xfs-dirty-log", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			v, _ := w.Sim.Volume(w.VolumeID)
			buildDirtyXFSVolume(t, w, v.ImagePath)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), AMI: xfsAMI(t, w)})
			expect(t, r, "persistent", execPersistent, `replaying the filesystem log .*fs=xfs`, `fsck device=/dev/nvme1n1 result=clean`)
			if r.Counter != 2 {
				t.Errorf("counter = %d, want 2 (1 written before the cut)", r.Counter)
			}
		}},
		// The same, cut during the replay itself.
		{"cut-during-xfs-replay", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			v, _ := w.Sim.Volume(w.VolumeID)
			buildDirtyXFSVolume(t, w, v.ImagePath)
			ami := xfsAMI(t, w)
			id, _ := cutAt(t, w, harness.BootOpts{UserData: ud, AMI: ami}, `replaying the filesystem log`)
			terminateLater(t, w, id)
			r := bootOpts(t, w, harness.BootOpts{UserData: ud, AMI: ami})
			expect(t, r, "persistent", execPersistent, `fsck device=/dev/nvme1n1 result=clean`)
			if r.Counter != 2 {
				t.Errorf("counter = %d, want 2 (1 written before the cut)", r.Counter)
			}
			checkOneIdentity(t, w)
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, sc.run)
	}
}
