package imds

import (
	"context"
	"net"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// IPv6Endpoint is IMDS on the IPv6 address Nitro instances reach it at
// (EC2 User Guide, "Configure the instance metadata service options": the
// IPv6 endpoint, [fd00:ec2::254], for instances in IPv6-only or
// dual-stack subnets). It is the SDK's own IPv6 default too.
const IPv6Endpoint = "http://[fd00:ec2::254]"

// Network is what the instance's network gave: whether it has IPv4 and IPv6.
type Network struct{ IPv4, IPv6 bool }

// DefaultProbe bounds the check that IPv4 IMDS answers before IPv6 is
// tried instead ("auto" on a dual-stack instance).
const DefaultProbe = 2 * time.Second

// Choose picks the IMDS endpoint. mode "ipv4" and "ipv6" force one;
// "" or "auto" takes IPv4 when the instance has it and 169.254.169.254
// answers within probe, else IPv6 when the instance has IPv6 (an IPv6-only
// subnet: no IPv4 address at all), else IPv4 (whose errors then explain).
func Choose(ctx context.Context, mode string, n Network, probe time.Duration) string {
	return choose(ctx, mode, n, probe, DefaultEndpoint, IPv6Endpoint)
}

func choose(ctx context.Context, mode string, n Network, probe time.Duration, v4, v6 string) string {
	switch mode {
	case "ipv4":
		return v4
	case "ipv6":
		return v6
	}
	if !n.IPv6 {
		return v4
	}
	if !n.IPv4 {
		return v6
	}
	if answers(ctx, v4, probe) {
		return v4
	}
	return v6
}

// answers reports whether IMDSv2 at endpoint hands out a token within d
// (one attempt, no retries: this only chooses the address family).
func answers(ctx context.Context, endpoint string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c := imds.New(imds.Options{Endpoint: endpoint, ClientEnableState: imds.ClientEnabled,
		EnableFallback: aws.FalseTernary, Retryer: aws.NopRetryer{}})
	_, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
	return err == nil
}

// LocalNetwork reports which address families this machine has on a
// non-loopback interface (for callers without a lease at hand, like the
// watcher on the persistent root): IPv4 any address, IPv6 a global one.
func LocalNetwork() Network {
	var n Network
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return n
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() {
			continue
		}
		if ipn.IP.To4() != nil {
			n.IPv4 = true
		} else if ipn.IP.IsGlobalUnicast() {
			n.IPv6 = true
		}
	}
	return n
}
