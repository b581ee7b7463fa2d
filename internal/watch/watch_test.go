package watch

import (
	"bytes"
	"context"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
)

type simEnv struct {
	s    *sim.Server
	id   string
	url  string
	hits *counter
}

type counter struct {
	mu     sync.Mutex
	tokens int
}

func newSim(t *testing.T, mod func(*sim.Instance)) *simEnv {
	t.Helper()
	w, err := sim.Load("")
	if err != nil {
		t.Fatal(err)
	}
	inst := sim.Instance{ID: sim.NewInstanceID(), AZ: "us-east-1a", BlockDevices: map[string]string{"/dev/xvda": sim.NewVolumeID()}}
	if mod != nil {
		mod(&inst)
	}
	if err := w.AddInstance(inst); err != nil {
		t.Fatal(err)
	}
	s := sim.NewServer(w)
	c := &counter{}
	h := s.IMDSHandler(inst.ID)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/latest/api/token" {
			c.mu.Lock()
			c.tokens++
			c.mu.Unlock()
		}
		h.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(s.Close)
	return &simEnv{s: s, id: inst.ID, url: srv.URL, hits: c}
}

// recordingHook writes a hook that appends its environment to out.
func recordingHook(t *testing.T, dir, name, out string) {
	t.Helper()
	script := "#!/bin/sh\necho \"$SPOTROOT_KIND $SPOTROOT_ACTION $SPOTROOT_TIME deadline=${SPOTROOT_DEADLINE:+set} args=$*\" >> " + out + "\necho hook says hi\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

type harness struct {
	w        *Watcher
	log      *bytes.Buffer
	shutdown int
	out      string
}

func newWatcher(t *testing.T, e *simEnv, mod func(*Options)) *harness {
	t.Helper()
	h := &harness{log: &bytes.Buffer{}}
	dir := t.TempDir()
	h.out = filepath.Join(t.TempDir(), "hooks.out")
	recordingHook(t, dir, "10-record", h.out)
	// Not executable: must be skipped.
	os.WriteFile(filepath.Join(dir, "20-readme"), []byte("not a hook"), 0o644)
	o := Options{Endpoint: e.url, HooksDir: dir, Log: log.New(h.log, "spotroot watch: ", 0),
		Shutdown: func(context.Context) error { h.shutdown++; return nil }}
	if mod != nil {
		mod(&o)
	}
	h.w = New(o)
	return h
}

func (h *harness) hookLines(t *testing.T) []string {
	b, err := os.ReadFile(h.out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestSpotTerminate(t *testing.T) {
	e := newSim(t, nil)
	h := newWatcher(t, e, nil)
	ctx := context.Background()
	if h.w.Poll(ctx) || h.shutdown != 0 || h.hookLines(t) != nil {
		t.Fatalf("no notice: shutdown %d hooks %q log %s", h.shutdown, h.hookLines(t), h.log)
	}
	at := time.Now().Add(2 * time.Minute).UTC().Truncate(time.Second)
	e.s.PostSpotAction(e.id, "terminate", at)
	if !h.w.Poll(ctx) {
		t.Fatalf("Poll did not report the shutdown; log:\n%s", h.log)
	}
	if h.shutdown != 1 {
		t.Fatalf("shutdown called %d times, want 1", h.shutdown)
	}
	lines := h.hookLines(t)
	want := "spot terminate " + at.Format(time.RFC3339) + " deadline=set args=spot terminate"
	if len(lines) != 1 || lines[0] != want {
		t.Fatalf("hook saw %q, want [%q]", lines, want)
	}
	for _, s := range []string{"spot notice: action=terminate", "hook 10-record: hook says hi", "hook 10-record: ok", "powering off for the spot terminate"} {
		if !strings.Contains(h.log.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, h.log)
		}
	}
	if strings.Contains(h.log.String(), "20-readme") {
		t.Errorf("non-executable file ran as a hook:\n%s", h.log)
	}
}

func TestRebalanceHooksOnlyAndDedup(t *testing.T) {
	e := newSim(t, nil)
	h := newWatcher(t, e, nil)
	ctx := context.Background()
	e.s.PostRebalance(e.id, time.Now())
	for range 3 {
		if h.w.Poll(ctx) {
			t.Fatal("rebalance started a shutdown")
		}
	}
	if n := len(h.hookLines(t)); n != 1 || h.shutdown != 0 {
		t.Fatalf("rebalance: hooks ran %d times, shutdown %d; want 1 and 0\n%s", n, h.shutdown, h.log)
	}
	if c := strings.Count(h.log.String(), "rebalance notice"); c != 1 {
		t.Fatalf("rebalance logged %d times, want once:\n%s", c, h.log)
	}
	// A stop notice after the rebalance: hooks again, then power off.
	e.s.PostSpotAction(e.id, "stop", time.Now().Add(2*time.Minute))
	if !h.w.Poll(ctx) || h.shutdown != 1 {
		t.Fatalf("stop: shutdown %d\n%s", h.shutdown, h.log)
	}
	if l := h.hookLines(t); len(l) != 2 || !strings.HasPrefix(l[1], "spot stop ") {
		t.Fatalf("hook lines %q", l)
	}
}

func TestHibernateDoesNotPowerOff(t *testing.T) {
	e := newSim(t, nil)
	h := newWatcher(t, e, nil)
	e.s.PostSpotAction(e.id, "hibernate", time.Now().Add(2*time.Minute))
	if h.w.Poll(context.Background()) || h.shutdown != 0 || len(h.hookLines(t)) != 1 {
		t.Fatalf("hibernate: shutdown %d hooks %q", h.shutdown, h.hookLines(t))
	}
}

func TestRebalancePowerOffConfigured(t *testing.T) {
	e := newSim(t, nil)
	h := newWatcher(t, e, func(o *Options) { o.RebalancePowerOff = true })
	e.s.PostRebalance(e.id, time.Now())
	if !h.w.Poll(context.Background()) || h.shutdown != 1 {
		t.Fatalf("rebalance with RebalancePowerOff: shutdown %d\n%s", h.shutdown, h.log)
	}
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	e := newSim(t, nil)
	now := time.Now()
	h := newWatcher(t, e, func(o *Options) {
		o.TokenTTL = 100 * time.Second
		o.Now = func() time.Time { return now }
	})
	ctx := context.Background()
	h.w.Poll(ctx)
	h.w.Poll(ctx)
	if n := h.w.imds.tokenCount(); n != 1 {
		t.Fatalf("%d tokens for two polls within the TTL, want 1", n)
	}
	now = now.Add(79 * time.Second)
	h.w.Poll(ctx)
	if n := h.w.imds.tokenCount(); n != 1 {
		t.Fatalf("token refreshed at 79%% of its TTL: %d tokens", n)
	}
	now = now.Add(2 * time.Second) // 81%: inside the last fifth
	h.w.Poll(ctx)
	if n := h.w.imds.tokenCount(); n != 2 {
		t.Fatalf("token not refreshed in the last fifth of its TTL: %d tokens", n)
	}
	e.hits.mu.Lock()
	defer e.hits.mu.Unlock()
	if e.hits.tokens != 2 {
		t.Fatalf("IMDS saw %d token requests, want 2", e.hits.tokens)
	}
}

func TestIMDSv1OnlyIsAnError(t *testing.T) {
	e := newSim(t, func(i *sim.Instance) { i.IMDSv1Only = true })
	h := newWatcher(t, e, nil)
	_, err := h.w.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "IMDSv2 is required") {
		t.Fatalf("err = %v, want the IMDSv2 explanation", err)
	}
	// Repeated failures are logged once.
	h.w.Poll(context.Background())
	h.w.Poll(context.Background())
	if c := strings.Count(h.log.String(), "poll:"); c != 1 {
		t.Fatalf("error logged %d times, want once:\n%s", c, h.log)
	}
}

func TestHookBudget(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.WriteFile(filepath.Join(dir, "10-slow"), []byte("#!/bin/sh\necho started >> "+out+"\nexec sleep 600\n"), 0o755)
	recordingHook(t, dir, "20-next", out)
	var lb bytes.Buffer
	n := Notice{Kind: "spot", Action: "terminate", Time: time.Now()}
	RunHooks(context.Background(), dir, n, 300*time.Millisecond, time.Time{}, log.New(&lb, "", 0))
	if !strings.Contains(lb.String(), "hook 10-slow: killed after") {
		t.Fatalf("slow hook not killed:\n%s", lb.String())
	}
	b, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "started" || !strings.HasPrefix(lines[1], "spot terminate") {
		t.Fatalf("hooks did not run in order, the second after the killed first: %q", lines)
	}
}

func TestParse(t *testing.T) {
	n, err := ParseSpot([]byte(`{"action": "stop", "time": "2017-09-18T08:22:00Z"}`))
	if err != nil || n.Action != "stop" || n.Time.Format(time.RFC3339) != "2017-09-18T08:22:00Z" {
		t.Fatalf("spot: %+v %v", n, err)
	}
	if _, err := ParseSpot([]byte(`{"action": "stop"}`)); err == nil {
		t.Fatal("spot notice without time accepted")
	}
	ns, err := ParseScheduled([]byte(`[{"NotBefore" : "21 Jan 2019 09:00:43 GMT", "Code" : "system-reboot", "Description" : "scheduled reboot", "EventId" : "instance-event-0d59937288b749b32", "NotAfter" : "21 Jan 2019 09:17:23 GMT", "State" : "active"},
	{"NotBefore" : "21 Jan 2019 09:00:43 GMT", "Code" : "instance-stop", "EventId" : "instance-event-1", "State" : "canceled"}]`))
	if err != nil || len(ns) != 1 || ns[0].Action != "system-reboot" || ns[0].Time.Day() != 21 {
		t.Fatalf("scheduled: %+v %v", ns, err)
	}
	if ns, err := ParseScheduled([]byte("[]")); err != nil || len(ns) != 0 {
		t.Fatalf("empty schedule: %v %v", ns, err)
	}
}
