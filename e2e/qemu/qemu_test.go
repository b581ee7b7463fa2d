package qemu_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/images"
	"github.com/spotroot/spotroot/e2e/kernel"
	"github.com/spotroot/spotroot/e2e/qemu"

	"github.com/spotroot/spotroot/internal/testenv"
)

var (
	setupOnce sync.Once
	setupErr  error
	kern      kernel.Kernel
	binDir    string
)

// setup builds testinit and the probe guest program, and fetches the kernel.
func setup(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "requires root")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		skip(t, "qemu not installed")
	}
	setupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		binDir, setupErr = os.MkdirTemp("", "qemu-test-bin-")
		if setupErr != nil {
			return
		}
		root, err := images.ModuleRoot()
		if err != nil {
			setupErr = err
			return
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", binDir+"/",
			"./e2e/cmd/testinit", "./e2e/qemu/testdata/probe")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			setupErr = &buildErr{err, string(out)}
			return
		}
		kern, setupErr = kernel.Ensure(ctx, "")
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

type buildErr struct {
	err error
	out string
}

func (e *buildErr) Error() string { return e.err.Error() + "\n" + e.out }

// skip skips, or fails when CI is set (testenv.Skip).
var skip = testenv.Skip

func ami(t *testing.T, init string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ami.img")
	err := images.BuildAMI(context.Background(), images.AMIOpts{
		Out: out, SpotrootBin: filepath.Join(binDir, init),
		TestinitBin: filepath.Join(binDir, "testinit"), Kernel: kern,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBootTestinit boots an AMI whose /sbin/init is testinit itself.
func TestBootTestinit(t *testing.T) {
	setup(t)
	img := ami(t, "testinit")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := filepath.Join(t.TempDir(), "console.log")
	start := time.Now()
	vm, err := qemu.Start(ctx, qemu.Opts{Kernel: kern.Vmlinuz, RootImage: img, ConsoleLog: log, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	line, err := vm.WaitFor(ctx, regexp.MustCompile(`^TESTINIT `))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after %v", line, time.Since(start))
	if err := vm.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("exit after %v, reason %s", time.Since(start), vm.ShutdownReason())
	// The kernel-mounted root shows as /dev/root in mountinfo.
	want := "TESTINIT kind=image pid=1 root=/dev/root counter=1 net=none machine=x86_64"
	if line != want {
		t.Errorf("got  %q\nwant %q", line, want)
	}
	if !vm.PoweredOff() {
		t.Errorf("shutdown reason %q, want guest-shutdown", vm.ShutdownReason())
	}
	if b, _ := os.ReadFile(log); !strings.Contains(string(b), want) {
		t.Errorf("console log lacks the line:\n%s", b)
	}
	// The overlay kept the AMI pristine: a second boot counts 1 again.
	vm2, err := qemu.Start(ctx, qemu.Opts{Kernel: kern.Vmlinuz, RootImage: img, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if line, err := vm2.WaitFor(ctx, regexp.MustCompile(`^TESTINIT `)); err != nil || line != want {
		t.Fatalf("second boot: %q %v", line, err)
	}
	vm2.Wait(ctx)
	// RootDirect writes into the image: the counter survives.
	for i, want := range []string{"counter=1", "counter=2"} {
		vm, err := qemu.Start(ctx, qemu.Opts{Kernel: kern.Vmlinuz, RootImage: img, RootDirect: true, Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		line, err := vm.WaitFor(ctx, regexp.MustCompile(`^TESTINIT `))
		if err != nil || !strings.Contains(line, want) {
			t.Fatalf("direct boot %d: %q %v", i, line, err)
		}
		vm.Wait(ctx)
	}
}

// TestPanicReason: a kernel panic (no init) ends with reason guest-reset.
func TestPanicReason(t *testing.T) {
	setup(t)
	img := ami(t, "testinit")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := qemu.Start(ctx, qemu.Opts{Kernel: kern.Vmlinuz, RootImage: img,
		KernelArgs: []string{"init=/nonexistent"}, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if r := vm.ShutdownReason(); r != "guest-reset" && r != "guest-panic" {
		t.Errorf("reason %q\n%s", r, vm.Console())
	}
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`^TESTINIT`)); err == nil || !strings.Contains(err.Error(), "--- console ---") {
		t.Errorf("WaitFor after exit: %v", err)
	}
}

// TestHotplug attaches and detaches a volume while the probe guest watches.
func TestHotplug(t *testing.T) {
	setup(t)
	img := ami(t, "probe")
	vol := filepath.Join(t.TempDir(), "vol.img")
	if err := images.BuildVolume(context.Background(), images.VolumeOpts{Out: vol,
		TestinitBin: filepath.Join(binDir, "testinit")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	vm, err := qemu.Start(ctx, qemu.Opts{Kernel: kern.Vmlinuz, RootImage: img, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`^PROBE ready disks=volamiroot$`)); err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ready after %v", time.Since(start))
	const id = "vol-0123456789abcdef0"
	t0 := time.Now()
	if err := vm.Attach(ctx, id, vol, "/dev/sdf"); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	line, err := vm.WaitFor(ctx, regexp.MustCompile(`^PROBE attached`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attach call %v, %q seen after %v", t1.Sub(t0), line, time.Since(t0))
	if line != "PROBE attached nvme1n1 serial=vol0123456789abcdef0" {
		t.Errorf("attached line %q", line)
	}
	if err := vm.Attach(ctx, id, vol, "/dev/sdf"); err == nil {
		t.Error("second Attach of the same volume succeeded")
	}
	if got := vm.Attached(); got[id] != "rp1" {
		t.Errorf("Attached() = %v", got)
	}
	t0 = time.Now()
	if err := vm.Detach(ctx, id); err != nil {
		t.Fatal(err)
	}
	t1 = time.Now()
	if _, err := vm.WaitFor(ctx, regexp.MustCompile(`^PROBE detached`)); err != nil {
		t.Fatal(err)
	}
	t.Logf("detach call (incl. DEVICE_DELETED) %v, guest saw it after %v", t1.Sub(t0), time.Since(t0))
	if len(vm.Attached()) != 0 {
		t.Errorf("still attached: %v", vm.Attached())
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if !vm.PoweredOff() {
		t.Errorf("reason %q", vm.ShutdownReason())
	}
	// The image is free again: another VM-less opener (qemu-img) can lock it.
	if out, err := exec.Command("qemu-img", "info", vol).CombinedOutput(); err != nil {
		t.Errorf("qemu-img info: %v %s", err, out)
	}
}

// TestGuestfwd: the guest reaches a host HTTP server as 169.254.169.254:80
// through guestfwd + socat, and the socat processes get reaped.
func TestGuestfwd(t *testing.T) {
	setup(t)
	img := ami(t, "probe")
	var mu sync.Mutex
	var reqs []string
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs = append(reqs, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.Method == "PUT" {
			io.WriteString(w, "tok")
			return
		}
		if r.Header.Get("X-aws-ec2-metadata-token") != "tok" {
			w.WriteHeader(401)
			return
		}
		io.WriteString(w, "i-0123456789abcdef0")
	})}
	go srv.Serve(l)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	vm, err := qemu.Start(ctx, qemu.Opts{Kernel: kern.Vmlinuz, RootImage: img, Timeout: time.Minute,
		IMDSPort: l.Addr().(*net.TCPAddr).Port, EC2Port: 1, KernelArgs: []string{"probe.net"}})
	if err != nil {
		t.Fatal(err)
	}
	line, err := vm.WaitFor(ctx, regexp.MustCompile(`^PROBE (imds 2|net error)`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%q after %v", line, time.Since(start))
	if line != "PROBE imds 2 status=200 instance-id=i-0123456789abcdef0" {
		t.Errorf("%s\n%s", line, vm.Console())
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	t.Logf("requests: %v", reqs)
	mu.Unlock()
	// Reaper runs every second.
	time.Sleep(2500 * time.Millisecond)
	// Only ours: this process is the subreaper of its QEMUs' socats (other
	// test packages running in parallel have their own).
	out, _ := exec.Command("ps", "-eo", "pid,ppid,stat,comm").Output()
	self := strconv.Itoa(os.Getpid())
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 4 && f[3] == "socat" && f[1] == self {
			t.Errorf("socat left over: %s", l)
		}
	}
}
