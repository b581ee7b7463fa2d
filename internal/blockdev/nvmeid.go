package blockdev

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nvmeAdminCmd is struct nvme_admin_cmd from <linux/nvme_ioctl.h>.
type nvmeAdminCmd struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	Cdw2, Cdw3  uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	Cdw10       uint32
	Cdw11       uint32
	Cdw12       uint32
	Cdw13       uint32
	Cdw14       uint32
	Cdw15       uint32
	TimeoutMS   uint32
	Result      uint32
}

const (
	nvmeIoctlAdminCmd = 0xC0484E41 // _IOWR('N', 0x41, struct nvme_admin_cmd)
	nvmeIdentify      = 0x06
	// EBS puts the block device name the API was given ("sdf" or
	// "/dev/sdf") in the vendor-specific area of Identify Controller.
	ebsVendorOffset = 3072
	ebsVendorLen    = 32
)

// nvmeVendorName reads the EBS device name from the Identify Controller
// data of an NVMe device node. A variable so tests can stand in for it.
var nvmeVendorName = func(devNode string) (string, error) {
	f, err := os.Open(devNode)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	cmd := nvmeAdminCmd{Opcode: nvmeIdentify, Addr: uint64(uintptr(unsafe.Pointer(&buf[0]))), DataLen: uint32(len(buf)), Cdw10: 1}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(&cmd))); errno != 0 {
		return "", fmt.Errorf("identify controller on %s: %w", devNode, errno)
	}
	return ebsDeviceName(buf), nil
}

// ebsDeviceName extracts the device name from Identify Controller data,
// without the /dev/ prefix; "" when the area is empty (not EBS).
func ebsDeviceName(id []byte) string {
	if len(id) < ebsVendorOffset+ebsVendorLen {
		return ""
	}
	v := id[ebsVendorOffset : ebsVendorOffset+ebsVendorLen]
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	return strings.TrimPrefix(strings.TrimSpace(string(v)), "/dev/")
}
