// Command demo boots a simulated spot instance twice onto the same
// persistent volume, the first instance terminated in between, and shows
// that state on the volume survived:
//
//	go run ./e2e/cmd/demo
//
// It needs root, qemu-system-x86, qemu-utils, socat, e2fsprogs and kmod.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
)

func main() {
	keep := flag.Bool("keep", false, "keep the work directory (images, world.json, console logs)")
	verbose := flag.Bool("v", false, "stream the guest consoles")
	flag.Parse()
	if err := run(*keep, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(keep, verbose bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("requires root (images hold root-owned files and device nodes)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "spotroot-demo-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("work dir:", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	start := time.Now()
	fmt.Print("building spotroot + testinit, fetching kernel, building images… ")
	env, err := harness.Prepare(ctx, filepath.Join(dir, "env"), harness.PrepareOpts{})
	if err != nil {
		fmt.Println()
		return err
	}
	fmt.Printf("%v (kernel %s)\n", time.Since(start).Round(time.Millisecond), env.Kernel.Version)

	w, err := harness.NewWorld(ctx, env, filepath.Join(dir, "world"), harness.WorldOpts{})
	if err != nil {
		return err
	}
	defer w.Close()
	fmt.Printf("simulated account: volume %s tagged Name=%s, EC2 API on 127.0.0.1:%d; guests call https://%s (DNS from their lease, the run's test CA)\n",
		w.VolumeID, harness.VolumeName, w.EC2Port, harness.EC2Host)
	fmt.Printf("hostile simulator (lagging views, lost answers, EC2's throttling, late credentials, pending, clock skew): seed %d — make demo SEED=%d replays it\n",
		w.Sim.HostileSeed(), w.Sim.HostileSeed())

	var counters []int
	for n := 1; n <= 2; n++ {
		opts := harness.BootOpts{}
		if verbose {
			opts.Log = os.Stdout
		}
		fmt.Printf("\n== boot %d: launching a new spot instance\n", n)
		r, err := w.Boot(ctx, opts)
		if r != nil {
			fmt.Printf("instance %s (terminated afterwards)\n", r.InstanceID)
			for _, l := range r.Timeline {
				fmt.Println("  " + l)
			}
			if r.TestinitLine != "" {
				fmt.Println("  " + r.TestinitLine)
			}
			fmt.Printf("  wall time %v (QEMU start → power-off, TCG)\n", r.Elapsed.Round(time.Millisecond))
		}
		if err != nil {
			return err
		}
		if r.Kind != "persistent" {
			return fmt.Errorf("boot %d ran the image's init, not the volume's (console: %s)", n, r.ConsoleLog)
		}
		counters = append(counters, r.Counter)
	}
	fmt.Println()
	if counters[0] == 1 && counters[1] == 2 {
		fmt.Printf("state survived: counter %d → %d\n", counters[0], counters[1])
		return nil
	}
	return fmt.Errorf("state did not survive: counters %v, want [1 2]", counters)
}
