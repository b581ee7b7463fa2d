// Package watch is spotroot's interruption watcher: a small daemon for the
// persistent root that polls IMDS (IMDSv2 only) for Spot interruption
// notices, rebalance recommendations and scheduled maintenance events, runs
// the operator's hooks once per notice, and for a Spot terminate or stop
// starts a clean power-off so the filesystem is clean and the volume is
// released before EC2 takes the instance away.
package watch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// Notice is one thing IMDS told us.
type Notice struct {
	Kind   string    // "spot", "rebalance", "maintenance" or "autoscaling"
	Action string    // terminate|stop|hibernate, rebalance, the event code (instance-stop, system-reboot, …) or the target lifecycle state (Terminated, Warmed:Stopped, …)
	Time   time.Time // when the action happens (spot), was noticed (rebalance) or may start (maintenance)
	ID     string    // deduplication key
	Raw    string    // the document as IMDS served it
	// InstanceID is this instance's id, for the hooks (may be "").
	InstanceID string
}

func (n Notice) String() string {
	return fmt.Sprintf("%s notice: action=%s time=%s", n.Kind, n.Action, n.Time.UTC().Format(time.RFC3339))
}

// PowersOff reports whether the notice ends with a shutdown under opts.
func (n Notice) PowersOff(o *Options) bool {
	switch n.Kind {
	case "spot":
		return n.Action == "terminate" || n.Action == "stop"
	case "rebalance":
		return o.RebalancePowerOff
	case "autoscaling":
		// Auto Scaling is terminating the instance (scale-in, rebalancing,
		// a replaced unhealthy instance): what the node termination
		// handler drains for (pkg/monitor/asglifecycle).
		return n.Action == "Terminated"
	}
	return false
}

// Options configure the watcher. The zero value watches the real IMDS.
type Options struct {
	Endpoint   string        // IMDS base URL; "" = http://169.254.169.254
	HTTPClient *http.Client  // nil = a client with a 2s timeout
	Interval   time.Duration // poll period; 0 = 2s
	TokenTTL   time.Duration // IMDSv2 session token lifetime; 0 = 6h
	HooksDir   string        // "" = /etc/spotroot/hooks.d
	// HookTimeout bounds each hook; 0 = 60s. For a Spot terminate/stop the
	// hooks together also stop ShutdownMargin before the action time.
	HookTimeout    time.Duration
	ShutdownMargin time.Duration // 0 = 15s
	// RebalancePowerOff powers off on a rebalance recommendation too
	// (default: hooks only).
	RebalancePowerOff bool
	// Shutdown powers the machine off; nil = PowerOff (systemctl poweroff
	// when systemd is PID 1, else sync, read-only remounts and reboot(2)).
	Shutdown func(ctx context.Context) error
	// Log receives one line per event; nil = stderr.
	Log *log.Logger
	// Now is the clock (tests); nil = time.Now.
	Now func() time.Time
	// Ready is called once the watcher runs (sd_notify READY=1).
	Ready func()
	// GiveUpAfter ends Run with ErrNotEC2 when IMDS has not answered for
	// this long and OnEC2 says this is not EC2; 0 = never give up.
	GiveUpAfter time.Duration
	// OnEC2 reports whether the machine is an EC2 instance; nil = OnEC2.
	OnEC2 func() bool
}

func (o *Options) fill() {
	if o.Endpoint == "" {
		o.Endpoint = "http://169.254.169.254"
	}
	o.Endpoint = strings.TrimRight(o.Endpoint, "/")
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 2 * time.Second}
	}
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = 6 * time.Hour
	}
	if o.HooksDir == "" {
		o.HooksDir = DefaultHooksDir
	}
	// Hooks run with / as their working directory: a relative directory
	// given on the command line means the caller's.
	if abs, err := filepath.Abs(o.HooksDir); err == nil {
		o.HooksDir = abs
	}
	if o.HookTimeout <= 0 {
		o.HookTimeout = 60 * time.Second
	}
	if o.ShutdownMargin <= 0 {
		o.ShutdownMargin = 15 * time.Second
	}
	if o.Shutdown == nil {
		o.Shutdown = PowerOff
	}
	if o.Log == nil {
		o.Log = log.New(io.Writer(stderr), "spotroot watch: ", 0)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnEC2 == nil {
		o.OnEC2 = func() bool { return OnEC2("/") }
	}
}

// DefaultHooksDir holds the operator's hooks.
const DefaultHooksDir = "/etc/spotroot/hooks.d"

// Watcher polls IMDS and reacts to notices.
type Watcher struct {
	o    Options
	imds *imdsClient
	seen map[string]bool
	// lastErr deduplicates repeated poll errors in the log.
	lastErr string
	// pollErr is the last poll's error (nil: IMDS answered).
	pollErr error
	// answered is set once IMDS has answered a poll.
	answered bool
	down     bool // shutdown started
	// instanceID is read once, for the hooks' SPOTROOT_INSTANCE_ID.
	instanceID string
}

// ErrNotEC2 means IMDS never answered and the machine does not look like
// an EC2 instance: the watcher has nothing to watch here.
var ErrNotEC2 = errors.New("IMDS does not answer and this machine is not an EC2 instance (no Amazon EC2 in its DMI data)")

// Err is the error of the last poll (nil when IMDS answered).
func (w *Watcher) Err() error { return w.pollErr }

// New returns a watcher.
func New(o Options) *Watcher {
	o.fill()
	return &Watcher{
		o:    o,
		imds: &imdsClient{endpoint: o.Endpoint, http: o.HTTPClient, ttl: o.TokenTTL, now: o.Now},
		seen: map[string]bool{},
	}
}

// Run polls until ctx ends or a shutdown has been started (then it returns
// nil and leaves the rest to the init system).
func (w *Watcher) Run(ctx context.Context) error {
	w.o.Log.Printf("watching %s every %v (hooks in %s)", w.o.Endpoint, w.o.Interval, w.o.HooksDir)
	if w.o.Ready != nil {
		w.o.Ready()
	}
	t := time.NewTicker(w.o.Interval)
	defer t.Stop()
	start := w.o.Now()
	for {
		if w.Poll(ctx) {
			return nil
		}
		// Off EC2 (a laptop, a CI runner, another cloud) IMDS never
		// answers: give up instead of retrying forever. On EC2, IMDS being
		// away is transient and the watcher keeps trying.
		if !w.answered && w.o.GiveUpAfter > 0 && w.o.Now().Sub(start) >= w.o.GiveUpAfter && !w.o.OnEC2() {
			return fmt.Errorf("%w: gave up after %v (%v)", ErrNotEC2, w.o.GiveUpAfter, w.pollErr)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll checks IMDS once and handles new notices; it returns true once a
// shutdown has been started.
func (w *Watcher) Poll(ctx context.Context) bool {
	notices, err := w.Check(ctx)
	w.pollErr = err
	if err == nil {
		w.answered = true
		if w.instanceID == "" {
			if b, err := w.imds.get(ctx, "meta-data/instance-id"); err == nil {
				w.instanceID = strings.TrimSpace(string(b))
			}
		}
	}
	if err != nil {
		if msg := err.Error(); msg != w.lastErr {
			w.o.Log.Printf("poll: %v (retrying every %v)", err, w.o.Interval)
			w.lastErr = msg
		}
	} else if w.lastErr != "" {
		w.o.Log.Printf("poll: IMDS answers again")
		w.lastErr = ""
	}
	for _, n := range notices {
		if w.seen[n.ID] {
			continue
		}
		w.seen[n.ID] = true
		w.Handle(ctx, n)
		if w.down {
			return true
		}
	}
	return w.down
}

// Check reads the three notice sources. Notices found are returned even
// when another source failed.
func (w *Watcher) Check(ctx context.Context) ([]Notice, error) {
	one := func(parse func([]byte) (Notice, error)) func([]byte) ([]Notice, error) {
		return func(b []byte) ([]Notice, error) {
			n, err := parse(b)
			if err != nil {
				return nil, err
			}
			return []Notice{n}, nil
		}
	}
	sources := []struct {
		path  string
		parse func([]byte) ([]Notice, error)
	}{
		{"meta-data/spot/instance-action", one(ParseSpot)},
		{"meta-data/events/recommendations/rebalance", one(ParseRebalance)},
		{"meta-data/events/maintenance/scheduled", ParseScheduled},
		{"meta-data/autoscaling/target-lifecycle-state", ParseTargetLifecycleState},
	}
	var out []Notice
	var errs []error
	for _, src := range sources {
		b, err := w.imds.get(ctx, src.path)
		if errors.Is(err, errNotFound) {
			continue // no notice of this kind
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ns, err := src.parse(b)
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, ns...)
	}
	return out, errors.Join(errs...)
}

// Handle logs a notice, runs the hooks and, if the notice calls for it,
// starts the shutdown.
func (w *Watcher) Handle(ctx context.Context, n Notice) {
	off := n.PowersOff(&w.o)
	then := "hooks only"
	if off {
		then = "hooks, then power off"
	}
	w.o.Log.Printf("%v (%s)", n, then)
	budget := w.o.HookTimeout
	var deadline time.Time
	if n.Kind == "spot" && off {
		deadline = n.Time.Add(-w.o.ShutdownMargin)
		// A late or past notice still gets a few seconds of hooks.
		if left := deadline.Sub(w.o.Now()); left < 5*time.Second {
			deadline = w.o.Now().Add(5 * time.Second)
		}
	}
	n.InstanceID = w.instanceID
	RunHooks(ctx, w.o.HooksDir, n, budget, deadline, w.o.Log)
	if !off {
		return
	}
	w.o.Log.Printf("powering off for the %s %s at %s", n.Kind, n.Action, n.Time.UTC().Format(time.RFC3339))
	if err := w.o.Shutdown(ctx); err != nil {
		w.o.Log.Printf("power off: %v", err)
		return
	}
	w.down = true
}

// ParseSpot parses spot/instance-action: {"action": "terminate", "time": "2017-09-18T08:22:00Z"}.
func ParseSpot(b []byte) (Notice, error) {
	var d struct {
		Action string `json:"action"`
		Time   string `json:"time"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return Notice{}, fmt.Errorf("parse spot/instance-action %q: %w", b, err)
	}
	t, err := time.Parse(time.RFC3339, d.Time)
	if err != nil || d.Action == "" {
		return Notice{}, fmt.Errorf("parse spot/instance-action %q: want an action and an RFC 3339 time", b)
	}
	return Notice{Kind: "spot", Action: d.Action, Time: t, ID: "spot/" + d.Action + "/" + d.Time, Raw: string(b)}, nil
}

// ParseRebalance parses events/recommendations/rebalance: {"noticeTime": "2020-10-27T08:22:00Z"}.
func ParseRebalance(b []byte) (Notice, error) {
	var d struct {
		NoticeTime string `json:"noticeTime"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return Notice{}, fmt.Errorf("parse events/recommendations/rebalance %q: %w", b, err)
	}
	t, err := time.Parse(time.RFC3339, d.NoticeTime)
	if err != nil {
		return Notice{}, fmt.Errorf("parse events/recommendations/rebalance %q: want an RFC 3339 noticeTime", b)
	}
	return Notice{Kind: "rebalance", Action: "rebalance", Time: t, ID: "rebalance/" + d.NoticeTime, Raw: string(b)}, nil
}

// maintenanceTime is the format of NotBefore/NotAfter in scheduled events.
const maintenanceTime = "2 Jan 2006 15:04:05 GMT"

// ParseScheduled parses events/maintenance/scheduled, a JSON array of
// {"Code", "Description", "EventId", "NotAfter", "NotBefore",
// "NotBeforeDeadline", "State"}. Only active events are returned.
func ParseScheduled(b []byte) ([]Notice, error) {
	var ds []struct {
		Code, Description, EventId, NotBefore, State string
	}
	if err := json.Unmarshal(b, &ds); err != nil {
		return nil, fmt.Errorf("parse events/maintenance/scheduled %q: %w", b, err)
	}
	var out []Notice
	for _, d := range ds {
		if d.State != "" && d.State != "active" {
			continue
		}
		t, err := time.Parse(maintenanceTime, d.NotBefore)
		if err != nil {
			t, _ = time.Parse(time.RFC3339, d.NotBefore)
		}
		raw, _ := json.Marshal(d)
		out = append(out, Notice{Kind: "maintenance", Action: d.Code, Time: t,
			ID: "maintenance/" + d.EventId + "/" + d.Code + "/" + d.NotBefore, Raw: string(raw)})
	}
	return out, nil
}

// ParseTargetLifecycleState parses autoscaling/target-lifecycle-state, a
// plain word: InService, Terminated, Warmed:Stopped, … Only a change away
// from InService is a notice; its id is the state, so each is handled once
// per transition.
func ParseTargetLifecycleState(b []byte) ([]Notice, error) {
	state := strings.TrimSpace(string(b))
	if state == "" || state == "InService" || state == "Pending" || strings.HasPrefix(state, "Pending:") {
		return nil, nil
	}
	if strings.ContainsAny(state, " {\n") {
		return nil, fmt.Errorf("parse autoscaling/target-lifecycle-state %q: want one word like Terminated", b)
	}
	return []Notice{{Kind: "autoscaling", Action: state, Time: time.Now().UTC().Truncate(time.Second),
		ID: "autoscaling/" + state, Raw: state}}, nil
}
