// Command soak runs spotroot's claim flows against the hostile simulator
// (e2e/sim's DefaultHostile profile, no QEMU) over many seeds and reports
// wrong outcomes, double attaches and API calls per claim. Every flow goes
// through the SDK and the wire format with each instance's own IMDS, as
// PID 1 does. Exit status 1 when any run went wrong; each such run is
// printed with the command that replays its seed.
//
//	go run ./e2e/soak -seeds 50 -seed 1000 -flows pool,create,other-az,dead
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/imds"
)

var allFlows = []string{"pool", "create", "other-az", "dead"}

func main() {
	seeds := flag.Int("seeds", 50, "seeds per flow")
	first := flag.Uint64("seed", 0, "first seed (0 = random); runs use seed, seed+1, …")
	flows := flag.String("flows", strings.Join(allFlows, ","), "flows to run: "+strings.Join(allFlows, ","))
	parallel := flag.Int("parallel", 24, "runs at once (they mostly wait on EC2's pace, not the CPU)")
	poolSize := flag.Int("pool", 6, "claimants (and volumes) in the pool flow")
	verbose := flag.Bool("v", false, "print every run")
	flag.Parse()
	if *first == 0 {
		*first = sim.SeedFromEnv()
	}
	var todo []run
	for _, f := range strings.Split(*flows, ",") {
		if !slices.Contains(allFlows, f) {
			fmt.Fprintf(os.Stderr, "soak: unknown flow %q (known: %s)\n", f, strings.Join(allFlows, ", "))
			os.Exit(2)
		}
		for k := range *seeds {
			todo = append(todo, run{flow: f, seed: *first + uint64(k), n: *poolSize})
		}
	}
	fmt.Printf("soak: %d runs (%s × %d seeds from %d), %d at once, hostile profile on\n", len(todo), *flows, *seeds, *first, *parallel)
	start := time.Now()
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for i := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			todo[i].do()
			if *verbose || todo[i].wrong() {
				fmt.Println(todo[i].line())
			}
		}()
	}
	wg.Wait()
	report(todo, time.Since(start))
	for _, r := range todo {
		if r.wrong() {
			os.Exit(1)
		}
	}
}

// run is one flow under one seed.
type run struct {
	flow string
	seed uint64
	n    int

	claims  int
	wrongs  []string // wrong outcomes, each described
	doubles int      // volumes attached twice, instances holding two
	calls   int      // EC2 requests, throttled ones included
	attach  int      // AttachVolume requests
	stats   sim.HostileStats
	took    time.Duration
}

func (r *run) wrong() bool { return len(r.wrongs) > 0 || r.doubles > 0 }

func (r *run) line() string {
	s := fmt.Sprintf("%-8s seed %-10d %6.1fs %3d calls/claim %4.1f attach/claim", r.flow, r.seed, r.took.Seconds(),
		r.calls/max(r.claims, 1), float64(r.attach)/float64(max(r.claims, 1)))
	if r.wrong() {
		s += fmt.Sprintf("  WRONG (%d double): %s\n    replay: make soak SEED=%d SEEDS=1 FLOWS=%s", r.doubles, strings.Join(r.wrongs, "; "), r.seed, r.flow)
	}
	return s
}

func report(runs []run, took time.Duration) {
	type agg struct {
		runs, claims, wrong, doubles, calls, attach           int
		stale, throttled, lost, cred, pending, device, skewed int
	}
	by := map[string]*agg{}
	var flows []string
	for _, r := range runs {
		a := by[r.flow]
		if a == nil {
			a = &agg{}
			by[r.flow] = a
			flows = append(flows, r.flow)
		}
		a.runs++
		a.claims += r.claims
		if len(r.wrongs) > 0 {
			a.wrong++
		}
		a.doubles += r.doubles
		a.calls += r.calls
		a.attach += r.attach
		a.stale += r.stats.StaleReads
		a.throttled += total(r.stats.Throttled)
		a.lost += total(r.stats.Lost)
		a.cred += r.stats.Credential4x
		a.pending += r.stats.Pending
		a.device += r.stats.DeviceInUse
		a.skewed += r.stats.Skewed
	}
	sort.Strings(flows)
	fmt.Printf("\n%-9s %5s %6s %6s %7s %11s %12s | hostile: %6s %9s %5s %8s %7s %6s %6s\n",
		"flow", "runs", "claims", "wrong", "double", "calls/claim", "attach/claim", "stale", "throttled", "lost", "cred404", "pending", "inuse", "skewed")
	var t agg
	for _, f := range flows {
		a := by[f]
		fmt.Printf("%-9s %5d %6d %6d %7d %11.1f %12.2f | %15d %9d %5d %8d %7d %6d %6d\n", f, a.runs, a.claims, a.wrong, a.doubles,
			float64(a.calls)/float64(max(a.claims, 1)), float64(a.attach)/float64(max(a.claims, 1)),
			a.stale, a.throttled, a.lost, a.cred, a.pending, a.device, a.skewed)
		t.runs += a.runs
		t.claims += a.claims
		t.wrong += a.wrong
		t.doubles += a.doubles
	}
	fmt.Printf("\nsoak: %d runs, %d claims in %v: %d wrong outcomes, %d double attaches\n", t.runs, t.claims, took.Round(time.Second), t.wrong, t.doubles)
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// env is one run's simulated account.
type env struct {
	w   *sim.World
	srv *sim.Server
	api *httptest.Server
	mds []*httptest.Server
}

func newEnv(seed uint64) (*env, error) {
	w, err := sim.Load("")
	if err != nil {
		return nil, err
	}
	w.Update(func(sw *sim.World) error { sw.Hostile = sim.DefaultHostile(seed); return nil })
	w.DataDir = "" // API only: no backing files
	e := &env{w: w, srv: sim.NewServer(w)}
	e.api = httptest.NewServer(e.srv.EC2Handler())
	return e, nil
}

func (e *env) close() {
	e.api.Close()
	for _, m := range e.mds {
		m.Close()
	}
	e.srv.Close()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// claimer launches an instance and returns PID 1's claimer for it, with
// the boot's defaults (poll pace, grace, timeouts).
func (e *env) claimer(az, instanceType string) (*claim.Claimer, error) {
	inst := sim.Instance{ID: sim.NewInstanceID(), AZ: az, InstanceType: instanceType, State: sim.InstanceRunning,
		Role: "spotroot", ImageID: "ami-0123456789abcdef0",
		BlockDevices: map[string]string{"/dev/xvda": sim.NewVolumeID()}}
	if err := e.w.AddInstance(inst); err != nil {
		return nil, err
	}
	md := httptest.NewServer(e.srv.IMDSHandler(inst.ID))
	e.mds = append(e.mds, md)
	ic := imds.New(md.URL, nil)
	client := claim.NewClient(claim.ClientOptions{Region: "us-east-1", Endpoint: e.api.URL, IMDS: ic.SDK(), ClockOffset: ic.ClockOffset})
	return &claim.Claimer{EC2: client, Instance: claim.Instance{ID: inst.ID, AZ: az}, ImageID: inst.ImageID, ClockOffset: ic.ClockOffset,
		WaitDetach: 30 * time.Second, Log: quiet}, nil
}

func (e *env) volume(az string, tags map[string]string) (string, error) {
	id := sim.NewVolumeID()
	return id, e.w.AddVolume(sim.Volume{ID: id, AZ: az, Type: "gp3", SizeGiB: 8, Tags: tags, State: sim.VolumeAvailable})
}

// instanceTypes: every other seed uses a type with instance storage.
func instanceType(seed uint64) string {
	if seed%4 >= 2 {
		return "m5d.large"
	}
	return "t3.micro"
}

func (r *run) do() {
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	e, err := newEnv(r.seed)
	if err != nil {
		r.wrongs = append(r.wrongs, err.Error())
		return
	}
	defer e.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var owners map[string]string // volume → instance expected
	switch r.flow {
	case "pool":
		owners = r.pool(ctx, e)
	case "create":
		owners = r.create(ctx, e)
	case "other-az":
		owners = r.otherAZ(ctx, e)
	case "dead":
		owners = r.dead(ctx, e)
	}
	e.srv.Wait()
	r.check(e, owners)
	r.stats = e.w.Stats()
	for _, k := range r.stats.Calls {
		r.calls += k
	}
	r.attach = r.stats.Calls["AttachVolume"]
}

func claimAndWait(ctx context.Context, c *claim.Claimer, v config.Volume) (claim.Claim, error) {
	cl, err := c.Claim(ctx, v)
	if err != nil {
		return cl, err
	}
	return cl, c.WaitAttached(ctx, cl.VolumeID)
}

func (r *run) fail(format string, a ...any) { r.wrongs = append(r.wrongs, fmt.Sprintf(format, a...)) }

// pool: n instances race for n pool volumes; each must get one.
func (r *run) pool(ctx context.Context, e *env) map[string]string {
	tags := map[string]string{"spotroot:pool": "soak"}
	for range r.n {
		if _, err := e.volume("us-east-1a", tags); err != nil {
			r.fail("%v", err)
			return nil
		}
	}
	cs := make([]*claim.Claimer, r.n)
	for i := range cs {
		c, err := e.claimer("us-east-1a", instanceType(r.seed+uint64(i)))
		if err != nil {
			r.fail("%v", err)
			return nil
		}
		cs[i] = c
	}
	got := make([]claim.Claim, r.n)
	errs := make([]error, r.n)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = claimAndWait(ctx, c, config.Volume{Pool: tags, Mount: "/"})
		}()
	}
	wg.Wait()
	owners := map[string]string{}
	for i := range cs {
		if errs[i] != nil {
			r.fail("claimant %d: %v", i, errs[i])
			continue
		}
		r.claims++
		if prev, dup := owners[got[i].VolumeID]; dup {
			r.fail("%s claimed by %s and %s", got[i].VolumeID, prev, cs[i].Instance.ID)
		}
		owners[got[i].VolumeID] = cs[i].Instance.ID
	}
	return owners
}

// create: no volume has the tag; the claim creates one (exactly one).
func (r *run) create(ctx context.Context, e *env) map[string]string {
	c, err := e.claimer("us-east-1a", instanceType(r.seed))
	if err != nil {
		r.fail("%v", err)
		return nil
	}
	v := config.Volume{Tag: map[string]string{"Name": "soak"}, Mount: "/", Create: &config.Create{SizeGiB: 2, From: "empty"}}
	cl, err := claimAndWait(ctx, c, v)
	if err != nil {
		r.fail("create: %v", err)
		return nil
	}
	r.claims++
	n := 0
	e.w.View(func(sw *sim.World) {
		for _, vol := range sw.Volumes {
			if vol.Tags["Name"] == "soak" {
				n++
			}
		}
	})
	if n != 1 || !cl.Created {
		r.fail("create: %d volumes carry the tag (want 1), created=%v", n, cl.Created)
	}
	return map[string]string{cl.VolumeID: c.Instance.ID}
}

// other-az: the volume is in us-east-1b, the instance in us-east-1a: it is
// copied through a snapshot, the old one marked moved-to.
func (r *run) otherAZ(ctx context.Context, e *env) map[string]string {
	old, err := e.volume("us-east-1b", map[string]string{"Name": "soak"})
	if err != nil {
		r.fail("%v", err)
		return nil
	}
	c, err := e.claimer("us-east-1a", instanceType(r.seed))
	if err != nil {
		r.fail("%v", err)
		return nil
	}
	cl, err := claimAndWait(ctx, c, config.Volume{Tag: map[string]string{"Name": "soak"}, Mount: "/"})
	if err != nil {
		r.fail("other-az: %v", err)
		return nil
	}
	r.claims++
	ov, _ := e.w.Volume(old)
	if cl.MovedFrom != old || ov.Tags[claim.TagMovedTo] != cl.VolumeID {
		r.fail("other-az: claim %+v, old volume tags %v", cl, ov.Tags)
	}
	return map[string]string{cl.VolumeID: c.Instance.ID}
}

// dead: the volume is attached to the previous instance, which is
// terminated as the new one boots; the new one gets the volume.
func (r *run) dead(ctx context.Context, e *env) map[string]string {
	tags := map[string]string{"Name": "soak"}
	id, err := e.volume("us-east-1a", tags)
	if err != nil {
		r.fail("%v", err)
		return nil
	}
	prev, err := e.claimer("us-east-1a", "t3.micro")
	if err != nil {
		r.fail("%v", err)
		return nil
	}
	// The previous instance had the volume attached before (set up, not raced).
	e.w.Update(func(sw *sim.World) error {
		v, i := sw.Volumes[id], sw.Instances[prev.Instance.ID]
		v.State = sim.VolumeInUse
		v.Attachments = []sim.Attachment{{InstanceID: i.ID, Device: "/dev/sdf", State: sim.AttachAttached, AttachTime: time.Now()}}
		i.BlockDevices["/dev/sdf"] = id
		i.State = sim.InstanceShuttingDown
		return nil
	})
	go func() {
		time.Sleep(500 * time.Millisecond) // EC2 detaches a terminating instance's volumes shortly after
		e.w.TerminateInstance(prev.Instance.ID)
	}()
	c, err := e.claimer("us-east-1a", instanceType(r.seed))
	if err != nil {
		r.fail("%v", err)
		return nil
	}
	cl, err := claimAndWait(ctx, c, config.Volume{Tag: tags, Mount: "/"})
	if err != nil {
		r.fail("dead owner: %v", err)
		return nil
	}
	r.claims++
	if cl.VolumeID != id {
		r.fail("dead owner: claimed %s, want %s", cl.VolumeID, id)
	}
	return map[string]string{id: c.Instance.ID}
}

// check compares the simulator's truth with what the claims said: each
// claimed volume attached to exactly its claimant, no volume attached
// twice, no instance holding two claimed volumes.
func (r *run) check(e *env, owners map[string]string) {
	e.w.View(func(sw *sim.World) {
		held := map[string]int{}
		for id, v := range sw.Volumes {
			if len(v.Attachments) > 1 {
				r.doubles++
				r.fail("%s attached %d times", id, len(v.Attachments))
			}
			for _, a := range v.Attachments {
				if a.Device != "/dev/xvda" {
					held[a.InstanceID]++
				}
			}
			if want, ok := owners[id]; ok {
				if len(v.Attachments) != 1 || v.Attachments[0].InstanceID != want || v.Attachments[0].State != sim.AttachAttached {
					r.fail("%s: claimed by %s, but its attachments are %+v", id, want, v.Attachments)
				}
			}
		}
		for inst, k := range held {
			if k > 1 {
				r.doubles++
				r.fail("%s holds %d volumes", inst, k)
			}
		}
	})
}
