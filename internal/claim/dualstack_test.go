package claim

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// hostRecorder fails every request after noting which host it was for.
type hostRecorder struct{ hosts []string }

func (h *hostRecorder) Do(r *http.Request) (*http.Response, error) {
	h.hosts = append(h.hosts, r.URL.Host)
	return nil, errors.New("recorded")
}

// Without IPv4 the client goes to EC2's dual-stack endpoint
// (ec2.<region>.api.aws); with IPv4 to the regional IPv4 one; an explicit
// endpoint wins over both.
func TestDualStackEndpoint(t *testing.T) {
	cases := []struct {
		o    ClientOptions
		want string
	}{
		{ClientOptions{Region: "eu-west-1", DualStack: true}, "ec2.eu-west-1.api.aws"},
		{ClientOptions{Region: "eu-west-1"}, "ec2.eu-west-1.amazonaws.com"},
		{ClientOptions{Region: "eu-west-1", DualStack: true, Endpoint: "http://[fd00:ec2::250]"}, "[fd00:ec2::250]"},
	}
	for _, c := range cases {
		rec := &hostRecorder{}
		cl := NewClient(c.o)
		_, err := cl.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{}, func(o *ec2.Options) {
			o.HTTPClient = rec
			o.RetryMaxAttempts = 1
			o.Credentials = nil
		})
		if err == nil || len(rec.hosts) == 0 {
			t.Fatalf("%+v: no request recorded (err %v)", c.o, err)
		}
		if rec.hosts[0] != c.want {
			t.Errorf("%+v: request went to %s, want %s", c.o, rec.hosts[0], c.want)
		}
	}
}
