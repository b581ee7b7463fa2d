package e2e_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/iampolicy"
)

// Configuration sources, data-volume mode and filesystems, end to end.

// customAMI builds an AMI variant for one scenario.
func customAMI(t *testing.T, w *harness.World, o images.AMIOpts) string {
	t.Helper()
	o.Out = filepath.Join(w.Dir, "ami-custom.img")
	o.SpotrootBin, o.TestinitBin, o.Kernel = w.Env.SpotrootBin, w.Env.TestinitBin, w.Env.Kernel
	o.Files = append(w.Env.CAFiles(), o.Files...)
	if err := images.BuildAMI(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	return o.Out
}

// addVolume adds a second volume to the world, built from o.
func addVolume(t *testing.T, w *harness.World, tags map[string]string, o images.VolumeOpts) string {
	t.Helper()
	id := sim.NewVolumeID()
	tags = maps.Clone(tags)
	tags[iampolicy.DefaultTagKey] = iampolicy.DefaultTagValue // as spotroot volume create tags it
	o.Out, o.TestinitBin = filepath.Join(w.Dir, id+".img"), w.Env.TestinitBin
	if err := images.BuildVolume(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if err := w.Sim.AddVolume(sim.Volume{ID: id, AZ: harness.AZ, Type: "gp3", SizeGiB: 1, Tags: tags, ImagePath: o.Out, State: sim.VolumeAvailable}); err != nil {
		t.Fatal(err)
	}
	return id
}

func reportLine(r *harness.BootResult, path string) string {
	m := regexp.MustCompile(`(?m)^TESTINIT-REPORT ` + regexp.QuoteMeta(path) + ` (.*)$`).FindStringSubmatch(r.Console)
	if m == nil {
		return "(no report)"
	}
	return strings.TrimSpace(m[1])
}

// buildXFSVolume makes a whole-disk xfs volume holding testinit, populated
// through a loop mount in a private mount namespace.
func buildXFSVolume(t *testing.T, w *harness.World, out string) {
	t.Helper()
	for _, tool := range []string{"mkfs.xfs", "unshare", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, "requires root tools: "+tool+" (xfsprogs)")
		}
	}
	mnt := t.TempDir()
	script := `set -e
truncate -s 320M "$IMG"
mkfs.xfs -q -f -L xroot "$IMG"
mount -o loop "$IMG" "$MNT"
mkdir -p "$MNT/sbin" "$MNT/dev" "$MNT/proc" "$MNT/sys" "$MNT/run" "$MNT/tmp" "$MNT/etc/spotroot-test" "$MNT/var/lib/spotroot-test"
cp "$INIT" "$MNT/sbin/init"
echo persistent > "$MNT/etc/spotroot-test/kind"
umount "$MNT"`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "IMG="+out, "MNT="+mnt, "INIT="+w.Env.TestinitBin)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build xfs volume: %v\n%s", err, b)
	}
}

func TestConfigScenarios(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"userdata-mime", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			ud := "Content-Type: multipart/mixed; boundary=\"==BOUNDARY==\"\nMIME-Version: 1.0\n\n" +
				"--==BOUNDARY==\nContent-Type: text/cloud-config; charset=\"us-ascii\"\n\n#cloud-config\npackages: [htop]\n\n" +
				"--==BOUNDARY==\nContent-Type: text/x-spotroot; charset=\"us-ascii\"\n\nvolume:\n  tag: {Name: home-root}\n" +
				"--==BOUNDARY==--\n"
			r := bootOpts(t, w, harness.BootOpts{UserData: []byte(ud)})
			expect(t, r, "persistent", execPersistent)
		}},
		{"userdata-gzip", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			zw.Write(harness.DefaultUserData)
			zw.Close()
			r := bootOpts(t, w, harness.BootOpts{UserData: gz.Bytes()})
			expect(t, r, "persistent", execPersistent)
		}},
		{"cmdline-overrides", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			// User-data names a volume that does not exist; the command line wins.
			r := bootOpts(t, w, harness.BootOpts{
				UserData:   userData("  volume: {tag: {Name: no-such-volume}}\n"),
				KernelArgs: []string{"spotroot.volume=" + w.VolumeID},
			})
			expect(t, r, "persistent", execPersistent)
			// The effect, from EC2's side: the instance attached the named
			// volume and never looked for user-data's tag. (Its own "attach
			// requested" line is missing when the simulator loses the answer.)
			attached := false
			for _, e := range audit(t, w) {
				if e.UserIdentity.SourceInstance != r.InstanceID {
					continue
				}
				// Any outcome: a committed attach whose answer was lost
				// shows as InternalError, its retry as VolumeInUse.
				if e.EventName == "AttachVolume" && e.RequestParameters["VolumeId"] == w.VolumeID {
					attached = true
				}
				for k, v := range e.RequestParameters {
					if v == "no-such-volume" {
						t.Errorf("%s %s=%s: the boot looked for user-data's volume although the command line names one", e.EventName, k, v)
					}
				}
			}
			if !attached {
				t.Errorf("no AttachVolume of %s by %s in the audit log", w.VolumeID, r.InstanceID)
			}
		}},
		{"image-config-only", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			ami := customAMI(t, w, images.AMIOpts{ImageConfig: []byte("spotroot:\n" + tagRoot)})
			r := bootOpts(t, w, harness.BootOpts{UserData: []byte{}, AMI: ami})
			expect(t, r, "persistent", execPersistent, `user-data-bytes=0`)
		}},
		{"bad-config", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot + "  timeouts:\n    attach: 60s\n    atach: 5s\n")})
			expect(t, r, "image", execImage, `^spotroot: FAILED config: user-data line 7: spotroot.timeouts.atach: unknown field \(known: network, imds, attach, device, detach, create, move, fsck\)`)
			// The failure is visible from outside: the instance tagged itself.
			if inst, _ := w.Sim.Instance(r.InstanceID); inst.Tags["spotroot:boot"] != "failed:config" {
				t.Errorf("instance tags %v, want spotroot:boot=failed:config", inst.Tags)
			}
		}},
		{"not-configured", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			r := bootOpts(t, w, harness.BootOpts{UserData: []byte("#cloud-config\npackages: [htop]\n")})
			expect(t, r, "image", execImage, `^spotroot: not configured: no spotroot configuration`)
			if strings.Contains(r.Console, "FAILED") {
				t.Errorf("an unconfigured instance must boot quietly, not fail")
			}
		}},
		{"data-home", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			ami := customAMI(t, w, images.AMIOpts{Files: []images.File{
				{Path: "etc/spotroot-test/write-file", Data: []byte("/home/survivor\n")},
				{Path: "etc/spotroot-test/report", Data: []byte("/home/survivor\n")},
			}})
			ud := userData("  volumes:\n    - tag: {Name: home-root}\n      mount: /home\n")
			first := bootOpts(t, w, harness.BootOpts{UserData: ud, AMI: ami})
			expect(t, first, "image", execImage, `^spotroot: mount /home ok in`, `data volumes mounted`)
			if got := reportLine(first, "/home/survivor"); got != "missing" {
				t.Errorf("first boot found /home/survivor = %q on a fresh volume", got)
			}
			second := bootOpts(t, w, harness.BootOpts{UserData: ud, AMI: ami})
			expect(t, second, "image", execImage, `^spotroot: mount /home ok in`)
			if got := reportLine(second, "/home/survivor"); got != "kind=image counter=1" {
				t.Errorf("the replacement found /home/survivor = %q, want the first boot's file", got)
			}
		}},
		{"data-docker-and-root", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			rebuildVolume(t, w, images.VolumeOpts{Files: []images.File{{Path: "etc/spotroot-test/report", Data: []byte("/var/lib/docker/marker\n")}}})
			addVolume(t, w, map[string]string{"Name": "docker"}, images.VolumeOpts{Layout: "whole",
				Files: []images.File{{Path: "marker", Data: []byte("docker-volume\n")}}})
			ud := userData("  volumes:\n    - tag: {Name: docker}\n      mount: /var/lib/docker\n    - tag: {Name: home-root}\n")
			r := bootOpts(t, w, harness.BootOpts{UserData: ud})
			expect(t, r, "persistent", execPersistent, `^spotroot: mount ok in`, `^spotroot: mount /var/lib/docker ok in`)
			if got := reportLine(r, "/var/lib/docker/marker"); got != "docker-volume" {
				t.Errorf("/var/lib/docker/marker on the persistent root = %q", got)
			}
		}},
		{"xfs-root", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			v, _ := w.Sim.Volume(w.VolumeID)
			buildXFSVolume(t, w, v.ImagePath)
			r := bootOpts(t, w, harness.BootOpts{UserData: userData(tagRoot)})
			expect(t, r, "persistent", execPersistent, `filesystem device=/dev/nvme1n1 fs="xfs label=xroot`, `loaded filesystem modules modules=libcrc32c,xfs`)
		}},
		{"gpt-label", func(t *testing.T) {
			w := newWorld(t, harness.WorldOpts{})
			rebuildVolume(t, w, images.VolumeOpts{PartLabel: "persist"})
			r := bootOpts(t, w, harness.BootOpts{UserData: userData("  volume:\n    tag: {Name: home-root}\n    partition: label:persist\n")})
			expect(t, r, "persistent", execPersistent, `filesystem device=/dev/nvme1n1p1 partition=1 label=persist`)
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, sc.run)
	}
}
