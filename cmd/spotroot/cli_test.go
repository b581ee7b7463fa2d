package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/ops"
)

// Every command and subcommand prints its full help — usage, every flag,
// the exit statuses — on stdout and exits 0.
func TestHelpIsCompleteAndOnStdout(t *testing.T) {
	cases := map[string][]string{
		"":              {"--help"},
		"help":          {"help"},
		"help status":   {"help", "status"},
		"volume":        {"volume", "--help"},
		"volume create": {"volume", "create", "--help"},
		"config":        {"config", "--help"},
		"config check":  {"config", "check", "--help"},
		"install":       {"install", "--help"},
		"status":        {"status", "--help"},
		"watch":         {"watch", "--help"},
		"userdata":      {"userdata", "--help"},
		"iam-policy":    {"iam-policy", "--help"},
		"launch":        {"launch", "--help"},
	}
	flagOf := map[string]string{"volume": "-from-instance", "volume create": "-from-instance", "config check": "-output",
		"install": "-uninstall", "status": "-output", "watch": "-log-format", "userdata": "-format", "iam-policy": "-tag-key", "launch": "-output"}
	for name, args := range cases {
		code, out, errOut := runCmd("", args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "usage: spotroot") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
			continue
		}
		if f := flagOf[name]; f != "" && !strings.Contains(out, f) {
			t.Errorf("%v: help does not list %s:\n%s", args, f, out)
		}
		if strings.HasSuffix(strings.TrimSpace(out), "Flags:") {
			t.Errorf("%v: help ends at an empty Flags:\n%s", args, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"volume", "delete"}, `unknown subcommand "delete"`},
		{[]string{"volume"}, "missing subcommand"},
		{[]string{"config", "lint", "x"}, `unknown subcommand "lint"`},
		{[]string{"config"}, "missing subcommand"},
		{[]string{"config", "schema", "extra"}, `unexpected argument "extra"`},
		{[]string{"config", "check", "a", "b"}, `unexpected argument "b"`},
		{[]string{"status", "stray"}, `unexpected argument "stray"`},
		{[]string{"install", "stray", "--uninstall"}, `unexpected argument "stray"`},
		// Flags after a stray argument used to be ignored and the daemon started.
		{[]string{"watch", "stray", "--once"}, `unexpected argument "stray"`},
		{[]string{"watch", "--interval", "500ms"}, "at least 1s"},
		{[]string{"watch", "--interval", "1m"}, "at most 30s"},
		{[]string{"status", "--output", "yaml"}, `--output "yaml"`},
		{[]string{"version", "x"}, `unexpected argument "x"`},
	} {
		code, out, errOut := runCmd("", c.args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errOut, c.want)
		}
	}
}

// `config check` reads image config files (no header) as well as user-data.
func TestConfigCheckImageFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(f, []byte("# baked into the image\nspotroot:\n  volume:\n    tag: {Name: home-root}\n  image_init: /sbin/init.real\n"), 0o644)
	code, out, errOut := runCmd("", "config", "check", f)
	if code != 0 || !strings.Contains(out, "ok (image)") || !strings.Contains(out, "image_init: /sbin/init.real") {
		t.Fatalf("image config: %d %q %q", code, out, errOut)
	}
	os.WriteFile(f, []byte("spotroot:\n  volume:\n    tag: {Name: a}\n  init: sbin/init\n"), 0o644)
	code, _, errOut = runCmd("", "config", "check", f)
	if code != 1 || !strings.Contains(errOut, "image config line 4: spotroot.init: must be an absolute path") {
		t.Fatalf("bad image config: %d %q", code, errOut)
	}
	// The package's example is all comments: it configures nothing.
	code, _, errOut = runCmd("", "config", "check", "../../packaging/config.yaml.example")
	if code != 1 || !strings.Contains(errOut, "no spotroot configuration") {
		t.Fatalf("example: %d %q", code, errOut)
	}
}

func TestConfigCheckJSON(t *testing.T) {
	code, out, _ := runCmd("#cloud-config\nspotroot:\n  volumes:\n    - tag: {Name: a}\n      mount: /home\n    - tag: {Name: b}\n      mount: /home\n",
		"config", "check", "--output", "json")
	var r checkResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 1 || r.Valid || len(r.Errors) != 1 ||
		!strings.Contains(r.Errors[0], "user-data line 7: spotroot.volumes[1].mount") {
		t.Fatalf("duplicate mounts as JSON: %d %v %+v\n%s", code, err, r, out)
	}
	code, out, _ = runCmd("\xef\xbb\xbf#cloud-config\nspotroot:\n  volume: {tag: {Name: y}}\n", "config", "check", "--output", "json", "-")
	r = checkResult{}
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.Valid || r.Kind != "user-data" ||
		len(r.Warnings) != 1 || r.Config.Volumes[0].Tag["Name"] != "y" || r.Config.Volumes[0].Mount != "/" {
		t.Fatalf("valid as JSON: %d %v %+v\n%s", code, err, r, out)
	}
	t.Logf("$ spotroot config check --output json -\n%s", out)
}

// The status on an instance: IMDS identity, volumes through the instance
// profile's credentials (what the PID 1 build has), the boot timeline.
// It used to print "<nil>" and exit 1 in the PID 1 build.
func TestStatusOnInstanceJSON(t *testing.T) {
	w := simAccount(t)
	const iid = "i-0b1b2c3d4e5f60719"
	vol := "vol-0bbbbbbbbbbbbbbb2"
	if err := w.AddInstance(sim.Instance{ID: iid, AZ: "us-east-1b", Lifecycle: "spot", Role: "spotroot",
		BlockDevices: map[string]string{"/dev/xvda": "vol-0ccccccccccccccc3"}}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddVolume(sim.Volume{ID: vol, AZ: "us-east-1b", SizeGiB: 8, Tags: map[string]string{"Name": "home", ops.ManagedKey: "true"},
		State: sim.VolumeInUse, Attachments: []sim.Attachment{{InstanceID: iid, Device: "/dev/sdf", State: "attached"}}}); err != nil {
		t.Fatal(err)
	}
	s := sim.NewServer(w)
	imds := httptest.NewServer(s.IMDSHandler(iid))
	t.Cleanup(imds.Close)
	tl := filepath.Join(t.TempDir(), "timeline.log")
	os.WriteFile(tl, []byte("spotroot: imds ok in 12ms\nspotroot: claim ok in 300ms\nspotroot: exec /sbin/init\n"), 0o644)
	code, out, errOut := runCmd("", "status", "--output", "json", "--imds-endpoint", imds.URL, "--timeline", tl)
	var r ops.InstanceReport
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || errOut != "" {
		t.Fatalf("status: %d %v\nstdout %s\nstderr %s", code, err, out, errOut)
	}
	if r.InstanceID != iid || len(r.Volumes) != 1 || r.Volumes[0].ID != vol || r.Volumes[0].Attachments[0].InstanceID != iid || len(r.Boot) != 3 || r.BootFailed != "" {
		t.Fatalf("report %+v", r)
	}
	t.Logf("$ spotroot status --output json\n%s", out)
	// The same with the image's build (-tags pid1, no default credential
	// chain), which used to print "… <nil>" and exit 1.
	bin := filepath.Join(t.TempDir(), "spotroot-pid1")
	build := exec.Command("go", "build", "-tags", "pid1,nethttpomithttp2", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("pid1 build: %v\n%s", err, b)
	}
	cmd := exec.Command(bin, "status", "--imds-endpoint", imds.URL, "--timeline", tl)
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil || se.Len() > 0 || strings.Contains(so.String(), "<nil>") || !strings.Contains(so.String(), vol) {
		t.Fatalf("pid1 build status: %v\nstdout %s\nstderr %s", err, so.String(), se.String())
	}
	// Not on EC2: exit 3, nothing on stdout.
	code, out, errOut = runCmd("", "status", "--imds-endpoint", "http://127.0.0.1:1")
	if code != exitNoIMDS || out != "" || !strings.Contains(errOut, "not on an EC2 instance") {
		t.Fatalf("off EC2: %d %q %q", code, out, errOut)
	}
}

// volume create: the id alone on stdout (VOL=$(…) captures it), progress
// with percent and elapsed time on stderr; after --timeout exit 4 with the
// command that resumes, and that command finishes the job.
func TestVolumeCreateProgressAndResume(t *testing.T) {
	w := simAccount(t)
	w.Update(func(w *sim.World) error { w.CreateLatency = 400 * time.Millisecond; return nil })
	oldEvery := ops.ProgressEvery
	ops.ProgressEvery = 50 * time.Millisecond
	t.Cleanup(func() { ops.ProgressEvery = oldEvery })
	code, out, errOut := runCmd("", "volume", "create", "--from-instance", tInstance, "--name", "home")
	if code != 0 || !volID.MatchString(out) || strings.TrimSpace(out) != volID.FindString(out) {
		t.Fatalf("stdout must be the volume id alone: %d %q\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "% after ") || !strings.Contains(errOut, "left") || !strings.Contains(errOut, "waiting until available") {
		t.Fatalf("no progress on stderr:\n%s", errOut)
	}
	t.Logf("$ VOL=$(spotroot volume create --from-instance %s --name home)\n%s$ echo $VOL\n%s", tInstance, errOut, out)
	if v, ok := w.Volume(strings.TrimSpace(out)); !ok || v.State != sim.VolumeAvailable {
		t.Fatalf("volume %q: %+v", out, v)
	}

	// Too short a timeout: the snapshot keeps going, the command says how to go on.
	w.Update(func(w *sim.World) error { w.CreateLatency = 2 * time.Second; return nil })
	code, out, errOut = runCmd("", "volume", "create", "--from-instance", tInstance, "--name", "home2", "--timeout", "300ms", "--output", "json")
	var res struct {
		Timeout bool
		Resume  string
		Result  ops.VolumeResult
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitTimeout || !res.Timeout || res.Result.SnapshotID == "" ||
		!strings.HasPrefix(res.Resume, "spotroot volume create --from-snapshot "+res.Result.SnapshotID) {
		t.Fatalf("timeout: %d %v %+v\nstdout %s\nstderr %s", code, err, res, out, errOut)
	}
	args := strings.Fields(strings.TrimPrefix(res.Resume, "spotroot "))
	code, out, errOut = runCmd("", append(args, "--output", "json")...)
	var vr ops.VolumeResult
	if err := json.Unmarshal([]byte(out), &vr); err != nil || code != 0 || vr.VolumeID == "" || vr.SnapshotID != res.Result.SnapshotID {
		t.Fatalf("resume %v: %d %v\n%s\n%s", args, code, err, out, errOut)
	}
	if v, _ := w.Volume(vr.VolumeID); v.Tags["Name"] != "home2" || v.SnapshotID != res.Result.SnapshotID || v.State != sim.VolumeAvailable {
		t.Fatalf("resumed volume %+v", v)
	}
	if n := len(w.Snapshots); n != 2 {
		t.Fatalf("%d snapshots; the resume must reuse the first one", n)
	}
}

func TestLaunchJSON(t *testing.T) {
	simAccount(t)
	if code, _, errOut := runCmd("", "volume", "create", "--from-instance", tInstance, "--name", "home"); code != 0 {
		t.Fatal(errOut)
	}
	code, out, errOut := runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--output", "json")
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 {
		t.Fatalf("launch --output json: %d %v\n%s\n%s", code, err, out, errOut)
	}
	if id, _ := r["instance_id"].(string); !strings.HasPrefix(id, "i-") {
		t.Fatalf("no instance id in %s", out)
	}
}

func TestWatchOnceAndLogs(t *testing.T) {
	// IMDS unreachable: --once used to exit 0.
	code, _, errOut := runCmd("", "watch", "--once", "--imds-endpoint", "http://127.0.0.1:1")
	if code != exitNoIMDS || !strings.Contains(errOut, "--once") {
		t.Fatalf("--once without IMDS: %d %q", code, errOut)
	}
	w, err := sim.Load("")
	if err != nil {
		t.Fatal(err)
	}
	iid := sim.NewInstanceID()
	w.AddInstance(sim.Instance{ID: iid, AZ: "us-east-1a", BlockDevices: map[string]string{"/dev/xvda": sim.NewVolumeID()}})
	s := sim.NewServer(w)
	t.Cleanup(s.Close)
	srv := httptest.NewServer(s.IMDSHandler(iid))
	t.Cleanup(srv.Close)
	s.PostRebalance(iid, time.Now())
	// --interval 10s is slower than the default, not faster: accepted.
	code, out, errOut := runCmd("", "watch", "--once", "--interval", "10s", "--log-format", "json", "--hooks-dir", t.TempDir(), "--imds-endpoint", srv.URL)
	if code != 0 || out != "" {
		t.Fatalf("--once: %d %q %q", code, out, errOut)
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["msg"] == nil || rec["time"] == nil {
			t.Fatalf("not a JSON log line: %q (%v)", l, err)
		}
		if strings.Contains(rec["msg"].(string), "rebalance notice") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("rebalance notice logged %d times:\n%s", n, errOut)
	}
}

// The unit's ExecCondition: 0 where IMDS answers, 1 where nothing does
// (and the DMI data of this test machine say nothing of EC2).
func TestWatchCheckEC2(t *testing.T) {
	w, _ := sim.Load("")
	iid := sim.NewInstanceID()
	w.AddInstance(sim.Instance{ID: iid, AZ: "us-east-1a", BlockDevices: map[string]string{"/dev/xvda": sim.NewVolumeID()}})
	s := sim.NewServer(w)
	t.Cleanup(s.Close)
	srv := httptest.NewServer(s.IMDSHandler(iid))
	t.Cleanup(srv.Close)
	if code, _, errOut := runCmd("", "watch", "--check-ec2", "--imds-endpoint", srv.URL); code != 0 {
		t.Fatalf("with IMDS: %d %s", code, errOut)
	}
	if b, _ := os.ReadFile("/sys/class/dmi/id/sys_vendor"); strings.Contains(string(b), "Amazon") {
		t.Skip("this machine is an EC2 instance")
	}
	if code, _, errOut := runCmd("", "watch", "--check-ec2", "--imds-endpoint", "http://127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "not an EC2 instance") {
		t.Fatalf("without IMDS: %d %s", code, errOut)
	}
}

// The unit runs --check-ec2 with the default endpoint, "auto": the probe
// asks EC2's real IMDS addresses (a URL "auto/latest/api/token" never
// answered, so every instance without Amazon DMI data skipped the watcher).
func TestWatchCheckEC2AutoProbesBothAddresses(t *testing.T) {
	if got := probeEndpoints("auto"); !slices.Equal(got, []string{"http://169.254.169.254", "http://[fd00:ec2::254]"}) {
		t.Fatalf("auto probes %q", got)
	}
	if got := probeEndpoints("http://127.0.0.1:9"); !slices.Equal(got, []string{"http://127.0.0.1:9"}) {
		t.Fatalf("an explicit endpoint probes %q", got)
	}
}
