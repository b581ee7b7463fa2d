package qemu

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/spotroot/spotroot/internal/testenv"
)

// A VM's namespace has nothing but lo, with the addresses asked for, and
// sockets opened in Do live there, not on the host.
func TestNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "requires root (network namespaces)")
	}
	addr := netip.MustParseAddr("203.0.113.77")
	ns, err := NewNetns(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var l net.Listener
	err = ns.Do(func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
			t.Errorf("interfaces in the namespace: %v, want only lo, up", ifs)
		}
		l, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 443).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The host does not have the address: the listener is not here.
	if hl, err := net.Listen("tcp4", netip.AddrPortFrom(addr, 443).String()); err == nil {
		hl.Close()
		t.Errorf("%s is bindable on the host too: the listener did not go into the namespace", addr)
	}
}
