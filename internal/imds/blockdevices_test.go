package imds

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// metaTree serves IMDSv2 meta-data from a flat map of paths.
func metaTree(t *testing.T, tree map[string]string) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latest/api/token" {
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
			w.Write([]byte("tok"))
			return
		}
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != "tok" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		v, ok := tree[strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(v))
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL, nil)
	c.AttemptTimeout = time.Second
	return c
}

// The block-device-mapping listing as IMDS gives it on a c5d/m5d-like
// instance launched with two instance-store mappings (EC2 User Guide,
// "Instance metadata categories": block-device-mapping/ephemeralN).
func TestInstanceStoreDevices(t *testing.T) {
	c := metaTree(t, map[string]string{
		"block-device-mapping/":           "ami\nebs2\nephemeral0\nephemeral1\nroot",
		"block-device-mapping/ami":        "/dev/xvda",
		"block-device-mapping/ebs2":       "sdf",
		"block-device-mapping/ephemeral0": "sdb",
		"block-device-mapping/ephemeral1": "sdc",
		"block-device-mapping/root":       "/dev/xvda",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := c.InstanceStoreDevices(ctx)
	if err != nil || strings.Join(got, ",") != "sdb,sdc" {
		t.Fatalf("InstanceStoreDevices = %v, %v; want sdb,sdc", got, err)
	}
	none := metaTree(t, map[string]string{"block-device-mapping/": "ami\nroot", "block-device-mapping/ami": "/dev/xvda"})
	if got, err := none.InstanceStoreDevices(ctx); err != nil || got != nil {
		t.Fatalf("without instance store: %v, %v", got, err)
	}
}
