package qemu

import "os/exec"

// tapNetdev is a -netdev on an existing tap device (created by the test in
// its network namespace); no host scripts run.
func tapNetdev(tap string) string {
	return "tap,id=n0,ifname=" + qemuEscape(tap) + ",script=no,downscript=no"
}

// inTapNetns makes cmd run inside network namespace ns (when set) through
// `ip netns exec`, which execs QEMU itself, so the pid and process group
// stay QEMU's.
func inTapNetns(cmd *exec.Cmd, ns string) {
	if ns == "" {
		return
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		ip = "/usr/sbin/ip" // Start then fails naming it
	}
	cmd.Args = append([]string{"ip", "netns", "exec", ns, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = ip
}
