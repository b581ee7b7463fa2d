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
// configuration. region is the DHCP domain's guess (regionFromDomain) before
// IMDS's identity is read, then IMDS's own; a second call for the same
// endpoint and region keeps what the first one opened.
func (b *booter) ec2Ahead(w *world, endpoint, region string) {
	b.credsAhead(w)
	if w.ec2 != nil && w.ec2Endpoint == endpoint && w.ec2Region == region && w.ec2Dual == b.dualStack(w) {
		return
	}
	if w.ec2 != nil {
		b.slog.Info("the DHCP domain's region was not the instance's: opening EC2 again", "guessed", w.ec2Region, "region", region)
	}
	w.ec2, w.ec2Endpoint, w.ec2Region, w.ec2Dual = b.newEC2(w, endpoint, region), endpoint, region, b.dualStack(w)
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

// regionFromDomain reads the region from the domain name EC2's default DHCP
// option set hands out: "ec2.internal" in us-east-1, "<region>.compute.internal"
// elsewhere (EC2 API Reference, CreateDhcpOptions: "If you're using
// AmazonProvidedDNS in us-east-1, specify ec2.internal. If you're using
// AmazonProvidedDNS in any other Region, specify region.compute.internal").
// A custom option set names something else: "" (no guess).
func regionFromDomain(domain string) string {
	f := strings.Fields(domain)
	if len(f) == 0 {
		return ""
	}
	d := strings.ToLower(strings.TrimSuffix(f[0], "."))
	if d == "ec2.internal" {
		return "us-east-1"
	}
	r, ok := strings.CutSuffix(d, ".compute.internal")
	if !ok || !validRegion(r) {
		return ""
	}
	return r
}

// validRegion accepts region-shaped names: "eu-west-1", "us-gov-west-1",
// "cn-north-1" (lower-case letters and digits in dash-separated words,
// ending in a number).
func validRegion(r string) bool {
	parts := strings.Split(r, "-")
	if len(parts) < 3 || len(r) > 32 {
		return false
	}
	for i, p := range parts {
		if p == "" {
			return false
		}
		for _, c := range p {
			digit := c >= '0' && c <= '9'
			if !(c >= 'a' && c <= 'z') && !digit {
				return false
			}
			if i == len(parts)-1 && !digit {
				return false
			}
		}
	}
	return true
}

// ec2Client returns the claim's EC2 client for the configured endpoint:
// the one opened ahead when the configuration kept its endpoint. A missing
// CA bundle fails here, before any call.
func (b *booter) ec2Client(w *world, endpoint string) (*ec2.Client, error) {
	if _, err := b.caRoots(endpoint); err != nil {
		return nil, err
	}
	if w.ec2 != nil && w.ec2Endpoint == endpoint && w.ec2Region == w.id.Region && w.ec2Dual == b.dualStack(w) {
		return w.ec2, nil
	}
	if w.creds == nil {
		w.creds = claim.Credentials(b.imds.SDK(), 0)
	}
	w.ec2, w.ec2Endpoint, w.ec2Region, w.ec2Dual = b.newEC2(w, endpoint, w.id.Region), endpoint, w.id.Region, b.dualStack(w)
	return w.ec2, nil
}

// dualStack: without IPv4 only the dual-stack endpoint is reachable.
func (b *booter) dualStack(w *world) bool { return !w.handle.Lease().HasIPv4() }

func (b *booter) newEC2(w *world, endpoint, region string) *ec2.Client {
	o := claim.ClientOptions{
		Region: region, Endpoint: endpoint, IMDS: b.imds.SDK(), Resolver: w.handle.Resolver(),
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
