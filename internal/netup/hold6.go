package netup

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// procNetIPv6 holds the per-interface IPv6 switches; a variable so tests
// can point it at a scratch directory.
var procNetIPv6 = "/proc/sys/net/ipv6/conf"

// ipv6Hold keeps the kernel's IPv6 off on one link while DHCPv4 gets its
// chance. Setting a link up with IPv6 on makes the kernel do IPv6 address
// configuration at once (link-local address and duplicate address
// detection, MLD reports, router solicitation and what the answers bring);
// on the IPv4 and dual-stack subnets most instances live in, PID 1 uses
// none of it, the persistent root's network stack starts over after the
// handoff, and on a TCG guest that kernel code costs as much as a module
// load. An IPv6-only subnet (no DHCPv4 server) gets IPv6 once DHCPv4 has
// had v4Grace, which it waited for anyway.
type ipv6Hold struct {
	path string // .../conf/<link>/disable_ipv6; "" when nothing is held
}

// holdIPv6 turns IPv6 off on link name if it is on, and remembers to turn
// it back on. A kernel without IPv6 (no such file), or a link already
// configured with IPv6 off, is left alone: nothing is held.
func holdIPv6(name string) (*ipv6Hold, error) {
	p := filepath.Join(procNetIPv6, name, "disable_ipv6")
	b, err := os.ReadFile(p)
	if err != nil {
		if os.IsNotExist(err) {
			return &ipv6Hold{}, nil
		}
		return &ipv6Hold{}, fmt.Errorf("read %s: %w", p, err)
	}
	if !bytes.Equal(bytes.TrimSpace(b), []byte("0")) {
		return &ipv6Hold{}, nil
	}
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		return &ipv6Hold{}, fmt.Errorf("turn IPv6 off on %s until DHCPv4 had its chance: %w", name, err)
	}
	return &ipv6Hold{path: p}, nil
}

// held reports whether IPv6 is still held off.
func (h *ipv6Hold) held() bool { return h != nil && h.path != "" }

// release turns IPv6 back on; on an up link the kernel starts its IPv6
// configuration then. Idempotent.
func (h *ipv6Hold) release() error {
	if !h.held() {
		return nil
	}
	p := h.path
	h.path = ""
	if err := os.WriteFile(p, []byte("0"), 0); err != nil {
		return fmt.Errorf("turn IPv6 back on (%s): %w", p, err)
	}
	return nil
}
