package boot

import (
	"strings"
	"testing"
	"time"
)

func TestParseRootArgs(t *testing.T) {
	a := parseRootArgs(`console=ttyS0 root=PARTUUID=0f5a9f7e-01 rootfstype=xfs,ext4 rootflags="noatime,nouuid" rw init=/lib/systemd/systemd rootwait`)
	if a.root != "PARTUUID=0f5a9f7e-01" || strings.Join(a.fstypes, "|") != "xfs|ext4" || a.flags != "noatime,nouuid" ||
		!a.rw || a.init != "/lib/systemd/systemd" || !a.waitForev || a.wait != 0 {
		t.Errorf("parsed %+v", a)
	}
	a = parseRootArgs("root=/dev/nvme0n1 rw ro rootdelay=5")
	if a.rw || a.wait != 5*time.Second || a.waitForev || a.fstypes != nil {
		t.Errorf("ro/rootdelay: %+v", a)
	}
	a = parseRootArgs("root=/dev/vda1 rootwait=12")
	if a.wait != 12*time.Second || a.waitForev {
		t.Errorf("rootwait=12: %+v", a)
	}
}
