package netup

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Resolver returns a resolver that sends DNS to the lease's servers and to
// Amazon DNS (169.254.169.253): PID 1 has no /etc/resolv.conf it can trust.
// The pure-Go resolver is used and whatever server it would dial (from a
// stale resolv.conf or its 127.0.0.1 default) is replaced: a UDP query goes
// to all our servers at once and the first answer wins, so an unreachable
// fallback costs nothing and the result does not depend on how many servers
// the resolver thinks it has. TCP (after a truncated answer) tries them in
// order.
func (h *Handle) Resolver() *net.Resolver {
	servers := h.dnsServers()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			switch network {
			case "udp", "udp4", "udp6":
				c, err := net.ListenUDP(udpNet(servers), nil)
				if err != nil {
					return nil, err
				}
				return &fanoutConn{UDPConn: c, servers: servers}, nil
			}
			var d net.Dialer
			var errs []error
			for _, s := range servers {
				c, err := d.DialContext(ctx, "tcp", net.UDPAddrFromAddrPort(s).String())
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
				if ctx.Err() != nil {
					break
				}
			}
			return nil, errors.Join(errs...)
		},
	}
}

// dnsServers are the lease's servers and Amazon DNS of each address family
// the instance has: 169.254.169.253, and fd00:ec2::253 with IPv6 (an
// IPv6-only subnet has no IPv4 at all).
func (h *Handle) dnsServers() []netip.AddrPort {
	l := h.Lease()
	out := make([]netip.AddrPort, 0, len(l.DNS)+2)
	seen := map[netip.Addr]bool{}
	for _, a := range l.DNS {
		out = append(out, netip.AddrPortFrom(a, 53))
		seen[a] = true
	}
	if !seen[AmazonDNS] && (l.HasIPv4() || !l.HasIPv6()) {
		out = append(out, netip.AddrPortFrom(AmazonDNS, 53))
	}
	if !seen[AmazonDNS6] && l.HasIPv6() {
		out = append(out, netip.AddrPortFrom(AmazonDNS6, 53))
	}
	return out
}

// udpNet is "udp4" when every server is IPv4 (no IPv6 socket needed), else
// "udp": a dual-stack socket reaches both families.
func udpNet(servers []netip.AddrPort) string {
	for _, s := range servers {
		if s.Addr().Is6() && !s.Addr().Is4In6() {
			return "udp"
		}
	}
	return "udp4"
}

// fanoutConn is a "connected" UDP conn to several servers: Write sends to
// each, Read returns the first datagram from any of them (the Go resolver
// checks the ID and question itself). It stays a net.PacketConn, so the
// resolver uses datagram framing.
type fanoutConn struct {
	*net.UDPConn
	servers []netip.AddrPort
}

func (c *fanoutConn) Write(b []byte) (int, error) {
	var errs []error
	for _, s := range c.servers {
		if _, err := c.WriteToUDPAddrPort(b, s); err != nil {
			errs = append(errs, err) // e.g. no route to the fallback
			continue
		}
	}
	if len(errs) == len(c.servers) {
		return 0, errors.Join(errs...)
	}
	return len(b), nil
}

func (c *fanoutConn) Read(b []byte) (int, error) {
	for {
		n, from, err := c.ReadFromUDPAddrPort(b)
		if err != nil {
			return n, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		for _, s := range c.servers {
			if s == from {
				return n, nil
			}
		}
	}
}

func (c *fanoutConn) RemoteAddr() net.Addr {
	return net.UDPAddrFromAddrPort(c.servers[0])
}
