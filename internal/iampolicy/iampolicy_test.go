package iampolicy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/config"
)

func build(t *testing.T, o Options) Policy {
	t.Helper()
	p, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultIsClaimOnly(t *testing.T) {
	p := build(t, Options{})
	want := []string{"ec2:AttachVolume", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:DescribeVolumes"}
	if got := p.Actions(); !slices.Equal(got, want) {
		t.Errorf("default policy allows %v, want %v", got, want)
	}
	b, err := p.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	for _, s := range p.Statement {
		if s.Effect != "Allow" {
			continue
		}
		if slices.Contains(s.Resource, "*") && !strings.HasPrefix(s.Sid, "SpotrootDescribe") {
			t.Errorf("%s allows %v on *", s.Sid, s.Action)
		}
		for _, a := range s.Action {
			if strings.Contains(a, "*") {
				t.Errorf("%s allows the wildcard action %s", s.Sid, a)
			}
		}
		if slices.Contains(s.Action, "ec2:CreateTags") && !slices.Equal(s.Resource, []string{"${ec2:SourceInstanceARN}"}) {
			t.Errorf("the default policy tags more than the instance itself: %+v", s)
		}
	}
	if !strings.Contains(p.Explain(), "spotroot:boot") {
		t.Errorf("--explain does not name the spotroot:boot statement:\n%s", p.Explain())
	}
}

func TestCapabilitiesAdd(t *testing.T) {
	base := build(t, Options{}).Actions()
	cases := []struct {
		o    Options
		adds []string
	}{
		{Options{Create: true, CreateFrom: []string{"empty"}}, []string{"ec2:CreateVolume"}},
		{Options{Create: true, CreateFrom: []string{"ami"}}, []string{"ec2:CreateVolume", "ec2:DescribeImages"}},
		{Options{CrossAZMove: true}, []string{"ec2:CreateSnapshot", "ec2:CreateVolume", "ec2:DescribeSnapshots"}},
		{Options{DetachDeadOwner: true}, []string{"ec2:DetachVolume"}},
		{Options{CrossAZMove: true, DeleteMoved: true}, []string{"ec2:CreateSnapshot", "ec2:CreateVolume", "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ec2:DescribeSnapshots"}},
		{Options{ClaimTags: true}, nil},
		{Options{KMSKeys: []string{"arn:aws:kms:us-east-1:123456789012:key/k"}}, []string{"kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"}},
	}
	for _, c := range cases {
		got := build(t, c.o).Actions()
		var added []string
		for _, a := range got {
			if !slices.Contains(base, a) {
				added = append(added, a)
			}
		}
		if !slices.Equal(added, c.adds) {
			t.Errorf("%+v adds %v, want %v", c.o, added, c.adds)
		}
	}
}

func TestPartitionAndTag(t *testing.T) {
	b, err := Render(Options{Partition: "aws-cn", TagKey: "team", TagValue: "blue"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, "arn:aws-cn:ec2:*:*:volume/*") || strings.Contains(s, "arn:aws:") || !strings.Contains(s, `"aws:ResourceTag/team": "blue"`) {
		t.Errorf("partition/tag not applied:\n%s", s)
	}
	if _, err := Build(Options{Create: true, TagKey: "team", TagValue: "blue", CreateTags: map[string]string{"Name": "home", "team": "blue"}}); err != nil {
		t.Errorf("create with the custom key in the selector: %v", err)
	}
	for _, bad := range []Options{{Partition: "aws-iso"}, {TagKey: "aws:x"}, {DeleteMoved: true}, {KMSKeys: []string{"alias/x"}},
		{Create: true, TagKey: "team", TagValue: "blue"}} {
		if _, err := Build(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestForConfig(t *testing.T) {
	load := func(y string) *config.Config {
		c, err := config.Load(nil, []byte("#cloud-config\nspotroot:\n"+y), "")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	o := ForConfig(load("  volume:\n    tag: {Name: home}\n  cross_az: fail\n"))
	if o.Create || o.CrossAZMove || o.DetachDeadOwner || o.DeleteMoved || o.ClaimTags {
		t.Errorf("a by-tag claim with cross_az: fail needs nothing more, got %+v", o)
	}
	o = ForConfig(load("  volume:\n    tag: {Name: home}\n    create: {from: empty, size: 1}\n  force_detach: true\n  delete_moved: true\n"))
	if !o.Create || o.CreateTags["Name"] != "home" || !slices.Equal(o.CreateFrom, []string{"empty"}) || !o.CrossAZMove || !o.DetachDeadOwner || !o.DeleteMoved {
		t.Errorf("got %+v", o)
	}
	o = ForConfig(load("  volume:\n    pool: {spotroot:pool: web}\n"))
	if o.ClaimTags || o.CrossAZMove {
		t.Errorf("a pool needs no claim tags (tag_claims is off) and no move: %+v", o)
	}
	o = ForConfig(load("  volume:\n    pool: {spotroot:pool: web}\n  tag_claims: true\n"))
	if !o.ClaimTags || o.CrossAZMove {
		t.Errorf("a pool with tag_claims needs claim tags and no move: %+v", o)
	}
	p := build(t, ForConfig(load("  volume:\n    tag: {Name: home}\n    create: {from: empty, size: 1}\n  cross_az: fail\n")))
	for _, s := range p.Statement {
		if s.Sid == "SpotrootCreateManagedVolumes" && s.Condition["StringEquals"]["aws:RequestTag/Name"] != "home" {
			t.Errorf("created volumes are not bound to the configured selector: %+v", s)
		}
	}
}

func TestFlagFor(t *testing.T) {
	for op, f := range map[string]string{"CreateVolume": FlagCreate, "ec2:CreateSnapshot": FlagCrossAZMove, "DetachVolume": FlagDetachDeadOwner,
		"DeleteVolume": FlagDeleteMoved, "AttachVolume": ""} {
		if got := FlagFor(op); got != f {
			t.Errorf("FlagFor(%s) = %q, want %q", op, got, f)
		}
	}
}
