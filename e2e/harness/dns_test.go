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
