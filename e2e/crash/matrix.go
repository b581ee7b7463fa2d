package crash

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Result is the outcome of one crash point under one seed.
type Result struct {
	Seed  uint64
	Point Point
	Err   error
	Logs  []string
	Took  time.Duration
	// Reached: the first boot was cut at the point (not past its end).
	Reached bool
}

// Name is the result's subtest name: seed<N>/<point>.
func (r Result) Name() string { return fmt.Sprintf("seed%d/%s", r.Seed, r.Point) }

// Repro is the one-line command that runs this point again.
func (r Result) Repro(tm Timing) string {
	point := r.Point.String()
	if r.Point.N == 0 { // the flow failed without a crash: all its points
		point = r.Point.Flow.Name + "/"
	}
	return fmt.Sprintf("SPOTROOT_CRASH_SEED=%d SPOTROOT_CRASH_POINT='%s' SPOTROOT_CRASH_TIMING=%s go test -count=1 -run TestCrashMatrix ./e2e",
		r.Seed, point, tm.Name)
}

// Options select what Matrix runs.
type Options struct {
	Seeds  []uint64
	Timing Timing
	// Parallel is how many scenarios run at once. They are in-process and
	// spend nearly all their time waiting for EC2's (scaled) pace, so
	// many fit on two cores.
	Parallel int
	// Only, when set, keeps the points whose name (Point.String) contains
	// it.
	Only string
}

// OptionsFromEnv reads the matrix's knobs: SPOTROOT_CRASH_SEED=N (that
// seed alone), else SPOTROOT_CRASH_SEEDS=N (N seeds from first), else
// first alone; SPOTROOT_CRASH_TIMING (full or quick, else tm);
// SPOTROOT_CRASH_POINT (a substring of the names of the points to run);
// SPOTROOT_CRASH_PARALLEL (scenarios at once, 128).
func OptionsFromEnv(first uint64, tm Timing) Options {
	o := Options{Seeds: []uint64{first}, Timing: TimingFromEnv(tm), Parallel: 128, Only: os.Getenv("SPOTROOT_CRASH_POINT")}
	if n, err := strconv.ParseUint(os.Getenv("SPOTROOT_CRASH_SEED"), 10, 64); err == nil {
		o.Seeds = []uint64{n}
	} else if n, err := strconv.Atoi(os.Getenv("SPOTROOT_CRASH_SEEDS")); err == nil && n > 1 {
		for k := 1; k < n; k++ {
			o.Seeds = append(o.Seeds, first+uint64(k))
		}
	}
	if n, err := strconv.Atoi(os.Getenv("SPOTROOT_CRASH_PARALLEL")); err == nil && n > 0 {
		o.Parallel = n
	}
	return o
}

// Matrix runs every crash point of every seed, o.Parallel at a time, and
// returns the results in a stable order (seed, flow, step, when, AZ). A
// flow that fails without a crash is a result too (point N=0).
func Matrix(o Options) []Result {
	sem := make(chan struct{}, max(o.Parallel, 1))
	var mu sync.Mutex
	var wg sync.WaitGroup
	results := map[string]Result{}
	var order []string
	add := func(r Result) {
		mu.Lock()
		results[r.Name()] = r
		mu.Unlock()
	}
	// The points of a flow come from a run without a crash; every seed
	// and flow is one, run at once, and its points start as soon as it is
	// done.
	type slot struct {
		seed   uint64
		flow   Flow
		points []Point
	}
	slots := make([]*slot, 0, len(o.Seeds)*len(Flows))
	for _, seed := range o.Seeds {
		for _, f := range Flows {
			slots = append(slots, &slot{seed: seed, flow: f})
		}
	}
	for _, sl := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			start := time.Now()
			var st []string
			logs, err := record(func(t T) { st = sl.flow.Steps(t, sl.seed, o.Timing) })
			<-sem
			if err != nil {
				add(Result{Seed: sl.seed, Point: Point{Flow: sl.flow, Step: "no-crash"}, Err: err, Logs: logs, Took: time.Since(start)})
				return
			}
			for _, p := range sl.flow.points(st) {
				if o.Only == "" || strings.Contains(p.String(), o.Only) {
					sl.points = append(sl.points, p)
				}
			}
			for _, p := range sl.points {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					start := time.Now()
					var reached bool
					logs, err := record(func(t T) { reached = Run(t, sl.seed, o.Timing, p.Flow, p.N, p.After, p.ThenAZ) })
					add(Result{Seed: sl.seed, Point: p, Err: err, Logs: logs, Took: time.Since(start), Reached: reached})
				}()
			}
		}()
	}
	wg.Wait()
	for _, sl := range slots {
		if _, failed := results[Result{Seed: sl.seed, Point: Point{Flow: sl.flow, Step: "no-crash"}}.Name()]; failed {
			order = append(order, Result{Seed: sl.seed, Point: Point{Flow: sl.flow, Step: "no-crash"}}.Name())
		}
		for _, p := range sl.points {
			order = append(order, Result{Seed: sl.seed, Point: p}.Name())
		}
	}
	out := make([]Result, 0, len(order))
	for _, name := range order {
		out = append(out, results[name])
	}
	return out
}
