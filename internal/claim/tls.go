package claim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"time"

	"github.com/spotroot/spotroot/internal/safego"
)

// tlsDialer opens the EC2 client's TLS connections itself, so that
//   - the first one can be opened ahead of the first call (Prewarm: DNS,
//     TCP and the handshake overlap PID 1's other work, and the call finds
//     it ready), and
//   - certificate verification can be a caller's Verify (a CA bundle parsed
//     lazily, caroots.Bundle), always against the name dialed.
type tlsDialer struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	config  *tls.Config // RootCAs, session cache, ALPN
	verify  func(serverName string, chain []*x509.Certificate) error
	timeout time.Duration
	warmed  func(addr string, took time.Duration, err error)

	mu   sync.Mutex
	warm map[string]chan warmConn // by "host:port", taken by the first dial
}

type warmConn struct {
	c   net.Conn
	err error
}

// warmUnused is how long an opened-ahead connection waits for its first
// call before it is closed (a configuration that named another endpoint).
const warmUnused = 30 * time.Second

// DialTLSContext is the transport's TLS dial: the connection opened ahead
// for addr if there is one (waiting for its handshake to finish), else a
// new one.
func (d *tlsDialer) DialTLSContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	ch := d.warm[addr]
	delete(d.warm, addr)
	d.mu.Unlock()
	if ch != nil {
		select {
		case w := <-ch:
			if w.err == nil {
				return w.c, nil
			}
			// A failed warm-up: dial afresh, the error may have passed.
		case <-ctx.Done():
			safego.Go("close unused EC2 connection", func() {
				if w := <-ch; w.c != nil {
					w.c.Close()
				}
			})
			return nil, ctx.Err()
		}
	}
	return d.handshake(ctx, network, addr)
}

func (d *tlsDialer) handshake(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	raw, err := d.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := d.config.Clone()
	cfg.ServerName = host
	if d.verify != nil {
		// The documented way to replace crypto/tls's verification
		// (crypto/tls, Config.VerifyConnection): skip the built-in one and
		// verify the same chain against the name dialed; resumed sessions
		// are verified too.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return d.verify(host, cs.PeerCertificates) }
	}
	tc := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// Prewarm opens the connection to addr ("host:port") now, in the
// background, for the first call to take.
func (d *tlsDialer) Prewarm(addr string) {
	ch := make(chan warmConn, 1)
	d.mu.Lock()
	if d.warm == nil {
		d.warm = map[string]chan warmConn{}
	}
	if _, ok := d.warm[addr]; ok {
		d.mu.Unlock()
		return
	}
	d.warm[addr] = ch
	d.mu.Unlock()
	safego.Go("open EC2 connection ahead", func() {
		ctx, cancel := context.WithTimeout(context.Background(), d.timeout+5*time.Second)
		defer cancel()
		start := time.Now()
		c, err := d.handshake(ctx, "tcp", addr)
		ch <- warmConn{c, err}
		if d.warmed != nil {
			d.warmed(addr, time.Since(start), err)
		}
		// Nobody took it: close it rather than leave it open.
		time.AfterFunc(warmUnused, func() {
			d.mu.Lock()
			still := d.warm[addr] == ch
			if still {
				delete(d.warm, addr)
			}
			d.mu.Unlock()
			if still && c != nil {
				c.Close()
			}
		})
	})
}
