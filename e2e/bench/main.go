// Command bench measures what spotroot costs at boot (`make bench`), in QEMU
// (TCG) against the cloud simulator, side by side with the floor (the
// image's own init, no spotroot) and the two-boot flow older tools use, plus
// the pool race against the simulator alone. It prints tables (median
// [min … max]) and writes them as CSV (build/bench/bench.csv).
//
// What each figure means and how it is taken is in README.md, "Benchmarks".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spotroot/spotroot/e2e/harness"
	"github.com/spotroot/spotroot/e2e/images"
)

func main() {
	runs := flag.Int("runs", 5, "QEMU runs per configuration")
	flag.DurationVar(&benchLatency, "latency", benchLatency, "the realistic AttachVolume latency (EBS on Nitro: ~1–3 s)")
	profileList := flag.String("profile", "kind,hostile", "simulator profiles of the QEMU runs (kind: hostile behaviours off, stable; hostile: sim.DefaultHostile)")
	only := flag.String("only", "floor,spotroot,two-boot", "QEMU configurations to run (floor, spotroot, two-boot)")
	pools := flag.String("pool", "10,100,1000", "pool race sizes (comma-separated; empty = none)")
	out := flag.String("out", "build/bench", "output directory (CSV, work files)")
	noQEMU := flag.Bool("no-qemu", false, "skip the QEMU runs")
	flag.StringVar(&prebuilt, "spotroot", "", "boot this PID 1 binary instead of building ./cmd/spotroot (another commit's, to compare)")
	flag.StringVar(&against, "against", "", "also boot this PID 1 binary (another commit's: make build BUILD=DIR) at attach 0 s, alternating run by run with this build, and print the paired differences")
	flag.DurationVar(&poolBudget, "pool-budget", poolBudget, "time limit of one pool race")
	flag.DurationVar(&fleetSpreadFlag, "pool-spread", fleetSpread, "also race each pool of 1000 or more with the boots spread over this window (0 = no)")
	flag.IntVar(&translations, "translations", 3, "also boot spotroot this many times (and the -against build as often) with QEMU's in_asm log and count the guest instructions translated from start to the exec: a figure the host's drift does not move (0 = no)")
	flag.DurationVar(&lazyAMI, "lazy-ami", 0, "delay the first read of each 512 KiB block of the AMI's root disk by this much, as EBS loads a volume made from a snapshot from S3 (floor, spotroot and translation boots; not two-boot, which boots a private copy); 0 = a local disk")
	flag.StringVar(&extraKargs, "kargs", "", "extra guest kernel arguments (e.g. spotroot.log_level=debug; console lines slow a TCG guest)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sel := qemuSelection{profiles: splitList(*profileList), configs: splitList(*only)}
	if err := run(ctx, *runs, benchLatency, sel, *pools, *out, *noQEMU); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// prebuilt is -spotroot: a PID 1 binary to boot instead of building one.
var prebuilt string

// against is -against: a second PID 1 binary booted beside this build's
// (ab.go).
var against string

// translations is -translations (translations.go): boots per build.
var translations int

// lazyAMI is -lazy-ami: the first-read latency of the AMI's root disk
// (qemu.Opts.LazyRoot).
var lazyAMI time.Duration

// benchLatency is the realistic AttachVolume latency (-latency).
var benchLatency = 2 * time.Second

// qemuSelection is what -profile and -only pick.
type qemuSelection struct{ profiles, configs []string }

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

const secBinary = "binary and memory"

func run(ctx context.Context, runs int, latency time.Duration, sel qemuSelection, pools, out string, noQEMU bool) error {
	began := time.Now()
	rep := &Report{}
	for _, t := range []string{"binary and memory", secSpotroot, secAB, secTranslations, secFloor, secTwoBoot, secCompare, secPool} {
		rep.section(t) // the order they print in
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	work := filepath.Join(out, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}

	// The PID 1 binary, built exactly as the image's is; it is also the one
	// the QEMU runs boot.
	root, err := images.ModuleRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(work, "bin")
	spotroot := filepath.Join(bin, "spotroot")
	if prebuilt != "" {
		logf("using %s as the PID 1 binary", prebuilt)
		if err := os.MkdirAll(bin, 0o755); err != nil {
			return err
		}
		if b, err := exec.CommandContext(ctx, "cp", prebuilt, spotroot).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %v: %s", prebuilt, err, b)
		}
	} else {
		logf("building spotroot (PID 1 build)")
		cmd := exec.CommandContext(ctx, "go", append(images.PID1BuildArgs(""), "-o", spotroot, "./cmd/spotroot")...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/spotroot: %v\n%s", err, b)
		}
		if translations > 0 {
			// The same build with its symbol table, to name what the
			// translation count's stretches start with.
			syms := spotroot + ".syms"
			cmd := exec.CommandContext(ctx, "go", append(images.PID1BuildArgsWithSymbols(""), "-o", syms, "./cmd/spotroot")...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/spotroot with symbols: %v\n%s", err, b)
			}
			spotrootSyms = syms
		}
	}
	fi, err := os.Stat(spotroot)
	if err != nil {
		return err
	}
	rep.Add(secBinary, "spotroot", "PID 1 binary size (-tags "+images.PID1Tags+", -trimpath -s -w, static)", "B", float64(fi.Size()))
	rep.Add(secBinary, "spotroot", "PID 1 binary size", "MiB", float64(fi.Size())/(1<<20))
	if err := addSizeGoal(ctx, rep, root, work); err != nil {
		return err
	}

	if !noQEMU && runs > 0 {
		if err := qemuRuns(ctx, rep, work, spotroot, runs, latency, sel); err != nil {
			return err
		}
	}

	for _, f := range strings.Split(pools, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad pool size %q", f)
		}
		logf("pool race: %d claimants, %d volumes", n, n)
		if err := addPool(ctx, rep, n); err != nil {
			return err
		}
		if err := addFleetSpread(ctx, rep, n); err != nil {
			return err
		}
	}

	if lazyAMI > 0 {
		rep.Note("AMI root disk loaded lazily (-lazy-ami): the first read of each 512 KiB block waited %s (floor, spotroot and translation boots; not two-boot).", lazyAMI)
	}
	rep.Note("Total bench time %s on %d CPU(s). Raw console logs: %s/runs.", time.Since(began).Round(time.Second), cpus(), work)
	rep.WriteTable(os.Stdout)
	writeFleetGoals(os.Stdout)
	WriteGoals(os.Stdout, CheckGoals(rep, goals))
	csvPath := filepath.Join(out, "bench.csv")
	if err := rep.Save(csvPath); err != nil {
		return err
	}
	fmt.Printf("\nCSV: %s\n", csvPath)
	if sizeGoalFailed {
		return fmt.Errorf("the PID 1 binary is over its %d B budget (make size-report)", images.PID1Budget)
	}
	return nil
}

// poolBudget bounds one pool race, so make bench stays within its time.
// Under EC2's throttling buckets 1000 claimants need minutes: AttachVolume
// refills 5 tokens a second for the whole account.
var poolBudget = 15 * time.Minute

const secPool = "pool race (hostile simulator: EC2's throttling buckets, lagging views, lost answers; SDK over HTTP, AttachVolume latency 0)"

func addPool(ctx context.Context, rep *Report, n int) error {
	r, err := PoolRace(ctx, n, poolBudget)
	if err != nil {
		if r.Claimed == 0 || r.Dups > 0 || ctx.Err() != nil {
			return err
		}
		// Out of time budget: report what finished, say so.
		rep.Note("pool race %d: only %d of %d claimed within %v (%v)", n, r.Claimed, n, poolBudget, err)
	}
	return addPoolResult(rep, r)
}

func addPoolResult(rep *Report, r PoolResult) error {
	n := r.N
	c := fleetConfig(n, r.Spread)
	rep.Add(secPool, c, "all claimed and attached (wall)", "s", r.Wall.Seconds())
	for _, v := range r.PerClaim {
		rep.Add(secPool, c, "one claimant: Claim + WaitAttached", "s", v)
	}
	rep.Add(secPool, c, "successful claims", "calls", float64(r.Claimed))
	rep.Add(secPool, c, "EC2 API calls (HTTP requests at the simulator)", "calls", float64(r.TotalCalls()))
	rep.Add(secPool, c, "EC2 API calls per successful claim", "calls", float64(r.TotalCalls())/float64(r.Claimed))
	for _, a := range []string{"DescribeVolumes", "DescribeInstances", "AttachVolume", "CreateTags"} {
		rep.Add(secPool, c, "  "+a+" per claim", "calls", float64(r.Calls[a])/float64(r.Claimed))
	}
	rep.Add(secPool, c, "  AttachVolume past throttling per claim", "calls", float64(r.AttachAccepted)/float64(r.Claimed))
	rep.Add(secPool, c, "  throttled requests (RequestLimitExceeded) per claim", "calls", float64(r.Throttled)/float64(r.Claimed))
	rep.Add(secPool, c, "  lost races (AttachVolume errors) per claim", "calls", float64(r.Errors["AttachVolume"])/float64(r.Claimed))
	rep.Note("pool race %s (hostile seed %d, %d answers lost after commit): %s", c, r.Seed, r.Lost, r.CallsSummary())
	addFleetRows(rep, r)
	return nil
}

func qemuRuns(ctx context.Context, rep *Report, work, spotroot string, runs int, latency time.Duration, sel qemuSelection) error {
	for _, p := range sel.profiles {
		if !slices.Contains(profiles, p) {
			return fmt.Errorf("unknown profile %q (known: %s)", p, strings.Join(profiles, ", "))
		}
	}
	for _, c := range sel.configs {
		if !slices.Contains([]string{"floor", "spotroot", "two-boot"}, c) {
			return fmt.Errorf("unknown configuration %q (known: floor, spotroot, two-boot)", c)
		}
	}
	logf("preparing kernel, binaries and images")
	env, err := harness.Prepare(ctx, filepath.Join(work, "env"), harness.PrepareOpts{SpotrootBin: spotroot})
	if err != nil {
		return err
	}
	bin := filepath.Join(work, "bin")
	if err := images.GoBuild(ctx, bin, "./e2e/bench/guestinit", "./e2e/bench/userdata"); err != nil {
		return err
	}
	guest, userdata := filepath.Join(bin, "guestinit"), filepath.Join(bin, "userdata")
	benv := *env
	benv.AMI = filepath.Join(work, "env", "bench-ami.img")
	if err := benchAMI(ctx, env, benv.AMI, env.SpotrootBin, guest, userdata); err != nil {
		return fmt.Errorf("bench AMI: %w", err)
	}
	benv.VolumeTemplate = filepath.Join(work, "env", "bench-volume.img")
	if err := images.BuildVolume(ctx, images.VolumeOpts{Out: benv.VolumeTemplate, TestinitBin: env.TestinitBin,
		SizeMiB: 64, FS: "ext4", Layout: "gpt", PartLabel: "root",
		// A volume made from the image carries the kernel's modules; one
		// without makes spotroot lend the image's (two remounts and a
		// warning), which no real root volume needs.
		Kernel: &env.Kernel,
		Files:  []images.File{{Path: "sbin/benchinit", Src: guest}}}); err != nil {
		return fmt.Errorf("bench volume: %w", err)
	}
	var aenv *harness.Env
	if against != "" {
		if aenv, err = againstEnv(ctx, benv, work, against, guest, userdata); err != nil {
			return err
		}
	}
	_ = os.RemoveAll(filepath.Join(work, "runs"))
	b := &Bench{Env: &benv, WorkDir: work, Rep: rep, counter: new(int), seeds: new([]uint64)}

	type cfg struct {
		name string
		fn   func(context.Context) error
		// againstOf marks the -against run paired with the entry before
		// it: every other round runs it first (ABBA), so a position
		// effect (the second of two runs warmer or colder) cancels out.
		againstOf bool
	}
	var cfgs []cfg
	if slices.Contains(sel.configs, "floor") {
		cfgs = append(cfgs, cfg{name: "floor", fn: b.Floor})
	}
	// One Bench per profile: they share the environment, not the sim.
	for _, kind := range []string{"spotroot", "two-boot"} {
		if !slices.Contains(sel.configs, kind) {
			continue
		}
		for _, p := range sel.profiles {
			pb := *b
			pb.Profile = p
			for _, l := range []time.Duration{0, latency} {
				fn := func(ctx context.Context) error { return pb.Spotroot(ctx, l) }
				if kind == "two-boot" {
					fn = func(ctx context.Context) error { return pb.TwoBoot(ctx, l) }
				}
				cfgs = append(cfgs, cfg{name: kind + ", " + colName(p, l), fn: fn})
				if kind == "spotroot" && l == 0 && aenv != nil {
					// Right after this build's run of the same
					// configuration: the pair shares the host's state.
					ab := pb
					ab.Env, ab.Label = aenv, againstLabel
					cfgs = append(cfgs, cfg{againstLabel + ", " + colName(p, l), func(ctx context.Context) error { return ab.Spotroot(ctx, 0) }, true})
				}
			}
		}
	}
	// Round-robin, so drift in the machine's load spreads over all configs.
	for i := 1; i <= runs; i++ {
		order := slices.Clone(cfgs)
		for j := 1; i%2 == 0 && j < len(order); j++ {
			if order[j].againstOf {
				order[j-1], order[j] = order[j], order[j-1]
			}
		}
		for _, c := range order {
			t := time.Now()
			if err := c.fn(ctx); err != nil {
				return fmt.Errorf("%s, run %d: %w", c.name, i, err)
			}
			logf("%-22s run %d/%d: %v", c.name, i, runs, time.Since(t).Round(10*time.Millisecond))
		}
	}
	for _, p := range sel.profiles {
		for _, l := range []time.Duration{0, latency} {
			c := colName(p, l)
			sp, ok1 := rep.Stats(secCompare, "spotroot, "+c, "QEMU start → init (host clock)")
			tb, ok2 := rep.Stats(secCompare, "two-boot, "+c, "QEMU start → init (host clock)")
			ks, _ := rep.Stats(secCompare, "spotroot, "+c, "kernel time (sum of uptimes)")
			kt, _ := rep.Stats(secCompare, "two-boot, "+c, "kernel time (sum of uptimes)")
			if ok1 && ok2 && tb.Median > 0 && kt.Median > 0 {
				rep.Add(secCompare, "ratio spotroot / two-boot, "+c, "QEMU start → init (host clock)", "x", sp.Median/tb.Median)
				rep.Add(secCompare, "ratio spotroot / two-boot, "+c, "kernel time (sum of uptimes)", "x", ks.Median/kt.Median)
			}
		}
	}
	if aenv != nil && slices.Contains(sel.configs, "spotroot") {
		for _, p := range sel.profiles {
			addPaired(rep, colName(p, 0))
		}
	}
	if translations > 0 && slices.Contains(sel.configs, "spotroot") {
		if err := translationRuns(ctx, b, env.SpotrootBin, guest, aenv); err != nil {
			return fmt.Errorf("translations: %w", err)
		}
	}
	if slices.Contains(sel.profiles, profileKind) {
		rep.Note("Profile kind: every hostile behaviour of the simulator off (%s).", kindReason)
	}
	if len(*b.seeds) > 0 {
		rep.Note("Profile hostile: sim.DefaultHostile, seeds %v (replay one: SPOTROOT_SEED=N).", *b.seeds)
	}
	rep.Note("Ratios are of medians. Realistic AttachVolume latency: %v (EBS attach on Nitro is typically 1–3 s; the sim delays the hot-plug by this much).", latency)
	return nil
}

// benchAMI builds the bench AMI around a PID 1 binary: both sides of the
// comparison call EC2 over TLS by name, so it carries the CA files (and,
// as every e2e AMI, the kernel's whole module index).
func benchAMI(ctx context.Context, env *harness.Env, out, spotroot, guest, userdata string) error {
	return images.BuildAMI(ctx, images.AMIOpts{Out: out, SpotrootBin: spotroot,
		TestinitBin: env.TestinitBin, Kernel: env.Kernel, SizeMiB: 128,
		Files: append(env.CAFiles(),
			images.File{Path: "sbin/benchinit", Src: guest},
			images.File{Path: "sbin/bench-switch", Src: guest},
			images.File{Path: "sbin/bench-userdata", Src: userdata},
		)})
}

func cpus() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + 1
}
