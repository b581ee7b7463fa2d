package imds

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// IMDS over IPv6: forced by imds: ipv6, taken when the instance has no IPv4
// (an IPv6-only subnet), and taken on a dual-stack instance when
// 169.254.169.254 does not answer.
func TestChoose(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latest/api/token" {
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
			w.Write([]byte("tok"))
			return
		}
		w.Write([]byte("i-0123456789abcdef0"))
	}))
	defer up.Close()
	// A listener that never answers: IPv4 IMDS unreachable (hop limit,
	// disabled endpoint), not refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	silent := "http://" + l.Addr().String()
	const v6 = "http://v6.invalid"
	ctx := context.Background()
	cases := []struct {
		name string
		mode string
		n    Network
		v4   string
		want string
	}{
		{"forced ipv6", "ipv6", Network{IPv4: true, IPv6: true}, up.URL, v6},
		{"forced ipv4", "ipv4", Network{IPv6: true}, up.URL, up.URL},
		{"ipv4 only", "", Network{IPv4: true}, silent, silent},
		{"ipv6-only subnet", "", Network{IPv6: true}, up.URL, v6},
		{"dual-stack, ipv4 answers", "auto", Network{IPv4: true, IPv6: true}, up.URL, up.URL},
		{"dual-stack, ipv4 silent", "", Network{IPv4: true, IPv6: true}, silent, v6},
		{"no network known", "", Network{}, up.URL, up.URL},
	}
	for _, c := range cases {
		start := time.Now()
		if got := choose(ctx, c.mode, c.n, 300*time.Millisecond, c.v4, v6); got != c.want {
			t.Errorf("%s: chose %s, want %s", c.name, got, c.want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %v: the probe must be bounded", c.name, d)
		}
	}
}
