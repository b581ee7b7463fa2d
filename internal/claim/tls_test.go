package claim

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// The first call finds its TLS connection opened ahead (Prewarm, before
// any call), verified by the given roots or Verify for the name dialed; a
// connection opened later (one the server closed, a lost one) resumes the
// TLS session: one full handshake per client.
func TestClientOneConnection(t *testing.T) {
	for _, mode := range []string{"roots", "verify"} {
		t.Run(mode, func(t *testing.T) {
			var mu sync.Mutex
			var full []string // connections with a full handshake, by remote address
			var first string  // the first request's connection
			srv, conns, roots := volumesServer(t, func(r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				if first == "" {
					first = r.RemoteAddr
				}
				if !r.TLS.DidResume && !slices.Contains(full, r.RemoteAddr) {
					full = append(full, r.RemoteAddr)
				}
			})
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
			warmed := make(chan error, 1)
			o.Warmed = func(_ string, _ time.Duration, err error) { warmed <- err }
			c := NewClient(o)
			select {
			case err := <-warmed:
				if err != nil {
					t.Fatalf("connection ahead: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no connection opened ahead of the first call")
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
			call()
			if n := conns.Load(); n != 1 {
				t.Errorf("the first call opened a connection of its own (%d in all), want the one opened ahead", n)
			}
			for range 3 {
				call()
			}
			srv.CloseClientConnections()
			call()
			mu.Lock()
			defer mu.Unlock()
			if len(full) != 1 || full[0] != first || conns.Load() < 2 {
				t.Errorf("%d connections, full handshakes on %v (first request on %s); want one full handshake, the first call's, and resumed sessions after", conns.Load(), full, first)
			}
			if mode == "verify" && (len(verified) != int(conns.Load()) || verified[0] != "127.0.0.1") {
				t.Errorf("Verify called for %v on %d connections, want the dialed name for each connection", verified, conns.Load())
			}
		})
	}
}

// slowWriteConn returns from each Write only after a pause, the data
// already sent: the answer arrives while net/http's writer is still in
// Write, as on a busy CPU. The pause stays under the 50 ms net/http waits
// for the writer before it gives a connection up
// (maxWriteWaitBeforeConnReuse).
type slowWriteConn struct{ net.Conn }

func (c slowWriteConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	time.Sleep(20 * time.Millisecond)
	return n, err
}

// When EC2's answer overtakes the client's own bookkeeping of the request
// it sent (the SDK closes the request body as soon as the answer is in),
// the connection is still kept for the next call.
func TestClientKeepsConnectionWhenAnswerIsFast(t *testing.T) {
	srv, conns, roots := volumesServer(t, nil)
	c := NewClient(ClientOptions{Region: "us-east-1", Endpoint: srv.URL, RootCAs: roots,
		wrapConn: func(c net.Conn) net.Conn { return slowWriteConn{c} }})
	const calls = 4
	for range calls {
		_, err := c.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{VolumeIds: []string{"vol-0123456789abcdef0"}}, func(o *ec2.Options) {
			o.Credentials = credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d calls opened %d connections, want 1 for all of them", calls, n)
	}
}

// volumesServer is an EC2 endpoint over TLS answering every call with an
// empty DescribeVolumes, after seen (if set) has looked at the request; it
// counts the connections it accepts and gives the roots that verify it.
func volumesServer(t *testing.T, seen func(*http.Request)) (*httptest.Server, *atomic.Int32, *x509.CertPool) {
	conns := new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if seen != nil {
			seen(r)
		}
		w.Header().Set("Content-Type", "text/xml")
		w.Write([]byte(`<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><volumeSet/></DescribeVolumesResponse>`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return srv, conns, roots
}
