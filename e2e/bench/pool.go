package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/imds"
)

// PoolResult is one pool race: n instances claim from a pool of n volumes
// at once, each through the SDK against the simulator over HTTP with its
// own IMDS (instance-profile credentials), as PID 1 does.
type PoolResult struct {
	N        int
	Claimed  int           // successful claims (each confirmed attached)
	Failed   int           // claimants that got an error
	Wall     time.Duration // first claim started → last one attached
	PerClaim []float64     // each claimant's Claim+WaitAttached, seconds
	Calls    map[string]int
	Errors   map[string]int // EC2 error responses by action
	Dups     int            // volumes attached to more than one claimant, instances holding two (must be 0)
	// The hostile simulator (sim.DefaultHostile: EC2's throttling buckets,
	// lagging views, lost answers, …) and what it did.
	Seed        uint64
	Throttled   int            // RequestLimitExceeded answers
	ThrottledBy map[string]int // the same, by action
	Lost        int            // answers lost after commit
	// AttachAccepted counts AttachVolume requests that got past throttling
	// (answered, successfully or not).
	AttachAccepted int
	// Spread is the window the claimants started in (0: at once), Starts
	// their start offsets from the first, Floor what EC2's buckets alone
	// force for those starts (BucketFloor).
	Spread time.Duration
	Starts []time.Duration
	Floor  time.Duration
}

// TotalCalls is the number of EC2 API requests the simulator answered.
func (p PoolResult) TotalCalls() int {
	n := 0
	for _, c := range p.Calls {
		n += c
	}
	return n
}

// callCounter counts EC2 requests by Action at the simulator's door
// (every HTTP request, SDK retries included) and error answers.
type callCounter struct {
	next   http.Handler
	mu     sync.Mutex
	calls  map[string]int
	errors map[string]int
}

func (c *callCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	action := r.URL.Query().Get("Action")
	if v, err := url.ParseQuery(string(body)); err == nil && v.Get("Action") != "" {
		action = v.Get("Action")
	}
	sw := &statusWriter{ResponseWriter: w, status: 200}
	// Deferred: an answer the hostile simulator loses by aborting the
	// connection (a reset, a stall then a reset) panics out of ServeHTTP,
	// and the request still counts.
	defer func() {
		c.mu.Lock()
		c.calls[action]++
		if sw.status >= 400 {
			c.errors[action]++
		}
		c.mu.Unlock()
	}()
	c.next.ServeHTTP(sw, r)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// PoolRace runs one race with PID 1's claimer settings (default poll
// intervals and timeouts) and the simulator's AttachVolume latency at 0.
//
// budget bounds the race itself (0 = 10 minutes); claimants still going
// then fail with the context's error, and the result says how many made it.
func PoolRace(ctx context.Context, n int, budget time.Duration) (PoolResult, error) {
	return PoolRaceWith(ctx, PoolOpts{N: n, Budget: budget})
}

// PoolOpts describe one pool race.
type PoolOpts struct {
	N      int
	Budget time.Duration // 0 = 10 minutes
	// Spread starts the claimants at uniformly random offsets within this
	// window (boots spread out) instead of all at once.
	Spread time.Duration
	// Seed picks the start offsets (0: from the simulator's seed).
	Seed uint64
}

// PoolRaceWith runs one race as PoolRace does, with its options.
func PoolRaceWith(ctx context.Context, o PoolOpts) (PoolResult, error) {
	n, budget := o.N, o.Budget
	if budget <= 0 {
		budget = 10 * time.Minute
	}
	res := PoolResult{N: n, Calls: map[string]int{}, Errors: map[string]int{}, Spread: o.Spread}
	w, err := sim.Load("") // the hostile profile is on: EC2's token buckets throttle the race
	if err != nil {
		return res, err
	}
	res.Seed = w.HostileSeed()
	// Instance-profile keys last hours on EC2 (new ones five minutes before
	// expiry); the hostile profile scales that to a minute so tests see a
	// rotation. Over a race of minutes a thousand claimants would then all
	// refresh at once from one small host serving every IMDS behind the
	// simulator's lock, which times out: the host's limit, not EC2's.
	if err := w.DisableHostile(sim.HostileCredentials, "pool race: credentials last the race, as EC2's hours-long keys do; a thousand IMDS refreshes from one host only measure the host"); err != nil {
		return res, err
	}
	srv := sim.NewServer(w)
	cc := &callCounter{next: srv.EC2Handler(), calls: res.Calls, errors: res.Errors}
	api := httptest.NewServer(cc)
	defer func() { api.Close(); srv.Close() }()

	pool := map[string]string{"spotroot:pool": "bench"}
	for range n {
		if err := w.AddVolume(sim.Volume{ID: sim.NewVolumeID(), AZ: "us-east-1a", Type: "gp3", SizeGiB: 8,
			Tags: pool, State: sim.VolumeAvailable}); err != nil {
			return res, err
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	claimers := make([]*claim.Claimer, n)
	nudges := make([]chan struct{}, n)
	mdClients := make([]*imds.Client, n)
	var clients []*ec2.Client
	for i := range claimers {
		inst := sim.Instance{ID: sim.NewInstanceID(), AZ: "us-east-1a", InstanceType: "t3.micro",
			State: sim.InstanceRunning, Role: "spotroot"}
		if err := w.AddInstance(inst); err != nil {
			return res, err
		}
		// The kernel's side of an attach: PID 1 sees the volume's disk
		// appear (NVMe serial = volume id) and stops asking EC2.
		nudges[i] = make(chan struct{}, 1)
		srv.Bind(inst.ID, deviceNotice{nudges[i]})
		md := httptest.NewServer(srv.IMDSHandler(inst.ID))
		defer md.Close()
		mdClients[i] = imds.New(md.URL, nil)
		// CredentialsBudget: the hostile IMDS rotates keys every 30 s, and
		// one small host answering a thousand IMDS and the EC2 API behind
		// one lock is far slower than each instance's own IMDS.
		client := claim.NewClient(claim.ClientOptions{Region: "us-east-1", Endpoint: api.URL, IMDS: mdClients[i].SDK(),
			CredentialsBudget: 2 * time.Minute, ClockOffset: mdClients[i].ClockOffset})
		clients = append(clients, client)
		// CallTimeout: at 1000 the simulator's host, not EC2, is the bottleneck
		// (each claimant lists the whole pool: ~1 MB of XML).
		claimers[i] = &claim.Claimer{EC2: client, Instance: claim.Instance{ID: inst.ID, AZ: "us-east-1a"}, ClockOffset: mdClients[i].ClockOffset,
			Log: quiet, CallTimeout: 5 * time.Minute}
	}
	// Each real instance has its own IMDS, uncontended; here one process on
	// a small machine serves them all, so the instance-profile credentials
	// are fetched (and cached in each client, as PID 1 caches them) before
	// the race, many at a time: each waits out the hostile simulator's
	// seconds of credential 404s (sim.Hostile.CredentialDelay).
	sem := make(chan struct{}, 128)
	var werr error
	var wmu sync.Mutex
	var wwg sync.WaitGroup
	for i, cl := range clients {
		wwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wwg.Done() }()
			// As PID 1 does (internal/boot): the instance's block-device
			// mappings from IMDS, so the claim picks a device name
			// without DescribeInstances.
			m, err := mdClients[i].BlockDeviceMappings(ctx)
			if err == nil {
				claimers[i].Reserved, claimers[i].Mapped, claimers[i].MappedKnown = m.InstanceStores, m.Devices, true
				_, err = cl.Options().Credentials.Retrieve(ctx)
			}
			if err != nil {
				wmu.Lock()
				werr = err
				wmu.Unlock()
			}
		}()
	}
	wwg.Wait()
	if werr != nil {
		return res, fmt.Errorf("instance credentials: %w", werr)
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	got := make([]string, n)
	errs := make([]error, n)
	res.PerClaim = make([]float64, n)
	res.Starts = startOffsets(n, o.Spread, cmp.Or(o.Seed, res.Seed))
	res.Floor = BucketFloor(res.Starts)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !sleepCtx(ctx, res.Starts[i]) {
				errs[i] = ctx.Err()
				return
			}
			t := time.Now()
			cl, err := c.Claim(ctx, config.Volume{Pool: pool, Mount: "/"})
			if err == nil {
				err = c.WaitAttachedNudged(ctx, cl.VolumeID, nudges[i])
			}
			res.PerClaim[i] = time.Since(t).Seconds()
			got[i], errs[i] = cl.VolumeID, err
		}()
	}
	wg.Wait()
	res.Wall = time.Since(start)
	owners := map[string]int{}
	var firstErr error
	for i, id := range got {
		if errs[i] != nil {
			res.Failed++
			if firstErr == nil {
				firstErr = errs[i]
			}
			continue
		}
		res.Claimed++
		owners[id]++
	}
	w.View(func(sw *sim.World) {
		held := map[string]int{}
		for _, v := range sw.Volumes {
			if len(v.Attachments) > 1 {
				res.Dups++
			}
			for _, a := range v.Attachments {
				held[a.InstanceID]++
			}
		}
		for _, k := range held {
			if k > 1 {
				res.Dups++
			}
		}
	})
	st := w.Stats()
	res.ThrottledBy = st.Throttled
	for _, k := range st.Throttled {
		res.Throttled += k
	}
	for _, k := range st.Lost {
		res.Lost += k
	}
	res.AttachAccepted = st.Calls["AttachVolume"] - st.Throttled["AttachVolume"]
	for _, k := range owners {
		if k > 1 {
			res.Dups++
		}
	}
	if res.Failed > 0 || res.Dups > 0 {
		return res, fmt.Errorf("pool race n=%d (hostile seed %d, SPOTROOT_SEED replays it): %d claimed, %d failed, %d doubly attached; first error: %v",
			n, res.Seed, res.Claimed, res.Failed, res.Dups, firstErr)
	}
	return res, nil
}

// CallsSummary renders the calls by action, most frequent first.
func (p PoolResult) CallsSummary() string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range p.Calls {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	var parts []string
	for _, x := range l {
		s := fmt.Sprintf("%s %d", x.k, x.v)
		if e := p.Errors[x.k]; e > 0 {
			s += fmt.Sprintf(" (%d errors, %d of them throttled)", e, p.ThrottledBy[x.k])
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
