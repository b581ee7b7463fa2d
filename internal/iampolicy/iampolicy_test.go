package iampolicy

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestRender(t *testing.T) {
	b, err := Render("team", "blue")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Version   string
		Statement []struct {
			Sid, Effect      string
			Action, Resource []string
			Condition        map[string]map[string]any
		}
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, b)
	}
	if p.Version != "2012-10-17" {
		t.Fatalf("version %q", p.Version)
	}
	by := map[string]int{}
	for i, s := range p.Statement {
		by[s.Sid] = i
		if s.Effect == "Allow" && slices.Contains(s.Resource, "*") && !slices.Equal(s.Action, []string{"ec2:Describe*"}) {
			t.Errorf("%s allows %v on *: only Describe* may be unscoped", s.Sid, s.Action)
		}
		for _, a := range s.Action {
			if a == "ec2:*" || a == "*" {
				t.Errorf("%s allows %s", s.Sid, a)
			}
		}
	}
	get := func(sid string) (st struct {
		Sid, Effect      string
		Action, Resource []string
		Condition        map[string]map[string]any
	}) {
		i, ok := by[sid]
		if !ok {
			t.Fatalf("no statement %s in\n%s", sid, b)
		}
		return p.Statement[i]
	}
	for _, sid := range []string{"SpotrootAttachTaggedVolumes", "SpotrootAttachToTaggedInstances"} {
		s := get(sid)
		if s.Condition["StringEquals"]["aws:ResourceTag/team"] != "blue" || !slices.Contains(s.Action, "ec2:AttachVolume") {
			t.Errorf("%s: %+v", sid, s)
		}
	}
	if s := get("SpotrootCreateTaggedVolumes"); s.Condition["StringEquals"]["aws:RequestTag/team"] != "blue" {
		t.Errorf("create volume not conditioned on the request tag: %+v", s)
	}
	if s := get("SpotrootCreateTaggedSnapshots"); s.Condition["StringEquals"]["aws:RequestTag/team"] != "blue" {
		t.Errorf("create snapshot not conditioned on the request tag: %+v", s)
	}
	if s := get("SpotrootTagOnCreate"); s.Condition["StringEquals"]["ec2:CreateAction"] == nil {
		t.Errorf("CreateTags not limited to creates: %+v", s)
	}
	d := get("SpotrootDenyTagChanges")
	keys, _ := d.Condition["ForAnyValue:StringLike"]["aws:TagKeys"].([]any)
	if d.Effect != "Deny" || !slices.Contains(keys, any("spotroot:moved-from")) || !slices.Contains(keys, any("team")) ||
		d.Condition["Null"]["ec2:CreateAction"] != "true" || !slices.Contains(d.Action, "ec2:CreateTags") {
		t.Errorf("deny statement: %+v", d)
	}
	for _, k := range ProtocolTagKeys {
		if slices.Contains(keys, any(k)) {
			t.Errorf("the deny covers the protocol key %s", k)
		}
	}
	m := get("SpotrootClaimAndMoveTags")
	allowed, _ := m.Condition["ForAllValues:StringEquals"]["aws:TagKeys"].([]any)
	if m.Condition["StringEquals"]["aws:ResourceTag/team"] != "blue" || len(allowed) != len(ProtocolTagKeys) || !slices.Equal(m.Resource, []string{"arn:aws:ec2:*:*:volume/*"}) {
		t.Errorf("protocol tags statement: %+v", m)
	}
	r := get("SpotrootDenyTagRemoval")
	rk, _ := r.Condition["ForAnyValue:StringLike"]["aws:TagKeys"].([]any)
	if r.Effect != "Deny" || !slices.Equal(r.Action, []string{"ec2:DeleteTags"}) || !slices.Contains(rk, any("spotroot:*")) {
		t.Errorf("tag removal deny: %+v", r)
	}
}
