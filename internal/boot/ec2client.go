package boot

import (
	"context"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/safego"
)

// ec2Ahead starts what the first EC2 call would otherwise wait for in
// turn: the instance-profile credentials (two IMDS reads, or seconds of 404s
// on a fresh instance) and the TLS connection to the region's endpoint (DNS,
// TCP, handshake), while PID 1 still reads IMDS and parses its
// configuration.
func (b *booter) ec2Ahead(w *world, endpoint string) {
	b.credsAhead(w)
	w.ec2, w.ec2Endpoint, w.ec2Dual = b.newEC2(w, endpoint), endpoint, b.dualStack(w)
}

// credsAhead starts fetching the instance-profile credentials (once).
func (b *booter) credsAhead(w *world) {
	if w.creds != nil {
		return
	}
	w.creds = claim.Credentials(b.imds.SDK(), 0)
	creds := w.creds
	safego.Go("credentials ahead", func() {
		// Errors are the first call's to report: it joins or repeats this.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		if _, err := creds.Retrieve(ctx); err == nil {
			b.slog.Info("credentials ready", "ms", time.Since(start).Milliseconds(), "uptime", uptime())
		}
	})
}

// ec2Client returns the claim's EC2 client for the configured endpoint:
// the one opened ahead when the configuration kept its endpoint. A missing
// CA bundle fails here, before any call.
func (b *booter) ec2Client(w *world, endpoint string) (*ec2.Client, error) {
	if _, err := b.caRoots(endpoint); err != nil {
		return nil, err
	}
	if w.ec2 != nil && w.ec2Endpoint == endpoint && w.ec2Dual == b.dualStack(w) {
		return w.ec2, nil
	}
	if w.creds == nil {
		w.creds = claim.Credentials(b.imds.SDK(), 0)
	}
	w.ec2, w.ec2Endpoint, w.ec2Dual = b.newEC2(w, endpoint), endpoint, b.dualStack(w)
	return w.ec2, nil
}

// dualStack: without IPv4 only the dual-stack endpoint is reachable.
func (b *booter) dualStack(w *world) bool { return !w.handle.Lease().HasIPv4() }

func (b *booter) newEC2(w *world, endpoint string) *ec2.Client {
	o := claim.ClientOptions{
		Region: w.id.Region, Endpoint: endpoint, IMDS: b.imds.SDK(), Resolver: w.handle.Resolver(),
		DualStack: b.dualStack(w), Credentials: w.creds, Prewarm: true, ClockOffset: b.imds.ClockOffset,
		Warmed: func(addr string, took time.Duration, err error) {
			if err != nil {
				b.slog.Info("EC2 connection ahead failed; the first call dials again", "endpoint", addr, "error", err)
				return
			}
			b.slog.Info("EC2 connection ready", "endpoint", addr, "ms", took.Milliseconds(), "uptime", uptime())
		},
	}
	if !strings.HasPrefix(endpoint, "http://") {
		o.Verify = b.verifyEC2
	}
	return claim.NewClient(o)
}
