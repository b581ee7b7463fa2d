package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLazyDisk: through the overlay QEMU boots, the first read of a
// 512 KiB block waits the latency, a second read of it (at any offset
// inside it) does not, and the next block waits again.
func TestLazyDisk(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "ami.img")
	if err := os.WriteFile(image, make([]byte, 4*LazyBlock), 0o644); err != nil {
		t.Fatal(err)
	}
	const latency = 400 * time.Millisecond
	uri, srv, err := lazyDisk(context.Background(), dir, image, latency)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	overlay := filepath.Join(dir, "root.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", uri, "-F", "raw", overlay, "2097152").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	// One qemu-io, one command per read: its own timing of each read
	// ("1 ops; 00.40 sec"), not a process start's.
	reads := []struct {
		off  int
		slow bool
	}{{0, true}, {0, false}, {LazyBlock - 4096, false}, {LazyBlock, true}, {LazyBlock + 65536, false}}
	args := []string{"-r"}
	for _, r := range reads {
		args = append(args, "-c", "read "+strconv.Itoa(r.off)+" 4096")
	}
	out, err := exec.Command("qemu-io", append(args, overlay)...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}
	// "00.40 sec", with minutes and hours in front when it has them.
	took := regexp.MustCompile(`ops; ([\d:.]+) sec`).FindAllStringSubmatch(string(out), -1)
	if len(took) != len(reads) {
		t.Fatalf("qemu-io printed %d timings for %d reads:\n%s", len(took), len(reads), out)
	}
	for i, r := range reads {
		var sec float64
		for _, f := range strings.Split(took[i][1], ":") {
			v, _ := strconv.ParseFloat(f, 64)
			sec = sec*60 + v
		}
		d := time.Duration(sec * float64(time.Second))
		// Slow: at least the latency (less qemu-io's rounding to 10 ms);
		// fast: well under it, even on a loaded host.
		if r.slow && d < latency-10*time.Millisecond || !r.slow && d >= latency/2 {
			t.Errorf("read at %d took %v; want first reads of a block ≥ %v and later ones < %v\n%s", r.off, d, latency, latency/2, out)
		}
	}
}
