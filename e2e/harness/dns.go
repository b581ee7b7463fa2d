package harness

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is the resolver a VM's DHCP lease names. It answers only the names
// it knows (A and AAAA records; other types of a known name get an empty
// answer, unknown names NXDOMAIN) and never forwards anything: no query
// leaves the VM's network namespace. It counts the queries it got, per name
// and type.
type DNS struct {
	mu      sync.Mutex
	names   map[string][]netip.Addr // lower-case, fully qualified
	queries map[string]int          // "name TYPE" → count
	conns   []net.PacketConn
	wg      sync.WaitGroup
}

// NewDNS returns a server that knows names (host → address: an IPv4
// address is an A record, an IPv6 one AAAA).
func NewDNS(names map[string]netip.Addr) *DNS {
	d := &DNS{names: map[string][]netip.Addr{}, queries: map[string]int{}}
	for n, a := range names {
		d.Add(n, a)
	}
	return d
}

// Add gives name one more address (a dual-stack name has both an A and an
// AAAA record).
func (d *DNS) Add(name string, a netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.names[fqdn(name)] = append(d.names[fqdn(name)], a.Unmap())
}

func fqdn(n string) string { return strings.ToLower(strings.TrimSuffix(n, ".")) + "." }

// Serve answers queries on c until Close.
func (d *DNS) Serve(c net.PacketConn) {
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			if out, ok := d.answer(buf[:n]); ok {
				_, _ = c.WriteTo(out, from)
			}
		}
	}()
}

// answer builds the response to one query; false drops it.
func (d *DNS) answer(q []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil, false
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil, false
	}
	qq := qs[0]
	name := strings.ToLower(qq.Name.String())
	d.mu.Lock()
	d.queries[name+" "+strings.TrimPrefix(qq.Type.String(), "Type")]++
	addrs, known := d.names[name]
	d.mu.Unlock()
	// A recursive resolver's answer, like Amazon DNS: RA set, not AA.
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(qq) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	rr := dnsmessage.ResourceHeader{Name: qq.Name, Class: dnsmessage.ClassINET, TTL: 60}
	for _, a := range addrs {
		var err error
		switch {
		case qq.Class != dnsmessage.ClassINET:
		case qq.Type == dnsmessage.TypeA && a.Is4():
			err = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case qq.Type == dnsmessage.TypeAAAA && a.Is6():
			err = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	return out, err == nil
}

// Queries returns how many queries for name of type typ ("A", "AAAA") it
// got.
func (d *DNS) Queries(name, typ string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[fqdn(name)+" "+typ]
}

// AllQueries returns a copy of the query counts ("name TYPE" → count).
func (d *DNS) AllQueries() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]int, len(d.queries))
	for k, v := range d.queries {
		m[k] = v
	}
	return m
}

// Close stops serving.
func (d *DNS) Close() {
	d.mu.Lock()
	for _, c := range d.conns {
		c.Close()
	}
	d.mu.Unlock()
	d.wg.Wait()
}
