package qemu

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is a private network namespace for one VM. QEMU runs in it with
// slirp unrestricted, so the guest gets a lease with a router and a DNS
// server and sends real UDP DNS, like on EC2; the namespace has only a
// loopback device, so nothing the guest sends can reach a real resolver or
// the internet. The harness opens its listeners (DNS, the EC2 endpoint,
// IMDS) inside it with Do.
type Netns struct {
	h netns.NsHandle
}

// NewNetns creates a namespace with lo up and the given addresses on lo.
func NewNetns(addrs ...netip.Addr) (*Netns, error) {
	type res struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// The thread's namespace changes and is never restored: it stays
		// locked, so Go ends the thread with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- res{err: fmt.Errorf("unshare network namespace (needs root): %w", err)}
			return
		}
		h, err := netns.Get()
		ch <- res{h, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	n := &Netns{h: r.h}
	if err := n.setupLo(addrs); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Netns) setupLo(addrs []netip.Addr) error {
	nl, err := netlink.NewHandleAt(n.h)
	if err != nil {
		return fmt.Errorf("netlink in the VM's namespace: %w", err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return err
	}
	for _, a := range addrs {
		ipn, err := netlink.ParseIPNet(netip.PrefixFrom(a, a.BitLen()).String())
		if err != nil {
			return err
		}
		if err := nl.AddrAdd(lo, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add %s to lo: %w", a, err)
		}
	}
	return nl.LinkSetUp(lo)
}

// Do runs f on an OS thread inside the namespace: sockets f opens and
// processes it starts live there.
func (n *Netns) Do(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			ch <- fmt.Errorf("enter the VM's network namespace: %w", err)
			return
		}
		ch <- f()
		// Unlock only a thread that is back home (a process started here
		// dies with its thread: Pdeathsig); otherwise Go ends the thread.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-ch
}

// Close drops the handle; the namespace lives on while sockets or
// processes still use it.
func (n *Netns) Close() error {
	if n == nil || !n.h.IsOpen() {
		return nil
	}
	return n.h.Close()
}

// ResolvConf writes a resolv.conf naming server, for slirp's DNS forwarder
// (libslirp reads /etc/resolv.conf; the VM sees it through a private mount
// namespace: see Opts.ResolvConf).
func ResolvConf(path string, server netip.Addr) error {
	return os.WriteFile(path, []byte("# the VM's DNS (spotroot e2e)\nnameserver "+server.String()+"\n"), 0o644)
}
