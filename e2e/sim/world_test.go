package sim

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.json")
	w, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if w.Region != "us-east-1" || len(w.Volumes) != 0 || len(w.Instances) != 0 || w.Operator.AccessKeyID == "" {
		t.Errorf("fresh world = %+v", w)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Load created the file: %v", err)
	}
	if err := os.WriteFile(path, []byte("{nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt file: err = %v", err)
	}
}

func TestPersistenceRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "world.json")
	w, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// The profile is saved with the world (checked below); its dice would
	// make the single API call after the reload flaky.
	if err := w.DisableHostile("*", "a single-call persistence test"); err != nil {
		t.Fatal(err)
	}
	inst := NewInstanceID()
	root, data := NewVolumeID(), NewVolumeID()
	if err := w.AddVolume(Volume{ID: data, AZ: "us-east-1a", SizeGiB: 20, Type: "io2", MultiAttach: true,
		Tags: map[string]string{"Name": "home-root"}, ImagePath: "/srv/vol.img"}); err != nil {
		t.Fatal(err)
	}
	if err := w.AddInstance(Instance{ID: inst, Role: "r", UserData: []byte{0, 1, 2, 0xff},
		BlockDevices: map[string]string{"/dev/xvda": root, "/dev/sdf": data}, IMDSDelay: time.Second}); err != nil {
		t.Fatal(err)
	}
	w.SetFault("AttachVolume", Fault{Code: "RequestLimitExceeded", Times: 3, Delay: 5 * time.Millisecond})
	w.Update(func(w *World) error {
		w.DenyActions = []string{"DetachVolume"}
		w.AttachLatency = 100 * time.Millisecond
		return nil
	})

	// Saves are atomic renames: no temp files left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only world.json", len(entries))
	}

	w2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(w)
	b, _ := json.Marshal(w2)
	if !bytes.Equal(a, b) {
		t.Errorf("round trip differs:\n%s\n%s", a, b)
	}
	v, ok := w2.Volume(data)
	if !ok || v.State != VolumeInUse || len(v.Attachments) != 1 || v.Attachments[0].InstanceID != inst ||
		v.Attachments[0].Device != "/dev/sdf" || v.Attachments[0].DeleteOnTermination || !v.MultiAttach {
		t.Errorf("reloaded data volume = %+v", v)
	}
	i, _ := w2.Instance(inst)
	if i.State != InstanceRunning || !bytes.Equal(i.UserData, []byte{0, 1, 2, 0xff}) || i.IMDSDelay != time.Second ||
		i.BlockDevices["/dev/xvda"] != root || i.Credentials.AccessKeyID == "" {
		t.Errorf("reloaded instance = %+v", i)
	}
	if f := w2.Faults["AttachVolume"]; f.Times != 3 || f.Delay != 5*time.Millisecond || w2.AttachLatency != 100*time.Millisecond {
		t.Errorf("reloaded faults = %+v, latency %v", w2.Faults, w2.AttachLatency)
	}

	if w2.HostileSeed() != w.HostileSeed() || w2.Hostile.Off[HostileClock] == "" || w2.Hostile.ClockSkew != 0 {
		t.Errorf("hostile profile not persisted: %+v", w2.Hostile)
	}

	// The reloaded world still knows the instance's key: a new server
	// (another process) authenticates its calls.
	s := NewServer(w2)
	defer s.Close()
	e := &env{t: t, w: w2, s: s}
	srv := newTestServer(t, s)
	e.ec2URL = srv
	c := e.client(credentials.NewStaticCredentialsProvider(i.Credentials.AccessKeyID, i.Credentials.SecretAccessKey, i.Credentials.Token))
	out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{data}})
	if err != nil || len(out.Volumes) != 1 || aws.ToString(out.Volumes[0].Tags[0].Value) != "home-root" {
		t.Fatalf("after reload: %+v %v", out, err)
	}

	// Mutations through the API are saved too.
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{data}, Tags: tagsOf("k", "v")}); err != nil {
		t.Fatal(err)
	}
	w3, _ := Load(path)
	if v, _ := w3.Volume(data); v.Tags["k"] != "v" {
		t.Errorf("CreateTags not persisted: %v", v.Tags)
	}
}

func TestTerminateInstance(t *testing.T) {
	w, _ := Load("")
	inst, root, data := NewInstanceID(), NewVolumeID(), NewVolumeID()
	w.AddVolume(Volume{ID: data})
	if err := w.AddInstance(Instance{ID: inst, BlockDevices: map[string]string{"/dev/xvda": root, "/dev/sdf": data}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := w.Volume(root); v.State != VolumeInUse || !v.Attachments[0].DeleteOnTermination {
		t.Fatalf("root stub = %+v", v)
	}
	if err := w.TerminateInstance(inst); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.Volume(root); ok {
		t.Error("root volume survived termination (DeleteOnTermination)")
	}
	v, _ := w.Volume(data)
	if v.State != VolumeAvailable || len(v.Attachments) != 0 {
		t.Errorf("data volume after terminate = %+v", v)
	}
	i, _ := w.Instance(inst)
	if i.State != InstanceTerminated || len(i.BlockDevices) != 0 {
		t.Errorf("instance after terminate = %+v", i)
	}
	if err := w.SetInstanceState(inst, "bogus"); err == nil {
		t.Error("bogus state accepted")
	}
	// A volume in another zone cannot be a block device.
	other := NewVolumeID()
	w.AddVolume(Volume{ID: other, AZ: "us-east-1c"})
	if err := w.AddInstance(Instance{ID: NewInstanceID(), BlockDevices: map[string]string{"/dev/sdf": other}}); err == nil {
		t.Error("cross-zone block device accepted")
	}
}

func TestIDs(t *testing.T) {
	for _, tc := range []struct {
		id, prefix string
		ok         bool
	}{
		{NewVolumeID(), "vol", true},
		{NewInstanceID(), "i", true},
		{"vol-0123abcd", "vol", true},
		{"vol-0123ABCD0123abcd0", "vol", false},
		{"vol-123", "vol", false},
		{"i-0123456789abcdef0", "vol", false},
	} {
		if got := validID(tc.id, tc.prefix); got != tc.ok {
			t.Errorf("validID(%q, %q) = %v", tc.id, tc.prefix, got)
		}
	}
	if id := NewVolumeID(); len(id) != 21 {
		t.Errorf("volume id %q: want vol- + 17 hex", id)
	}
}
