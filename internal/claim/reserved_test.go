package claim

import (
	"context"
	"strings"
	"testing"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Instance-store mappings (IMDS ephemeral0 at sdf, ephemeral1 at xvdg) are
// missing from DescribeInstances; their names must never reach
// AttachVolume: the first name offered is sdh.
func TestReservedNamesNeverOffered(t *testing.T) {
	f := &fakeEC2{
		vols:    []ec2types.Volume{vol("vol-0aaaaaaaaaaaaaaaa", "us-east-1a", map[string]string{"Name": "home-root"})},
		devices: []string{"/dev/xvda"},
	}
	c := claimer(f)
	c.Reserved = []string{"sdf", "/dev/xvdg"}
	ctx := context.Background()
	v, err := c.Find(ctx, home)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.Attach(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Device != "/dev/sdh" {
		t.Fatalf("attached at %s, want /dev/sdh", cl.Device)
	}
	for _, call := range f.calls {
		if strings.HasPrefix(call, "AttachVolume") && (strings.HasSuffix(call, "sdf") || strings.HasSuffix(call, "sdg")) {
			t.Errorf("an instance-store name was offered: %s", call)
		}
	}
}
