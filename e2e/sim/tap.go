package sim

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Tap wraps an EC2 handler for tests: it records every call and can power
// the caller off at a chosen mutating call, like a Spot instance losing
// power mid-boot. Before the crash point the call is not served; after it,
// the call is served (EC2 committed it) but the answer never arrives. From
// then on every request is dropped, and OnCrash runs once (a test cancels
// the boot's context there).
type Tap struct {
	Next http.Handler

	// CrashAt is the 1-based index of the mutating call (any action but
	// Describe*) to crash at; 0 never crashes. CrashAfter serves it first.
	CrashAt    int
	CrashAfter bool
	OnCrash    func()
	// LoseAt serves that mutating call but drops its answer (the
	// connection resets), without crashing: EC2 committed, the caller
	// cannot tell.
	LoseAt int
	// Before, if set, sees each call before it is served: a test changes
	// the world at that instant (what another actor did meanwhile).
	Before func(TapCall)

	// CrashAtStep, when > 0, crashes at a step instead of a call: a step
	// is a run of consecutive mutating calls StepOf names alike (the
	// SDK's retries of one call, the next device name after "already in
	// use", a retry after IncorrectState). Their number varies with the
	// hostile profile's dice and timing; the steps do not. Before: at the
	// step's first attempt. After (CrashAfter): right after the first
	// attempt EC2 did not refuse; a refused one (a 4xx, or throttled:
	// EC2 did nothing) is answered and the step goes on.
	CrashAtStep int
	StepOf      func(TapCall) string
	step        int
	stepName    string

	mu       sync.Mutex
	calls    []TapCall
	mutating int
	crashed  bool
}

// TapCall is one recorded request.
type TapCall struct {
	Action string
	Params url.Values
	// Served is false for calls dropped by the crash.
	Served bool
}

// Mutates reports whether an action changes state.
func Mutates(action string) bool {
	return action != "" && !strings.HasPrefix(action, "Describe")
}

func (t *Tap) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	params, _ := requestParams(r, body)
	action := params.Get("Action")
	if t.Before != nil {
		t.Before(TapCall{Action: action, Params: params})
	}

	t.mu.Lock()
	if t.crashed {
		t.calls = append(t.calls, TapCall{Action: action, Params: params})
		t.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	crashHere := false
	n := 0
	if Mutates(action) {
		t.mutating++
		n = t.mutating
		crashHere = t.CrashAt > 0 && t.mutating == t.CrashAt
		if t.CrashAtStep > 0 && t.StepOf != nil {
			name := t.StepOf(TapCall{Action: action, Params: params})
			first := t.step == 0 || name != t.stepName
			if first {
				t.step, t.stepName = t.step+1, name
			}
			if t.step == t.CrashAtStep && t.CrashAfter {
				t.calls = append(t.calls, TapCall{Action: action, Params: params, Served: true})
				t.mu.Unlock()
				t.serveThenCrash(rw, r)
				return
			}
			crashHere = t.step == t.CrashAtStep && first
		}
	}
	if crashHere {
		t.crashed = true
	}
	t.calls = append(t.calls, TapCall{Action: action, Params: params, Served: !crashHere || t.CrashAfter})
	t.mu.Unlock()

	if !crashHere {
		if Mutates(action) && t.LoseAt > 0 && n == t.LoseAt {
			t.Next.ServeHTTP(discard{}, r)
			panic(http.ErrAbortHandler)
		}
		t.Next.ServeHTTP(rw, r)
		return
	}
	if t.CrashAfter {
		t.Next.ServeHTTP(discard{}, r)
	}
	if t.OnCrash != nil {
		t.OnCrash()
	}
	panic(http.ErrAbortHandler)
}

// serveThenCrash serves a call of the crash step (CrashAfter): an answer
// refusing it goes back to the caller, anything else (EC2 acted, or may
// have: a 2xx, a 5xx, a lost answer) is the power cut.
func (t *Tap) serveThenCrash(rw http.ResponseWriter, r *http.Request) {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	aborted := func() (aborted bool) {
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					panic(v)
				}
				aborted = true
			}
		}()
		t.Next.ServeHTTP(rec, r)
		return false
	}()
	refused := !aborted && (rec.status >= 400 && rec.status < 500 || bytes.Contains(rec.body.Bytes(), []byte("<Code>RequestLimitExceeded</Code>")))
	if refused {
		for k, v := range rec.header {
			rw.Header()[k] = v
		}
		rw.WriteHeader(rec.status)
		rw.Write(rec.body.Bytes())
		return
	}
	t.mu.Lock()
	t.crashed = true
	t.mu.Unlock()
	if t.OnCrash != nil {
		t.OnCrash()
	}
	panic(http.ErrAbortHandler)
}

// recorder keeps an answer for serveThenCrash to judge.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

// Calls returns the calls so far.
func (t *Tap) Calls() []TapCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]TapCall(nil), t.calls...)
}

// Crashed reports whether the crash point was reached.
func (t *Tap) Crashed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.crashed
}

// discard is a ResponseWriter that drops the answer.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}
