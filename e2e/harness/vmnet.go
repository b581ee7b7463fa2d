package harness

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spotroot/spotroot/e2e/qemu"
)

// vmNet is one VM's view of the cloud, all inside its private network
// namespace: the DNS server its lease names, EC2's regional endpoint over
// TLS at EC2IP:443, the plain-HTTP EC2 API at qemu.EC2Addr (a custom
// ec2_endpoint), and its IMDS.
//
// Why a namespace: slirp's guestfwd is TCP only and with restrict=on the
// lease has neither router nor DNS and every other UDP packet is dropped,
// so real UDP DNS needs an unrestricted slirp; in a namespace that has
// only lo, the guest still reaches nothing but these listeners.
type vmNet struct {
	ns         *qemu.Netns
	resolvConf string
	dns        *DNS
	servers    []*http.Server
	imdsPort   int
	ec2Port    int

	mu         sync.Mutex
	handshakes map[string]int
	https      atomic.Int64
	http       atomic.Int64
}

func (w *World) vmNet(id string, untrusted bool) (_ *vmNet, err error) {
	cert := w.Env.EC2Cert
	if untrusted {
		// A CA the image's bundle does not hold, for the same name.
		ca, err := NewTestCA("spotroot e2e untrusted CA")
		if err != nil {
			return nil, err
		}
		if cert, err = ca.Issue(EC2Host); err != nil {
			return nil, err
		}
	}
	ns, err := qemu.NewNetns(EC2IP)
	if err != nil {
		return nil, err
	}
	vn := &vmNet{ns: ns, handshakes: map[string]int{},
		dns: NewDNS(map[string]netip.Addr{EC2Host: EC2IP})}
	defer func() {
		if err != nil {
			vn.close()
		}
	}()
	vn.resolvConf = filepath.Join(w.Dir, "resolv-"+id+".conf")
	if err := qemu.ResolvConf(vn.resolvConf, dnsListen); err != nil {
		return nil, err
	}
	ec2 := w.Server.EC2Handler()
	err = ns.Do(func() error {
		pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(dnsListen, 53).String())
		if err != nil {
			return fmt.Errorf("DNS listener: %w", err)
		}
		vn.dns.Serve(pc)

		tl, err := net.Listen("tcp4", netip.AddrPortFrom(EC2IP, 443).String())
		if err != nil {
			return fmt.Errorf("EC2 endpoint listener: %w", err)
		}
		tcfg := &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
			GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
				vn.mu.Lock()
				vn.handshakes[hi.ServerName]++
				vn.mu.Unlock()
				return nil, nil
			},
		}
		vn.start(tls.NewListener(tl, tcfg), http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			vn.https.Add(1)
			ec2.ServeHTTP(rw, r)
		}))

		hl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		vn.ec2Port = hl.Addr().(*net.TCPAddr).Port
		vn.start(hl, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			vn.http.Add(1)
			ec2.ServeHTTP(rw, r)
		}))

		il, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		vn.imdsPort = il.Addr().(*net.TCPAddr).Port
		vn.start(il, w.Server.IMDSHandler(id))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return vn, nil
}

func (vn *vmNet) start(l net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	vn.servers = append(vn.servers, s)
	go func() {
		if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "harness: serve:", err)
		}
	}()
}

func (vn *vmNet) close() {
	for _, s := range vn.servers {
		s.Close()
	}
	vn.dns.Close()
	vn.ns.Close()
	if vn.resolvConf != "" {
		os.Remove(vn.resolvConf)
	}
}

func (vn *vmNet) report(r *BootResult) {
	r.DNSQueries = vn.dns.AllQueries()
	vn.mu.Lock()
	r.TLSHandshakes = map[string]int{}
	for k, v := range vn.handshakes {
		r.TLSHandshakes[k] = v
	}
	vn.mu.Unlock()
	r.EC2HTTPS = int(vn.https.Load())
	r.EC2HTTP = int(vn.http.Load())
}
