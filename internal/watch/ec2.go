package watch

import (
	"os"
	"path/filepath"
	"strings"
)

// OnEC2 reports whether the machine under root looks like an EC2 instance
// from its firmware data, without the network: Nitro instances have
// "Amazon EC2" as DMI system or board vendor, Xen ones a hypervisor or
// product UUID starting with "ec2" (the checks cloud-init's ds-identify
// and the AWS documentation "Detect whether a host is an EC2 instance"
// use). systemd's ExecCondition of spotroot-watch.service runs
// `spotroot watch --check-ec2`, which adds an IMDS probe for hosts whose
// firmware hides it.
func OnEC2(root string) bool {
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(root, p))
		return strings.TrimSpace(string(b))
	}
	for _, p := range []string{"sys/class/dmi/id/sys_vendor", "sys/class/dmi/id/board_vendor"} {
		if read(p) == "Amazon EC2" {
			return true
		}
	}
	for _, p := range []string{"sys/hypervisor/uuid", "sys/class/dmi/id/product_uuid"} {
		if strings.HasPrefix(strings.ToLower(read(p)), "ec2") {
			return true
		}
	}
	return false
}
