package sim

import (
	"testing"
)

// The evaluator against IAM's documented semantics.
func TestPolicyEvaluation(t *testing.T) {
	doc := `{"Version":"2012-10-17","Statement":[
	 {"Sid":"AllowTagged","Effect":"Allow","Action":"ec2:Attach*","Resource":"arn:aws:ec2:*:*:volume/*",
	  "Condition":{"StringEquals":{"aws:ResourceTag/team":["blue","green"]}}},
	 {"Sid":"Self","Effect":"Allow","Action":"ec2:AttachVolume","Resource":"${ec2:SourceInstanceARN}"},
	 {"Sid":"OnlyKeys","Effect":"Allow","Action":"ec2:CreateTags","Resource":"*",
	  "Condition":{"ForAllValues:StringLike":{"aws:TagKeys":["app:*"]},"Null":{"ec2:CreateAction":"true"}}},
	 {"Sid":"DenyProd","Effect":"Deny","Action":"ec2:*","Resource":"*",
	  "Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":"prod"}}},
	 {"Sid":"Arn","Effect":"Allow","Action":"ec2:DetachVolume","Resource":"*",
	  "Condition":{"ArnLike":{"ec2:SourceInstanceARN":"arn:aws:ec2:us-east-1:*:instance/*"},"StringNotEqualsIfExists":{"aws:ResourceTag/lock":"yes"}}}
	]}`
	p, err := ParsePolicy(doc)
	if err != nil {
		t.Fatal(err)
	}
	self := "arn:aws:ec2:us-east-1:123456789012:instance/i-0aaaaaaaaaaaaaaaa"
	other := "arn:aws:ec2:us-east-1:123456789012:instance/i-0bbbbbbbbbbbbbbbb"
	src := map[string][]string{"ec2:SourceInstanceARN": {self}}
	vol := func(tags ...string) authzResource {
		k := map[string][]string{}
		for i := 0; i+1 < len(tags); i += 2 {
			k["aws:ResourceTag/"+tags[i]] = []string{tags[i+1]}
		}
		return authzResource{ARN: "arn:aws:ec2:us-east-1:123456789012:volume/vol-0123456789abcdef0", Keys: k}
	}
	inst := func(arn string) authzResource { return authzResource{ARN: arn, Keys: map[string][]string{}} }
	cases := []struct {
		name    string
		req     authzRequest
		allowed bool
		deny    bool
		stmt    string
	}{
		{"tagged volume to itself", authzRequest{"ec2:AttachVolume", src, []authzResource{vol("team", "blue"), inst(self)}}, true, false, ""},
		{"tagged volume to another instance", authzRequest{"ec2:AttachVolume", src, []authzResource{vol("team", "blue"), inst(other)}}, false, false, ""},
		{"untagged volume", authzRequest{"ec2:AttachVolume", src, []authzResource{vol(), inst(self)}}, false, false, "AllowTagged"},
		{"wrong tag value", authzRequest{"ec2:AttachVolume", src, []authzResource{vol("team", "red"), inst(self)}}, false, false, "AllowTagged"},
		{"no source instance: the variable matches nothing", authzRequest{"ec2:AttachVolume", nil, []authzResource{vol("team", "blue"), inst(self)}}, false, false, ""},
		{"action case-insensitive", authzRequest{"EC2:attachvolume", src, []authzResource{vol("team", "green"), inst(self)}}, true, false, ""},
		{"ForAllValues keys", authzRequest{"ec2:CreateTags", map[string][]string{"aws:TagKeys": {"app:a", "app:b"}}, []authzResource{inst(self)}}, true, false, ""},
		{"ForAllValues one key outside", authzRequest{"ec2:CreateTags", map[string][]string{"aws:TagKeys": {"app:a", "x"}}, []authzResource{inst(self)}}, false, false, "OnlyKeys"},
		{"Null: inside a create", authzRequest{"ec2:CreateTags", map[string][]string{"aws:TagKeys": {"app:a"}, "ec2:CreateAction": {"CreateVolume"}}, []authzResource{inst(self)}}, false, false, "OnlyKeys"},
		{"explicit deny wins", authzRequest{"ec2:CreateTags", map[string][]string{"aws:TagKeys": {"app:a", "prod"}}, []authzResource{inst(self)}}, false, true, "DenyProd"},
		{"ArnLike and IfExists absent", authzRequest{"ec2:DetachVolume", src, []authzResource{vol()}}, true, false, ""},
		{"IfExists present", authzRequest{"ec2:DetachVolume", src, []authzResource{vol("lock", "yes")}}, false, false, "Arn"},
		{"implicit deny", authzRequest{"ec2:DeleteVolume", src, []authzResource{vol("team", "blue")}}, false, false, ""},
	}
	for _, c := range cases {
		d := p.evaluate(c.req)
		if d.Allowed != c.allowed || d.ExplicitDeny != c.deny || (!c.allowed && c.stmt != "" && d.Statement != c.stmt) {
			t.Errorf("%s: got %+v, want allowed=%v deny=%v statement=%q", c.name, d, c.allowed, c.deny, c.stmt)
		}
	}
	for _, bad := range []string{
		`{"Version":"2008-10-17","Statement":[]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringSorta":{"a":"b"}}}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}`,
	} {
		if _, err := ParsePolicy(bad); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{
		{"arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:us-east-1:1:volume/vol-1", true},
		{"arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:us-east-1:1:instance/i-1", false},
		{"*", "arn:aws:ec2:us-east-1:1:volume/a/b", true},
		{"spotroot:?nstance", "spotroot:instance", true},
		{`a\*`, "ab", false},
		{"a[1]", "a[1]", true},
	} {
		if globMatch(c.p, c.s) != c.ok {
			t.Errorf("globMatch(%q, %q) != %v", c.p, c.s, c.ok)
		}
	}
}
