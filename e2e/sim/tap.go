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
