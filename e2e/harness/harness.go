// Package harness glues the e2e pieces together for tests and the demo:
// binaries, kernel and images (Prepare), a simulated account with its EC2
// API (NewWorld), and booting simulated spot instances in QEMU (Boot).
package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/kernel"
	"github.com/spotroot/spotroot/e2e/qemu"
	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/iampolicy"
)

// Env is what every scenario shares: binaries, kernel and pristine images.
type Env struct {
	Arch           string // guest architecture: "" or "amd64", "arm64"
	Dir            string
	Kernel         kernel.Kernel
	SpotrootBin    string
	TestinitBin    string
	AMI            string // AMI root disk (booted through a per-VM overlay)
	ImageConfig    []byte // the AMI's /etc/spotroot/config.yaml, if any
	VolumeTemplate string // pristine persistent volume; NewWorld copies it

	// CA is this run's test CA: the AMI's CA bundle (CABundle, also at
	// /etc/ssl/certs/ca-certificates.crt in the AMI) trusts it, and it
	// issued EC2Cert, the simulated EC2 endpoint's certificate.
	CA       *TestCA
	CABundle string
	EC2Cert  tls.Certificate
}

// PrepareOpts tunes Prepare.
type PrepareOpts struct {
	KernelCache string // "" = kernel.DefaultCacheDir()
	ImageConfig []byte // optional /etc/spotroot/config.yaml baked into the AMI
	// SpotrootBin, if set, is used instead of building ./cmd/spotroot.
	SpotrootBin string
	// Arch is the guest architecture ("" = amd64; "arm64": Debian's arm64
	// cloud kernel, arm64 binaries, QEMU's virt machine).
	Arch string
}

// Prepare builds the binaries, fetches the kernel and builds the AMI and the
// volume template into dir.
func Prepare(ctx context.Context, dir string, o PrepareOpts) (*Env, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, Arch: o.Arch, ImageConfig: o.ImageConfig}
	arch := o.Arch
	if arch == "" {
		arch = "amd64"
	}
	type kres struct {
		k   kernel.Kernel
		err error
	}
	kch := make(chan kres, 1)
	go func() {
		k, err := kernel.EnsureArch(ctx, o.KernelCache, arch)
		kch <- kres{k, err}
	}()
	bin := filepath.Join(dir, "bin")
	if o.SpotrootBin != "" {
		e.SpotrootBin, e.TestinitBin = o.SpotrootBin, filepath.Join(bin, "testinit")
		err = images.GoBuildArch(ctx, bin, arch, "./e2e/cmd/testinit")
	} else {
		e.SpotrootBin, e.TestinitBin, err = images.BuildBinariesArch(ctx, bin, arch)
	}
	kr := <-kch
	if err != nil {
		return nil, err
	}
	if kr.err != nil {
		return nil, kr.err
	}
	e.Kernel = kr.k
	if e.CA, err = NewTestCA("spotroot e2e test CA " + time.Now().UTC().Format(time.RFC3339)); err != nil {
		return nil, err
	}
	if e.EC2Cert, err = e.CA.Issue(EC2Host); err != nil {
		return nil, err
	}
	e.CABundle = filepath.Join(dir, "ca-certificates.crt")
	if err := os.WriteFile(e.CABundle, e.CA.ImageCABundle(), 0o644); err != nil {
		return nil, err
	}
	e.AMI = filepath.Join(dir, "ami.img")
	if err := images.BuildAMI(ctx, images.AMIOpts{Out: e.AMI, SpotrootBin: e.SpotrootBin,
		TestinitBin: e.TestinitBin, Kernel: e.Kernel, ImageConfig: o.ImageConfig,
		HostTools: e.HostTools(), Files: e.CAFiles()}); err != nil {
		return nil, fmt.Errorf("build AMI: %w", err)
	}
	e.VolumeTemplate = filepath.Join(dir, "volume.img")
	if err := images.BuildVolume(ctx, images.VolumeOpts{Out: e.VolumeTemplate,
		TestinitBin: e.TestinitBin, SizeMiB: 64, FS: "ext4", Layout: "gpt", PartLabel: "root"}); err != nil {
		return nil, fmt.Errorf("build volume: %w", err)
	}
	return e, nil
}

// HostTools are the host programs copied into the AMI (nil = the default
// e2fsprogs). The host's are amd64 binaries: an arm64 AMI gets none, and
// spotroot then mounts without the image's fsck (its warning says so).
func (e *Env) HostTools() []string {
	if e.Arch != "" && e.Arch != "amd64" {
		return []string{}
	}
	return nil
}

// CAFiles are the AMI files that make it trust the test CA: the bundle,
// and the CA where Debian's update-ca-certificates keeps local CAs, so a
// package install that regenerates the bundle keeps it.
func (e *Env) CAFiles() []images.File {
	return []images.File{
		{Path: "etc/ssl/certs/ca-certificates.crt", Src: e.CABundle, Mode: 0o644},
		{Path: "usr/local/share/ca-certificates/spotroot-e2e-test-ca.crt", Data: e.CA.CertPEM, Mode: 0o644},
	}
}

// Defaults of the simulated account.
const (
	AZ         = "us-east-1a"
	Region     = "us-east-1"
	Role       = "spotroot-test"
	VolumeName = "home-root" // Name tag of the persistent volume
	// EC2Host is EC2's regional endpoint, which spotroot calls when
	// ec2_endpoint is unset (the SDK's endpoint resolver).
	EC2Host = "ec2." + Region + ".amazonaws.com"
	// EC2DualStackHost is EC2's dual-stack endpoint, which an instance
	// without IPv4 calls (the SDK's UseDualStackEndpoint): it resolves to
	// IPv6 and IPv4 addresses, while EC2Host has no AAAA record ("Amazon
	// EC2 service endpoints", https://docs.aws.amazon.com/ec2/latest/devguide/ec2-endpoints.html).
	// It is HTTPS only.
	EC2DualStackHost = "ec2." + Region + ".api.aws"
	// DHCPDomain is the domain name EC2's default DHCP option set gives
	// in Region: "ec2.internal" in us-east-1, "<region>.compute.internal"
	// elsewhere (EC2 API Reference, CreateDhcpOptions,
	// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateDhcpOptions.html).
	DHCPDomain = "ec2.internal"
)

// EC2IP6 is EC2DualStackHost's IPv6 address in an IPv6-only subnet's
// namespace: off the subnet (the documentation prefix, RFC 3849, never
// routed), reached through the subnet's router.
var EC2IP6 = netip.MustParseAddr("2001:db8:ec2::10")

// EC2IP is what the VM's DNS answers for EC2Host: an address off the
// guest's link (TEST-NET-3, RFC 5737, never routed), reached through the
// lease's router like EC2's public endpoint, and held by a listener on lo
// of the VM's private network namespace.
var EC2IP = netip.MustParseAddr("203.0.113.10")

// dnsListen is where slirp sends the DNS the lease names (the VM's
// resolv.conf: see qemu.Opts.ResolvConf). 169.254.169.253, Amazon DNS's
// link-local address, would arrive at 127.0.0.1:53, where nothing
// listens: only the lease's server answers.
var dnsListen = netip.MustParseAddr("127.0.0.2")

// DefaultUserData is the cloud-config the instances boot with: no
// ec2_endpoint, so EC2 is reached as https://EC2Host.
var DefaultUserData = []byte(`#cloud-config
spotroot:
  volume:
    tag: {Name: ` + VolumeName + `}
`)

// World is one scenario's simulated account: a sim World saved as JSON in
// Dir, and the EC2 API served on a 127.0.0.1 port shared by its VMs.
type World struct {
	Env      *Env
	Dir      string
	Sim      *sim.World
	Server   *sim.Server
	EC2Port  int
	VolumeID string // the Name=home-root volume ("" with NoVolume)

	ec2        *http.Server
	ec2H       http.Handler // the EC2 API handler (WorldOpts.WrapEC2 applied)
	logf       *os.File
	booted     int
	rolePolicy string
}

// RolePolicy returns the policy document instances of a boot with this
// user-data and kernel arguments get: WorldOpts.RolePolicy, else the one
// `spotroot iam-policy --config` derives from the configuration (the
// claim-only default when there is none or it does not parse).
func (w *World) RolePolicy(userData []byte, kernelArgs []string) (string, error) {
	if w.rolePolicy != "" {
		return w.rolePolicy, nil
	}
	var o iampolicy.Options
	if c, err := config.Load(w.Env.ImageConfig, userData, strings.Join(kernelArgs, " ")); err == nil {
		o = iampolicy.ForConfig(c)
	}
	b, err := iampolicy.Render(o)
	return string(b), err
}

// WorldOpts tunes NewWorld.
type WorldOpts struct {
	NoVolume   bool              // no volume tagged Name=home-root
	VolumeTags map[string]string // nil = {Name: home-root}; spotroot:managed=true is added
	// RolePolicy is the instance role's IAM policy document. "" = what
	// `spotroot iam-policy --config` prints for each boot's configuration
	// (user-data, image config, kernel command line), set before the boot.
	RolePolicy string
	Logger     *slog.Logger // sim logs; nil = Dir/sim.log
	// VolumeFiles, if set, makes NewWorld build its own volume (testinit
	// plus these files) instead of copying the shared template.
	VolumeFiles []images.File
	// WrapEC2, if set, wraps the EC2 API handler (e.g. to record requests).
	WrapEC2 func(http.Handler) http.Handler
}

// NewWorld loads (or creates) Dir/world.json, adds the persistent volume
// backed by a copy of the volume template unless there already is one, and
// serves the EC2 API.
func NewWorld(ctx context.Context, env *Env, dir string, o WorldOpts) (*World, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	sw, err := sim.Load(filepath.Join(dir, "world.json"))
	if err != nil {
		return nil, err
	}
	w := &World{Env: env, Dir: dir, Sim: sw, rolePolicy: o.RolePolicy}
	tags := map[string]string{"Name": VolumeName}
	if o.VolumeTags != nil {
		tags = maps.Clone(o.VolumeTags)
	}
	// As `spotroot volume create` tags it: the role's policy keys on it.
	tags[iampolicy.DefaultTagKey] = iampolicy.DefaultTagValue
	if !o.NoVolume {
		sw.View(func(sw *sim.World) {
			for id, v := range sw.Volumes {
				if v.Tags["Name"] == tags["Name"] && v.ImagePath != "" {
					w.VolumeID = id
				}
			}
		})
		if w.VolumeID == "" {
			id := sim.NewVolumeID()
			img := filepath.Join(dir, id+".img")
			if o.VolumeFiles != nil {
				if err := images.BuildVolume(ctx, images.VolumeOpts{Out: img, TestinitBin: env.TestinitBin,
					SizeMiB: 64, FS: "ext4", Layout: "gpt", PartLabel: "root", Files: o.VolumeFiles}); err != nil {
					return nil, fmt.Errorf("build volume: %w", err)
				}
			} else if err := copyFile(env.VolumeTemplate, img); err != nil {
				return nil, err
			}
			if err := sw.AddVolume(sim.Volume{ID: id, AZ: AZ, Type: "gp3", SizeGiB: 1,
				Tags: tags, ImagePath: img, State: sim.VolumeAvailable}); err != nil {
				return nil, err
			}
			w.VolumeID = id
		}
	}
	w.Server = sim.NewServer(sw)
	w.Server.Logger = o.Logger
	if w.Server.Logger == nil {
		w.logf, err = os.OpenFile(filepath.Join(dir, "sim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		w.Server.Logger = slog.New(slog.NewTextHandler(w.logf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	w.ec2H = w.Server.EC2Handler()
	if o.WrapEC2 != nil {
		w.ec2H = o.WrapEC2(w.ec2H)
	}
	w.ec2, w.EC2Port, err = serve(w.ec2H)
	if err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Close stops the EC2 API and the simulator's background work.
func (w *World) Close() {
	if w.ec2 != nil {
		w.ec2.Close()
	}
	if w.Server != nil {
		w.Server.Close()
	}
	if w.logf != nil {
		w.logf.Close()
	}
}

// BootOpts tunes one boot.
type BootOpts struct {
	InstanceID   string   // "" = a new id
	UserData     []byte   // nil = DefaultUserData
	InstanceType string   // "" = t3.micro
	KernelArgs   []string // extra guest kernel arguments
	Initrd       string   // optional initramfs (QEMU -initrd)
	// LazyRoot delays the first read of each 512 KiB block of the AMI's
	// root disk (qemu.Opts.LazyRoot); not with RootDirect.
	LazyRoot time.Duration

	SMBIOS  []string      // extra -smbios values
	Timeout time.Duration // whole boot; 0 = 2 minutes
	Keep    bool          // do not terminate the instance afterwards
	// Log, if set, receives console lines as they arrive.
	Log io.Writer
	// WhileUp, if set, runs after testinit's line, while the guest is still
	// up (e.g. to post a Spot notice); Boot then waits PowerOffTimeout for
	// the guest to power itself off.
	WhileUp func(ctx context.Context, vm *Running) error
	// Started, if set, is called once the VM runs, before Boot waits for
	// testinit's line (e.g. to act when the console shows a state); it
	// must not block. The VM's console ends when Boot returns.
	Started func(vm *Running)
	// PowerOffTimeout bounds the wait for the power-off after testinit's
	// line (and WhileUp); 0 = 30s.
	PowerOffTimeout time.Duration

	// Instance, if set, adjusts the new instance before it is launched
	// (IMDS knobs, role, image id).
	Instance func(*sim.Instance)

	// AMI is the root disk to boot ("" = Env.AMI).
	AMI string
	// UntrustedCert makes the EC2 endpoint present a certificate from a CA
	// the image does not trust.
	UntrustedCert bool
	// RootDirect makes the guest write to the root disk itself instead of
	// a per-VM overlay (see qemu.Opts.RootDirect), e.g. to capture it.
	RootDirect bool
	// Until is the console line that stands for testinit's TESTINIT line
	// when the volume runs another init (nil = TESTINIT, which is then
	// parsed into the result); the guest is expected to power itself off
	// after it.
	Until     *regexp.Regexp
	MemoryMiB int // 0 = qemu's default
	// EC2Identity makes the guest look like an EC2 (Nitro) instance to
	// software that checks, like cloud-init's ds-identify: SMBIOS system
	// manufacturer "Amazon EC2", product = instance type, uuid and serial
	// "ec2…", and the NIC carries the MAC address IMDS reports.
	EC2Identity bool
	ExtraArgs   []string // appended to QEMU's command line
	// WrapIMDS, if set, wraps the instance's IMDS handler.
	WrapIMDS func(http.Handler) http.Handler
	// Net, if set, puts the NIC on a tap device in a network namespace,
	// with IMDS served there (netns.go); the world's EC2 API must then be
	// served there too (ServeIn) and named in the user-data.
	Net *TapNet
	// NIC is QEMU's network device model ("" = virtio-net-pci).
	NIC string
}

// Running is a guest that is up, as WhileUp sees it.
type Running struct {
	InstanceID string
	vm         *qemu.VM
}

// WaitFor waits for a console line matching re (earlier lines count).
func (r *Running) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	return r.vm.WaitFor(ctx, re)
}

// BootResult is what one boot showed on its console.
type BootResult struct {
	InstanceID     string
	Console        string
	ConsoleLog     string   // file holding the console
	TestinitLine   string   // the TESTINIT line ("" if none)
	Kind           string   // image or persistent
	PID            int      // testinit's pid
	Counter        int      // boot counter on the root testinit ran from
	Root           string   // source of / as testinit saw it
	Net            string   // IPv4 addresses testinit saw, or none
	Machine        string   // the kernel's architecture testinit saw (uname -m)
	Timeline       []string // console lines starting "spotroot:"
	Elapsed        time.Duration
	ShutdownReason string // QMP SHUTDOWN reason (guest-shutdown = power-off)
	Line           string // the console line that ended the wait (BootOpts.Until or TESTINIT)

	// Started is when the QEMU process was started.
	Started time.Time

	// Network seen from the simulated cloud's side of this VM: DNS queries
	// its lease's server got ("name TYPE" → count), TLS handshakes on the
	// EC2 endpoint by server name (SNI), and EC2 API requests over HTTPS
	// by name and over plain HTTP at qemu.EC2Addr.
	DNSQueries    map[string]int
	TLSHandshakes map[string]int
	EC2HTTPS      int
	EC2HTTP       int
}

var testinitRE = regexp.MustCompile(`^TESTINIT `)

// Boot launches a new simulated spot instance (unless o.InstanceID names an
// existing one), boots the AMI in QEMU with the instance's IMDS and the
// world's EC2 API, waits for testinit's line and for the power-off, then
// terminates the instance. The result is returned also on error, with as
// much as was seen; errors carry the console.
func (w *World) Boot(ctx context.Context, o BootOpts) (*BootResult, error) {
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	id := o.InstanceID
	if id == "" {
		id = sim.NewInstanceID()
		ud := o.UserData
		if ud == nil {
			ud = DefaultUserData
		}
		const rootPorts = 4
		inst := sim.Instance{
			ID: id, AZ: AZ, InstanceType: o.InstanceType, State: sim.InstanceRunning,
			Role: Role, UserData: ud,
			// As `spotroot launch` tags it.
			Tags: map[string]string{iampolicy.DefaultTagKey: iampolicy.DefaultTagValue},
			// The AMI's root, deleted with the instance like on EC2.
			BlockDevices:   map[string]string{"/dev/xvda": sim.NewVolumeID()},
			MaxAttachments: rootPorts + 1,
		}
		if o.Instance != nil {
			o.Instance(&inst)
		}
		if inst.Role != "" {
			doc, err := w.RolePolicy(ud, o.KernelArgs)
			if err != nil {
				return nil, err
			}
			if err := w.Sim.SetRolePolicy(inst.Role, doc); err != nil {
				return nil, err
			}
		}
		if err := w.Sim.AddInstance(inst); err != nil {
			return nil, err
		}
	}
	res := &BootResult{InstanceID: id}
	if !o.Keep {
		defer func() {
			if err := w.Sim.TerminateInstance(id); err != nil && w.Server.Logger != nil {
				w.Server.Logger.Error("terminate", "instance", id, "err", err)
			}
		}()
	}

	// The guest's network: a tap device in the test's namespace (Net: IPv6),
	// else the per-VM namespace with slirp (vmNet).
	var vn *vmNet
	var tapIMDS *http.Server
	var err error
	if o.Net != nil {
		var imdsH http.Handler = w.Server.IMDSHandler(id)
		if o.WrapIMDS != nil {
			imdsH = o.WrapIMDS(imdsH)
		}
		if o.Net.WrapIMDS != nil {
			imdsH = o.Net.WrapIMDS(imdsH)
		}
		tapIMDS, err = ServeIn(o.Net.NetNS, o.Net.IMDS, imdsH)
		if err == nil {
			defer tapIMDS.Close()
		}
		vn = &vmNet{}
	} else {
		vn, err = w.vmNet(id, o.UntrustedCert, o.WrapIMDS)
	}
	if err != nil {
		return res, err
	}
	defer func() {
		vn.close()
		vn.report(res)
	}()

	var tap, tapNS string
	if o.Net != nil {
		tap, tapNS = o.Net.Tap, o.Net.NetNS
	}
	w.booted++
	res.ConsoleLog = filepath.Join(w.Dir, fmt.Sprintf("console-%d-%s.log", w.booted, id))
	ami := o.AMI
	if ami == "" {
		ami = w.Env.AMI
	}
	smbios, mac := o.SMBIOS, ""
	if o.EC2Identity {
		inst, _ := w.Sim.Instance(id)
		smbios = append(EC2SMBIOS(id, inst.InstanceType), smbios...)
		mac = sim.InstanceMAC(id)
	}
	start := time.Now()
	vm, err := qemu.Start(ctx, qemu.Opts{
		Kernel: w.Env.Kernel.Vmlinuz, RootImage: ami, RootDirect: o.RootDirect, Initrd: o.Initrd,
		KernelArgs: o.KernelArgs, SMBIOS: smbios, MAC: mac, Arch: w.Env.Arch, NIC: o.NIC,
		IMDSPort: vn.imdsPort, EC2Port: vn.ec2Port, MemoryMiB: o.MemoryMiB, DomainName: DHCPDomain,
		Netns: vn.ns, ResolvConf: vn.resolvConf, Tap: tap, TapNetNS: tapNS,
		ConsoleLog: res.ConsoleLog, Console: o.Log, Timeout: o.Timeout,
		ExtraArgs: o.ExtraArgs, LazyRoot: o.LazyRoot,
	})
	if err != nil {
		return res, err
	}
	res.Started = vm.Started()
	w.Server.Bind(id, vm)
	defer func() {
		vm.Close() // QEMU must be gone before the volume is free again
		w.Server.Unbind(id)
	}()

	if o.Started != nil {
		o.Started(&Running{InstanceID: id, vm: vm})
	}
	until := o.Until
	if until == nil {
		until = testinitRE
	}
	line, werr := vm.WaitFor(ctx, until)
	if werr == nil && o.WhileUp != nil {
		if err := o.WhileUp(ctx, &Running{InstanceID: id, vm: vm}); err != nil {
			werr = fmt.Errorf("while up: %w", err)
		}
	}
	if werr == nil {
		// testinit powers off right after its line.
		pot := o.PowerOffTimeout
		if pot == 0 {
			pot = 30 * time.Second
		}
		waitCtx, c := context.WithTimeout(ctx, pot)
		werr = vm.Wait(waitCtx)
		c()
	}
	vm.Close()
	res.Elapsed = time.Since(start)
	res.Console = vm.Console()
	res.ShutdownReason = vm.ShutdownReason()
	res.Timeline = Timeline(res.Console)
	res.Line = line
	if o.Until == nil {
		res.TestinitLine = line
	}
	if line != "" && o.Until == nil {
		if perr := res.parseTestinit(line); perr != nil {
			return res, fmt.Errorf("%w\n--- console ---\n%s---", perr, res.Console)
		}
	}
	if werr != nil {
		return res, fmt.Errorf("boot of %s: %w\n(sim log: %s; hostile seed %d: make e2e SEED=%d RUN=…)", id, werr, filepath.Join(w.Dir, "sim.log"), w.Sim.HostileSeed(), w.Sim.HostileSeed())
	}
	return res, nil
}

// parseTestinit fills the result from
// "TESTINIT kind=… pid=… root=… counter=… net=…".
func (r *BootResult) parseTestinit(line string) error {
	if msg, ok := strings.CutPrefix(line, "TESTINIT error: "); ok {
		return fmt.Errorf("testinit failed: %s", msg)
	}
	for _, f := range strings.Fields(strings.TrimPrefix(line, "TESTINIT ")) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "kind":
			r.Kind = v
		case "pid":
			r.PID, _ = strconv.Atoi(v)
		case "root":
			r.Root = v
		case "counter":
			r.Counter, _ = strconv.Atoi(v)
		case "net":
			r.Net = v
		case "machine":
			r.Machine = v
		}
	}
	if r.Kind == "" || r.Counter == 0 {
		return fmt.Errorf("malformed TESTINIT line %q", line)
	}
	return nil
}

// Timeline returns spotroot's console lines ("spotroot: …"), also when
// kernel messages share the line.
func Timeline(console string) []string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		if i := strings.Index(l, "spotroot: "); i >= 0 {
			out = append(out, strings.TrimSpace(l[i:]))
		}
	}
	return out
}

// EC2SMBIOS returns the -smbios values of an EC2 Nitro instance: system
// manufacturer "Amazon EC2", product the instance type, and the same "ec2…"
// uuid as serial (what cloud-init's ds-identify and DataSourceEc2 check).
func EC2SMBIOS(instanceID, instanceType string) []string {
	if instanceType == "" {
		instanceType = "t3.micro"
	}
	h := sha256.Sum256([]byte("smbios-uuid " + instanceID))
	x := "ec2" + hex.EncodeToString(h[:])[:29]
	uuid := x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
	return []string{fmt.Sprintf("type=1,manufacturer=Amazon EC2,product=%s,serial=%s,uuid=%s",
		instanceType, uuid, uuid)}
}

// serve runs h on an ephemeral 127.0.0.1 port.
func serve(h http.Handler) (*http.Server, int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "harness: http serve:", err)
		}
	}()
	return s, l.Addr().(*net.TCPAddr).Port, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	// Keep holes: the volume is mostly empty.
	buf := make([]byte, 1<<20)
	zero := make([]byte, 4096)
	var off int64
	for {
		n, rerr := io.ReadFull(in, buf)
		for i := 0; i < n; i += 4096 {
			j := min(i+4096, n)
			if !bytes.Equal(buf[i:j], zero[:j-i]) {
				if _, err := out.WriteAt(buf[i:j], off+int64(i)); err != nil {
					out.Close()
					return err
				}
			}
		}
		off += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
