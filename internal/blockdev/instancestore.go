package blockdev

import (
	"os"
	"sort"
	"strings"
)

// Instance-store disks are the instance's own local NVMe SSDs (c5d, m6gd,
// i3, …): present from power-on, wiped when the instance stops, never an
// EBS volume. Nitro shows them as NVMe controllers with model "Amazon EC2
// NVMe Instance Storage" and a serial "AWS" + hex, where EBS volumes have
// model "Amazon Elastic Block Store" and serial "vol…" (EC2 User Guide,
// "SSD instance store volumes" and "Amazon EBS volumes and NVMe"). On Xen
// they are xvdb… named after their block-device-mapping entry
// (ephemeral0 → sdb), which IMDS lists under block-device-mapping/.
const InstanceStoreModel = "Amazon EC2 NVMe Instance Storage"

// IsInstanceStore reports whether the NVMe disk name (nvme1n1) is an
// instance-store disk. QEMU cannot set an NVMe model, so the serial's
// "AWS" prefix counts too (no EBS serial starts with it).
func (s Sys) IsInstanceStore(name string) bool {
	if !strings.HasPrefix(name, "nvme") {
		return false
	}
	if s.readTrim(name, "device", "model") == InstanceStoreModel {
		return true
	}
	return strings.HasPrefix(s.readTrim(name, "device", "serial"), "AWS")
}

// InstanceStoreDisks lists the NVMe instance-store disks present.
func (s Sys) InstanceStoreDisks() []string {
	entries, _ := os.ReadDir(s.SysBlock)
	var out []string
	for _, e := range entries {
		if s.IsInstanceStore(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// XenDiskNames lists the disks named like API devices (xvdX, sdX) present
// now: on a Xen instance these are the root and instance-store disks, whose
// names AttachVolume must not be given again.
func (s Sys) XenDiskNames() []string {
	entries, _ := os.ReadDir(s.SysBlock)
	var out []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "xvd") || (strings.HasPrefix(n, "sd") && len(n) > 2) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// excluded reports whether a /sys/block name must never be taken for an
// EBS volume: an instance-store disk, or a name the target excludes
// (Xen names of instance-store mappings).
func (s Sys) excluded(t Target, name string) bool {
	if s.IsInstanceStore(name) {
		return true
	}
	for _, x := range t.Exclude {
		x = strings.TrimPrefix(x, "/dev/")
		if name == x || sameLetter(name, x) {
			return true
		}
	}
	return false
}

// sameLetter: sdb and xvdb are the same attachment point on Xen.
func sameLetter(a, b string) bool {
	la, lb := driveLetter(a), driveLetter(b)
	return la != "" && la == lb
}

func driveLetter(n string) string {
	for _, p := range []string{"xvd", "sd"} {
		if rest, ok := strings.CutPrefix(n, p); ok && rest != "" {
			return strings.TrimRight(rest, "0123456789")
		}
	}
	return ""
}
