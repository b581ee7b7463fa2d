package kmod

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// QEMU's arm64 virt machine (and Firecracker) put NICs on virtio-mmio
// transports: platform devices from the device tree (modalias
// "of:NvirtioT(null)Cvirtio,mmio"), most of them empty slots. virtio_mmio
// binds the occupied one, which registers virtio0 (a virtio-net device) on
// the virtio bus; virtio_net then binds that. The empty slots stay unbound
// and must not be waited for. Aliases from Debian's 6.1.0-57-cloud-arm64.
func TestVirtioMMIONIC(t *testing.T) {
	root := t.TempDir()
	xt := &xenTree{fakeTree: &fakeTree{t: t, root: root}}
	const mmioAlias = "of:NvirtioT(null)Cvirtio,mmio"
	xt.busDevice("platform", "a000000.virtio_mmio", map[string]string{"modalias": mmioAlias})
	xt.busDevice("platform", "a000200.virtio_mmio", map[string]string{"modalias": mmioAlias})
	xt.busDevice("platform", "9000000.pl011", map[string]string{"modalias": "of:NplT(null)Carm,pl011Carm,primecell"})
	mdir := filepath.Join(root, "lib/modules", rel)
	write(t, filepath.Join(mdir, "modules.alias"), `alias of:N*T*Cvirtio,mmioC* virtio_mmio
alias of:N*T*Cvirtio,mmio virtio_mmio
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
`)
	write(t, filepath.Join(mdir, "modules.dep"), `kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`)
	for _, p := range []string{"virtio/virtio_mmio.ko", "virtio/virtio.ko", "virtio/virtio_ring.ko", "net/virtio_net.ko", "block/virtio_blk.ko"} {
		write(t, filepath.Join(mdir, "kernel/drivers", p), "\x7fELF fake")
	}
	var loaded []string
	load := func(path, _ string) error {
		if _, err := os.Stat(path); err != nil {
			return err
		}
		name := moduleName(path)
		loaded = append(loaded, name)
		switch name {
		case "virtio_mmio":
			slot := filepath.Join(root, "sys/devices/a000000.virtio_mmio")
			xt.bind(slot, "virtio-mmio")
			write(t, filepath.Join(slot, "virtio0/modalias"), "virtio:d00000001v554D4551")
			xt.busDevice("virtio", "virtio0", nil)
			_ = os.Remove(filepath.Join(root, "sys/bus/virtio/devices/virtio0"))
			_ = os.Symlink("../../../devices/a000000.virtio_mmio/virtio0", filepath.Join(root, "sys/bus/virtio/devices/virtio0"))
		case "virtio_net":
			xt.bind(filepath.Join(root, "sys/devices/a000000.virtio_mmio/virtio0"), "virtio_net")
		}
		return nil
	}
	start := time.Now()
	got, err := (&Loader{Root: root, Release: rel, Logger: testLogger(t), Load: load}).LoadForClass(context.Background(), "0x02")
	if err != nil {
		t.Fatalf("LoadForClass: %v", err)
	}
	want := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_net"}
	if !slices.Equal(got, want) {
		t.Fatalf("loaded %v, want %v", got, want)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v: an empty virtio-mmio slot was waited for", d)
	}
}
