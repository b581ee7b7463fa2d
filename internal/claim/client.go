package claim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	spotimds "github.com/spotroot/spotroot/internal/imds"
)

// EC2 is the subset of the EC2 API spotroot calls while booting.
type EC2 interface {
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	AttachVolume(context.Context, *ec2.AttachVolumeInput, ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	CreateSnapshot(context.Context, *ec2.CreateSnapshotInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
}

// ClientOptions configure the EC2 client used from PID 1.
type ClientOptions struct {
	Region   string
	Endpoint string // "" = the SDK's regional endpoint
	IMDS     *imds.Client
	// Resolver resolves the endpoint's host name; PID 1 has no resolv.conf it
	// can trust, so the network phase supplies one built from the DHCP lease.
	Resolver *net.Resolver
	// DualStack uses EC2's dual-stack endpoint, ec2.<region>.api.aws, which
	// resolves to IPv6 as well ("Amazon EC2 service endpoints": the IPv4
	// endpoint ec2.<region>.amazonaws.com has no AAAA record), for instances
	// without IPv4. Ignored when Endpoint is set.
	DualStack bool
	// CredentialsBudget bounds the wait for instance-profile credentials
	// (404 for the first seconds of an instance); 0 = 20s.
	CredentialsBudget time.Duration
	// RootCAs verify the endpoint's certificate (nil = crypto/x509's
	// system roots); PID 1 passes the bundle of the root it runs from.
	RootCAs *x509.CertPool
	// Credentials, if set, replace the instance-profile provider built
	// from IMDS: PID 1 builds its cache early (Credentials) and starts the
	// fetch while it still reads IMDS, so the first EC2 call finds them.
	Credentials aws.CredentialsProvider
	// Verify, if set, verifies the server's chain for the name dialed
	// instead of crypto/tls with RootCAs (caroots.Bundle.Verify: roots
	// parsed only when a chain names them).
	Verify func(serverName string, chain []*x509.Certificate) error
	// ClockOffset, if set, is EC2's clock minus this machine's as the
	// metadata service's Date headers tell it (imds.Client.ClockOffset):
	// requests are signed with it while the SDK has measured none.
	ClockOffset func() (time.Duration, bool)
	// Prewarm opens the TLS connection to the endpoint at once, in the
	// background: the first call finds DNS, TCP and the handshake done.
	Prewarm bool
	// Warmed, if set, is told when the connection opened ahead is ready
	// (or failed), for the boot's timeline.
	Warmed func(addr string, took time.Duration, err error)

	// wrapConn, in tests, wraps each raw connection the client opens.
	wrapConn func(net.Conn) net.Conn
}

// Credentials is the instance-profile credentials cache NewClient uses:
// refreshed 10 s before expiry (EC2 offers new keys well before the old
// ones expire, and a request signed just before expiry may land after).
// Its Retrieve is single-flight: a fetch started early is joined, not
// repeated, by the first EC2 call.
func Credentials(sdk *imds.Client, budget time.Duration) *aws.CredentialsCache {
	return aws.NewCredentialsCache(spotimds.RoleCredentials(sdk, budget),
		func(co *aws.CredentialsCacheOptions) { co.ExpiryWindow = 10 * time.Second })
}

// RetryableCodes are EC2 error codes the client retries beyond the SDK's
// defaults. RequestExpired: EC2's answer to a request signed more than five
// minutes behind its clock. The SDK measures the skew from every
// response's Date header and signs the next attempt with it, but retries
// only the codes of its clock-skew list (SignatureDoesNotMatch,
// AuthFailure, …), not RequestExpired (aws/retry/middleware.go,
// clockSkewCodes, in aws-sdk-go-v2 v1.47.7) — so one retry fixes it.
var RetryableCodes = map[string]struct{}{"RequestExpired": {}}

// NewClient builds the EC2 client by hand: config.LoadDefaultConfig would
// read files and environment that do not exist in PID 1, and adds ~2 MiB.
// Credentials come from the instance profile through IMDS.
func NewClient(o ClientOptions) *ec2.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Resolver: o.Resolver}
	dial := dialer.DialContext
	if o.wrapConn != nil {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return o.wrapConn(c), nil
		}
	}
	tlsd := &tlsDialer{dial: dial, verify: o.Verify, timeout: 5 * time.Second, warmed: o.Warmed,
		// The session cache lets a new connection (after a reset, a lost
		// answer, an idle timeout) resume the TLS session instead of a
		// full handshake. ALPN offers HTTP/1.1 only: the PID 1 build leaves
		// HTTP/2 out of net/http (nethttpomithttp2), and a server that
		// picked h2 would then get HTTP/1.1 on an h2 connection.
		config: &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(8), NextProtos: []string{"http/1.1"}}}
	transport := &http.Transport{
		DialContext:           dial,
		DialTLSContext:        tlsd.DialTLSContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 20 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	if o.Prewarm {
		if addr, err := endpointAddr(o); err == nil {
			tlsd.Prewarm(addr)
		}
	}
	creds := o.Credentials
	if creds == nil {
		creds = Credentials(o.IMDS, o.CredentialsBudget)
	}
	cfg := aws.Config{
		Region:      o.Region,
		HTTPClient:  OwnBody(&http.Client{Transport: transport}),
		Credentials: creds,
		// Throttling (RequestLimitExceeded), 5xx, resets and RequestExpired
		// are retried with full-jitter exponential backoff (the standard
		// retryer's ExponentialJitterBackoff: rand·2^attempt s, capped at
		// MaxBackoff), as EC2 asks ("Retries and exponential backoff",
		// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/throttling.html).
		// Attempts are bounded by the caller's context (Claimer.CallTimeout),
		// not a count, and the client-side retry quota is off: PID 1 is one
		// client that must keep trying while its budget lasts, and the
		// quota (500 tokens, 5 a retry) would end a long throttled wait
		// with "retry quota exceeded".
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = 1000
				so.MaxBackoff = 5 * time.Second
				so.RateLimiter = ratelimit.None
				so.Retryables = append(so.Retryables, retry.RetryableErrorCode{Codes: RetryableCodes})
				// A certificate that does not verify will not verify on
				// the next try: fail at once instead of backing off.
				so.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(certificateError)}, so.Retryables...)
			})
		},
	}
	return ec2.NewFromConfig(cfg, func(eo *ec2.Options) {
		if o.ClockOffset != nil {
			eo.HTTPSignerV4 = skewSigner{v4: v4.NewSigner(), offset: o.ClockOffset}
		}
		if o.Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.Endpoint)
		} else if o.DualStack {
			eo.EndpointOptions.UseDualStackEndpoint = aws.DualStackEndpointStateEnabled
		}
	})
}

// endpointAddr is the host:port the client's calls go to, by the SDK's
// own endpoint rules (BaseEndpoint, or the regional or dual-stack name).
func endpointAddr(o ClientOptions) (string, error) {
	p := ec2.EndpointParameters{Region: aws.String(o.Region), UseDualStack: aws.Bool(o.DualStack && o.Endpoint == ""), UseFIPS: aws.Bool(false)}
	if o.Endpoint != "" {
		p.Endpoint = aws.String(o.Endpoint)
	}
	ep, err := ec2.NewDefaultEndpointResolverV2().ResolveEndpoint(context.Background(), p)
	if err != nil {
		return "", err
	}
	if ep.URI.Scheme != "https" {
		return "", fmt.Errorf("endpoint %s is not https", ep.URI.String())
	}
	port := ep.URI.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(ep.URI.Hostname(), port), nil
}

// certificateError marks TLS certificate verification failures (unknown
// authority, wrong name, expired) as not retryable; the SDK would retry
// them as connection errors.
func certificateError(err error) aws.Ternary {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// OwnBody wraps an SDK client's HTTP client so that it sends each request
// with a body of its own, read from the SDK's (the operator commands' EC2
// client uses it too).
func OwnBody(c aws.HTTPClient) aws.HTTPClient { return ownBody{c} }

// ownBody sends each request with a body of its own, read from the SDK's.
// smithy-go closes the body it built as soon as Do returns
// (transport/http/client.go: "HTTP RoundTripper *should* close the request
// body. But this may not happen in a timely manner"), and its closed body
// answers WriteTo with io.EOF (transport/http/internal/io/safe.go,
// aws/smithy-go#218). net/http reads a body once more after sending it, to
// check its length (transferWriter.writeBody); when the answer overtakes
// that check (a busy CPU: the e2e guest under load), the check reads the
// closed body, the write counts as failed, and the transport closes the
// connection instead of keeping it (persistConn.wroteRequest): the next
// call pays a new TCP and TLS handshake. A *bytes.Reader body has no such
// race, and net/http sends it in one write with the headers (a body it
// does not know to be in memory gets its headers flushed first). GetBody
// lets net/http resend a request it wrote nothing of to a kept connection
// the server had closed (shouldRetryRequest, nothingWrittenError); one it
// sent is never resent there: the SDK's retries and the claim's look-ups
// decide.
type ownBody struct{ c aws.HTTPClient }

func (o ownBody) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read the body of %s %s: %w", r.Method, r.URL.Redacted(), err)
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	return o.c.Do(r)
}
