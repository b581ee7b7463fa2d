package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/qemu"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/blockdev"
)

// The fault matrix: each scenario sets up one real-world situation and
// asserts both the outcome (which init ran, from which root) and the last
// spotroot line on the console, which must say what happened. Every one
// must end in a running init: persistent or the image's own.

// userData renders a cloud-config for the harness's EC2 endpoint.
func userData(body string) []byte {
	return []byte("#cloud-config\nspotroot:\n  ec2_endpoint: http://" + qemu.EC2Addr + "\n" + body)
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
	if strings.Count(all, "FAILED") > 1 {
		t.Errorf("more than one FAILED line")
	}
	if t.Failed() {
		t.Logf("console:\n%s", r.Console)
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
	if err := w.Sim.AddInstance(sim.Instance{ID: id, AZ: harness.AZ, State: state, Role: harness.Role, BlockDevices: bd}); err != nil {
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
			// EC2 finishes terminating the previous instance later: after
			// the new one has found the volume still attached (its boot
			// reaches the claim ~3-6 s after QEMU starts under TCG).
			go func() {
				deadline := time.Now().Add(time.Minute)
				for time.Now().Before(deadline) {
					n := 0
					w.Sim.View(func(sw *sim.World) { n = len(sw.Instances) })
					if n >= 2 { // the new instance was launched
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(12 * time.Second)
				w.Sim.TerminateInstance(prev)
			}()
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  timeouts: {detach: 60s}\n")})
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
			w.Sim.AddVolume(sim.Volume{ID: second, AZ: harness.AZ, Type: "gp3", SizeGiB: 1, Tags: map[string]string{"spotroot:pool": "web"}, ImagePath: img, State: sim.VolumeAvailable})
			ud := userData("  volume:\n    pool: {spotroot:pool: web}\n")
			var wg sync.WaitGroup
			res := make([]*harness.BootResult, 2)
			for i := range res {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := w.Boot(context.Background(), harness.BootOpts{UserData: ud, Timeout: 4 * time.Minute})
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
			claimed := map[string]bool{}
			for _, r := range res {
				expect(t, r, "persistent", execPersistent)
				m := regexp.MustCompile(`block device volume=(vol-[0-9a-f]+)`).FindStringSubmatch(r.Console)
				if m == nil {
					t.Fatalf("no block device line:\n%s", r.Console)
				}
				claimed[m[1]] = true
			}
			if !claimed[w.VolumeID] || !claimed[second] {
				t.Errorf("two VMs claimed %v, want both pool volumes", claimed)
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
			w.Sim.AddSnapshot(sim.Snapshot{ID: snap, VolumeSize: 1, State: "completed", ImagePath: snapImg})
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
		}},
		{"imds-slow", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), Instance: func(i *sim.Instance) {
				i.IMDSDelay = 400 * time.Millisecond
				i.IMDSFailFirst = 2
			}})
			expect(t, r, "persistent", execPersistent, `^spotroot: imds ok in \d+ms`)
		}},
		{"imds-v1-only-refused", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), Instance: func(i *sim.Instance) { i.IMDSv1Only = true }})
			expect(t, r, "image", execImage, `^spotroot: FAILED imds: .*IMDSv2 only`)
		}},
		{"no-credentials", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot), Instance: func(i *sim.Instance) { i.Role = "" }})
			expect(t, r, "image", execImage, `^spotroot: FAILED claim: .*no instance-profile credentials \(attach an IAM instance profile`)
		}},
		{"access-denied", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			w.Sim.Update(func(sw *sim.World) error { sw.DenyActions = []string{"AttachVolume"}; return nil })
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "image", execImage, `^spotroot: FAILED claim: attach `+w.VolumeID+` to i-[0-9a-f]+: UnauthorizedOperation: the instance role may not call ec2:AttachVolume`)
		}},
		{"device-never-appears", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			w.Sim.SetFault(sim.FaultHotplugAttach, sim.Fault{Delay: 10 * time.Minute})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  timeouts: {device: 3s}\n")})
			expect(t, r, "image", execImage, `^spotroot: FAILED device: wait for the block device of `+w.VolumeID+` \(NVMe serial vol`)
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
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "persistent", execPersistent, `warn: the volume has the image root's filesystem UUID .*uuid=`+amiFS.UUID, `new filesystem UUID device=/dev/nvme1n1p1 uuid=`)
		}},
		{"on-failure-retry", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			// Denied once (not retried by the SDK): the whole claim is retried.
			w.Sim.SetFault("DescribeVolumes", sim.Fault{Code: "UnauthorizedOperation", Status: 403, Times: 1})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  on_failure: retry-then-image-init\n")})
			expect(t, r, "persistent", execPersistent, `^spotroot: attempt 1 failed: claim: .*UnauthorizedOperation.* — undoing it and retrying once$`)
			if strings.Contains(r.Console, "FAILED") {
				t.Errorf("a retry that succeeds must not print FAILED")
			}
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
		{"dhcp-no-router", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "persistent", execPersistent, `network up .*address=169\.254\.2\.15/16 router="none \(on-link\)"`)
			if r.Net != "none" {
				t.Errorf("the real init found addresses %q left by spotroot", r.Net)
			}
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, sc.run)
	}
}

func copyFileT(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
