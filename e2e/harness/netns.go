package harness

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// TapNet puts a guest on a tap device in a private network namespace
// instead of QEMU's user networking, whose guestfwd forwards IPv4 only: an
// IPv6-only subnet needs the simulator's servers on IPv6 addresses inside
// that namespace. Nothing of it touches the host's own network.
type TapNet struct {
	NetNS string // name, as for `ip netns exec`
	Tap   string // tap device in NetNS
	IMDS  string // listen address of the instance's IMDS in NetNS, e.g. "[fd00:ec2::254]:80"
	// WrapIMDS, if set, wraps the IMDS handler (e.g. to record callers).
	WrapIMDS func(http.Handler) http.Handler
}

// ListenIn opens a TCP listener inside network namespace ns: the calling
// thread switches there just for the socket call, and the socket stays in
// that namespace.
func ListenIn(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := doIn(ns, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		if l != nil {
			l.Close()
		}
		return nil, fmt.Errorf("listen on %s in netns %s: %w", addr, ns, err)
	}
	return l, nil
}

// ListenPacketIn opens a UDP socket on addr inside network namespace ns.
func ListenPacketIn(ns, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := doIn(ns, func() (err error) {
		c, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("listen on udp %s in netns %s: %w", addr, ns, err)
	}
	return c, nil
}

// doIn runs open (which makes sockets) on a thread switched into network
// namespace ns; the sockets stay there.
func doIn(ns string, open func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	oerr := open()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked and is discarded by the runtime; the
		// caller closes what open made.
		return fmt.Errorf("leave netns %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return oerr
}

// ServeIn serves h on addr inside network namespace ns.
func ServeIn(ns, addr string, h http.Handler) (*http.Server, error) {
	l, err := ListenIn(ns, addr)
	if err != nil {
		return nil, err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "harness: http serve in netns:", err)
		}
	}()
	return s, nil
}
