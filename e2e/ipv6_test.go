package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
)

// The IPv6-only subnet: the guest's NIC is a tap device in a private
// network namespace (slirp's guestfwd is IPv4-only) where dnsmasq is the
// subnet's router (router advertisements with the Managed flag, DHCPv6
// addresses, no DHCPv4 at all, as EC2 does it), and the instance's IMDS
// listens on [fd00:ec2::254]:80 and the EC2 API on [fd00:ec2::250]:80 —
// inside that namespace, so no traffic reaches the host's network.
const (
	v6Subnet   = "fd00:99::/64"
	v6Router   = "fd00:99::1"
	v6EC2      = "fd00:ec2::250"
	v6IMDSAddr = "[fd00:ec2::254]:80"
)

var netnsSeq atomic.Int32

// peerLog records the source addresses of requests to a handler.
type peerLog struct {
	mu    sync.Mutex
	peers []netip.Addr
}

func (p *peerLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			p.mu.Lock()
			p.peers = append(p.peers, ap.Addr())
			p.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (p *peerLog) list() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netip.Addr(nil), p.peers...)
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ipv6Subnet builds the namespace with tap0 and its router; returns the
// namespace's name. Everything is removed when the test ends.
func ipv6Subnet(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"ip", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, tool+" not installed (e2e/setup.sh installs iproute2 and dnsmasq-base)")
		}
	}
	ns := fmt.Sprintf("spotroot-v6-%d-%d", os.Getpid(), netnsSeq.Add(1))
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipCmd(t, "netns", "add", ns)
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	ipCmd(t, "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	// The router's own addresses exist before QEMU brings the carrier up.
	for _, a := range []string{"fe80::1/64", v6Router + "/64", "fd00:ec2::254/128", v6EC2 + "/128"} {
		ipCmd(t, "-n", ns, "addr", "add", a, "dev", "tap0", "nodad")
	}
	ipCmd(t, "-n", ns, "link", "set", "tap0", "up")
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=tap0", "--bind-interfaces", "--enable-ra", "--leasefile-ro", "--user=root",
		"--dhcp-range=fd00:99::100,fd00:99::1ff,64,1h", "--ra-param=tap0,1,600", "--log-dhcp", "--log-facility=-")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", out.String())
		}
	})
	return ns
}

// testIPv6Only: no IPv4 anywhere; spotroot configures IPv6 from the router
// advertisement and DHCPv6, reaches IMDS at [fd00:ec2::254] and the EC2 API
// over IPv6, claims the volume and boots it.
func testIPv6Only(t *testing.T) {
	sharedEnv(t)
	ns := ipv6Subnet(t)
	w := newWorld(t, harness.WorldOpts{})
	ec2Peers, imdsPeers := &peerLog{}, &peerLog{}
	ec2, err := harness.ServeIn(ns, net.JoinHostPort(v6EC2, "80"), ec2Peers.wrap(w.Server.EC2Handler()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec2.Close() })
	// A plain-HTTP endpoint: user-data may only name https:// ones, so it
	// goes on the kernel command line (no DNS or TLS on this subnet yet).
	ud := []byte("#cloud-config\nspotroot:\n" + tagRoot)
	r, err := w.Boot(context.Background(), harness.BootOpts{UserData: ud, Timeout: 3 * time.Minute,
		KernelArgs: []string{"spotroot.ec2_endpoint=http://[" + v6EC2 + "]"},
		Net:        &harness.TapNet{NetNS: ns, Tap: "tap0", IMDS: v6IMDSAddr, WrapIMDS: imdsPeers.wrap}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %v: %s", r.InstanceID, r.Elapsed.Round(time.Millisecond), r.TestinitLine)
	for _, l := range r.Timeline {
		t.Log("  " + l)
	}
	checkPersistentRoot(t, r, 1) // no IPv4 lease; the peers below prove IPv6
	subnet := netip.MustParsePrefix(v6Subnet)
	for name, p := range map[string]*peerLog{"IMDS": imdsPeers, "EC2 API": ec2Peers} {
		peers := p.list()
		if len(peers) == 0 {
			t.Errorf("%s was never called", name)
		}
		for _, a := range peers {
			if !subnet.Contains(a) {
				t.Errorf("%s called from %v, want an address of the IPv6 subnet %v", name, a, subnet)
			}
		}
	}
}
