// Command probe is a guest init for the qemu package's hot-plug test: it
// reports NVMe disks appearing and disappearing by serial, then powers off.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func say(f string, a ...any) {
	line := fmt.Sprintf(f, a...) + "\n"
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		c.WriteString(line)
		c.Close()
	}
}

func disks() map[string]string {
	m := map[string]string{}
	paths, _ := filepath.Glob("/sys/block/nvme*/device/serial")
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		m[strings.TrimSpace(string(b))] = strings.Split(p, "/")[3]
	}
	return m
}

func main() {
	_ = unix.Mount("proc", "/proc", "proc", 0, "")
	_ = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	if b, _ := os.ReadFile("/proc/cmdline"); strings.Contains(string(b), "probe.net") {
		if err := netProbe(); err != nil {
			say("PROBE net error: %v", err)
		}
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		select {}
	}
	start := time.Now()
	d := disks()
	var ss []string
	for s := range d {
		ss = append(ss, s)
	}
	sort.Strings(ss)
	say("PROBE ready disks=%s", strings.Join(ss, ","))
	var serial string
	for serial == "" && time.Since(start) < 60*time.Second {
		time.Sleep(5 * time.Millisecond)
		for s, n := range disks() {
			if _, old := d[s]; !old {
				serial = s
				say("PROBE attached %s serial=%s", n, s)
			}
		}
	}
	for serial != "" && time.Since(start) < 60*time.Second {
		time.Sleep(5 * time.Millisecond)
		if _, ok := disks()[serial]; !ok {
			say("PROBE detached serial=%s", serial)
			break
		}
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// netProbe loads the virtio_net chain, sets the slirp address statically
// and asks IMDS for its instance id a few times (one socat per connection).
func netProbe() error {
	var uts unix.Utsname
	unix.Uname(&uts)
	dir := "/lib/modules/" + unix.ByteSliceToString(uts.Release[:])
	f, err := os.Open(dir + "/modules.dep")
	if err != nil {
		return err
	}
	paths := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p, _, _ := strings.Cut(sc.Text(), ":")
		paths[strings.TrimSuffix(filepath.Base(p), ".ko")] = p
	}
	f.Close()
	for _, m := range []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
		"virtio_pci", "failover", "net_failover", "virtio_net"} {
		mf, err := os.Open(dir + "/" + paths[m])
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(mf.Fd()), "", 0)
		mf.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load %s: %w", m, err)
		}
	}
	var ifc *net.Interface
	for i := 0; i < 500 && ifc == nil; i++ {
		ifc, _ = net.InterfaceByName("eth0")
		time.Sleep(10 * time.Millisecond)
	}
	if ifc == nil {
		return fmt.Errorf("no eth0")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq("eth0")
	ifr.SetInet4Addr([]byte{169, 254, 2, 15})
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("SIOCSIFADDR: %w", err)
	}
	ifr.SetInet4Addr([]byte{255, 255, 0, 0})
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("SIOCSIFNETMASK: %w", err)
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("PUT", "http://169.254.169.254/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		tok, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		req, _ = http.NewRequest("GET", "http://169.254.169.254/latest/meta-data/instance-id", nil)
		req.Header.Set("X-aws-ec2-metadata-token", string(tok))
		resp, err = c.Do(req)
		if err != nil {
			return err
		}
		id, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		say("PROBE imds %d status=%d instance-id=%s", i, resp.StatusCode, id)
	}
	return nil
}
