package sim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Pseudo actions for World.Faults that hit the asynchronous half of
// attach/detach instead of an API call: Delay adds latency before the
// hot-plug call and a Code makes it fail (the attachment is then dropped,
// or a detaching volume goes back to attached).
const (
	FaultHotplugAttach = "Hotplug.Attach"
	FaultHotplugDetach = "Hotplug.Detach"
)

// Fault makes calls to one action stall and/or fail.
type Fault struct {
	Code    string        // EC2 error code; empty means only Delay
	Message string        `json:",omitempty"` // default: AWS's text for Code
	Status  int           `json:",omitempty"` // HTTP status; default from Code (400 for most)
	Times   int           // calls affected: -1 forever, 0 counts as 1
	Delay   time.Duration `json:",omitempty"` // before answering (or failing)
}

// takeFaultLocked consumes one use of the fault for action, if any.
func (w *World) takeFaultLocked(action string) (Fault, bool) {
	f, ok := w.Faults[action]
	if !ok {
		return Fault{}, false
	}
	w.firedLocked(action)
	switch {
	case f.Times < 0:
	case f.Times <= 1:
		delete(w.Faults, action)
	default:
		g := f
		g.Times--
		w.Faults[action] = g
	}
	return f, true
}

// apiError returns the error the fault injects, or nil for delay-only.
func (f Fault) apiError() *APIError {
	if f.Code == "" {
		return nil
	}
	e := newError(f.Code, f.Message)
	if f.Status != 0 {
		e.Status = f.Status
	}
	return e
}

// deniedLocked reports whether DenyActions covers action.
func (w *World) deniedLocked(action string) bool {
	for _, a := range w.DenyActions {
		if a == action || a == "ec2:"+action || a == "*" || a == "ec2:*" {
			w.firedLocked(FiredDeny + action)
			return true
		}
	}
	return false
}

// FiredDeny prefixes the FaultsFired key of a DenyActions refusal.
const FiredDeny = "deny:"

// firedLocked counts one injected failure: a Faults entry by its action, a
// DenyActions refusal as FiredDeny+action. Tests assert from it that the
// fault they set up did hit a call.
func (w *World) firedLocked(key string) {
	if w.FaultsFired == nil {
		w.FaultsFired = map[string]int{}
	}
	w.FaultsFired[key]++
}

// Fired returns how often the fault keyed key hit a call (see firedLocked).
func (w *World) Fired(key string) int {
	n := 0
	w.View(func(w *World) { n = w.FaultsFired[key] })
	return n
}

// unauthorized builds UnauthorizedOperation as IAM phrases it, with an
// "encoded" message that decodes to JSON naming the action and principal.
func unauthorized(action, principal string) *APIError {
	doc, _ := json.Marshal(map[string]any{
		"allowed":           false,
		"explicitDeny":      false,
		"matchedStatements": map[string]any{"items": []any{}},
		"failures":          map[string]any{"items": []any{}},
		"context": map[string]any{
			"principal": map[string]string{"arn": principal},
			"action":    "ec2:" + action,
		},
	})
	msg := fmt.Sprintf("You are not authorized to perform this operation. User: %s is not authorized to perform: ec2:%s because no identity-based policy allows the ec2:%s action. Encoded authorization failure message: %s",
		principal, action, action, strings.TrimRight(base64.URLEncoding.EncodeToString(doc), "="))
	return newError("UnauthorizedOperation", msg)
}
