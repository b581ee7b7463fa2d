package claim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// Without ec2_endpoint, PID 1 calls EC2's regional endpoint by name over
// https, as the SDK resolves it, and verifies it with the roots it was
// given.
func TestClientDefaultEndpointAndRoots(t *testing.T) {
	roots := x509.NewCertPool()
	for region, want := range map[string]string{
		"us-east-1":  "https://ec2.us-east-1.amazonaws.com",
		"eu-west-3":  "https://ec2.eu-west-3.amazonaws.com",
		"cn-north-1": "https://ec2.cn-north-1.amazonaws.com.cn",
	} {
		o := NewClient(ClientOptions{Region: region, RootCAs: roots}).Options()
		if o.BaseEndpoint != nil {
			t.Errorf("%s: BaseEndpoint %q set without ec2_endpoint", region, *o.BaseEndpoint)
		}
		ep, err := o.EndpointResolverV2.ResolveEndpoint(context.Background(), ec2.EndpointParameters{
			Region: aws.String(region), UseFIPS: aws.Bool(false), UseDualStack: aws.Bool(false)})
		if err != nil || ep.URI.String() != want {
			t.Errorf("%s: endpoint %v, %v; want %s", region, ep.URI.String(), err, want)
		}
		// That the given roots verify: TestClientOneConnection and
		// TestClientFailsFastOnUntrustedCertificate.
	}
	o := NewClient(ClientOptions{Region: "us-east-1", Endpoint: "https://vpce-0abc.ec2.us-east-1.vpce.amazonaws.com"}).Options()
	if o.BaseEndpoint == nil || *o.BaseEndpoint != "https://vpce-0abc.ec2.us-east-1.vpce.amazonaws.com" {
		t.Errorf("ec2_endpoint not used: %v", o.BaseEndpoint)
	}
}

// A certificate that does not verify fails the call at once: retrying it
// eight times with backoff only delays the image's own init.
func TestClientFailsFastOnUntrustedCertificate(t *testing.T) {
	var handshakes atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("a request got through an untrusted certificate")
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		return nil, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	c := NewClient(ClientOptions{Region: "us-east-1", Endpoint: srv.URL, RootCAs: x509.NewCertPool()})
	_, err := c.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{}, func(o *ec2.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")
	})
	if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		t.Fatalf("err = %v, want the certificate error", err)
	}
	if n := handshakes.Load(); n != 1 {
		t.Errorf("%d TLS handshakes, want 1 (no retry)", n)
	}
}
