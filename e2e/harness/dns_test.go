package harness

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The VM's DNS server, asked by Go's own resolver (as spotroot asks it):
// known names resolve, AAAA is empty, others are NXDOMAIN, and it counts.
func TestDNS(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := NewDNS(map[string]netip.Addr{EC2Host: EC2IP})
	d.Serve(pc)
	defer d.Close()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		if network != "udp" && network != "udp4" {
			t.Errorf("resolver dialled %s: UDP answers must do", network)
		}
		var dl net.Dialer
		return dl.DialContext(ctx, "udp4", pc.LocalAddr().String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip", EC2Host)
	if err != nil || len(addrs) != 1 || addrs[0] != EC2IP {
		t.Fatalf("lookup %s = %v, %v; want %v", EC2Host, addrs, err, EC2IP)
	}
	_, err = r.LookupNetIP(ctx, "ip4", "sts.us-east-1.amazonaws.com")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("unknown name: err = %v, want not found", err)
	}
	if d.Queries(EC2Host, "A") != 1 || d.Queries(EC2Host, "AAAA") != 1 {
		t.Errorf("queries = %v, want one A and one AAAA for %s", d.AllQueries(), EC2Host)
	}
}

// A dual-stack name (EC2's ec2.<region>.api.aws) has an A and an AAAA
// record; the IPv4-only name still has no AAAA.
func TestDNSDualStack(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := NewDNS(map[string]netip.Addr{EC2Host: EC2IP, EC2DualStackHost: EC2IP})
	d.Add(EC2DualStackHost, EC2IP6)
	d.Serve(pc)
	defer d.Close()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp4", pc.LocalAddr().String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	six, err := r.LookupNetIP(ctx, "ip6", EC2DualStackHost)
	if err != nil || len(six) != 1 || six[0] != EC2IP6 {
		t.Errorf("AAAA %s = %v, %v; want %v", EC2DualStackHost, six, err, EC2IP6)
	}
	four, err := r.LookupNetIP(ctx, "ip4", EC2DualStackHost)
	if err != nil || len(four) != 1 || four[0] != EC2IP {
		t.Errorf("A %s = %v, %v; want %v", EC2DualStackHost, four, err, EC2IP)
	}
	if got, err := r.LookupNetIP(ctx, "ip6", EC2Host); err == nil {
		t.Errorf("AAAA %s = %v, want none (the IPv4 endpoint has no IPv6 address)", EC2Host, got)
	}
	if d.Queries(EC2DualStackHost, "AAAA") != 1 {
		t.Errorf("queries = %v, want one AAAA for %s", d.AllQueries(), EC2DualStackHost)
	}
}
