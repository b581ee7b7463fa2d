package netup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// Retransmission: the first try is short because EC2 and QEMU answer in
// milliseconds and a boot should not pay for a lost first packet; later
// tries back off like RFC 2131 suggests, within the overall budget.
const (
	firstAttempt = 500 * time.Millisecond
	maxAttempt   = 4 * time.Second
)

// dhcp runs DISCOVER/OFFER/REQUEST/ACK on link within timeout.
func dhcp(ctx context.Context, link netlink.Link, timeout time.Duration, rng <-chan struct{}, log *slog.Logger) (Lease, error) {
	name := link.Attrs().Name
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	select {
	case <-rng:
	case <-ctx.Done():
		return Lease{}, fmt.Errorf("dhcp on %s: kernel random number generator not ready after %v: %w", name, time.Since(start).Round(time.Millisecond), ctx.Err())
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		log.Info("waited for kernel RNG", "took", d.Round(time.Millisecond))
	}

	// Retries are ours (per-attempt contexts); the library's own timer only
	// has to outlast them.
	c, err := nclient4.New(name,
		nclient4.WithHWAddr(link.Attrs().HardwareAddr),
		nclient4.WithRetry(1),
		nclient4.WithTimeout(timeout),
		nclient4.WithLogger(dhcpLogger{log}),
	)
	if err != nil {
		return Lease{}, fmt.Errorf("dhcp on %s: open socket: %w", name, err)
	}
	defer c.Close()

	per := firstAttempt
	var lastErr error
	stage := "no offer"
	attempts := 0
	for ctx.Err() == nil {
		attempts++
		actx, acancel := context.WithTimeout(ctx, per)
		l, st, err := exchange(actx, c)
		if err == nil {
			acancel()
			l.Interface = name
			log.Debug("dhcp lease", "attempt", attempts, "took", time.Since(start).Round(time.Microsecond))
			return l, nil
		}
		lastErr, stage = err, st
		log.Debug("dhcp attempt failed", "attempt", attempts, "stage", st, "err", err)
		// An immediate failure (send error, NAK) must not spin: use up the
		// attempt's slot before retrying.
		<-actx.Done()
		acancel()
		per = min(per*2, maxAttempt)
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	err = fmt.Errorf("dhcp on %s: %s after %d attempts in %v", name, stage, attempts, took)
	if lastErr != nil && !errors.Is(lastErr, context.DeadlineExceeded) && !errors.Is(lastErr, nclient4.ErrNoResponse) {
		err = fmt.Errorf("%w (last error: %v)", err, lastErr)
	}
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %w", err, ctx.Err())
	}
	return Lease{}, err
}

// exchange does one DISCOVER..ACK; stage names what was missing on failure.
func exchange(ctx context.Context, c *nclient4.Client) (Lease, string, error) {
	offer, err := c.DiscoverOffer(ctx)
	if err != nil {
		return Lease{}, "no offer", err
	}
	lease, err := c.RequestFromOffer(ctx, offer)
	if err != nil {
		var nak *nclient4.ErrNak
		if errors.As(err, &nak) {
			return Lease{}, "request refused (NAK)", err
		}
		return Lease{}, "no ACK", err
	}
	l, err := leaseFromACK(lease.ACK)
	if err != nil {
		return Lease{}, "unusable lease", err
	}
	return l, "", nil
}

// leaseFromACK extracts the lease. Interface is filled in by the caller.
func leaseFromACK(ack *dhcpv4.DHCPv4) (Lease, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
		return Lease{}, fmt.Errorf("ACK carries no usable address (yiaddr %v)", ack.YourIPAddr)
	}
	bits := -1
	if m := ack.SubnetMask(); m != nil {
		if ones, size := m.Size(); size == 32 {
			bits = ones
		}
	}
	if bits < 0 {
		bits = classfulBits(ip)
	}
	l := Lease{Addr: netip.PrefixFrom(ip, bits)}
	for _, r := range ack.Router() {
		if a, ok := netip.AddrFromSlice(r.To4()); ok && !a.IsUnspecified() {
			l.Router = a
			break
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			l.DNS = append(l.DNS, a)
		}
	}
	srv := ack.ServerIdentifier()
	if srv == nil {
		srv = ack.ServerIPAddr
	}
	if a, ok := netip.AddrFromSlice(srv.To4()); ok {
		l.Server = a
	}
	l.LeaseTime = ack.IPAddressLeaseTime(0)
	return l, nil
}

// classfulBits is the natural mask, what dhclient assumes without option 1.
func classfulBits(a netip.Addr) int {
	switch b := a.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	default:
		return 24
	}
}

// dhcpLogger sends the library's messages to slog at debug level.
type dhcpLogger struct{ log *slog.Logger }

func (d dhcpLogger) Printf(format string, v ...any) {
	d.log.Debug("dhcp: " + fmt.Sprintf(format, v...))
}

func (d dhcpLogger) PrintMessage(prefix string, m *dhcpv4.DHCPv4) {
	if m == nil || !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	d.log.Debug("dhcp: "+prefix, "type", m.MessageType().String(), "xid", m.TransactionID.String(), "yiaddr", net.IP(m.YourIPAddr).String())
}
