package qemu

import (
	"fmt"
	"os"
	"strings"
)

// Architectures the harness boots. amd64 is a q35 PC (Nitro's x86 shape:
// NVMe and a PCIe NIC); arm64 is QEMU's virt machine, Graviton's shape: a
// PCIe host with root ports for NVMe hot-plug, a PL011 UART as console.
const (
	AMD64 = "amd64"
	ARM64 = "arm64"
)

// machine is what differs per architecture on the QEMU command line.
type machine struct {
	qemu    string   // binary
	pkg     string   // Debian package that has it
	args    []string // machine, accelerator, CPU
	console string   // the kernel's console= for the first serial port
	bios    bool     // qboot applies
}

func machineFor(arch string) (machine, error) {
	switch arch {
	case "", AMD64:
		return machine{qemu: "qemu-system-x86_64", pkg: "qemu-system-x86",
			args:    []string{"-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1"},
			console: "ttyS0", bios: true}, nil
	case ARM64:
		// neoverse-n1 is Graviton2's core. Under TCG it is what makes arm64
		// bearable: -cpu max emulates pointer authentication with QARMA and
		// takes 8.6 s to reach /init instead of 1.3 s (qemu-e2e-facts.md).
		// GIC v3 like Graviton's; virt's PCIe host is ECAM, probed by the
		// kernel itself without firmware (-kernel boots the Image directly).
		return machine{qemu: "qemu-system-aarch64", pkg: "qemu-system-arm",
			args: []string{"-machine", "virt,gic-version=3", "-accel", "tcg",
				"-cpu", "neoverse-n1", "-smp", "1"},
			console: "ttyAMA0"}, nil
	}
	return machine{}, fmt.Errorf("qemu: unsupported architecture %q (amd64 or arm64)", arch)
}

// Binary returns the QEMU binary for an architecture ("" = amd64).
func Binary(arch string) string {
	m, err := machineFor(arch)
	if err != nil {
		return ""
	}
	return m.qemu
}

// kernelArgs puts the architecture's serial console in place of ttyS0.
func (m machine) kernelArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "console=ttyS0" {
			a = "console=" + m.console
		}
		out[i] = a
	}
	return out
}

// biosArgs returns -bios for x86 (qboot when installed, faster than
// SeaBIOS); arm64 boots the kernel directly.
func (m machine) biosArgs(bios string) []string {
	if !m.bios {
		return nil
	}
	switch bios {
	case "":
		if _, err := os.Stat("/usr/share/qemu/qboot.rom"); err == nil {
			return []string{"-bios", "/usr/share/qemu/qboot.rom"}
		}
	case "-":
	default:
		return []string{"-bios", bios}
	}
	return nil
}

func (m machine) String() string { return m.qemu + " " + strings.Join(m.args, " ") }
