package e2e_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/sim"
)

// The IPv6-only subnet: the guest's NIC is a tap device in a private
// network namespace (slirp's guestfwd is IPv4-only) where dnsmasq is the
// subnet's router (router advertisements with the Managed flag, DHCPv6
// addresses naming Amazon DNS as the DNS server, no DHCPv4 at all, as EC2
// does it). Inside that namespace, so no traffic reaches the host's
// network: the instance's IMDS on [fd00:ec2::254]:80, Amazon DNS on
// [fd00:ec2::253]:53 (the harness's DNS server), and EC2's dual-stack
// endpoint over TLS at harness.EC2IP6.
const (
	v6Subnet   = "fd00:99::/64"
	v6Router   = "fd00:99::1"
	v6DNS      = "fd00:ec2::253" // Amazon DNS over IPv6 (netup.AmazonDNS6)
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
	// The router's own addresses, and the off-subnet ones of IMDS, Amazon
	// DNS and EC2 it routes to itself, exist before QEMU brings the
	// carrier up.
	for _, a := range []string{"fe80::1/64", v6Router + "/64", "fd00:ec2::254/128", v6DNS + "/128", harness.EC2IP6.String() + "/128"} {
		ipCmd(t, "-n", ns, "addr", "add", a, "dev", "tap0", "nodad")
	}
	ipCmd(t, "-n", ns, "link", "set", "tap0", "up")
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=tap0", "--bind-interfaces", "--enable-ra", "--leasefile-ro", "--user=root",
		"--dhcp-range=fd00:99::100,fd00:99::1ff,64,1h", "--ra-param=tap0,1,600",
		"--dhcp-option=option6:dns-server,["+v6DNS+"]", "--log-dhcp", "--log-facility=-")
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

// ipv6EC2 is the cloud's side of the IPv6-only subnet, in its namespace:
// Amazon DNS knowing EC2's IPv4 name (A only, as on AWS) and its
// dual-stack name (A and AAAA), and the dual-stack endpoint over TLS with
// a certificate from the test CA the AMI trusts.
type ipv6EC2 struct {
	dns *harness.DNS
	mu  sync.Mutex
	sni map[string]int // TLS handshakes by server name
}

func serveIPv6EC2(t *testing.T, ns string, w *harness.World) *ipv6EC2 {
	t.Helper()
	e := &ipv6EC2{sni: map[string]int{}, dns: harness.NewDNS(map[string]netip.Addr{
		harness.EC2Host: harness.EC2IP, harness.EC2DualStackHost: harness.EC2IP})}
	e.dns.Add(harness.EC2DualStackHost, harness.EC2IP6)
	pc, err := harness.ListenPacketIn(ns, net.JoinHostPort(v6DNS, "53"))
	if err != nil {
		t.Fatal(err)
	}
	e.dns.Serve(pc)
	t.Cleanup(e.dns.Close)

	cert, err := w.Env.CA.Issue(harness.EC2DualStackHost)
	if err != nil {
		t.Fatal(err)
	}
	l, err := harness.ListenIn(ns, netip.AddrPortFrom(harness.EC2IP6, 443).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: w.Server.EC2Handler(), ReadHeaderTimeout: 10 * time.Second}
	tl := tls.NewListener(l, &tls.Config{
		Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			e.mu.Lock()
			e.sni[hi.ServerName]++
			e.mu.Unlock()
			return nil, nil
		},
	})
	go srv.Serve(tl)
	t.Cleanup(func() { srv.Close() })
	return e
}

func (e *ipv6EC2) handshakes() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.sni)
}

// testIPv6Only: no IPv4 anywhere; spotroot configures IPv6 from the router
// advertisement and DHCPv6, reaches IMDS at [fd00:ec2::254], and EC2 as
// https://ec2.us-east-1.api.aws (the dual-stack name the SDK picks for an
// instance without IPv4, resolved by the lease's DNS server, the
// certificate verified against the image's bundle), claims the volume and
// boots it. No ec2_endpoint is set.
func testIPv6Only(t *testing.T) {
	sharedEnv(t)
	ns := ipv6Subnet(t)
	w := newWorld(t, harness.WorldOpts{})
	cloud := serveIPv6EC2(t, ns, w)
	imdsPeers := &peerLog{}
	ud := []byte("#cloud-config\nspotroot:\n" + tagRoot)
	statusCalls := map[string]bool{} // request ids of `spotroot status`'s calls
	guestIMDS := -1                  // IMDS calls made by the guest
	r, err := w.Boot(context.Background(), harness.BootOpts{UserData: ud, Timeout: 3 * time.Minute,
		Net: &harness.TapNet{NetNS: ns, Tap: "tap0", IMDS: v6IMDSAddr, WrapIMDS: imdsPeers.wrap},
		WhileUp: func(ctx context.Context, vm *harness.Running) error {
			guestIMDS = len(imdsPeers.list()) // the rest are status's, from the router's side
			statusOnIPv6(t, ctx, ns, w, vm.InstanceID, statusCalls)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %v: %s", r.InstanceID, r.Elapsed.Round(time.Millisecond), r.TestinitLine)
	for _, l := range r.Timeline {
		t.Log("  " + l)
	}
	checkPersistentRoot(t, r, 1) // no IPv4 lease; the callers below prove IPv6
	subnet := netip.MustParsePrefix(v6Subnet)
	peers := imdsPeers.list()
	if guestIMDS >= 0 {
		peers = peers[:guestIMDS]
	}
	if len(peers) == 0 {
		t.Errorf("IMDS was never called")
	}
	for _, a := range peers {
		if !subnet.Contains(a) {
			t.Errorf("IMDS called from %v, want an address of the IPv6 subnet %v", a, subnet)
		}
	}

	// EC2's side: every call the instance made came over TLS for the
	// dual-stack name, from the subnet, and the volume was attached.
	evs := ipv6EC2Calls(t, w, r.InstanceID, statusCalls)
	// The attach over that path: answered, or committed with its answer
	// lost (the hostile cloud's 500 InternalError, audited with it). The
	// persistent root on the hot-plugged disk (checkPersistentRoot) is the
	// attachment's effect; the instance is gone by now, and its volume
	// detached with it.
	attached := false
	for _, ev := range evs {
		if ev.EventName == "AttachVolume" && ev.RequestParameters["VolumeId"] == w.VolumeID &&
			(ev.ErrorCode == "" || ev.ErrorCode == "InternalError") {
			attached = true
		}
	}
	if !attached {
		t.Errorf("audit: no AttachVolume of %s by %s that EC2 carried out", w.VolumeID, r.InstanceID)
	}
	if n := cloud.dns.Queries(harness.EC2DualStackHost, "AAAA"); n == 0 {
		t.Errorf("the lease's DNS server got no AAAA query for %s (queries: %v)", harness.EC2DualStackHost, cloud.dns.AllQueries())
	}
	if n := cloud.dns.Queries(harness.EC2Host, "A") + cloud.dns.Queries(harness.EC2Host, "AAAA"); n != 0 {
		t.Errorf("%d queries for the IPv4-only endpoint %s on an IPv6-only instance (queries: %v)", n, harness.EC2Host, cloud.dns.AllQueries())
	}
	hs := cloud.handshakes()
	if hs[harness.EC2DualStackHost] == 0 {
		t.Errorf("no TLS handshake for %s (handshakes: %v)", harness.EC2DualStackHost, hs)
	}
	for sni := range hs {
		if sni != harness.EC2DualStackHost {
			t.Errorf("TLS handshake for server name %q, want only %s", sni, harness.EC2DualStackHost)
		}
	}

	// A boot that fails tags the instance through the same endpoint: on
	// an IPv6-only subnet that too must be the dual-stack name.
	bad := []byte("#cloud-config\nspotroot:\n" + tagRoot + "  timeouts:\n    atach: 5s\n")
	r, err = w.Boot(context.Background(), harness.BootOpts{UserData: bad, Timeout: 3 * time.Minute,
		Net: &harness.TapNet{NetNS: ns, Tap: "tap0", IMDS: v6IMDSAddr}})
	if err != nil {
		t.Fatal(err)
	}
	expectFallback(t, r, "config")
	tagged := false
	for _, ev := range ipv6EC2Calls(t, w, r.InstanceID, nil) {
		tagged = tagged || ev.EventName == "CreateTags" && ev.ErrorCode == ""
	}
	if inst, _ := w.Sim.Instance(r.InstanceID); !tagged || inst.Tags["spotroot:boot"] != "failed:config" {
		t.Errorf("failed boot: CreateTags succeeded %v, instance tags %v; want spotroot:boot=failed:config", tagged, inst.Tags)
	}
}

// ipv6EC2Calls returns the audit log's calls by instance id (but not those
// of the request ids in skip), checking that each came over TLS for EC2's
// dual-stack name from the IPv6 subnet; it fails the test when there are
// none.
func ipv6EC2Calls(t *testing.T, w *harness.World, id string, skip map[string]bool) []sim.AuditEvent {
	t.Helper()
	all, err := w.Server.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix(v6Subnet)
	var evs []sim.AuditEvent
	versions := map[string]int{}
	for _, ev := range all {
		if ev.UserIdentity.SourceInstance != id || skip[ev.RequestID] {
			continue
		}
		evs = append(evs, ev)
		d := ev.TLSDetails
		if d == nil || d.ClientProvidedHostHeader != harness.EC2DualStackHost {
			t.Errorf("%s %s: tlsDetails %+v, want a TLS call for host %s", ev.EventName, ev.RequestID, d, harness.EC2DualStackHost)
		} else {
			versions[d.TLSVersion]++
		}
		if a, err := netip.ParseAddr(ev.SourceIP); err != nil || !subnet.Contains(a) {
			t.Errorf("%s from %q, want an address of the IPv6 subnet %v", ev.EventName, ev.SourceIP, subnet)
		}
	}
	if len(evs) == 0 {
		t.Errorf("audit: no EC2 call from %s", id)
	} else {
		t.Logf("audit: %d EC2 calls from %s (%s), over TLS %v for %s", len(evs), id, evs[0].SourceIP, versions, harness.EC2DualStackHost)
	}
	return evs
}

// statusOnIPv6 runs `spotroot status` (the image's binary) on the subnet's
// own IPv6-only side of the namespace, as on an IPv6-only instance: with
// nothing set it must find IMDS at [fd00:ec2::254] and EC2 by its
// dual-stack name (resolved by the namespace's resolv.conf, the certificate
// checked against the image's bundle) and list the instance's volume. Its
// calls' request ids go into calls.
func statusOnIPv6(t *testing.T, ctx context.Context, ns string, w *harness.World, id string, calls map[string]bool) {
	t.Helper()
	etc := filepath.Join("/etc/netns", ns) // `ip netns exec` binds these over /etc
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(etc)
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+v6DNS+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := w.Server.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	tl := filepath.Join(t.TempDir(), "timeline.log")
	if err := os.WriteFile(tl, []byte("spotroot: start pid=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// EC2 is eventually consistent (the hostile profile's lagging view):
	// right after the boot the attachment may not show yet, so status is
	// run again, as an operator would, until it does or the bound ends.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var rep struct {
		InstanceID string `json:"instance_id"`
		Volumes    []struct {
			ID string `json:"volume_id"`
		} `json:"volumes"`
	}
	for attempt := 1; ; attempt++ {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, w.Env.SpotrootBin, "status", "--output", "json", "--timeline", tl)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=" + w.Env.CABundle}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		rep.Volumes = nil
		jerr := json.Unmarshal(out, &rep)
		if err == nil && jerr == nil && rep.InstanceID == id && len(rep.Volumes) == 1 && rep.Volumes[0].ID == w.VolumeID {
			break
		}
		if err != nil || jerr != nil || rep.InstanceID != id || len(rep.Volumes) > 1 || attempt == 10 {
			t.Errorf("spotroot status on the IPv6-only subnet (attempt %d): %v, %v; want instance %s with volume %s\nstdout: %s\nstderr: %s", attempt, err, jerr, id, w.VolumeID, out, stderr.String())
			break
		}
		time.Sleep(time.Second) // the view lags by seconds (ConsistencyLag)
	}
	after, err := w.Server.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range after[len(before):] {
		if ev.UserIdentity.SourceInstance != id {
			continue
		}
		calls[ev.RequestID] = true
		n++
		if d := ev.TLSDetails; d == nil || d.ClientProvidedHostHeader != harness.EC2DualStackHost || ev.EventName != "DescribeVolumes" {
			t.Errorf("spotroot status: %s with tlsDetails %+v, want DescribeVolumes over TLS for %s", ev.EventName, d, harness.EC2DualStackHost)
		}
	}
	if n == 0 {
		t.Errorf("spotroot status made no EC2 call")
	} else {
		t.Logf("spotroot status on the subnet: %d EC2 calls over TLS for %s; volumes %+v", n, harness.EC2DualStackHost, rep.Volumes)
	}
}
