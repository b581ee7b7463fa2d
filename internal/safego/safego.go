// Package safego starts goroutines that cannot take PID 1 down with them.
//
// A panic in any goroutine other than the one that recovers it ends the Go
// program; for PID 1 that is a kernel panic ("Attempted to kill init") and
// an instance that sits hung. Every goroutine spotroot starts goes through
// Go, so its panic becomes a call to the handler the boot installed, which
// logs the one FAILED line and boots the image's own init.
package safego

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
)

// Handler receives a recovered panic: the value and the goroutine's stack.
// It may not return (PID 1's handler execs the image's init).
type Handler func(name string, v any, stack []byte)

var handler atomic.Pointer[Handler]

// SetHandler installs h for every later panic; nil restores the default,
// which re-panics (the ordinary Go behaviour, right for operator commands).
func SetHandler(h Handler) {
	if h == nil {
		handler.Store(nil)
		return
	}
	handler.Store(&h)
}

// Go runs fn in a new goroutine named name (for the message) under Recover.
func Go(name string, fn func()) {
	go func() {
		defer Recover(name)
		fn()
	}()
}

// Recover, deferred directly, hands a panic of the current goroutine to the
// handler. Use it where a goroutine cannot be started through Go.
func Recover(name string) {
	r := recover()
	if r == nil {
		return
	}
	if h := handler.Load(); h != nil {
		(*h)(name, r, debug.Stack())
		return
	}
	panic(fmt.Sprintf("%s: %v", name, r))
}
