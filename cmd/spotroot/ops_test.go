package main

import (
	"flag"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/ops"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// Fixed ids, so dry-run output is stable.
const (
	tInstance = "i-0a1b2c3d4e5f60718"
	tRootVol  = "vol-0aaaaaaaaaaaaaaa1"
	tAMI      = "ami-0123456789abcdef0"
)

// simAccount serves a simulated account and points the default credential
// chain and --endpoint (via SPOTROOT_EC2_ENDPOINT) at it.
func simAccount(t *testing.T) *sim.World {
	t.Helper()
	w, err := sim.Load(filepath.Join(t.TempDir(), "world.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The operator commands are not the boot path: their duplicate-name
	// check reads a Describe that may lag a volume created a second ago,
	// and a lost RequestSpotInstances answer makes the SDK request twice
	// (the simulator has no ClientToken for it yet). Until they are
	// hardened, these tests run with a consistent, loss-free EC2.
	for _, b := range []string{sim.HostileConsistency, sim.HostileLost} {
		if err := w.DisableHostile(b, "operator commands are not yet hardened against "+b+" (see the comment)"); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AddInstance(sim.Instance{ID: tInstance, AZ: "us-east-1b", Lifecycle: "on-demand",
		BlockDevices: map[string]string{"/dev/xvda": tRootVol}}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddImage(sim.Image{ID: tAMI, Name: "spotroot-debian-12"}); err != nil {
		t.Fatal(err)
	}
	s := sim.NewServer(w)
	srv := httptest.NewServer(s.EC2Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(s.Close)
	op := w.OperatorCredentials()
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": op.AccessKeyID, "AWS_SECRET_ACCESS_KEY": op.SecretAccessKey, "AWS_SESSION_TOKEN": "",
		"AWS_REGION": "us-east-1", "AWS_PROFILE": "", "AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
		"AWS_EC2_METADATA_DISABLED": "true", ops.EndpointEnv: srv.URL,
	} {
		t.Setenv(k, v)
	}
	old := ops.PollInterval
	ops.PollInterval = 5 * time.Millisecond
	t.Cleanup(func() { ops.PollInterval = old })
	return w
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/spotroot -update)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs from %s (rerun with -update if intended):\n--- got ---\n%s--- want ---\n%s", name, p, got, want)
	}
}

var volID = regexp.MustCompile(`vol-[0-9a-f]{17}`)

func TestVolumeCreateLaunchAgainstSim(t *testing.T) {
	w := simAccount(t)
	code, out, errOut := runCmd("", "volume", "create", "--from-instance", tInstance, "--name", "home", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run: %d %s", code, errOut)
	}
	golden(t, "volume-create-dry-run", out)
	if len(w.Snapshots) != 0 || len(w.Volumes) != 1 {
		t.Fatal("dry run created something")
	}

	code, out, errOut = runCmd("", "volume", "create", "--from-instance", tInstance, "--name", "home")
	if code != 0 {
		t.Fatalf("volume create: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	id := lines[len(lines)-1]
	v, ok := w.Volume(id)
	if !ok || v.State != sim.VolumeAvailable || v.AZ != "us-east-1b" || v.Tags["Name"] != "home" ||
		v.Tags[ops.ManagedKey] != "true" || v.SnapshotID == "" {
		t.Fatalf("volume %q: %+v\n%s", id, v, out)
	}
	if sn, _ := w.Snapshot(v.SnapshotID); sn.VolumeID != tRootVol || sn.State != "completed" {
		t.Fatalf("snapshot %+v", sn)
	}
	t.Logf("$ spotroot volume create --from-instance %s --name home\n%s", tInstance, out)

	// A second volume of the same name would make the boot refuse to choose.
	code, _, errOut = runCmd("", "volume", "create", "--size", "8", "--empty", "--az", "us-east-1b", "--name", "home")
	if code != 1 || !strings.Contains(errOut, "already has a volume named home") {
		t.Fatalf("duplicate name: %d %s", code, errOut)
	}

	code, out, errOut = runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--iam-instance-profile", "spotroot", "--dry-run")
	if code != 0 {
		t.Fatalf("launch --dry-run: %d %s", code, errOut)
	}
	golden(t, "launch-dry-run", volID.ReplaceAllString(out, "vol-VOLUME"))
	t.Logf("$ spotroot launch --volume home --instance-type m7i.large --iam-instance-profile spotroot --dry-run\n%s", out)
	if n := len(w.SpotRequests); n != 0 {
		t.Fatalf("dry run sent a request (%d)", n)
	}

	code, out, errOut = runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--launch-template", "home-lt", "--dry-run")
	if code != 0 {
		t.Fatalf("launch --launch-template --dry-run: %d %s", code, errOut)
	}
	golden(t, "launch-template-dry-run", volID.ReplaceAllString(out, "vol-VOLUME"))

	// For real: the instance lands in the volume's zone with user-data the
	// boot path accepts, tagged so the IAM policy lets it attach.
	code, out, errOut = runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--persistent")
	if code != 0 {
		t.Fatalf("launch: %d %s", code, errOut)
	}
	var req sim.SpotRequest
	for rid := range w.SpotRequests {
		req, _ = w.SpotRequest(rid)
	}
	inst, _ := w.Instance(req.InstanceID)
	if req.Type != "persistent" || req.InterruptionBehavior != "stop" || inst.AZ != "us-east-1b" || inst.Tags[ops.ManagedKey] != "true" || inst.ImageID != tAMI {
		t.Fatalf("request %+v instance %+v\n%s", req, inst, out)
	}
	cfg, err := config.Load(nil, inst.UserData, "")
	if err != nil || len(cfg.Volumes) != 1 || cfg.Volumes[0].Tag["Name"] != "home" {
		t.Fatalf("user-data %q: %+v %v", inst.UserData, cfg, err)
	}
	if err := w.Update(func(w *sim.World) error { return nil }); err != nil {
		t.Fatal(err)
	}

	code, out, errOut = runCmd("", "status", "--volume", "home")
	if code != 0 || !strings.Contains(out, "name=home") || !strings.Contains(out, "available") {
		t.Fatalf("status: %d %s %s", code, out, errOut)
	}

	code, _, errOut = runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--subnet", subnetOther(w), "--dry-run")
	if code != 1 || !strings.Contains(errOut, "but the volume is in us-east-1b") {
		t.Fatalf("subnet in another zone: %d %s", code, errOut)
	}
}

func subnetOther(w *sim.World) string {
	id := ""
	w.View(func(w *sim.World) {
		for sid, s := range w.Subnets {
			if s.AZ == "us-east-1a" {
				id = sid
			}
		}
	})
	return id
}

func TestIAMPolicyGolden(t *testing.T) {
	code, out, _ := runCmd("", "iam-policy")
	if code != 0 {
		t.Fatal(code)
	}
	golden(t, "iam-policy", out)
}

func TestUserdataGolden(t *testing.T) {
	for _, f := range []string{"cloud-config", "mime"} {
		code, out, errOut := runCmd("", "userdata", "--volume", "home", "--mount", "/home", "--format", f)
		if code != 0 {
			t.Fatalf("%s: %s", f, errOut)
		}
		golden(t, "userdata-"+f, out)
		cfg, err := config.Load(nil, []byte(out), "")
		if err != nil || len(cfg.Volumes) != 1 || cfg.Volumes[0].Mount != "/home" || cfg.Volumes[0].Tag["Name"] != "home" {
			t.Fatalf("%s: boot path reads %+v, %v", f, cfg, err)
		}
	}
	if code, _, errOut := runCmd("", "userdata", "--mount", "home"); code != 2 || !strings.Contains(errOut, "exactly one of") {
		t.Fatalf("no volume: %d %s", code, errOut)
	}
}

func TestHelpOfEveryCommand(t *testing.T) {
	for _, c := range []string{"volume", "launch", "userdata", "iam-policy", "install", "status", "watch"} {
		args := []string{c, "--help"}
		if c == "volume" {
			args = []string{c, "create", "--help"}
		}
		code, out, errOut := runCmd("", args...)
		if code != 0 || !strings.Contains(out+errOut, "usage: spotroot "+c) {
			t.Errorf("%s --help: %d %q", c, code, out+errOut)
		}
	}
}
