package config

import (
	"errors"
	"strings"
	"testing"
)

// Semantic errors (found after decoding) name their line like syntax errors.
func TestSemanticErrorsHaveLines(t *testing.T) {
	for name, c := range map[string]struct {
		ud, want string
	}{
		"bad id":          {"#cloud-config\nspotroot:\n  volume:\n    id: vol-xyz\n", "user-data line 4: spotroot.volume.id:"},
		"relative mount":  {"#cloud-config\nspotroot:\n  volumes:\n    - tag: {Name: a}\n    - tag: {Name: b}\n      mount: home\n", "user-data line 6: spotroot.volumes[1].mount:"},
		"on_failure":      {"#cloud-config\nspotroot:\n  volume: {id: vol-0123456789abcdef0}\n  on_failure: explode\n", "user-data line 4: spotroot.on_failure:"},
		"no name":         {"#cloud-config\nspotroot:\n  volumes:\n    - mount: /data\n", "user-data line 4: spotroot.volumes[0]:"},
		"create.from":     {"#cloud-config\nspotroot:\n  volume:\n    tag: {Name: a}\n    create:\n      from: nowhere\n", "user-data line 6: spotroot.volume.create.from:"},
		"exclusive forms": {"#cloud-config\nspotroot:\n  volume: {id: vol-0123456789abcdef0}\n  volumes: [{id: vol-0123456789abcdef1}]\n", "user-data line 3: spotroot.volume:"},
	} {
		_, err := Load(nil, []byte(c.ud), "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", name, err, c.want)
		}
	}
}

func TestDuplicateMountPoints(t *testing.T) {
	ud := "#cloud-config\nspotroot:\n  volumes:\n    - tag: {Name: a}\n      mount: /home\n    - tag: {Name: b}\n      mount: /home\n"
	_, err := Load(nil, []byte(ud), "")
	if err == nil || !strings.Contains(err.Error(), "user-data line 7: spotroot.volumes[1].mount: \"/home\" is also the mount point of spotroot.volumes[0]") {
		t.Fatalf("two volumes on /home: %v", err)
	}
	ud = "#cloud-config\nspotroot:\n  volumes:\n    - tag: {Name: a}\n    - tag: {Name: b}\n"
	if _, err := Load(nil, []byte(ud), ""); err == nil || !strings.Contains(err.Error(), `"/" is also the mount point`) {
		t.Fatalf("two roots: %v", err)
	}
}

// A jinja template used to read as "not configured": the instance would
// have booted its blank image root without a word.
func TestJinjaTemplate(t *testing.T) {
	ok := "## template: jinja\n#cloud-config\nruncmd:\n  - echo {{ v1.instance_id }}\nspotroot:\n  volume:\n    tag: {Name: home-root}\n"
	cfg, err := Load(nil, []byte(ok), "")
	if err != nil || len(cfg.Volumes) != 1 || cfg.Volumes[0].Tag["Name"] != "home-root" {
		t.Fatalf("template with a literal spotroot section: %+v %v", cfg, err)
	}
	bad := "## template: jinja\n#cloud-config\nspotroot:\n  volume:\n    tag: {Name: \"{{ ds.meta_data.tags.instance.Name }}\"}\n"
	_, err = Load(nil, []byte(bad), "")
	if err == nil || errors.Is(err, ErrNotConfigured) || !strings.Contains(err.Error(), "user-data line 5: the spotroot section uses jinja") {
		t.Fatalf("jinja inside the spotroot section: %v", err)
	}
	wrapped := "## template: jinja\n#cloud-config\n{% if v1.region == 'us-east-1' %}\nspotroot:\n  volume: {tag: {Name: a}}\n{% endif %}\n"
	if _, err := Load(nil, []byte(wrapped), ""); err == nil || !strings.Contains(err.Error(), "user-data line 3: jinja control structure") {
		t.Fatalf("jinja block around the section: %v", err)
	}
	if _, err := Load(nil, []byte("## template: mako\n#cloud-config\nspotroot: {}\n"), ""); err == nil || errors.Is(err, ErrNotConfigured) {
		t.Fatalf("unknown template renderer: %v", err)
	}
}

// A byte order mark used to read as "not configured".
func TestByteOrderMark(t *testing.T) {
	ud := "\xef\xbb\xbf#cloud-config\nspotroot:\n  volume:\n    tag: {Name: home-root}\n"
	cfg, err := Load(nil, []byte(ud), "")
	if err != nil || len(cfg.Volumes) != 1 {
		t.Fatalf("BOM user-data: %+v %v", cfg, err)
	}
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "byte order mark") {
		t.Fatalf("no warning about the BOM: %q", w)
	}
}

// Scalars are judged the way cloud-init's PyYAML (YAML 1.1) reads them.
func TestYAML11ScalarsAsCloudInit(t *testing.T) {
	for _, s := range []string{"y", "Y", "n", "N", "yEs", "1e3", "42", "home-root", "2024-01-02"} {
		ud := "#cloud-config\nspotroot:\n  volume:\n    tag: {Name: " + s + "}\n"
		cfg, err := Load(nil, []byte(ud), "")
		if err != nil || cfg.Volumes[0].Tag["Name"] != s {
			t.Errorf("Name: %s: %+v %v (PyYAML keeps it the string %q)", s, cfg, err, s)
		}
	}
	for s, want := range map[string]string{
		"no": "a boolean False", "On": "a boolean True", "0123": "an integer 83", "1_000": "an integer 1000",
		"1:20": "an integer 80", "0x1F": "an integer 31", "1.50": "a float 1.5", "~": "null None",
	} {
		ud := "#cloud-config\nspotroot:\n  volume:\n    tag: {Name: " + s + "}\n"
		_, err := Load(nil, []byte(ud), "")
		if err == nil || !strings.Contains(err.Error(), "user-data line 4:") || !strings.Contains(err.Error(), "reads as "+want) {
			t.Errorf("Name: %s: %v, want it refused as %s", s, err, want)
		}
		quoted := "#cloud-config\nspotroot:\n  volume:\n    tag: {Name: \"" + s + "\"}\n"
		if cfg, err := Load(nil, []byte(quoted), ""); err != nil || cfg.Volumes[0].Tag["Name"] != s {
			t.Errorf("Name: %q quoted: %v", s, err)
		}
	}
}

// A failed boot reaches EC2 through the endpoint of user-data that did not
// validate (to tag itself).
func TestEndpointHint(t *testing.T) {
	bad := "#cloud-config\nspotroot:\n  ec2_endpoint: http://10.0.2.100:8080\n  volume: {tag: {Name: a}}\n  timeouts: {atach: 5s}\n"
	if _, err := Load(nil, []byte(bad), ""); err == nil {
		t.Fatal("the user-data should not validate")
	}
	if got := EndpointHint([]byte(bad)); got != "http://10.0.2.100:8080" {
		t.Fatalf("hint %q", got)
	}
	if got := EndpointHint([]byte("#cloud-config\nspotroot: [\n")); got != "" {
		t.Fatalf("hint from broken YAML %q", got)
	}
}
