package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/iampolicy"
	"github.com/spotroot/spotroot/internal/ops"
)

func TestIAMPolicyFromConfig(t *testing.T) {
	ud := filepath.Join(t.TempDir(), "user-data.yaml")
	os.WriteFile(ud, []byte("#cloud-config\nspotroot:\n  volume:\n    tag: {Name: home}\n    create: {from: empty, size: 4}\n  force_detach: true\n"), 0o644)
	code, out, errOut := runCmd("", "iam-policy", "--config", ud, "--partition", "aws-us-gov")
	if code != 0 {
		t.Fatalf("%d %s", code, errOut)
	}
	var p iampolicy.Policy
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	want := []string{"ec2:AttachVolume", "ec2:CreateSnapshot", "ec2:CreateTags", "ec2:CreateVolume", "ec2:DescribeInstances",
		"ec2:DescribeSnapshots", "ec2:DescribeVolumes", "ec2:DetachVolume"}
	if got := p.Actions(); !slices.Equal(got, want) {
		t.Errorf("--config allows %v, want %v", got, want)
	}
	if !strings.Contains(out, "arn:aws-us-gov:ec2:*:*:volume/*") || !strings.Contains(out, `"aws:RequestTag/Name": "home"`) {
		t.Errorf("partition or selector missing:\n%s", out)
	}

	code, out, _ = runCmd("", "iam-policy", "--explain")
	if code != 0 || !strings.Contains(out, "SpotrootTagOwnBootState") || !strings.Contains(out, "spotroot:boot") ||
		!strings.Contains(out, "Allowed actions: ec2:AttachVolume, ec2:CreateTags, ec2:DescribeInstances, ec2:DescribeVolumes") {
		t.Errorf("--explain:\n%s", out)
	}
	code, out, _ = runCmd("", "iam-policy", "--create", "--explain")
	if code != 0 || !strings.Contains(out, "[--create]") {
		t.Errorf("--create --explain:\n%s", out)
	}
	for _, bad := range [][]string{{"--partition", "aws-iso"}, {"--delete-moved"}, {"--kms-key", "alias/x"}} {
		if code, _, errOut := runCmd("", append([]string{"iam-policy"}, bad...)...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d %q", bad, code, errOut)
		}
	}
	if code, _, errOut := runCmd("", "iam-policy", "--config", "/nonexistent"); code != 1 || !strings.Contains(errOut, "/nonexistent") {
		t.Errorf("missing --config file: exit %d %q", code, errOut)
	}
}

// launch runs the instance with RunInstances, tagged at creation (no
// CreateTags afterwards), and --launch-template adds a version the second
// time; a denied dry run says so.
func TestLaunchRunInstances(t *testing.T) {
	w := simAccount(t)
	if code, _, errOut := runCmd("", "volume", "create", "--size", "1", "--empty", "--az", "us-east-1b", "--name", "home"); code != 0 {
		t.Fatal(errOut)
	}
	code, out, errOut := runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large")
	if code != 0 {
		t.Fatalf("launch: %s", errOut)
	}
	evs, err := sim.ReadAudit(sim.AuditPath(w.Path()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var run sim.AuditEvent
	for _, e := range evs {
		names = append(names, e.EventName)
		if e.EventName == "RunInstances" {
			run = e
		}
	}
	if slices.Contains(names[slices.Index(names, "RunInstances"):], "CreateTags") || run.RequestTags["instance"][ops.ManagedKey] != "true" ||
		run.RequestParameters["InstanceMarketOptions.MarketType"] != "spot" {
		t.Errorf("calls %v; RunInstances %+v", names, run)
	}
	var inst sim.Instance
	w.View(func(sw *sim.World) {
		for _, i := range sw.Instances {
			if i.Tags["spotroot:volume"] == "home" {
				inst = *i
			}
		}
	})
	if inst.AZ != "us-east-1b" || inst.Lifecycle != "spot" || inst.Tags[ops.ManagedKey] != "true" {
		t.Errorf("instance %+v\n%s", inst, out)
	}

	for v := 1; v <= 2; v++ {
		code, out, errOut = runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--launch-template", "home-lt")
		if code != 0 {
			t.Fatalf("launch template %d: %s", v, errOut)
		}
	}
	lt, ok := w.LaunchTemplate("home-lt")
	if !ok || len(lt.Versions) != 1 || !strings.Contains(out, "added version 2") {
		t.Errorf("template %+v\n%s", lt, out)
	}
	if _, spot := lt.Data["InstanceMarketOptions.MarketType"]; spot {
		t.Errorf("the template requests Spot itself; Auto Scaling's MixedInstancesPolicy rejects that: %v", lt.Data)
	}

	w.Update(func(sw *sim.World) error { sw.DenyActions = []string{"RunInstances"}; return nil })
	code, out, errOut = runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--dry-run")
	if code != 1 || !strings.Contains(out, "UnauthorizedOperation: you may not call RunInstances") || !strings.Contains(errOut, "UnauthorizedOperation") {
		t.Errorf("denied dry run: %d\n%s\n%s", code, out, errOut)
	}
	code, _, errOut = runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--tag-key", "team", "--tag-value", "blue", "--dry-run")
	if code != 1 || !strings.Contains(errOut, "not tagged team=blue") {
		t.Errorf("volume without the tag: %d %s", code, errOut)
	}
}

// --tag-key agrees across volume create, launch and iam-policy.
func TestTagKeyAgrees(t *testing.T) {
	w := simAccount(t)
	if code, _, errOut := runCmd("", "volume", "create", "--size", "1", "--empty", "--az", "us-east-1b", "--name", "home", "--tag-key", "team", "--tag-value", "blue"); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := runCmd("", "launch", "--volume", "home", "--instance-type", "m7i.large", "--tag-key", "team", "--tag-value", "blue"); code != 0 {
		t.Fatal(errOut)
	}
	_, pol, _ := runCmd("", "iam-policy", "--tag-key", "team", "--tag-value", "blue")
	var inst sim.Instance
	var vol sim.Volume
	w.View(func(sw *sim.World) {
		for _, i := range sw.Instances {
			if i.Tags["spotroot:volume"] == "home" {
				inst = *i
			}
		}
		for _, v := range sw.Volumes {
			if v.Tags["Name"] == "home" {
				vol = *v
			}
		}
	})
	if inst.Tags["team"] != "blue" || vol.Tags["team"] != "blue" || !strings.Contains(pol, `"aws:ResourceTag/team": "blue"`) {
		t.Errorf("instance tags %v, volume tags %v, policy\n%s", inst.Tags, vol.Tags, pol)
	}
}

// The e2e harness gives each scenario's role iampolicy.Render(ForConfig(…)):
// it must be byte for byte what `spotroot iam-policy --config` prints.
func TestIAMPolicyCLIMatchesLibrary(t *testing.T) {
	for _, body := range []string{
		"  volume:\n    tag: {Name: home-root}\n",
		"  volume:\n    pool: {spotroot:pool: web}\n    create: {from: ami}\n  force_detach: true\n",
		"  volumes:\n    - tag: {Name: scratch}\n      mount: /home\n      create: {from: snap-0123456789abcdef0}\n  cross_az: fail\n",
	} {
		ud := []byte("#cloud-config\nspotroot:\n" + body)
		f := filepath.Join(t.TempDir(), "ud.yaml")
		os.WriteFile(f, ud, 0o644)
		code, out, errOut := runCmd("", "iam-policy", "--config", f)
		if code != 0 {
			t.Fatal(errOut)
		}
		c, err := config.Load(nil, ud, "")
		if err != nil {
			t.Fatal(err)
		}
		want, _ := iampolicy.Render(iampolicy.ForConfig(c))
		if out != string(want) {
			t.Errorf("CLI and library differ for\n%s--- CLI ---\n%s--- library ---\n%s", body, out, want)
		}
	}
}
