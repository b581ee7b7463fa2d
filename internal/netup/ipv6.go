package netup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/safego"
)

// IPv6 addresses of the EC2 services on Nitro instances (EC2 User Guide,
// "Instance metadata service" / "Amazon DNS server": fd00:ec2::254 and
// fd00:ec2::253), reached through the VPC router like any address.
var (
	IMDS6      = netip.MustParseAddr("fd00:ec2::254")
	AmazonDNS6 = netip.MustParseAddr("fd00:ec2::253")
)

// lease6 is what IPv6 configuration produced: the kernel's part (router
// advertisement: default route, on-link prefix, maybe a SLAAC address) and
// ours (the DHCPv6 address, added with NODAD and recorded for Down).
type lease6 struct {
	Addr   netip.Prefix // the global address in use (DHCPv6's /128, or SLAAC's)
	Router netip.Addr   // the advertised default router (link-local)
	DNS    []netip.Addr
	added  *netlink.Addr // the DHCPv6 address we added; nil if none
}

// pollIPv6 is how often the IPv6 state is re-read while waiting; router
// advertisements are processed by the kernel, so there is no event to take.
const pollIPv6 = 50 * time.Millisecond

// up6 waits for IPv6 on link: a router advertisement (the kernel installs
// the default route and on-link prefix itself, accept_ra is on for a host)
// and an address: DHCPv6's (EC2 assigns instance IPv6 addresses by DHCPv6,
// its router advertisements carry the Managed flag) or one the kernel made
// by SLAAC. It returns on the first usable state or when ctx ends.
func up6(ctx context.Context, link netlink.Link, log *slog.Logger) (lease6, error) {
	name, idx := link.Attrs().Name, link.Attrs().Index
	start := time.Now()
	var l lease6
	dhcpDone := make(chan dhcp6Result, 1)
	dhcpStarted := false
	tick := time.NewTicker(pollIPv6)
	defer tick.Stop()
	for {
		ll, global := addrs6(link)
		if ll.IsValid() && !dhcpStarted {
			log.Debug("ipv6 link-local address usable; starting DHCPv6", "address", ll, "after", time.Since(start).Round(time.Millisecond))
			dhcpStarted = true
			safego.Go("dhcpv6 client", func() { dhcpDone <- dhcp6(ctx, link, log) })
		}
		select {
		case r := <-dhcpDone:
			if r.err != nil {
				log.Debug("dhcpv6 gave nothing", "err", r.err)
				break
			}
			a := &netlink.Addr{IPNet: prefixNet(r.addr), Flags: unix.IFA_F_NODAD}
			switch err := netlink.AddrAdd(link, a); {
			case err == nil:
				l.added = a
			case errors.Is(err, syscall.EEXIST):
			default:
				return l, fmt.Errorf("add DHCPv6 address %s to %s: %w", r.addr, name, err)
			}
			l.DNS = r.dns
			global = r.addr
			log.Debug("dhcpv6 address", "address", r.addr, "after", time.Since(start).Round(time.Millisecond))
		default:
		}
		if router := defaultRouter6(idx); router.IsValid() && global.IsValid() {
			log.Debug("ipv6 ready", "router", router, "address", global, "after", time.Since(start).Round(time.Millisecond))
			l.Router, l.Addr = router, global
			return l, nil
		}
		select {
		case <-ctx.Done():
			err := fmt.Errorf("ipv6 on %s: no router advertisement with an address (router %v, address %v): %w",
				name, defaultRouter6(idx), global, ctx.Err())
			return l, err
		case <-tick.C:
		}
	}
}

// addrs6 returns the link's usable (not tentative) link-local and global
// IPv6 addresses.
func addrs6(link netlink.Link) (ll netip.Addr, global netip.Prefix) {
	as, err := netlink.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return
	}
	for _, a := range as {
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		switch {
		case ip.IsLinkLocalUnicast():
			ll = ip
		case ip.IsGlobalUnicast() && !global.IsValid():
			global = netip.PrefixFrom(ip, ones)
		}
	}
	return
}

// defaultRouter6 returns the gateway of the link's IPv6 default route.
func defaultRouter6(idx int) netip.Addr {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Addr{}
	}
	for _, r := range rs {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			if a, ok := netip.AddrFromSlice(r.Gw); ok {
				return a
			}
		}
	}
	return netip.Addr{}
}

type dhcp6Result struct {
	addr netip.Prefix
	dns  []netip.Addr
	err  error
}

// dhcp6 asks for an address (IA_NA) with SOLICIT/ADVERTISE/REQUEST/REPLY.
func dhcp6(ctx context.Context, link netlink.Link, log *slog.Logger) dhcp6Result {
	name := link.Attrs().Name
	c, err := nclient6.New(name, nclient6.WithTimeout(time.Second), nclient6.WithRetry(1))
	if err != nil {
		return dhcp6Result{err: fmt.Errorf("dhcpv6 on %s: %w", name, err)}
	}
	defer c.Close()
	per := firstAttempt
	var last error
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, per)
		reply, err := c.RapidSolicit(actx)
		cancel()
		if err == nil {
			return fromReply(reply)
		}
		last = err
		per = min(per*2, maxAttempt)
	}
	log.Debug("dhcpv6 attempts ended", "err", last)
	return dhcp6Result{err: fmt.Errorf("dhcpv6 on %s: %v", name, last)}
}

func fromReply(m *dhcpv6.Message) dhcp6Result {
	var r dhcp6Result
	if ia := m.Options.OneIANA(); ia != nil {
		for _, a := range ia.Options.Addresses() {
			if ip, ok := netip.AddrFromSlice(a.IPv6Addr); ok && ip.Is6() && ip.IsGlobalUnicast() {
				r.addr = netip.PrefixFrom(ip, 128)
				break
			}
		}
	}
	for _, d := range m.Options.DNS() {
		if a, ok := netip.AddrFromSlice(d); ok {
			r.dns = append(r.dns, a)
		}
	}
	if !r.addr.IsValid() {
		r.err = errors.New("dhcpv6 reply without an address")
	}
	return r
}
