// Package qemu runs e2e guests under qemu-system-x86_64 (TCG): it builds the
// command line, streams the serial console, speaks QMP and hot-plugs NVMe
// volumes, implementing the simulator's Hotplugger.
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Opts configures a VM.
type Opts struct {
	Kernel    string // vmlinuz (required)
	RootImage string // AMI root disk, raw (required); exposed as NVMe serial volamiroot
	// RootDirect boots RootImage itself, so guest writes persist in it. By
	// default the VM writes to a private qcow2 overlay (like an instance's
	// copy of an AMI) and RootImage is only read, so VMs can share it.
	RootDirect bool

	Initrd     string   // optional initramfs, passed as -initrd
	KernelArgs []string // appended to DefaultKernelArgs; a console= here replaces its console=ttyS0
	SMBIOS     []string // each passed as -smbios VALUE, e.g. "type=1,serial=ec2…"

	// IMDSPort and EC2Port are 127.0.0.1 ports (inside Netns when set)
	// behind 169.254.169.254:80 and 169.254.169.250:80 (0 = none).
	IMDSPort int
	EC2Port  int
	NoNet    bool // no network card at all
	// Netns, if set, runs QEMU in that private network namespace with
	// slirp unrestricted: the lease then names a router (169.254.2.2) and
	// DNSAddr as DNS server, whose queries slirp forwards to the first
	// nameserver of ResolvConf (bound over /etc/resolv.conf in a private
	// mount namespace), a listener inside Netns. Without Netns, slirp is
	// restricted: no router, no DNS, only the guestfwd addresses.
	Netns      *Netns
	ResolvConf string
	DNSAddr    string // "" = DefaultDNSAddr
	MAC        string // the network card's MAC address ("" = QEMU's default)
	DomainName string // DHCP's domain name (option 15), slirp only ("" = none)

	ConsoleLog string        // file the console is streamed to (optional)
	Console    io.Writer     // also receives the console output (optional)
	Timeout    time.Duration // kill QEMU after this long (0 = only on ctx end)

	MemoryMiB int      // 0 = 512
	RootPorts int      // hot-plug slots (pcie-root-port rp1..rpN); 0 = 4
	BIOS      string   // "" = /usr/share/qemu/qboot.rom if present; "-" = QEMU default
	QEMU      string   // binary; "" = the architecture's (qemu-system-x86_64)
	ExtraArgs []string // appended to the QEMU command line

	// Arch is the guest architecture: "" or "amd64" (q35), "arm64" (virt).
	Arch string
	// Tap attaches the NIC to this tap device instead of user networking,
	// and TapNetNS runs QEMU in the named network namespace holding it
	// (tap.go): IPv6, which slirp's guestfwd cannot forward.
	Tap      string
	TapNetNS string
	// NIC is the network device model ("" = virtio-net-pci; e.g.
	// virtio-net-device, a NIC on the virtio-mmio bus, not on PCI).
	NIC string
	// LazyRoot, if set, delays the first read of each 512 KiB block of
	// RootImage by this much, as EBS does for a volume made from an AMI's
	// snapshot (lazydisk.go). Only with the overlay (not RootDirect).
	LazyRoot time.Duration
}

// DefaultKernelArgs is the guest kernel command line before Opts.KernelArgs.
var DefaultKernelArgs = []string{"console=ttyS0", "panic=-1", "quiet",
	"root=/dev/nvme0n1", "rootfstype=ext4", "rootwait"}

// kernelArgs is DefaultKernelArgs then extra; a console= in extra replaces
// the default console (e.g. one that does not exist, for a guest whose PID 1
// starts with no console at all).
func kernelArgs(extra []string) []string {
	ownConsole := false
	for _, a := range extra {
		ownConsole = ownConsole || strings.HasPrefix(a, "console=")
	}
	var out []string
	for _, a := range DefaultKernelArgs {
		if !(ownConsole && strings.HasPrefix(a, "console=")) {
			out = append(out, a)
		}
	}
	return append(out, extra...)
}

// Guest addresses of the simulated cloud.
const (
	IMDSAddr = "169.254.169.254"
	EC2Addr  = "169.254.169.250"
	// DefaultDNSAddr is the DNS server the lease names: the network's base
	// plus two, like a VPC's resolver (AWS: "Amazon DNS server", VPC CIDR
	// base +2). 169.254.169.253 (Amazon DNS's link-local address) is
	// another host of slirp's network: slirp sends it to 127.0.0.1:53.
	DefaultDNSAddr = "169.254.0.2"
	// DHCPRouter is the router an unrestricted slirp lease names.
	DHCPRouter = "169.254.2.2"
)

// VM is a running (or finished) QEMU guest.
type VM struct {
	opts    Opts
	dir     string // private temp dir: QMP socket, overlay, stderr
	cmd     *exec.Cmd
	qmp     *QMP
	started time.Time

	con     *console
	exited  chan struct{}
	exitErr error
	stderr  string

	cancel context.CancelFunc

	mu       sync.Mutex
	reason   string // SHUTDOWN reason
	panicked bool   // GUEST_PANICKED seen
	events   []Event
	ports    []string          // root port ids
	attached map[string]string // volume id -> root port
}

// Start boots a VM. QEMU is killed when ctx ends, after opts.Timeout, or on
// Kill; the VM's private files are removed once QEMU has exited.
func Start(ctx context.Context, o Opts) (*VM, error) {
	if o.Kernel == "" || o.RootImage == "" {
		return nil, errors.New("qemu.Start: Kernel and RootImage are required")
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 512
	}
	if o.RootPorts == 0 {
		o.RootPorts = 4
	}
	mach, err := machineFor(o.Arch)
	if err != nil {
		return nil, err
	}
	if o.QEMU == "" {
		o.QEMU = mach.qemu
	}
	bin, err := exec.LookPath(o.QEMU)
	if err != nil {
		return nil, fmt.Errorf("qemu not installed (apt-get install %s): %w", mach.pkg, err)
	}
	root, err := filepath.Abs(o.RootImage)
	if err != nil {
		return nil, err
	}
	o.RootImage = root
	startReaper()

	dir, err := os.MkdirTemp("", "spotroot-vm-")
	if err != nil {
		return nil, err
	}
	vm := &VM{opts: o, dir: dir, exited: make(chan struct{}), attached: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()

	rootNode := "driver=raw,node-name=rootdisk,file.driver=file,file.filename=" + qemuEscape(root)
	if o.LazyRoot > 0 && o.RootDirect {
		return nil, errors.New("qemu: LazyRoot needs the overlay, not RootDirect")
	}
	var lazy *exec.Cmd
	stopLazy := func() {
		if lazy != nil {
			lazy.Process.Kill()
			lazy.Wait()
		}
	}
	defer func() {
		if !ok {
			stopLazy()
		}
	}()
	if !o.RootDirect {
		overlay := filepath.Join(dir, "root.qcow2")
		backing, tail := root, []string{overlay}
		if o.LazyRoot > 0 {
			if backing, lazy, err = lazyDisk(ctx, dir, root, o.LazyRoot); err != nil {
				return nil, err
			}
			st, err := os.Stat(root)
			if err != nil {
				return nil, err
			}
			// -u and the size: no probe of the export, whose first reads
			// belong to the guest.
			tail = []string{"-u", overlay, fmt.Sprint(st.Size())}
		}
		create := append([]string{"create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw"}, tail...)
		out, err := exec.CommandContext(ctx, "qemu-img", create...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("qemu-img create overlay of %s: %w: %s", root, err, out)
		}
		rootNode = "driver=qcow2,node-name=rootdisk,file.driver=file,file.filename=" + qemuEscape(overlay)
	}

	qmpSock := filepath.Join(dir, "qmp.sock")
	args := append(append([]string{}, mach.args...),
		"-m", fmt.Sprint(o.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
	)
	args = append(args, mach.biosArgs(o.BIOS)...)
	args = append(args,
		"-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
		// wait=on: QEMU does not start the guest before we are connected,
		// so no event is missed.
		"-qmp", "unix:"+qmpSock+",server=on,wait=on",
		"-kernel", o.Kernel,
	)
	if o.Initrd != "" {
		args = append(args, "-initrd", o.Initrd)
	}
	args = append(args,
		"-append", strings.Join(mach.kernelArgs(kernelArgs(o.KernelArgs)), " "),
	)
	for i := 1; i <= o.RootPorts; i++ {
		id := fmt.Sprintf("rp%d", i)
		vm.ports = append(vm.ports, id)
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d,slot=%d", id, i, i))
	}
	if !o.NoNet {
		nd := "user,id=n0,restrict=on,net=169.254.0.0/16"
		if o.Netns != nil {
			if o.DNSAddr == "" {
				o.DNSAddr = DefaultDNSAddr
			}
			nd = "user,id=n0,net=169.254.0.0/16,dns=" + o.DNSAddr
		}
		if o.DomainName != "" {
			nd += ",domainname=" + o.DomainName
		}
		if o.IMDSPort != 0 {
			nd += fmt.Sprintf(",guestfwd=tcp:%s:80-cmd:socat STDIO TCP:127.0.0.1:%d", IMDSAddr, o.IMDSPort)
		}
		if o.EC2Port != 0 {
			nd += fmt.Sprintf(",guestfwd=tcp:%s:80-cmd:socat STDIO TCP:127.0.0.1:%d", EC2Addr, o.EC2Port)
		}
		if o.Tap != "" {
			nd = tapNetdev(o.Tap)
		}
		nic := "virtio-net-pci,netdev=n0,romfile="
		if o.NIC != "" {
			nic = o.NIC + ",netdev=n0"
		}
		if o.MAC != "" {
			nic += ",mac=" + o.MAC
		}
		args = append(args, "-netdev", nd, "-device", nic)
	}
	args = append(args,
		"-blockdev", rootNode,
		"-device", "nvme,drive=rootdisk,serial=volamiroot")
	for _, s := range o.SMBIOS {
		args = append(args, "-smbios", s)
	}
	args = append(args, o.ExtraArgs...)

	var sinks []io.Writer
	var logFile *os.File
	if o.ConsoleLog != "" {
		logFile, err = os.Create(o.ConsoleLog)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, logFile)
	}
	if o.Console != nil {
		sinks = append(sinks, o.Console)
	}
	vm.con = newConsole(io.MultiWriter(sinks...))

	errFile, err := os.Create(filepath.Join(dir, "qemu.stderr"))
	if err != nil {
		return nil, err
	}
	defer errFile.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(ctx)
	if o.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, o.Timeout)
	}
	vm.cancel = cancel
	cmd := exec.Command(bin, args...)
	if o.ResolvConf != "" {
		// libslirp forwards the guest's DNS to /etc/resolv.conf's first
		// nameserver: show QEMU ours, in a private mount namespace.
		cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--",
			"sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, o.ResolvConf, bin}, args...)...)
	}
	cmd.Stdout = pw
	cmd.Stderr = errFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	inTapNetns(cmd, o.TapNetNS)
	vm.cmd = cmd
	vm.started = time.Now()
	startCmd := cmd.Start
	if o.Netns != nil {
		startCmd = func() error { return o.Netns.Do(cmd.Start) }
	}
	if err := startCmd(); err != nil {
		cancel()
		pr.Close()
		pw.Close()
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	pw.Close()
	ok = true
	conDone := make(chan struct{})
	go func() {
		vm.con.read(pr)
		close(conDone)
	}()

	procDone := make(chan error, 1)
	go func() { procDone <- cmd.Wait() }()
	var qmpDone <-chan struct{}
	qmpReady := make(chan struct{})
	go func() {
		// Supervise: kill on ctx end / timeout; collect the exit status.
		var werr error
		select {
		case werr = <-procDone:
		case <-runCtx.Done():
			killGroup(cmd.Process.Pid)
			werr = <-procDone
			if ctx.Err() != nil {
				werr = fmt.Errorf("qemu killed: %w", ctx.Err())
			} else if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
				werr = fmt.Errorf("qemu killed after timeout %v", o.Timeout)
			} else {
				werr = errors.New("qemu killed")
			}
		}
		killGroup(cmd.Process.Pid) // stray socat children
		stopLazy()
		// Let the readers drain what QEMU wrote before it exited.
		grace := time.After(2 * time.Second)
		select {
		case <-conDone:
		case <-grace:
			pr.Close()
			<-conDone
		}
		<-qmpReady
		if qmpDone != nil {
			select {
			case <-qmpDone:
			case <-grace:
			}
			vm.qmp.Close()
		}
		if logFile != nil {
			logFile.Close()
		}
		if b, err := os.ReadFile(filepath.Join(dir, "qemu.stderr")); err == nil {
			vm.stderr = strings.TrimSpace(string(b))
		}
		if werr != nil {
			werr = fmt.Errorf("%w%s", werr, vm.describe())
		}
		vm.exitErr = werr
		os.RemoveAll(dir)
		cancel()
		close(vm.exited)
	}()

	dialCtx, dialCancel := context.WithTimeout(runCtx, 30*time.Second)
	defer dialCancel()
	q, err := dialQMPOrExit(dialCtx, qmpSock, vm.onEvent, vm.exited)
	if err != nil {
		close(qmpReady)
		vm.Kill()
		<-vm.exited
		return nil, fmt.Errorf("%w%s", err, vm.describe())
	}
	vm.qmp = q
	qmpDone = q.Done()
	close(qmpReady)
	return vm, nil
}

func dialQMPOrExit(ctx context.Context, path string, onEvent func(Event), exited <-chan struct{}) (*QMP, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	return DialQMP(ctx, path, onEvent)
}

func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// qemuEscape doubles commas for QEMU option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func (vm *VM) onEvent(ev Event) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.events = append(vm.events, ev)
	switch ev.Name {
	case "SHUTDOWN":
		var d struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(ev.Data, &d)
		vm.reason = d.Reason
	case "GUEST_PANICKED":
		vm.panicked = true
	}
}

// Args returns QEMU's command line (for logs).
func (vm *VM) Args() []string { return vm.cmd.Args }

// Started is when QEMU was started.
func (vm *VM) Started() time.Time { return vm.started }

// QMP gives raw access to the QMP connection.
func (vm *VM) QMP() *QMP { return vm.qmp }

// ShutdownReason is the reason of QEMU's SHUTDOWN event: "guest-shutdown"
// for a guest power-off, "guest-reset" for a reboot (with -no-reboot and
// panic=-1 a kernel panic ends like this), "guest-panic", "host-signal", …;
// "" if there was none (yet).
func (vm *VM) ShutdownReason() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.panicked && vm.reason == "" {
		return "guest-panic"
	}
	return vm.reason
}

// PoweredOff reports whether the guest powered itself off.
func (vm *VM) PoweredOff() bool { return vm.ShutdownReason() == "guest-shutdown" }

// Events returns the QMP events seen so far.
func (vm *VM) Events() []Event {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]Event(nil), vm.events...)
}

// Console returns the console output so far.
func (vm *VM) Console() string { return vm.con.String() }

// ConsoleLines returns the console lines so far.
func (vm *VM) ConsoleLines() []string { return vm.con.Lines() }

// Exited is closed once QEMU has exited and its output is collected.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// Wait waits for QEMU to exit. It returns an error if QEMU failed or was
// killed (with the console and QEMU's stderr in the message); a guest
// power-off or panic both end with a nil error: see ShutdownReason.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.exited:
		return vm.exitErr
	case <-ctx.Done():
		return fmt.Errorf("waiting for qemu to exit: %w%s", ctx.Err(), vm.describe())
	}
}

// Kill stops QEMU (and its socat children) now.
func (vm *VM) Kill() {
	vm.cancel()
}

// Close kills QEMU and waits for it to be gone.
func (vm *VM) Close() error {
	vm.Kill()
	<-vm.exited
	return nil
}

// WaitFor waits for a console line matching re (looking at the whole
// console, from the start) and returns it. It fails when ctx ends or QEMU
// exits first; the error then holds the console.
func (vm *VM) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	i := 0
	for {
		lines, changed, done := vm.con.since(i)
		for _, l := range lines {
			if re.MatchString(l) {
				return l, nil
			}
		}
		i += len(lines)
		if done {
			<-vm.exited
			why := "qemu exited"
			if vm.exitErr != nil {
				why = vm.exitErr.Error()
				return "", fmt.Errorf("no console line matching %q: %s", re, why)
			}
			if r := vm.ShutdownReason(); r != "" {
				why += " (shutdown reason " + r + ")"
			}
			return "", fmt.Errorf("no console line matching %q: %s%s", re, why, vm.describe())
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("no console line matching %q: %w after %v%s", re, ctx.Err(),
				time.Since(vm.started).Round(time.Millisecond), vm.describe())
		}
	}
}

// describe renders the console and QEMU's stderr for error messages.
func (vm *VM) describe() string {
	var b strings.Builder
	b.WriteString("\n--- console ---\n")
	b.WriteString(vm.con.String())
	if vm.stderr != "" {
		b.WriteString("\n--- qemu stderr ---\n")
		b.WriteString(vm.stderr)
	}
	b.WriteString("\n---")
	return b.String()
}

// console collects serial output line by line.
type console struct {
	w       io.Writer
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	done    bool
}

func newConsole(w io.Writer) *console {
	return &console{w: w, changed: make(chan struct{})}
}

func (c *console) read(r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			_, _ = io.WriteString(c.w, line)
			c.add(strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.done = true
	close(c.changed)
	c.mu.Unlock()
}

func (c *console) add(line string) {
	c.mu.Lock()
	c.lines = append(c.lines, line)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// since returns the lines from index i on, a channel closed on the next
// change, and whether the console has ended.
func (c *console) since(i int) ([]string, <-chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	if i < len(c.lines) {
		out = append(out, c.lines[i:]...)
	}
	return out, c.changed, c.done
}

func (c *console) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

func (c *console) String() string {
	l := c.Lines()
	if len(l) == 0 {
		return ""
	}
	return strings.Join(l, "\n") + "\n"
}
