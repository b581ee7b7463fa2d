package kernel

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/spotroot/spotroot/internal/kmod"
	"github.com/spotroot/spotroot/internal/testenv"
)

// The modaliases EC2's devices show, resolved through the real cloud
// kernels' modules.alias the way spotroot's NIC loader does it.
//
// ENA: vendor 0x1d0f (Amazon), device ids from Linux's
// drivers/net/ethernet/amazon/ena/ena_pci_id_tbl.h: 0x0ec2 (PF), 0x1ec2
// (LLQ PF), 0xec20 (VF, what Nitro instances show), 0xec21 (LLQ VF);
// class 0x020000. Xen (t2, m4, c4 …): the NIC is vif-0 on the xen bus,
// modalias "xen:vif"; disks are vbd-<id>, "xen:vbd".
var ec2Devices = []struct {
	what, modalias, module string
}{
	{"ENA VF (Nitro)", "pci:v00001D0Fd0000EC20sv00001D0Fsd0000EC20bc02sc00i00", "ena"},
	{"ENA LLQ VF", "pci:v00001D0Fd0000EC21sv00001D0Fsd0000EC21bc02sc00i00", "ena"},
	{"ENA PF", "pci:v00001D0Fd00000EC2sv00001D0Fsd00000EC2bc02sc00i00", "ena"},
	{"ENA LLQ PF", "pci:v00001D0Fd00001EC2sv00001D0Fsd00001EC2bc02sc00i00", "ena"},
	{"Xen vif", "xen:vif", "xen_netfront"},
	{"Xen vbd", "xen:vbd", "xen_blkfront"},
	{"Intel 82599 VF (Xen enhanced networking)", "pci:v00008086d000010EDsv00008086sd00000000bc02sc00i00", "ixgbevf"},
}

func TestCloudKernelResolvesEC2Devices(t *testing.T) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		testenv.Skip(t, "apt-get not installed")
	}
	if os.Getenv("SPOTROOT_KERNEL_TEST") == "" && os.Getenv("CI") == "" {
		if _, err := newestCached(mustCacheDir(t), "amd64"); err != nil {
			t.Skip("no cached cloud kernel; set SPOTROOT_KERNEL_TEST=1 to download it")
		}
	}
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			k, err := EnsureArch(ctx, "", arch)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ec2Devices {
				if arch == "arm64" && d.module == "ixgbevf" {
					continue // Graviton instances are Nitro only
				}
				mods, builtin, err := kmod.Lookup(k.ModulesDir, d.modalias)
				if err != nil {
					t.Errorf("%s: %s: %v", k.Version, d.what, err)
					continue
				}
				if !slices.Contains(mods, d.module) {
					t.Errorf("%s: %s (%s) resolves to %v, want %s", k.Version, d.what, d.modalias, mods, d.module)
					continue
				}
				t.Logf("%s: %s → %v (built in: %v)", k.Version, d.what, mods, builtin[d.module])
			}
		})
	}
}

func mustCacheDir(t *testing.T) string {
	d, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
