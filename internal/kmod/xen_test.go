package kmod

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A Xen HVM instance (t2, m4, c4 …) as EC2 shows it: the NIC is not a PCI
// device but vif-0 on the xen bus (/sys/devices/vif-0/net/eth0 on a real
// instance), disks are vbd-<id> (xvda = 202:0 = vbd-51712), and the PCI
// bus holds only the emulated PIIX chipset, a Cirrus VGA and the Xen
// platform device. The attributes are the ones Linux's xenbus registers for
// every frontend (drivers/xen/xenbus/xenbus_probe.c: nodename, devtype,
// modalias "xen:<devtype>"). Aliases and modules.dep lines are copied from
// Debian's 6.1.0-57-cloud-amd64.
const (
	xenAlias = `alias pci:v00008086d000010EDsv*sd*bc*sc*i* ixgbevf
alias xen:vbd xen_blkfront
alias xen:vscsi xen_scsifront
alias xen:vif xen_netfront
alias pci:v00001D0Fd0000EC20sv*sd*bc*sc*i* ena
alias pnp:dPNP0501* 8250_pnp
`
	xenDep = `kernel/drivers/net/xen-netfront.ko:
kernel/drivers/block/xen-blkfront.ko:
kernel/drivers/scsi/xen-scsifront.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/drivers/net/ethernet/intel/ixgbevf/ixgbevf.ko:
kernel/drivers/net/ethernet/amazon/ena/ena.ko:
kernel/drivers/tty/serial/8250/8250_pnp.ko:
`
)

type xenTree struct {
	*fakeTree
	loaded []string
}

// newXenTree builds the sysfs of an m4-like Xen instance: the root disk
// vbd-51712 bound (its driver came from the initramfs), an attached EBS
// volume vbd-51792 (xvdf) and the NIC vif-0 without drivers, an unbound
// serial port on the pnp bus, and a CPU whose modalias matches nothing.
func newXenTree(t *testing.T) *xenTree {
	root := t.TempDir()
	xt := &xenTree{fakeTree: &fakeTree{t: t, root: root}}
	for addr, pci := range map[string][2]string{
		"0000:00:00.0": {"0x060000", "pci:v00008086d00001237sv00005853sd00000001bc06sc00i00"},
		"0000:00:01.0": {"0x060100", "pci:v00008086d00007000sv00005853sd00000001bc06sc01i00"},
		"0000:00:01.1": {"0x010180", "pci:v00008086d00007010sv00005853sd00000001bc01sc01i80"},
		"0000:00:02.0": {"0x030000", "pci:v00001013d000000B8sv00005853sd00000001bc03sc00i00"},
		"0000:00:03.0": {"0xff8000", "pci:v00005853d00000001sv00005853sd00000001bcFFsc80i00"},
	} {
		xt.pciDevice(addr, pci[0], pci[1])
	}
	xt.bind(xt.pciPath("0000:00:03.0"), "xen-platform-pci")
	vbd := xt.busDevice("xen", "vbd-51712", map[string]string{"devtype": "vbd", "modalias": "xen:vbd", "nodename": "device/vbd/51712"})
	xt.bind(vbd, "vbd")
	xt.busDevice("xen", "vbd-51792", map[string]string{"devtype": "vbd", "modalias": "xen:vbd", "nodename": "device/vbd/51792"})
	xt.busDevice("xen", "vif-0", map[string]string{"devtype": "vif", "modalias": "xen:vif", "nodename": "device/vif/0"})
	xt.busDevice("pnp", "00:06", map[string]string{"modalias": "pnp:dPNP0501", "id": "PNP0501"})
	xt.busDevice("cpu", "cpu0", map[string]string{"modalias": "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001"})
	mdir := filepath.Join(root, "lib/modules", rel)
	write(t, filepath.Join(mdir, "modules.alias"), xenAlias)
	write(t, filepath.Join(mdir, "modules.dep"), xenDep)
	for _, p := range []string{"kernel/drivers/net/xen-netfront.ko", "kernel/drivers/block/xen-blkfront.ko",
		"kernel/drivers/scsi/xen-scsifront.ko", "kernel/drivers/scsi/scsi_mod.ko",
		"kernel/drivers/net/ethernet/intel/ixgbevf/ixgbevf.ko", "kernel/drivers/net/ethernet/amazon/ena/ena.ko",
		"kernel/drivers/tty/serial/8250/8250_pnp.ko"} {
		write(t, filepath.Join(mdir, p), "\x7fELF fake module "+p)
	}
	return xt
}

// busDevice creates /sys/devices/<name> with attrs and its link in
// /sys/bus/<bus>/devices, as xenbus registers frontends (no parent).
func (xt *xenTree) busDevice(bus, name string, attrs map[string]string) string {
	dev := filepath.Join(xt.root, "sys/devices", name)
	for k, v := range attrs {
		write(xt.t, filepath.Join(dev, k), v+"\n")
	}
	dir := filepath.Join(xt.root, "sys/bus", bus, "devices")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		xt.t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("../../../devices", name), filepath.Join(dir, name)); err != nil {
		xt.t.Fatal(err)
	}
	return dev
}

// load binds what the real drivers would bind: xen-netfront takes vif-0
// (and registers eth0), xen-blkfront every vbd.
func (xt *xenTree) load(path, _ string) error {
	if _, err := os.Stat(path); err != nil {
		return err
	}
	name := moduleName(path)
	xt.loaded = append(xt.loaded, name)
	switch name {
	case "xen_netfront":
		dev := filepath.Join(xt.root, "sys/devices/vif-0")
		write(xt.t, filepath.Join(dev, "net/eth0/address"), "02:00:00:00:00:01\n")
		xt.bind(dev, "vif")
	case "ixgbevf":
		xt.bind(xt.pciPath("0000:00:04.0"), "ixgbevf")
	case "xen_blkfront":
		xt.bind(filepath.Join(xt.root, "sys/devices/vbd-51792"), "vbd")
	}
	return nil
}

func (xt *xenTree) loader() *Loader {
	return &Loader{Root: xt.root, Release: rel, Logger: testLogger(xt.t), Load: xt.load}
}

// TestXenNIC: on a Xen instance the NIC driver comes from the xen bus; no
// disk, serial or CPU driver is loaded for the network class.
func TestXenNIC(t *testing.T) {
	xt := newXenTree(t)
	got, err := xt.loader().LoadForClass(context.Background(), "0x02")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	if want := []string{"xen_netfront"}; !slices.Equal(got, want) || !slices.Equal(xt.loaded, want) {
		t.Fatalf("returned %v, inserted %v; want %v", got, xt.loaded, want)
	}
	if !bound(filepath.Join(xt.root, "sys/devices/vif-0")) {
		t.Error("vif-0 not bound")
	}
}

// TestXenDisks: the storage class (the initramfs's pass) loads
// xen-blkfront for the unbound vbd, not the NIC driver.
func TestXenDisks(t *testing.T) {
	xt := newXenTree(t)
	got, err := xt.loader().LoadForClass(context.Background(), "0x01")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	if want := []string{"xen_blkfront"}; !slices.Equal(got, want) {
		t.Fatalf("loaded %v, want %v", got, want)
	}
}

// TestXenEnhancedNetworking: an m4/c4 with enhanced networking has an Intel
// 82599 VF on PCI beside the vif; both drivers are loaded, PCI first.
func TestXenEnhancedNetworking(t *testing.T) {
	xt := newXenTree(t)
	xt.pciDevice("0000:00:04.0", "0x020000", "pci:v00008086d000010EDsv00008086sd00000000bc02sc00i00")
	got, err := xt.loader().LoadForClass(context.Background(), "0x02")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	if want := []string{"ixgbevf", "xen_netfront"}; !slices.Equal(got, want) {
		t.Fatalf("loaded %v, want %v", got, want)
	}
}

// TestOtherBusNeedsClassDir: a device on a non-PCI bus whose driver is not
// a NIC driver (a serial port) loads nothing for the network class, and
// a class without known directories scans PCI only.
func TestOtherBusNeedsClassDir(t *testing.T) {
	xt := newXenTree(t)
	got, err := xt.loader().LoadForClass(context.Background(), "0x03")
	if err != nil || len(got) != 0 {
		t.Fatalf("class 0x03: loaded %v, err %v; want nothing", got, err)
	}
}
