package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/sim"
)

// Instance families beyond the plain Nitro x86 instance: see also the arm64
// tier (arm64_test.go, make e2e-arm64) and the IPv6-only subnet
// (ipv6_test.go).

// attachLog records the device names AttachVolume was called with, at the
// EC2 API's door (whatever the simulator then answers).
type attachLog struct {
	mu      sync.Mutex
	devices []string
}

func (a *attachLog) wrap(h http.Handler) http.Handler {
	return &sim.Tap{Next: h, Before: func(c sim.TapCall) {
		if c.Action == "AttachVolume" {
			a.mu.Lock()
			a.devices = append(a.devices, c.Params.Get("Device"))
			a.mu.Unlock()
		}
	}}
}

func (a *attachLog) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.devices...)
}

// instanceStore makes n instance-store disks for a VM: NVMe controllers at
// boot with an "AWS…" serial (QEMU cannot set the model "Amazon EC2 NVMe
// Instance Storage"). Each holds a bootable-looking root filesystem (GPT
// partition "root", testinit as /sbin/init, kind=instance-store): a boot
// that took one would say so in its TESTINIT line. Returns the QEMU
// arguments and the images.
func instanceStore(t *testing.T, e *harness.Env, n int) (args, imgs []string) {
	t.Helper()
	dir := t.TempDir()
	for i := range n {
		img := filepath.Join(dir, fmt.Sprintf("ephemeral%d.img", i))
		if err := images.BuildVolume(context.Background(), images.VolumeOpts{Out: img, TestinitBin: e.TestinitBin,
			SizeMiB: 32, Files: []images.File{{Path: "etc/spotroot-test/kind", Data: []byte("instance-store\n")}}}); err != nil {
			t.Fatal(err)
		}
		node := fmt.Sprintf("ephemeral%d", i)
		serial := fmt.Sprintf("AWS%X", sha256.Sum256([]byte(t.Name()+node)))[:20]
		args = append(args,
			"-blockdev", "driver=raw,node-name="+node+",file.driver=file,file.filename="+img,
			"-device", "nvme,drive="+node+",serial="+serial)
		imgs = append(imgs, img)
	}
	return args, imgs
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// testInstanceStore boots an instance type with n instance-store disks
// present from power-on, beside which the EBS volume is hot-plugged. The
// volume is the root; the local disks are never chosen, never mounted
// (their images are byte-for-byte unchanged), and AttachVolume is never
// given a name the instance's block-device mapping gives them.
func testInstanceStore(t *testing.T, instanceType string, n int) {
	e := sharedEnv(t)
	log := &attachLog{}
	w := newWorld(t, harness.WorldOpts{WrapEC2: log.wrap})
	args, imgs := instanceStore(t, e, n)
	before := make([][32]byte, len(imgs))
	for i, img := range imgs {
		before[i] = fileSum(t, img)
	}
	// The launch mapped the local disks at /dev/sdf, /dev/sdg…: the names
	// spotroot would otherwise take first. DescribeInstances does not list
	// them; IMDS does (block-device-mapping/ephemeralN).
	var eph []string
	for i := range n {
		eph = append(eph, fmt.Sprintf("sd%c", 'f'+i))
	}
	var mapped []string
	r, err := w.Boot(context.Background(), harness.BootOpts{InstanceType: instanceType, ExtraArgs: args,
		WrapIMDS: ephemeralMappings(eph),
		WhileUp: func(ctx context.Context, vm *harness.Running) error {
			mapped = instanceStoreMappings(ephemeralMappings(eph)(w.Server.IMDSHandler(vm.InstanceID)))
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s (%s, %d instance-store disks) booted in %v: %s", r.InstanceID, instanceType, n, r.Elapsed, r.TestinitLine)
	checkPersistent(t, r, 1)
	for i, img := range imgs {
		if fileSum(t, img) != before[i] {
			t.Errorf("instance-store disk %d was written to", i)
		}
	}
	attached := log.list()
	if len(attached) == 0 {
		t.Fatal("no AttachVolume call recorded")
	}
	for _, d := range attached {
		for _, m := range mapped {
			if strings.TrimPrefix(d, "/dev/") == strings.TrimPrefix(m, "/dev/") {
				t.Errorf("AttachVolume was offered %s, an instance-store name (%v)", d, mapped)
			}
		}
	}
	if len(mapped) < n {
		t.Errorf("IMDS maps %v as instance storage, want at least %v", mapped, eph)
	}
	t.Logf("AttachVolume devices %v; instance-store mappings in IMDS %v", attached, mapped)
	if !strings.Contains(r.Console, "instance storage present; never chosen") {
		t.Errorf("spotroot did not notice the instance storage\n%s", r.Console)
	}
}

// instanceStoreMappings reads block-device-mapping/ephemeralN from the
// instance's IMDS (h: the handler the guest was served).
func instanceStoreMappings(h http.Handler) []string {
	get := func(method, path, token string) (int, string) {
		req, _ := http.NewRequest(method, "http://169.254.169.254"+path, nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		if token != "" {
			req.Header.Set("X-aws-ec2-metadata-token", token)
		}
		rec := &recorder{header: http.Header{}, code: http.StatusOK}
		h.ServeHTTP(rec, req)
		return rec.code, rec.body.String()
	}
	code, tok := get(http.MethodPut, "/latest/api/token", "")
	if code != http.StatusOK {
		return nil
	}
	code, list := get(http.MethodGet, "/latest/meta-data/block-device-mapping/", tok)
	if code != http.StatusOK {
		return nil
	}
	var out []string
	for _, k := range strings.Fields(list) {
		if strings.HasPrefix(k, "ephemeral") {
			if c, d := get(http.MethodGet, "/latest/meta-data/block-device-mapping/"+k, tok); c == http.StatusOK {
				out = append(out, strings.TrimSpace(d))
			}
		}
	}
	return out
}

// ephemeralMappings adds block-device-mapping/ephemeralN entries for names
// to IMDS, behind the same IMDSv2 token check as the rest of the tree
// (the simulator's own instance-store model may list more).
func ephemeralMappings(names []string) func(http.Handler) http.Handler {
	const base = "/latest/meta-data/block-device-mapping/"
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, base) {
				h.ServeHTTP(w, r)
				return
			}
			// Ask the simulator for the same path: its answer carries the
			// token check and whatever mappings it models itself.
			rec := &recorder{header: http.Header{}, code: http.StatusOK}
			h.ServeHTTP(rec, r)
			key := strings.TrimPrefix(r.URL.Path, base)
			switch {
			case rec.code == http.StatusUnauthorized || rec.code == http.StatusForbidden:
			case key == "":
				list := strings.Fields(rec.body.String())
				for i := range names {
					if k := fmt.Sprintf("ephemeral%d", i); !slices.Contains(list, k) {
						list = append(list, k)
					}
				}
				rec.code, rec.body = http.StatusOK, bytes.Buffer{}
				rec.body.WriteString(strings.Join(list, "\n"))
			case strings.HasPrefix(key, "ephemeral"):
				var i int
				if _, err := fmt.Sscanf(key, "ephemeral%d", &i); err == nil && i < len(names) {
					rec.code, rec.body = http.StatusOK, bytes.Buffer{}
					rec.body.WriteString(names[i])
				}
			}
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.Header().Del("Content-Length")
			w.WriteHeader(rec.code)
			w.Write(rec.body.Bytes())
		})
	}
}

type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(c int)           { r.code = c }

func TestFamilies(t *testing.T) {
	// c5d.large: one NVMe instance-store disk; m5d.4xlarge: two (EC2
	// User Guide, "Instance store volume limits for EC2 instances").
	t.Run("instance-store-one", func(t *testing.T) { testInstanceStore(t, "c5d.large", 1) })
	t.Run("instance-store-two", func(t *testing.T) { testInstanceStore(t, "m5d.4xlarge", 2) })
	t.Run("ipv6-only", testIPv6Only)
}
