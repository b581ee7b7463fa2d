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
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter netns %s: %w", ns, err)
	}
	l, lerr := net.Listen("tcp", addr)
	if err := netns.Set(orig); err != nil {
		// The thread stays locked and is discarded by the runtime.
		if l != nil {
			l.Close()
		}
		return nil, fmt.Errorf("leave netns %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		return nil, fmt.Errorf("listen on %s in netns %s: %w", addr, ns, lerr)
	}
	return l, nil
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
