package claim

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// One TLS connection carries every call: opened ahead when asked
// (Prewarm, before any call), verified by the given roots or Verify for the
// name dialed, and a connection lost in between resumes the TLS session
// instead of a full handshake.
func TestClientOneConnection(t *testing.T) {
	for _, mode := range []string{"roots", "verify"} {
		t.Run(mode, func(t *testing.T) {
			var conns atomic.Int32
			var mu sync.Mutex
			var resumed []bool
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				resumed = append(resumed, r.TLS.DidResume)
				mu.Unlock()
				w.Header().Set("Content-Type", "text/xml")
				w.Write([]byte(`<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><volumeSet/></DescribeVolumesResponse>`))
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.StartTLS()
			defer srv.Close()
			roots := x509.NewCertPool()
			roots.AddCert(srv.Certificate())
			o := ClientOptions{Region: "us-east-1", Endpoint: srv.URL, Prewarm: true}
			var verified []string
			if mode == "roots" {
				o.RootCAs = roots
			} else {
				o.Verify = func(name string, chain []*x509.Certificate) error {
					mu.Lock()
					verified = append(verified, name)
					mu.Unlock()
					_, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots})
					return err
				}
			}
			c := NewClient(o)
			deadline := time.Now().Add(5 * time.Second)
			for conns.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if conns.Load() != 1 {
				t.Fatalf("no connection opened ahead of the first call")
			}
			call := func() {
				t.Helper()
				_, err := c.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{}, func(o *ec2.Options) {
					o.Credentials = credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			for range 3 {
				call()
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections for 3 calls, want 1", n)
			}
			srv.CloseClientConnections()
			call()
			mu.Lock()
			defer mu.Unlock()
			if n := conns.Load(); n != 2 || len(resumed) != 4 || resumed[0] || !resumed[3] {
				t.Errorf("after a lost connection: %d connections, resumed %v; want 2 and the last one resumed", n, resumed)
			}
			if mode == "verify" && (len(verified) != 2 || verified[0] != "127.0.0.1") {
				t.Errorf("Verify called for %v, want the dialed name for each connection", verified)
			}
		})
	}
}
