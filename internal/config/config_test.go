package config

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

const cloudConfig = `#cloud-config
packages: [htop]
spotroot:
  volume:
    tag: {Name: home-root}
  ec2_endpoint: https://vpce-0123.ec2.us-east-1.vpce.amazonaws.com
  timeouts: {attach: 45s}
`

func TestCloudConfigShorthand(t *testing.T) {
	c, err := Load(nil, []byte(cloudConfig), "console=ttyS0 ro")
	if err != nil {
		t.Fatal(err)
	}
	root, ok := c.Root()
	if !ok || root.Tag["Name"] != "home-root" || root.Mount != "/" {
		t.Fatalf("root volume = %+v, %v", root, ok)
	}
	if c.EC2Endpoint != "https://vpce-0123.ec2.us-east-1.vpce.amazonaws.com" || c.Init != "/sbin/init" {
		t.Fatalf("config = %+v", c)
	}
	if c.Timeouts.Attach.D() != 45*time.Second || c.Timeouts.Device.D() != Defaults.Timeouts.Device.D() {
		t.Fatalf("timeouts = %+v", c.Timeouts)
	}
	if got := root.Describe(); got != "tag Name=home-root" {
		t.Fatalf("describe = %q", got)
	}
}

func TestNotConfigured(t *testing.T) {
	for name, ud := range map[string]string{
		"empty":            "",
		"shell script":     "#!/bin/sh\necho hi\n",
		"cloud-config":     "#cloud-config\npackages: [htop]\n",
		"cloud-config nil": "#cloud-config\n",
	} {
		_, err := Load(nil, []byte(ud), "")
		if !errors.Is(err, ErrNotConfigured) {
			t.Errorf("%s: err = %v, want ErrNotConfigured", name, err)
		}
	}
}

func TestErrorsNameLineAndField(t *testing.T) {
	cases := map[string]struct{ ud, want string }{
		"unknown field":  {"#cloud-config\nspotroot:\n  volume:\n    tag: {Name: x}\n  inti: /sbin/init\n", "user-data line 5: spotroot.inti: unknown field"},
		"nested unknown": {"#cloud-config\nspotroot:\n  volume:\n    tags: {Name: x}\n", "user-data line 4: spotroot.volume.tags: unknown field"},
		"bool pitfall":   {"#cloud-config\nspotroot:\n  volume:\n    tag: {Env: no}\n", `user-data line 4: spotroot.volume.tag.Env: "no" reads as a boolean`},
		"relative mount": {"#cloud-config\nspotroot:\n  volumes:\n    - id: vol-0123456789abcdef0\n      mount: home\n", "spotroot.volumes[0].mount: must be a clean absolute path"},
		"two names":      {"#cloud-config\nspotroot:\n  volume: {id: vol-0123456789abcdef0, tag: {Name: x}}\n", "exactly one of id, tag or pool"},
		"bad id":         {"#cloud-config\nspotroot:\n  volume: {id: vol-xyz}\n", `"vol-xyz" is not a volume id`},
		"bad yaml":       {"#cloud-config\nspotroot:\n  volume: [\n", "user-data: line"},
		"not a mapping":  {"#cloud-config\nspotroot: yes\n", "user-data line 2: spotroot: must be a mapping"},
		"bad timeout":    {"#cloud-config\nspotroot:\n  volume: {id: vol-0123456789abcdef0}\n  timeouts: {device: soon}\n", `"soon" is not a duration`},
	}
	for name, tc := range cases {
		_, err := Load(nil, []byte(tc.ud), "")
		if err == nil || errors.Is(err, ErrNotConfigured) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		}
	}
}

func TestPrecedence(t *testing.T) {
	image := []byte("volume: {tag: {Name: from-image}}\nimage_init: /sbin/init.orig\ninit: /lib/systemd/systemd\n")
	// The image file is a bare spotroot mapping? No: it uses the same top-level key.
	image = append([]byte("spotroot:\n"), indent(image)...)
	c, err := Load(image, []byte(cloudConfig), "spotroot.init=/sbin/other quiet")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := c.Root()
	if root.Tag["Name"] != "home-root" {
		t.Errorf("user-data must override the image's volume: %+v", root)
	}
	if c.ImageInit != "/sbin/init.orig" {
		t.Errorf("image_init from the image file lost: %q", c.ImageInit)
	}
	if c.Init != "/sbin/other" {
		t.Errorf("command line must win: init = %q", c.Init)
	}
	c, err = Load(image, nil, "spotroot.volume=vol-0123456789abcdef0")
	if err != nil {
		t.Fatal(err)
	}
	if root, _ := c.Root(); root.ID != "vol-0123456789abcdef0" || len(c.Volumes) != 1 {
		t.Errorf("cmdline volume = %+v", c.Volumes)
	}
	c, err = Load(image, []byte(cloudConfig), "spotroot.disable")
	if err != nil || c.Configured() {
		t.Errorf("spotroot.disable: configured=%v err=%v", c.Configured(), err)
	}
	if _, err := Load(nil, nil, "spotroot.volume=home"); err == nil || !strings.Contains(err.Error(), "spotroot.volume") {
		t.Errorf("bad cmdline volume err = %v", err)
	}
	if _, err := Load(nil, nil, "spotroot.bogus=1"); err == nil || !strings.Contains(err.Error(), "unknown parameter") {
		t.Errorf("unknown cmdline err = %v", err)
	}
}

func indent(b []byte) []byte {
	lines := strings.SplitAfter(string(b), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = "  " + l
		}
	}
	return []byte(strings.Join(lines, ""))
}

func TestGzipBase64AndMIME(t *testing.T) {
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(cloudConfig))
	w.Close()
	mimeUD := "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n" +
		"--XX\nContent-Type: text/cloud-config; charset=\"us-ascii\"\n\n#cloud-config\npackages: [htop]\n\n" +
		"--XX\nContent-Type: text/x-spotroot\nContent-Transfer-Encoding: base64\n\n" +
		base64.StdEncoding.EncodeToString([]byte("volume: {id: vol-0123456789abcdef0}\n")) + "\n--XX--\n"
	for name, ud := range map[string][]byte{
		"gzip":        gz.Bytes(),
		"base64":      []byte(base64.StdEncoding.EncodeToString([]byte(cloudConfig))),
		"base64+gzip": []byte(base64.StdEncoding.EncodeToString(gz.Bytes())),
		"mime":        []byte(mimeUD),
	} {
		c, err := Load(nil, ud, "")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if root, ok := c.Root(); !ok || (root.Tag["Name"] != "home-root" && root.ID != "vol-0123456789abcdef0") {
			t.Errorf("%s: root = %+v", name, root)
		}
	}
}

func TestExampleIsValid(t *testing.T) {
	c, err := Load(nil, []byte(Example), "")
	if err != nil {
		t.Fatalf("the documented example does not parse: %v", err)
	}
	if len(c.Volumes) != 2 || c.Volumes[0].Create == nil || c.Volumes[1].Mount != "/var/lib/docker" {
		t.Fatalf("example volumes = %+v", c.Volumes)
	}
	if c.Timeouts.Create.D() != 20*time.Minute || c.OnFailure != "image-init" || c.CrossAZ != "move" {
		t.Fatalf("example settings = %+v", c)
	}
}
