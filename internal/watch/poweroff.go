package watch

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// SystemdBooted reports whether systemd is the running init, the way
// sd_booted(3) tells.
func SystemdBooted() bool {
	st, err := os.Lstat("/run/systemd/system")
	return err == nil && st.IsDir()
}

// PowerOff starts a clean power-off: `systemctl poweroff` when systemd is
// PID 1 (it stops services and unmounts everything); otherwise it syncs,
// remounts every block-device filesystem read-only (best effort, so the
// journal is clean) and calls reboot(2) with LINUX_REBOOT_CMD_POWER_OFF.
func PowerOff(ctx context.Context) error {
	if SystemdBooted() {
		out, err := exec.CommandContext(ctx, "systemctl", "poweroff").CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemctl poweroff: %v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	unix.Sync()
	RemountReadOnly()
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("reboot(2) power off: %w (run as root, or under systemd)", err)
	}
	return nil
}

// RemountReadOnly remounts read-write filesystems on block devices
// read-only, innermost first; failures (busy) are ignored.
func RemountReadOnly() {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 6 || len(b) < 2 || !strings.HasPrefix(b[1], "/dev/") {
			continue
		}
		if strings.Contains(","+a[5]+",", ",rw,") {
			points = append(points, a[4])
		}
	}
	f.Close()
	for i := len(points) - 1; i >= 0; i-- {
		_ = unix.Mount("", points[i], "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	}
}

// NotifyReady tells systemd the service is up when it runs as
// Type=notify (sd_notify READY=1); without NOTIFY_SOCKET it does nothing.
func NotifyReady() {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	_ = unix.Sendto(fd, []byte("READY=1"), 0, &unix.SockaddrUnix{Name: sock})
}
