package netup

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/testenv"
)

// The integration tests build two network namespaces joined by a veth pair:
// "srv" holds vs0 (10.99.0.1/24), a DHCP server written here and a tiny DNS
// server; "cli" holds vc0, left down. The DHCP server runs in this process on
// a thread switched into srv just long enough to open its sockets. Up runs in
// a child process (this test binary re-executed under `ip netns exec cli`),
// so every goroutine, including the resolver's, is in cli. Nothing touches
// the host's own interfaces or routes.

const (
	childEnv  = "SPOTROOT_NETUP_CHILD"
	srvIface  = "vs0"
	cliIface  = "vc0"
	dnsName   = "imds.spotroot.test."
	dnsAnswer = "10.99.0.77"
)

var srvAddr = netip.MustParseAddr("10.99.0.1")

// scenario is what the server offers and what the child asserts.
type scenario struct {
	Name        string
	Lease       string // yiaddr/prefix
	Router      string // "" = no router option
	DNS         bool   // offer srvAddr as DNS (and serve dnsName)
	NoServer    bool   // no DHCP server at all
	DHCPTimeout time.Duration
	WantIMDS    bool // expect an on-link 169.254.169.254/32 route
	WantError   string
	// IPv6Only: no DHCPv4 server; dnsmasq sends router advertisements
	// (Managed flag) and hands out addresses by DHCPv6, as EC2 does in an
	// IPv6-only subnet.
	IPv6Only bool
	// IPv6Now: configuration asks for IPv6 from the start (imds: ipv6),
	// so the kernel's IPv6 is not held off while DHCPv4 runs.
	IPv6Now bool
}

func TestUp(t *testing.T) {
	requireRoot(t)
	for _, sc := range []scenario{
		{Name: "no-router", Lease: "10.99.0.50/24", WantIMDS: true},
		{Name: "router", Lease: "10.99.0.51/24", Router: "10.99.0.1", DNS: true},
		{Name: "slirp-like", Lease: "169.254.2.15/16"}, // the /16 covers IMDS
		{Name: "no-server", NoServer: true, DHCPTimeout: 1200 * time.Millisecond, WantError: "dhcp on vc0: no offer after"},
		{Name: "ipv6-only", IPv6Only: true, DHCPTimeout: 15 * time.Second},
		{Name: "ipv6-now", Lease: "10.99.0.52/24", WantIMDS: true, IPv6Now: true},
	} {
		t.Run(sc.Name, func(t *testing.T) { runScenario(t, sc) })
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "requires root (creates network namespaces and veth pairs)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Skip(t, "requires iproute2's ip: "+err.Error())
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func runScenario(t *testing.T, sc scenario) {
	id := fmt.Sprintf("spotroot-t%d-%s", os.Getpid(), sc.Name)
	srv, cli := id+"-srv", id+"-cli"
	// Registered before creation so a half-built setup is removed too.
	t.Cleanup(func() {
		for _, ns := range []string{srv, cli} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	ip(t, "netns", "add", srv)
	ip(t, "netns", "add", cli)
	ip(t, "-n", srv, "link", "set", "lo", "up")
	ip(t, "-n", cli, "link", "set", "lo", "up")
	ip(t, "-n", srv, "link", "add", srvIface, "type", "veth", "peer", "name", cliIface, "netns", cli)
	ip(t, "-n", srv, "addr", "add", srvAddr.String()+"/24", "dev", srvIface)
	ip(t, "-n", srv, "link", "set", srvIface, "up")

	var served atomic.Int32
	if sc.IPv6Only {
		startRA(t, srv)
	} else if !sc.NoServer {
		inNetns(t, srv, func() {
			startDHCP(t, sc, &served)
			if sc.DNS {
				startDNS(t)
			}
		})
	}

	spec, _ := json.Marshal(sc)
	cmd := exec.Command("ip", "netns", "exec", cli, os.Args[0], "-test.run=^TestUpChild$", "-test.v", "-test.count=1", "-test.timeout=60s")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	out, err := cmd.CombinedOutput()
	t.Logf("child output:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestUpChild") {
		t.Fatal("child did not run TestUpChild")
	}
	if !sc.NoServer && !sc.IPv6Only && served.Load() < 2 {
		t.Errorf("DHCP server answered %d messages, want >= 2 (offer, ack)", served.Load())
	}
}

// inNetns runs fn on a thread switched into the named namespace. Sockets
// created there stay in it after the thread switches back.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it on exit.
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

func startDHCP(t *testing.T, sc scenario, served *atomic.Int32) {
	pfx := netip.MustParsePrefix(sc.Lease)
	mods := []dhcpv4.Modifier{
		dhcpv4.WithYourIP(pfx.Addr().AsSlice()),
		dhcpv4.WithNetmask(net.CIDRMask(pfx.Bits(), 32)),
		dhcpv4.WithServerIP(srvAddr.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(srvAddr.AsSlice())),
		dhcpv4.WithLeaseTime(3600),
	}
	if sc.Router != "" {
		mods = append(mods, dhcpv4.WithRouter(net.ParseIP(sc.Router)))
	}
	if sc.DNS {
		mods = append(mods, dhcpv4.WithDNS(srvAddr.AsSlice()))
	}
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		var typ dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			return
		}
		resp, err := dhcpv4.NewReplyFromRequest(m, append(mods, dhcpv4.WithMessageType(typ))...)
		if err != nil {
			t.Errorf("dhcp reply: %v", err)
			return
		}
		if _, err := conn.WriteTo(resp.ToBytes(), peer); err != nil {
			t.Errorf("dhcp send: %v", err)
			return
		}
		served.Add(1)
	}
	s, err := server4.NewServer(srvIface, &net.UDPAddr{Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		t.Fatalf("dhcp server: %v", err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Close() })
}

// startDNS answers A queries for dnsName with dnsAnswer and anything else
// with an empty NOERROR answer. Hand-rolled: the message is tiny.
func startDNS(t *testing.T) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(srvAddr, 53)))
	if err != nil {
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if resp := dnsReply(buf[:n]); resp != nil {
				_, _ = c.WriteToUDPAddrPort(resp, from)
			}
		}
	}()
}

func dnsReply(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	// Walk the question name.
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	i++ // root label
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	qend := i + 4
	resp := append([]byte(nil), q[:qend]...)
	resp[2] = 0x84 | (q[2] & 0x01) // QR, AA, copy RD
	resp[3] = 0x00                 // NOERROR
	binary.BigEndian.PutUint16(resp[8:], 0)
	binary.BigEndian.PutUint16(resp[10:], 0)
	if strings.EqualFold(strings.Join(labels, ".")+".", dnsName) && qtype == 1 {
		binary.BigEndian.PutUint16(resp[6:], 1)
		a := netip.MustParseAddr(dnsAnswer).As4()
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		resp = append(resp, a[:]...)
	} else {
		binary.BigEndian.PutUint16(resp[6:], 0)
	}
	return resp
}

// srv6 is the IPv6-only subnet the router advertises.
var srv6 = netip.MustParsePrefix("fd00:99::/64")

// startRA runs dnsmasq in the server namespace as the subnet's router:
// router advertisements with the Managed flag and DHCPv6 for addresses,
// no DHCPv4, no DNS.
func startRA(t *testing.T, ns string) {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		testenv.Skip(t, "dnsmasq not installed (apt-get install dnsmasq-base)")
	}
	ip(t, "-n", ns, "addr", "add", "fd00:99::1/64", "dev", srvIface, "nodad")
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface="+srvIface, "--bind-interfaces", "--enable-ra", "--leasefile-ro",
		"--dhcp-range=fd00:99::100,fd00:99::1ff,64,1h", "--ra-param="+srvIface+",1,600", "--user=root", "--log-dhcp", "--log-facility=-")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Logf("dnsmasq:\n%s", out.String())
	})
}

// checkIPv6Only: no IPv4, a DHCPv6 /128 from the subnet, a default route
// through the advertising router; Down removes the address and the link.
func checkIPv6Only(t *testing.T, h *Handle, link netlink.Link) {
	l := h.Lease()
	if l.HasIPv4() || !l.HasIPv6() {
		t.Fatalf("lease %+v: want IPv6 only", l)
	}
	if l.Addr6.Bits() != 128 || !srv6.Contains(l.Addr6.Addr()) {
		t.Errorf("address %v, want a DHCPv6 /128 in %v", l.Addr6, srv6)
	}
	if !l.Router6.IsLinkLocalUnicast() {
		t.Errorf("router %v, want the router's link-local address", l.Router6)
	}
	if rs, err := netlink.RouteGet(IMDS6.AsSlice()); err != nil || len(rs) == 0 || rs[0].LinkIndex != link.Attrs().Index {
		t.Errorf("fd00:ec2::254 not routed via %s: %v %v", cliIface, rs, err)
	}
	if a4, _ := netlink.AddrList(link, netlink.FAMILY_V4); len(a4) != 0 {
		t.Errorf("IPv4 addresses on an IPv6-only subnet: %v", a4)
	}
	if err := h.Down(); err != nil {
		t.Errorf("Down: %v", err)
	}
	assertClean(t, link)
	a6, _ := netlink.AddrList(link, netlink.FAMILY_V6)
	for _, a := range a6 {
		if !a.IP.IsLinkLocalUnicast() {
			t.Errorf("IPv6 address left after Down: %v", a.IPNet)
		}
	}
}

// TestUpChild is the half of TestUp that runs inside the client namespace.
func TestUpChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("helper for TestUp; runs only in its child process")
	}
	var sc scenario
	if err := json.Unmarshal([]byte(spec), &sc); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	h, err := Up(ctx, Config{Interface: cliIface, LinkTimeout: 5 * time.Second, DHCPTimeout: sc.DHCPTimeout, Logger: log, IPv6Now: sc.IPv6Now})
	t.Logf("Up took %v", time.Since(start))
	link, lerr := netlink.LinkByName(cliIface)
	if lerr != nil {
		t.Fatal(lerr)
	}
	if sc.WantError != "" {
		if err == nil || !strings.Contains(err.Error(), sc.WantError) {
			t.Fatalf("Up error = %v, want one containing %q", err, sc.WantError)
		}
		t.Logf("Up error (expected): %v", err)
		assertClean(t, link)
		return
	}
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if sc.IPv6Only {
		checkIPv6Only(t, h, link)
		return
	}

	l := h.Lease()
	if want := netip.MustParsePrefix(sc.Lease); l.Addr != want {
		t.Errorf("lease address %v, want %v", l.Addr, want)
	}
	if l.Interface != cliIface || l.Server != srvAddr || l.LeaseTime != time.Hour {
		t.Errorf("lease %+v", l)
	}
	if sc.Router == "" && l.Router.IsValid() || sc.Router != "" && l.Router.String() != sc.Router {
		t.Errorf("lease router %v, want %q", l.Router, sc.Router)
	}

	// The kernel's IPv6 was held off while DHCPv4 answered: not even a
	// link-local address; with IPv6Now it configured the link at once.
	if sc.IPv6Now {
		waitLinkLocal(t, link)
		if v := disableIPv6(t); v != "0" {
			t.Errorf("disable_ipv6 = %s with IPv6Now, want 0", v)
		}
	} else {
		if a6, _ := netlink.AddrList(link, netlink.FAMILY_V6); len(a6) != 0 {
			t.Errorf("IPv6 addresses on an IPv4 subnet while DHCPv4 answered: %v", a6)
		}
		if v := disableIPv6(t); v != "1" {
			t.Errorf("disable_ipv6 = %s during Up on an IPv4 subnet, want 1 (held)", v)
		}
	}

	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != sc.Lease {
		t.Errorf("addresses %v, want only %s", addrs, sc.Lease)
	}
	routes := routeStrings(t, link)
	t.Logf("routes: %v", routes)
	pfx := netip.MustParsePrefix(sc.Lease).Masked().String()
	want := []string{pfx + " on-link"} // the kernel's prefix route
	if sc.Router != "" {
		want = append(want, "default via "+sc.Router)
	}
	if sc.WantIMDS {
		want = append(want, "169.254.169.254/32 on-link")
	}
	slices.Sort(want)
	if !slices.Equal(routes, want) {
		t.Errorf("routes %v, want %v", routes, want)
	}
	if rs, err := netlink.RouteGet(IMDS.AsSlice()); err != nil || len(rs) == 0 || rs[0].LinkIndex != link.Attrs().Index {
		t.Errorf("IMDS not routed via %s: %v %v", cliIface, rs, err)
	}

	if sc.DNS {
		if !slices.Equal(l.DNS, []netip.Addr{srvAddr}) {
			t.Errorf("lease DNS %v", l.DNS)
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := h.Resolver().LookupHost(rctx, dnsName)
		rcancel()
		if err != nil || !slices.Equal(addrs, []string{dnsAnswer}) {
			t.Errorf("LookupHost(%s) = %v, %v; want [%s]", dnsName, addrs, err, dnsAnswer)
		}
	}

	if err := h.Down(); err != nil {
		t.Errorf("Down: %v", err)
	}
	assertClean(t, link)
	if err := h.Down(); err != nil {
		t.Errorf("second Down: %v", err)
	}
}

// assertClean checks the link is down with no IPv4 address or route.
func assertClean(t *testing.T, link netlink.Link) {
	t.Helper()
	l, err := netlink.LinkByIndex(link.Attrs().Index)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("%s still up", l.Attrs().Name)
	}
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
	if len(addrs) != 0 {
		t.Errorf("addresses left: %v", addrs)
	}
	if rs := routeStrings(t, l); len(rs) != 0 {
		t.Errorf("routes left: %v", rs)
	}
	// The next init finds the kernel's IPv6 on, as the link came.
	if v := disableIPv6(t); v != "0" {
		t.Errorf("disable_ipv6 = %s after Down, want 0 (as before Up)", v)
	}
}

// disableIPv6 reads the client link's disable_ipv6 switch (per network
// namespace: this process's).
func disableIPv6(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(procNetIPv6 + "/" + cliIface + "/disable_ipv6")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// waitLinkLocal waits (bounded) for the kernel to give the link its IPv6
// link-local address.
func waitLinkLocal(t *testing.T, link netlink.Link) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a6, _ := netlink.AddrList(link, netlink.FAMILY_V6)
		for _, a := range a6 {
			if a.IP.IsLinkLocalUnicast() {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no IPv6 link-local address on %s with IPv6Now: %v", cliIface, a6)
		}
	}
}

// routeStrings lists the link's IPv4 routes in the main table, sorted.
func routeStrings(t *testing.T, link netlink.Link) []string {
	t.Helper()
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, routeString(r))
	}
	slices.Sort(out)
	return out
}

func TestWaitLinkTimeout(t *testing.T) {
	requireRoot(t)
	id := fmt.Sprintf("spotroot-t%d-wait", os.Getpid())
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", id).Run() })
	ip(t, "netns", "add", id)
	var err error
	start := time.Now()
	inNetns(t, id, func() {
		// Only subscribes and listens; the namespace is empty but for lo.
		_, err = waitLink(context.Background(), Config{LinkTimeout: 300 * time.Millisecond}, slog.New(slog.DiscardHandler), &Handle{})
	})
	if err == nil || !strings.Contains(err.Error(), "wait for an ethernet link: none appeared in 300ms") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestWanted(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	dev := func(name string, mac net.HardwareAddr, flags net.Flags) *netlink.Device {
		return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac, EncapType: "ether", Flags: flags}}
	}
	lo := dev("lo", make(net.HardwareAddr, 6), net.FlagLoopback)
	lo.EncapType = "loopback"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0", HardwareAddr: mac, EncapType: "ether"}}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", HardwareAddr: mac, EncapType: "ether"}}
	for _, c := range []struct {
		l    netlink.Link
		name string
		want bool
	}{
		{dev("eth0", mac, 0), "", true},
		{dev("ens5", mac, net.FlagUp), "", true},
		{lo, "", false},
		{dev("eth0", nil, 0), "", false},
		{dev("eth0", make(net.HardwareAddr, 6), 0), "", false},
		{veth, "", false},
		{br, "", false},
		{veth, "veth0", true},
		{dev("eth0", mac, 0), "eth1", false},
		{nil, "", false},
	} {
		if got := wanted(c.l, c.name); got != c.want {
			t.Errorf("wanted(%v, %q) = %v, want %v", c.l, c.name, got, c.want)
		}
	}
}

func TestLeaseFromACK(t *testing.T) {
	ack, err := dhcpv4.New(
		dhcpv4.WithYourIP(net.IPv4(172, 31, 5, 9)),
		dhcpv4.WithNetmask(net.CIDRMask(20, 32)),
		dhcpv4.WithRouter(net.IPv4(172, 31, 0, 1)),
		dhcpv4.WithDNS(net.IPv4(172, 31, 0, 2), net.IPv4(0, 0, 0, 0)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(172, 31, 0, 1))),
		dhcpv4.WithLeaseTime(3600),
	)
	if err != nil {
		t.Fatal(err)
	}
	l, err := leaseFromACK(ack)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr.String() != "172.31.5.9/20" || l.Router.String() != "172.31.0.1" || fmt.Sprint(l.DNS) != "[172.31.0.2]" ||
		l.Server.String() != "172.31.0.1" || l.LeaseTime != time.Hour {
		t.Errorf("lease %+v", l)
	}

	// No mask, no router: classful prefix, invalid router.
	ack, _ = dhcpv4.New(dhcpv4.WithYourIP(net.IPv4(169, 254, 2, 15)), dhcpv4.WithServerIP(net.IPv4(169, 254, 2, 2)))
	if l, err = leaseFromACK(ack); err != nil || l.Addr.String() != "169.254.2.15/16" || l.Router.IsValid() || l.Server.String() != "169.254.2.2" {
		t.Errorf("lease %+v, %v", l, err)
	}

	ack, _ = dhcpv4.New()
	if _, err := leaseFromACK(ack); err == nil {
		t.Error("lease without yiaddr accepted")
	}
}

func TestDNSServers(t *testing.T) {
	h := &Handle{lease: Lease{DNS: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}}
	if got := fmt.Sprint(h.dnsServers()); got != "[10.0.0.2:53 169.254.169.253:53]" {
		t.Errorf("servers %s", got)
	}
	h = &Handle{lease: Lease{DNS: []netip.Addr{AmazonDNS}}}
	if got := fmt.Sprint(h.dnsServers()); got != "[169.254.169.253:53]" {
		t.Errorf("servers %s", got)
	}
	// IPv6 only: Amazon DNS at fd00:ec2::253, and no IPv4 server at all.
	h = &Handle{lease: Lease{Addr6: netip.MustParsePrefix("2600:1f18::5/128")}}
	if got := fmt.Sprint(h.dnsServers()); got != "[[fd00:ec2::253]:53]" {
		t.Errorf("IPv6-only servers %s", got)
	}
	h = &Handle{lease: Lease{Addr: netip.MustParsePrefix("10.0.0.5/24"), Addr6: netip.MustParsePrefix("2600:1f18::5/128")}}
	if got := fmt.Sprint(h.dnsServers()); got != "[169.254.169.253:53 [fd00:ec2::253]:53]" {
		t.Errorf("dual-stack servers %s", got)
	}
	var nilH *Handle
	if nilH.Down() != nil || nilH.Lease().Addr.IsValid() {
		t.Error("nil handle")
	}
}

// TestFanoutConn: the first answer from any server wins; strangers are ignored.
func TestFanoutConn(t *testing.T) {
	slow, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	go func() {
		b := make([]byte, 64)
		n, from, err := fast.ReadFromUDP(b)
		if err == nil {
			_, _ = fast.WriteToUDP(append([]byte("fast:"), b[:n]...), from)
		}
	}()
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	fc := &fanoutConn{UDPConn: c, servers: []netip.AddrPort{
		slow.LocalAddr().(*net.UDPAddr).AddrPort(), fast.LocalAddr().(*net.UDPAddr).AddrPort(),
	}}
	defer fc.Close()
	var _ net.PacketConn = fc // the resolver must see datagram framing
	_ = fc.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fc.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := fc.Read(b)
	if err != nil || string(b[:n]) != "fast:q" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
}
