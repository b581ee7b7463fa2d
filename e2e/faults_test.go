package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/qemu"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/blockdev"
	"github.com/spotroot/spotroot/internal/iampolicy"
)

// The fault matrix: each scenario sets up one real-world situation and
// asserts both the outcome (which init ran, from which root) and the last
// spotroot line on the console, which must say what happened. Every one
// must end in a running init: persistent or the image's own.

// userData renders a cloud-config. It sets no ec2_endpoint: the guest
// reaches EC2 as https://ec2.<region>.amazonaws.com, like on AWS.
func userData(body string) []byte {
	return []byte("#cloud-config\nspotroot:\n" + body)
}

const tagRoot = "  volume:\n    tag: {Name: " + harness.VolumeName + "}\n"

// boot runs one VM and fails the test with the console on error.
func bootOpts(t *testing.T, w *harness.World, o harness.BootOpts) *harness.BootResult {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	res, err := w.Boot(context.Background(), o)
	if err != nil {
		console := ""
		if res != nil {
			console = res.Console
		}
		t.Fatalf("boot: %v\nconsole:\n%s", err, console)
	}
	return res
}

// lastSpotroot is the last timeline line.
func lastSpotroot(r *harness.BootResult) string {
	if len(r.Timeline) == 0 {
		return ""
	}
	return r.Timeline[len(r.Timeline)-1]
}

// expect checks the outcome and that some timeline line matches each re;
// the last spotroot line must match last.
func expect(t *testing.T, r *harness.BootResult, kind string, last string, lines ...string) {
	t.Helper()
	if r.Kind != kind || r.PID != 1 {
		t.Errorf("TESTINIT kind=%s pid=%d, want kind=%s pid=1", r.Kind, r.PID, kind)
	}
	if kind == "persistent" && !strings.HasPrefix(r.Root, "/dev/nvme1n1") {
		t.Errorf("persistent root = %q, want the hot-plugged volume", r.Root)
	}
	all := strings.Join(r.Timeline, "\n")
	if !regexp.MustCompile(last).MatchString(lastSpotroot(r)) {
		t.Errorf("last spotroot line %q does not match %q", lastSpotroot(r), last)
	}
	for _, l := range lines {
		if !regexp.MustCompile("(?m)" + l).MatchString(all) {
			t.Errorf("no timeline line matches %q", l)
		}
	}
	switch n := strings.Count(all, "FAILED"); {
	case kind == "persistent" && n > 0:
		t.Errorf("a FAILED line, but the persistent root booted")
	case n > 1:
		t.Errorf("%d FAILED lines, want at most one", n)
	}
	checkEC2ByName(t, r)
	checkHandoff(t, r)
	if t.Failed() {
		t.Logf("console:\n%s", r.Console)
	}
}

// checkEC2ByName checks how the guest reached EC2: only as
// https://ec2.<region>.amazonaws.com, the name resolved by the DNS server
// its lease names, never at the plain-HTTP address; and that a boot that
// ended on a volume did call EC2 that way.
func checkEC2ByName(t *testing.T, r *harness.BootResult) {
	t.Helper()
	if r.EC2HTTP != 0 {
		t.Errorf("%d EC2 requests over plain HTTP at %s, want none", r.EC2HTTP, qemu.EC2Addr)
	}
	for sni := range r.TLSHandshakes {
		if sni != harness.EC2Host {
			t.Errorf("TLS handshake for server name %q, want only %s", sni, harness.EC2Host)
		}
	}
	if r.EC2HTTPS > 0 || r.Kind == "persistent" || strings.HasPrefix(r.Root, "/dev/nvme1") {
		if r.EC2HTTPS == 0 {
			t.Errorf("no EC2 request over HTTPS")
		}
		if r.DNSQueries[harness.EC2Host+". A"] == 0 {
			t.Errorf("the lease's DNS server got no A query for %s (queries: %v)", harness.EC2Host, r.DNSQueries)
		}
		if r.TLSHandshakes[harness.EC2Host] == 0 {
			t.Errorf("no TLS handshake for %s", harness.EC2Host)
		}
	}
}

const (
	execPersistent = `^spotroot: exec /sbin/init \(pid 1 start→exec \d+ms`
	execImage      = `^spotroot: exec image init /sbin/init.real$`
)

// rebuildVolume replaces the world's volume image.
func rebuildVolume(t *testing.T, w *harness.World, o images.VolumeOpts) {
	t.Helper()
	v, ok := w.Sim.Volume(w.VolumeID)
	if !ok {
		t.Fatal("no volume")
	}
	o.Out, o.TestinitBin = v.ImagePath, w.Env.TestinitBin
	if err := images.BuildVolume(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

func withDataDir(t *testing.T, w *harness.World) {
	t.Helper()
	dir := filepath.Join(w.Dir, "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.Sim.Update(func(sw *sim.World) error { sw.DataDir = dir; return nil }); err != nil {
		t.Fatal(err)
	}
}

// otherInstance launches an instance that holds the volume.
func otherInstance(t *testing.T, w *harness.World, state string, vols ...string) string {
	t.Helper()
	id := sim.NewInstanceID()
	bd := map[string]string{}
	for i, v := range vols {
		bd[fmt.Sprintf("/dev/sd%c", 'f'+i)] = v
	}
	// Launched by `spotroot launch`: tagged like the volumes it claims.
	if err := w.Sim.AddInstance(sim.Instance{ID: id, AZ: harness.AZ, State: state, Role: harness.Role, BlockDevices: bd,
		Tags: map[string]string{iampolicy.DefaultTagKey: iampolicy.DefaultTagValue}}); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFaultMatrix(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"other-az", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			withDataDir(t, w)
			w.Sim.Update(func(sw *sim.World) error { sw.Volumes[w.VolumeID].AZ = "us-east-1b"; return nil })
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "persistent", execPersistent, `volume is in another AZ: copying it through a snapshot volume=`+w.VolumeID, `volume copied from another AZ from=`+w.VolumeID)
			if old, _ := w.Sim.Volume(w.VolumeID); old.Tags["spotroot:moved-to"] == "" {
				t.Errorf("old volume not tagged spotroot:moved-to: %v", old.Tags)
			}
		}},
		{"attached-to-terminated", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			prev := otherInstance(t, w, "shutting-down", w.VolumeID)
			// EC2 finishes terminating the previous instance once the new
			// one has found the volume still attached and waits for it.
			waiting := regexp.MustCompile(`volume still attached to a dead instance; waiting for the detach`)
			terminated := make(chan error, 1)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  timeouts: {detach: 60s}\n"),
				Started: func(vm *harness.Running) {
					go func() {
						_, err := vm.WaitFor(context.Background(), waiting)
						if err == nil {
							err = w.Sim.TerminateInstance(prev)
						}
						terminated <- err
					}()
				}})
			if err := <-terminated; err != nil {
				t.Errorf("terminating the previous instance while the new one waits: %v", err)
			}
			expect(t, r, "persistent", execPersistent, `volume still attached to a dead instance; waiting for the detach .*instance=`+prev+` state=shutting-down`)
		}},
		{"attached-to-stopped", func(t *testing.T) {
			// A stopped owner gets a plain DetachVolume, never a forced
			// one, even with force_detach (issue 13's detach rules).
			w := newWorld(t, harness.WorldOpts{})
			prev := otherInstance(t, w, "stopped", w.VolumeID)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  force_detach: true\n  timeouts: {detach: 10s}\n")})
			expect(t, r, "persistent", execPersistent, `volume attached to a stopped instance; detaching it \(not forced\) volume=`+w.VolumeID+` instance=`+prev)
			if ev := w.Sim.DataLossEvents(); len(ev) != 0 {
				t.Errorf("data-loss events: %+v", ev)
			}
		}},
		{"attached-to-running", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			owner := otherInstance(t, w, "running", w.VolumeID)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  force_detach: true\n")})
			expect(t, r, "image", execImage, `^spotroot: FAILED claim: volume `+w.VolumeID+` is in use, attached to `+owner+` \(running\); spotroot never takes a volume from a running instance`)
			if v, _ := w.Sim.Volume(w.VolumeID); len(v.Attachments) != 1 || v.Attachments[0].InstanceID != owner {
				t.Errorf("the running owner lost its volume: %+v", v.Attachments)
			}
		}},
		{"pool-claim", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{VolumeTags: map[string]string{"spotroot:pool": "web"}})
			second := sim.NewVolumeID()
			img := filepath.Join(w.Dir, second+".img")
			if err := images.BuildVolume(context.Background(), images.VolumeOpts{Out: img, TestinitBin: w.Env.TestinitBin}); err != nil {
				t.Fatal(err)
			}
			w.Sim.AddVolume(sim.Volume{ID: second, AZ: harness.AZ, Type: "gp3", SizeGiB: 1, Tags: map[string]string{"spotroot:pool": "web", iampolicy.DefaultTagKey: iampolicy.DefaultTagValue}, ImagePath: img, State: sim.VolumeAvailable})
			ud := userData("  volume:\n    pool: {spotroot:pool: web}\n  tag_claims: true\n")
			var wg sync.WaitGroup
			res := make([]*harness.BootResult, 2)
			for i := range res {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Keep: a finished boot's instance stays, holding its
					// member; terminated, it would free it for the other VM
					// when that one claims late (a hostile seed's pending
					// instance and lost answers), and both would boot it.
					r, err := w.Boot(context.Background(), harness.BootOpts{UserData: ud, Timeout: 4 * time.Minute, Keep: true})
					if err != nil {
						t.Errorf("VM %d: %v", i, err)
					}
					res[i] = r
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			// Each disk, read afterwards: booted exactly once, and tagged
			// for the instance that booted from it.
			owners := map[string]string{}
			for _, r := range res {
				expect(t, r, "persistent", execPersistent)
				owners[r.InstanceID] = ""
			}
			for _, id := range []string{w.VolumeID, second} {
				v, _ := w.Sim.Volume(id)
				if n := volumeCounter(t, v.ImagePath); n != 1 {
					t.Errorf("volume %s: boot counter on the disk = %d, want 1 (each pool volume booted once)", id, n)
				}
				inst := v.Tags["spotroot:instance"]
				if _, ok := owners[inst]; !ok || owners[inst] != "" {
					t.Errorf("volume %s is tagged for %q, want one of the two instances, each once (%v)", id, inst, owners)
					continue
				}
				owners[inst] = id
			}
		}},
		{"pool-exhausted", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{VolumeTags: map[string]string{"spotroot:pool": "web"}})
			otherInstance(t, w, "running", w.VolumeID)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData("  volume:\n    pool: {spotroot:pool: web}\n")})
			expect(t, r, "image", execImage, `^spotroot: FAILED claim: pool pool spotroot:pool=web is exhausted in us-east-1a: 1 member\(s\)`)
		}},
		{"create-from-ami-snapshot", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{NoVolume: true})
			withDataDir(t, w)
			snap, ami := sim.NewSnapshotID(), sim.NewImageID()
			snapImg := filepath.Join(w.Dir, snap+".img")
			if err := copyFileT(w.Env.AMI, snapImg); err != nil {
				t.Fatal(err)
			}
			// Tagged managed, as the Packer example's snapshot_tags do: the
			// role may create volumes only from managed snapshots.
			w.Sim.AddSnapshot(sim.Snapshot{ID: snap, VolumeSize: 1, State: "completed", ImagePath: snapImg,
				Tags: map[string]string{iampolicy.DefaultTagKey: iampolicy.DefaultTagValue}})
			w.Sim.AddImage(sim.Image{ID: ami, Name: "spotroot-e2e", State: "available", RootDeviceName: "/dev/xvda", RootSnapshotID: snap})
			r := bootOpts(t, w, harness.BootOpts{
				UserData: userData(tagRoot + "    create: {from: ami, size: 1}\n"),
				Instance: func(i *sim.Instance) { i.ImageID = ami },
			})
			// The copy of the AMI carries spotroot as /sbin/init and the
			// AMI root's filesystem UUID: both must be handled.
			if r.Kind != "image" || !strings.HasPrefix(r.Root, "/dev/nvme1n1") {
				t.Errorf("TESTINIT kind=%s root=%s, want the image's init from the new volume", r.Kind, r.Root)
			}
			expect(t, r, "image", `^spotroot: exec /sbin/init.real \(pid 1`, `created volume volume=vol-[0-9a-f]+ from=ami`,
				`the volume has the image root's filesystem UUID`, `new filesystem UUID`, `the volume's init is spotroot itself`)
		}},
		{"create-empty", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{NoVolume: true})
			withDataDir(t, w)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData("  volumes:\n    - tag: {Name: scratch}\n      mount: /home\n      create: {from: empty, size: 1}\n")})
			expect(t, r, "image", `^spotroot: exec image init /sbin/init.real$`, `formatting new empty volume`, `^spotroot: mount /home ok in`, `data volumes mounted`)
			var img string
			w.Sim.View(func(sw *sim.World) {
				for _, v := range sw.Volumes {
					if v.Tags["Name"] == "scratch" {
						img = v.ImagePath
					}
				}
			})
			f, err := os.Open(img)
			if err != nil {
				t.Fatalf("created volume image: %v", err)
			}
			defer f.Close()
			if fs, ok := blockdev.Probe(f, 0); !ok || fs.Type != "ext4" {
				t.Errorf("the created volume holds %+v, want a fresh ext4", fs)
			}
		}},
		{"throttled-api", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			w.Sim.SetFault("AttachVolume", sim.Fault{Code: "RequestLimitExceeded", Times: 3})
			w.Sim.SetFault("DescribeVolumes", sim.Fault{Code: "RequestLimitExceeded", Times: 2})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "persistent", execPersistent)
			fired(t, w, "AttachVolume", 3)
			fired(t, w, "DescribeVolumes", 2)
		}},
		{"imds-slow", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), Instance: func(i *sim.Instance) {
				i.IMDSDelay = 400 * time.Millisecond
				i.IMDSFailFirst = 2
			}})
			expect(t, r, "persistent", execPersistent, `^spotroot: imds ok in \d+ms`)
			if i, _ := w.Sim.Instance(r.InstanceID); i.IMDSFailFirst != 0 {
				t.Errorf("IMDS failed %d of its 2 injected failures, want both", 2-i.IMDSFailFirst)
			}
		}},
		{"imds-v1-only-refused", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), Instance: func(i *sim.Instance) { i.IMDSv1Only = true }})
			expect(t, r, "image", execImage, `^spotroot: FAILED imds: .*IMDSv2 only`)
			if r.EC2HTTPS != 0 || len(r.DNSQueries) != 0 {
				t.Errorf("EC2 was called (%d requests, DNS %v) without IMDSv2", r.EC2HTTPS, r.DNSQueries)
			}
		}},
		{"no-credentials", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), Instance: func(i *sim.Instance) { i.Role = "" }})
			expect(t, r, "image", execImage, `^spotroot: FAILED claim: .*no instance-profile credentials \(attach an IAM instance profile`)
			if r.EC2HTTPS != 0 {
				t.Errorf("%d EC2 requests reached the simulator without credentials, want none", r.EC2HTTPS)
			}
		}},
		{"access-denied", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			w.Sim.Update(func(sw *sim.World) error { sw.DenyActions = []string{"AttachVolume"}; return nil })
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "image", execImage, `^spotroot: FAILED claim: attach `+w.VolumeID+` to i-[0-9a-f]+: UnauthorizedOperation: the instance role may not call ec2:AttachVolume`)
			fired(t, w, sim.FiredDeny+"AttachVolume", -1)
		}},
		{"device-never-appears", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			w.Sim.SetFault(sim.FaultHotplugAttach, sim.Fault{Delay: 10 * time.Minute})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  timeouts: {device: 3s}\n")})
			expect(t, r, "image", execImage, `^spotroot: FAILED device: wait for the block device of `+w.VolumeID+` \(NVMe serial vol`)
			fired(t, w, sim.FaultHotplugAttach, 1)
		}},
		{"untrusted-certificate", func(t *testing.T) {
			// The endpoint's certificate is from a CA the image's bundle
			// does not hold: nothing is sent, one clear line, the image's
			// own init.
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), UntrustedCert: true})
			expect(t, r, "image", execImage, `^spotroot: FAILED claim: .*`+regexp.QuoteMeta(harness.EC2Host)+`.*x509: certificate signed by unknown authority`)
			t.Logf("%s in %v: %s", r.InstanceID, r.Elapsed.Round(time.Millisecond), lastFailed(r))
			if r.TLSHandshakes[harness.EC2Host] == 0 || r.EC2HTTPS != 0 {
				t.Errorf("TLS handshakes %v, EC2 requests %d: want attempts by name and no request through", r.TLSHandshakes, r.EC2HTTPS)
			}
			if v, _ := w.Sim.Volume(w.VolumeID); v.State != sim.VolumeAvailable || len(v.Attachments) != 0 {
				t.Errorf("volume %s is %s %+v, want untouched", w.VolumeID, v.State, v.Attachments)
			}
		}},
		{"corrupt-filesystem", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			rebuildVolume(t, w, images.VolumeOpts{Corrupt: true})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "image", execImage, `^spotroot: FAILED filesystem: refusing to mount a corrupt filesystem: e2fsck -p /dev/nvme1n1p1 exited 4`)
		}},
		{"no-init-on-volume", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			rebuildVolume(t, w, images.VolumeOpts{NoInit: true})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "image", execImage, `^spotroot: FAILED init: init /sbin/init on the volume: /sbin/init: no such file or directory`)
		}},
		{"modules-mismatch", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			dep := "/lib/modules/" + w.Env.Kernel.Version + "/modules.dep"
			rebuildVolume(t, w, images.VolumeOpts{Files: []images.File{{Path: "etc/spotroot-test/report", Data: []byte(dep + "\n")}}})
			// Twice: the first boot leaves the mount point behind on the volume.
			for boot := 1; boot <= 2; boot++ {
				r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
				expect(t, r, "persistent", execPersistent, `warn: the volume has no modules for the running kernel: the image's are bind-mounted read-only`)
				if !regexp.MustCompile(`TESTINIT-REPORT ` + regexp.QuoteMeta(dep) + ` kernel/`).MatchString(r.Console) {
					t.Errorf("boot %d: the persistent init does not see %s:\n%s", boot, dep, r.Console)
				}
			}
		}},
		{"uuid-clash", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			amiFS := cloneAMIUUID(t, w)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "persistent", execPersistent, `warn: the volume has the image root's filesystem UUID .*uuid=`+amiFS.UUID, `new filesystem UUID device=/dev/nvme1n1p1 uuid=`)
			// The disk itself now carries another UUID.
			v, _ := w.Sim.Volume(w.VolumeID)
			vf, err := os.Open(v.ImagePath)
			if err != nil {
				t.Fatal(err)
			}
			defer vf.Close()
			got, ok := blockdev.Probe(vf, 1<<20) // partition 1
			if !ok || got.UUID == "" || got.UUID == amiFS.UUID {
				t.Errorf("the volume's filesystem UUID after the boot = %+v, want a new one (the AMI's is %s)", got, amiFS.UUID)
			}
		}},
		{"on-failure-retry", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			// Denied once (not retried by the SDK): the whole claim is
			// retried. On AttachVolume: a denied DescribeVolumes may land in
			// a poll that tolerates errors under EC2's lagging views.
			w.Sim.SetFault("AttachVolume", sim.Fault{Code: "UnauthorizedOperation", Status: 403, Times: 1})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  on_failure: retry-then-image-init\n")})
			expect(t, r, "persistent", execPersistent, `^spotroot: attempt 1 failed: claim: .*UnauthorizedOperation.* — undoing it and retrying once$`)
			fired(t, w, "AttachVolume", 1)
		}},
		{"on-failure-poweroff", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{NoVolume: true})
			r := bootOpts(t, w, harness.BootOpts{
				UserData: userData(tagRoot + "  on_failure: poweroff\n"),
				Until:    regexp.MustCompile(`powering off \(on_failure: poweroff\)`),
			})
			if !regexp.MustCompile(`(?m)^spotroot: FAILED claim: no EBS volume has tag Name=home-root.* — powering off \(on_failure: poweroff\)$`).MatchString(r.Console) {
				t.Errorf("no FAILED … powering off line:\n%s", r.Console)
			}
			if r.ShutdownReason != "guest-shutdown" || strings.Contains(r.Console, "TESTINIT") {
				t.Errorf("shutdown reason %q (want guest-shutdown, no init run):\n%s", r.ShutdownReason, r.Console)
			}
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, sc.run)
	}
}

// lastFailed is the FAILED line of the timeline ("" if none).
func lastFailed(r *harness.BootResult) string {
	for i := len(r.Timeline) - 1; i >= 0; i-- {
		if strings.Contains(r.Timeline[i], "FAILED") {
			return r.Timeline[i]
		}
	}
	return ""
}

// fired checks from the simulator's counter that the fault keyed key hit
// exactly want calls (want < 0: at least one).
func fired(t *testing.T, w *harness.World, key string, want int) {
	t.Helper()
	n := w.Sim.Fired(key)
	if want < 0 && n == 0 || want >= 0 && n != want {
		t.Errorf("fault %s fired %d times, want %d (-1: some)", key, n, want)
	}
}

// volumeCounter reads the boot counter testinit keeps on a volume image
// (partition 1, 1 MiB in) with debugfs: what the disk says, not the console.
func volumeCounter(t *testing.T, img string) int {
	t.Helper()
	part := filepath.Join(t.TempDir(), "part.img")
	if out, err := exec.Command("dd", "if="+img, "of="+part, "bs=1M", "skip=1", "conv=sparse", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	out, err := exec.Command("debugfs", "-R", "cat /var/lib/spotroot-test/counter", part).Output()
	if err != nil {
		t.Fatalf("debugfs cat counter of %s: %v", img, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0
	}
	return n
}

func copyFileT(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// cloneAMIUUID rebuilds the world's volume with the AMI root's filesystem
// UUID (a volume made from the AMI's snapshot) and returns the AMI's
// filesystem.
func cloneAMIUUID(t *testing.T, w *harness.World) blockdev.FS {
	t.Helper()
	f, err := os.Open(w.Env.AMI)
	if err != nil {
		t.Fatal(err)
	}
	amiFS, ok := blockdev.Probe(f, 0)
	f.Close()
	if !ok {
		t.Fatal("cannot read the AMI's filesystem UUID")
	}
	rebuildVolume(t, w, images.VolumeOpts{UUID: amiFS.UUID})
	return amiFS
}
