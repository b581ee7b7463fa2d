// Package netup brings the primary NIC up with DHCP for PID 1 and takes it
// down again before the real init starts, leaving no trace behind.
package netup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/safego"
)

// Defaults for zero Config fields.
const (
	DefaultLinkTimeout = 10 * time.Second
	DefaultDHCPTimeout = 10 * time.Second
)

var (
	// IMDS is the EC2 instance metadata service address.
	IMDS = netip.MustParseAddr("169.254.169.254")
	// AmazonDNS is the VPC resolver reachable from every instance.
	AmazonDNS = netip.MustParseAddr("169.254.169.253")
)

// rtprotDHCP marks our routes ("proto dhcp" in ip route), as dhcpcd does.
const rtprotDHCP = 16

// Lease is what the DHCP server handed out.
type Lease struct {
	Interface string
	Addr      netip.Prefix // invalid on an IPv6-only subnet (no DHCPv4)
	Router    netip.Addr   // may be invalid: no router option (QEMU slirp)
	DNS       []netip.Addr // IPv4 and IPv6 servers
	Server    netip.Addr
	LeaseTime time.Duration
	// Addr6 and Router6 are set when IPv6 was configured (an IPv6-only
	// subnet: router advertisement plus DHCPv6 or SLAAC).
	Addr6   netip.Prefix
	Router6 netip.Addr
}

// HasIPv4 reports whether the instance got an IPv4 address.
func (l Lease) HasIPv4() bool { return l.Addr.IsValid() }

// HasIPv6 reports whether IPv6 was configured.
func (l Lease) HasIPv6() bool { return l.Addr6.IsValid() }

// Config selects the link and bounds the waits.
type Config struct {
	Interface   string // "" = first ethernet link that appears
	LinkTimeout time.Duration
	DHCPTimeout time.Duration
	Logger      *slog.Logger
	// IPv6Now configures IPv6 from the start, beside DHCPv4 (the metadata
	// service is to be reached over IPv6: imds: ipv6). Otherwise the
	// kernel's IPv6 stays off on the link until DHCPv4 has had v4Grace
	// (ipv6Hold).
	IPv6Now bool
}

// Handle records exactly what Up configured, so Down can undo it.
type Handle struct {
	mu     sync.Mutex
	lease  Lease
	link   netlink.Link
	addr   *netlink.Addr   // nil if the address was already there
	addr6  *netlink.Addr   // the DHCPv6 address we added, or nil
	hold6  *ipv6Hold       // IPv6 held off on the link; released by Down at the latest
	routes []netlink.Route // in the order added
	down   bool
	log    *slog.Logger
}

// Up waits for an ethernet link, sets it up, runs DHCP and applies the
// lease: the address with its prefix (the kernel adds the on-link prefix
// route, so no router is needed), a default route via the router if there is
// one, and an on-link route to IMDS when nothing else reaches it.
func Up(ctx context.Context, cfg Config) (h *Handle, err error) {
	defer func() {
		// PID 1 must not die on a bug here: report it as a network error,
		// and leave the link's IPv6 as the next init expects it.
		if r := recover(); r != nil {
			rerr := h.releaseIPv6()
			h, err = nil, errors.Join(fmt.Errorf("netup: internal error: %v", r), rerr)
		}
	}()
	if cfg.LinkTimeout <= 0 {
		cfg.LinkTimeout = DefaultLinkTimeout
	}
	if cfg.DHCPTimeout <= 0 {
		cfg.DHCPTimeout = DefaultDHCPTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("phase", "netup")

	// The DHCP library draws its transaction ID with a non-blocking
	// getrandom in a busy loop; wait for the kernel RNG here instead, in
	// the background while the link comes up.
	rng := seedRNG()

	h = &Handle{log: log}
	link, err := waitLink(ctx, cfg, log, h)
	if err != nil {
		if rerr := h.releaseIPv6(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	name := link.Attrs().Name
	h.link, h.log = link, log.With("interface", name)

	l, err := h.dual(ctx, link, cfg, rng)
	if err != nil {
		h.setDown()
		return nil, err
	}
	h.lease = l
	if err := h.apply(); err != nil {
		// Undo the half-applied lease so a retry (or the real init) starts clean.
		if derr := h.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	router := "none (on-link)"
	if l.Router.IsValid() {
		router = l.Router.String()
	}
	if l.HasIPv4() {
		h.log.Info("network up", "address", l.Addr.String(), "router", router, "dns", fmt.Sprint(l.DNS), "lease", l.LeaseTime)
	} else {
		h.log.Info("network up (IPv6 only)", "address", l.Addr6.String(), "router", l.Router6.String(), "dns", fmt.Sprint(l.DNS))
	}
	return h, nil
}

// v4Grace is how long an IPv6 configuration that is ready first waits for
// DHCPv4: a dual-stack subnet answers DHCPv4 in milliseconds, an IPv6-only
// one never does.
const v4Grace = time.Second

// dual runs DHCPv4 and IPv6 configuration and prefers IPv4: an IPv4 lease
// ends the IPv6 wait, or keeps IPv6 from starting at all when the kernel's
// IPv6 is held off (ipv6Hold); that hold ends when DHCPv4 has had v4Grace
// or failed. IPv6 alone is taken once DHCPv4 has had v4Grace, so an
// IPv6-only subnet (no DHCPv4 server) costs the grace, the router
// advertisement and DHCPv6, not the DHCP timeout.
func (h *Handle) dual(ctx context.Context, link netlink.Link, cfg Config, rng <-chan struct{}) (Lease, error) {
	type res4 struct {
		l   Lease
		err error
	}
	type res6 struct {
		l   lease6
		err error
	}
	ctx4, cancel4 := context.WithCancel(ctx)
	defer cancel4()
	ctx6, cancel6 := context.WithTimeout(ctx, cfg.DHCPTimeout)
	defer cancel6()
	c4, c6 := make(chan res4, 1), make(chan res6, 1)
	v4Start := time.Now()
	safego.Go("dhcpv4 client", func() {
		l, err := dhcp(ctx4, link, cfg.DHCPTimeout, rng, h.log)
		c4 <- res4{l, err}
	})
	started6 := false
	start6 := func() {
		started6 = true
		if err := h.releaseIPv6(); err != nil {
			h.log.Warn("IPv6 configuration may not start", "err", err)
		}
		safego.Go("ipv6 setup", func() {
			l, err := up6(ctx6, link, h.log)
			c6 <- res6{l, err}
		})
	}
	var held <-chan time.Time
	if h.hold6.held() {
		held = time.After(v4Grace)
	} else {
		start6()
	}
	var r4 *res4
	var r6 *res6
	var grace <-chan time.Time
	for r4 == nil || started6 && r6 == nil {
		select {
		case x := <-c4:
			r4 = &x
			switch {
			case x.err == nil:
				cancel6() // IPv4 is enough; stop waiting for a router advertisement
			case !started6:
				start6()
			}
		case <-held:
			if !started6 {
				h.log.Debug("no DHCPv4 answer yet; starting IPv6", "after", v4Grace)
				start6()
			}
		case x := <-c6:
			r6 = &x
			h.addr6 = x.l.added // whatever was added is undone by Down
			if x.err == nil && r4 == nil {
				// DHCPv4 gets v4Grace from its start, not from now.
				grace = time.After(time.Until(v4Start.Add(v4Grace)))
			}
		case <-grace:
			cancel4()
		}
	}
	if r6 == nil {
		r6 = &res6{err: errors.New("ipv6 not tried: DHCPv4 answered first")}
	}
	if r4.err == nil {
		l := r4.l
		if r6.err == nil {
			l.Addr6, l.Router6 = r6.l.Addr, r6.l.Router
			l.DNS = append(l.DNS, r6.l.DNS...)
		}
		return l, nil
	}
	if r6.err == nil {
		return Lease{Interface: link.Attrs().Name, Addr6: r6.l.Addr, Router6: r6.l.Router, DNS: r6.l.DNS}, nil
	}
	if h.addr6 != nil {
		_ = netlink.AddrDel(link, h.addr6)
		h.addr6 = nil
	}
	// The DHCPv4 error first: it is what an IPv4 subnet's operator needs.
	return Lease{}, fmt.Errorf("%w (and %v)", r4.err, r6.err)
}

// Lease returns the lease Up applied.
func (h *Handle) Lease() Lease {
	if h == nil {
		return Lease{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lease
	l.DNS = append([]netip.Addr(nil), l.DNS...)
	return l
}

// apply configures the lease and records each change as it succeeds.
func (h *Handle) apply() error {
	l := h.lease
	name, idx := h.link.Attrs().Name, h.link.Attrs().Index
	if !l.HasIPv4() {
		// IPv6 only: the kernel applied the router advertisement (default
		// route, on-link prefix) and dual() the DHCPv6 address; IMDS is
		// fd00:ec2::254 behind the default route.
		return nil
	}
	addr := &netlink.Addr{IPNet: prefixNet(l.Addr)}
	switch err := netlink.AddrAdd(h.link, addr); {
	case err == nil:
		h.addr = addr
	case errors.Is(err, syscall.EEXIST):
		h.log.Warn("address already present; leaving it in place on Down", "address", l.Addr.String())
	default:
		return fmt.Errorf("add address %s to %s: %w", l.Addr, name, err)
	}

	if l.Router.IsValid() {
		if !l.Addr.Contains(l.Router) {
			// A router outside the subnet (seen with some /32 leases) needs
			// a host route before it can be a gateway.
			if err := h.addRoute(netlink.Route{LinkIndex: idx, Dst: hostNet(l.Router), Scope: netlink.SCOPE_LINK}); err != nil {
				return err
			}
		}
		def := netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: l.Router.AsSlice()}
		if err := h.addRoute(def); err != nil {
			return err
		}
	}

	// IMDS: covered if the kernel already routes it out of this link (the
	// prefix contains it, as under slirp's 169.254.0.0/16, or the default
	// route does); otherwise it is on-link, as EC2 answers it on every link.
	if rs, err := netlink.RouteGet(IMDS.AsSlice()); err == nil && len(rs) > 0 && rs[0].LinkIndex == idx {
		h.log.Debug("IMDS reachable", "gateway", fmt.Sprint(rs[0].Gw))
	} else {
		if err := h.addRoute(netlink.Route{LinkIndex: idx, Dst: hostNet(IMDS), Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
	}
	return nil
}

func (h *Handle) addRoute(r netlink.Route) error {
	r.Protocol = rtprotDHCP
	err := netlink.RouteAdd(&r)
	switch {
	case err == nil:
		h.routes = append(h.routes, r)
		return nil
	case errors.Is(err, syscall.EEXIST):
		h.log.Warn("route already present; leaving it in place on Down", "route", routeString(r))
		return nil
	default:
		return fmt.Errorf("add route %s on %s: %w", routeString(r), h.link.Attrs().Name, err)
	}
}

// Down removes exactly the routes and address Up added and sets the link
// down, so the real init starts from a clean NIC. It is idempotent; it keeps
// going after an error and returns all of them.
func (h *Handle) Down() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("netup: internal error: %v", r)
		}
	}()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return nil
	}
	h.down = true
	name := h.link.Attrs().Name
	var errs []error
	for i := len(h.routes) - 1; i >= 0; i-- {
		r := h.routes[i]
		// ESRCH: already gone (e.g. with the address it depended on).
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s on %s: %w", routeString(r), name, err))
		}
	}
	h.routes = nil
	if h.addr != nil {
		if err := netlink.AddrDel(h.link, h.addr); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("delete address %s from %s: %w", h.addr.IPNet, name, err))
		}
		h.addr = nil
	}
	if h.addr6 != nil {
		if err := netlink.AddrDel(h.link, h.addr6); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("delete address %s from %s: %w", h.addr6.IPNet, name, err))
		}
		h.addr6 = nil
	}
	// Link down also drops what the kernel made from router
	// advertisements (SLAAC addresses, the default route).
	if err := netlink.LinkSetDown(h.link); err != nil {
		errs = append(errs, fmt.Errorf("set %s down: %w", name, err))
	}
	// On a down link this only restores the setting the next init expects.
	if err := h.releaseIPv6(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		h.log.Info("network down")
	}
	return errors.Join(errs...)
}

func (h *Handle) setDown() {
	if err := netlink.LinkSetDown(h.link); err != nil {
		h.log.Warn("set link down after failure", "err", err)
	}
	if err := h.releaseIPv6(); err != nil {
		h.log.Warn("after failure", "err", err)
	}
}

// releaseIPv6 ends the IPv6 hold, if any.
func (h *Handle) releaseIPv6() error {
	if h == nil {
		return nil
	}
	return h.hold6.release()
}

// waitLink subscribes to link events first, then lists the existing links
// (on the same socket), so a link that appears in between is not missed.
// It returns the link once it is chosen and set up, after waiting (bounded)
// for carrier.
func waitLink(ctx context.Context, cfg Config, log *slog.Logger, h *Handle) (netlink.Link, error) {
	what := "an ethernet link"
	if cfg.Interface != "" {
		what = "link " + cfg.Interface
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.LinkTimeout)
	defer cancel()

	updates := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	var subMu sync.Mutex
	var subErr error // last error of the library's reader goroutine
	lastSubErr := func() error {
		subMu.Lock()
		defer subMu.Unlock()
		return subErr
	}
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			subMu.Lock()
			subErr = err
			subMu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("wait for %s: subscribe to link events: %w", what, err)
	}
	defer func() {
		close(done)
		// The library's reader blocks sending on updates: drain until it
		// closes the channel so its goroutine ends.
		safego.Go("link event drain", func() {
			for range updates {
			}
		})
	}()

	start := time.Now()
	var link netlink.Link
	for link == nil {
		select {
		case <-ctx.Done():
			waited := time.Since(start).Round(100 * time.Millisecond)
			if e := lastSubErr(); e != nil {
				return nil, fmt.Errorf("wait for %s: none appeared in %v (link events: %v): %w", what, waited, e, ctx.Err())
			}
			return nil, fmt.Errorf("wait for %s: none appeared in %v: %w", what, waited, ctx.Err())
		case u, ok := <-updates:
			if !ok {
				return nil, fmt.Errorf("wait for %s: link event socket closed: %v", what, lastSubErr())
			}
			if u.Header.Type == unix.RTM_NEWLINK && wanted(u.Link, cfg.Interface) {
				link = u.Link
			}
		}
	}
	a := link.Attrs()
	log = log.With("interface", a.Name)
	log.Info("link found", "mac", a.HardwareAddr.String(), "took", time.Since(start).Round(time.Microsecond))
	if !cfg.IPv6Now && a.Flags&net.FlagUp == 0 {
		hold, err := holdIPv6(a.Name)
		if err != nil {
			log.Warn("IPv6 configuration starts with the link", "err", err)
		}
		h.hold6 = hold
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", a.Name, err)
	}
	// DHCP sent before carrier is lost; wait for it, but only within the
	// link budget: DHCP retransmits anyway.
	up := a.RawFlags&unix.IFF_LOWER_UP != 0
	for !up {
		select {
		case <-ctx.Done():
			log.Warn("no carrier yet; trying DHCP anyway")
			up = true
		case u, ok := <-updates:
			if !ok {
				up = true
				break
			}
			if u.Link != nil && u.Link.Attrs().Index == a.Index && u.Header.Type == unix.RTM_NEWLINK {
				link = u.Link
				up = u.Link.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
			}
		}
	}
	return link, nil
}

// wanted reports whether l is the link to configure: the named one, or else
// a physical-looking ethernet device (not loopback, has a MAC, not a
// bridge/veth/bond/tunnel — those are netlink.Device only when no kind is
// set).
func wanted(l netlink.Link, name string) bool {
	if l == nil {
		return false
	}
	a := l.Attrs()
	if name != "" {
		return a.Name == name
	}
	if a.Flags&net.FlagLoopback != 0 || a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
		return false
	}
	if _, ok := l.(*netlink.Device); !ok {
		return false
	}
	for _, b := range a.HardwareAddr {
		if b != 0 {
			return true
		}
	}
	return false
}

// seedRNG waits (blocking getrandom) for the kernel RNG in the background.
// Returns a channel closed once it is ready. On Linux >= 5.4 the kernel
// seeds itself from CPU jitter within about a second even without RDRAND.
func seedRNG() <-chan struct{} {
	ch := make(chan struct{})
	var b [1]byte
	if _, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK); err == nil || errors.Is(err, syscall.ENOSYS) {
		close(ch)
		return ch
	}
	safego.Go("rng seed wait", func() {
		defer close(ch)
		for {
			_, err := unix.Getrandom(b[:], 0)
			if !errors.Is(err, syscall.EINTR) {
				return
			}
		}
	})
	return ch
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func routeString(r netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			dst = r.Dst.String()
		}
	}
	if r.Gw != nil {
		return dst + " via " + r.Gw.String()
	}
	return dst + " on-link"
}
