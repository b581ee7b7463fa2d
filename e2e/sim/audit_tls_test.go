package sim

import (
	"context"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// The audit log marks a call that came over TLS with CloudTrail's
// tlsDetails (version, suite, the Host asked for) and a plain-HTTP call
// with none, so a test can prove from EC2's side how it was reached.
func TestAuditTLSDetails(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	srv := httptest.NewTLSServer(e.s.EC2Handler())
	t.Cleanup(srv.Close)
	op := e.w.OperatorCredentials()
	secure := ec2.NewFromConfig(aws.Config{
		Region: "us-east-1", HTTPClient: srv.Client(), BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider(op.AccessKeyID, op.SecretAccessKey, ""),
		Retryer:     func() aws.Retryer { return retry.AddWithMaxAttempts(retry.NewStandard(), 1) },
	})
	if _, err := secure.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	if _, err := e.op.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Fatalf("over HTTP: %v", err)
	}
	evs, err := e.s.AuditEvents() // read back from the file
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.URL)
	seen := 0
	for _, ev := range evs {
		switch ev.EventName {
		case "DescribeVolumes":
			seen++
			d := ev.TLSDetails
			if d == nil || d.TLSVersion != "TLSv1.3" || d.CipherSuite == "" || d.ClientProvidedHostHeader != u.Host {
				t.Errorf("TLS call: tlsDetails = %+v, want TLSv1.3, a suite and host %s", d, u.Host)
			}
		case "DescribeInstances":
			seen++
			if ev.TLSDetails != nil {
				t.Errorf("plain-HTTP call: tlsDetails = %+v, want none", ev.TLSDetails)
			}
		}
	}
	if seen != 2 {
		t.Errorf("audit has %d of the 2 calls: %+v", seen, evs)
	}
}
