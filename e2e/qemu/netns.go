package qemu

import "os/exec"

// tapNetdev is a -netdev on an existing tap device (created by the test in
// its network namespace); no host scripts run.
func tapNetdev(tap string) string {
	return "tap,id=n0,ifname=" + qemuEscape(tap) + ",script=no,downscript=no"
}

// command runs QEMU, inside network namespace ns when set (`ip netns exec`
// execs QEMU itself, so the pid and process group are QEMU's).
func command(ns, bin string, args []string) *exec.Cmd {
	if ns == "" {
		return exec.Command(bin, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
}
