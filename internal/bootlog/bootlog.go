// Package bootlog writes spotroot's boot timeline where an operator can read it:
// the console (get-console-output) and the kernel log (/dev/kmsg, so dmesg and
// the real init's journal keep it after the handoff).
package bootlog

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Log is the boot timeline. Lines look like `spotroot: <phase> ok in <ms>ms`.
// It is safe for concurrent use and never fails: a console that cannot be
// written must not stop the boot.
type Log struct {
	mu      sync.Mutex
	outs    []io.Writer
	kmsg    string    // path of /dev/kmsg, "" until /dev is mounted
	start   time.Time // monotonic start of spotroot
	lines   []string  // everything said, for the record written to the new root
	current string    // the phase running now, for a panic's FAILED line
	Verbose bool
	// Fault, if set (fault-injection test builds only), is asked at the
	// start ("start") and the successful end ("end") of every phase; an
	// error it returns is the phase's error. Set before the first Phase.
	Fault func(phase, point string) error
}

// New returns a Log writing to w (typically stderr, already the console for PID 1).
func New(w ...io.Writer) *Log {
	return &Log{outs: w, start: time.Now()}
}

// AttachKmsg also sends lines to the kernel log. Called once /dev is mounted.
func (l *Log) AttachKmsg(path string) {
	if _, err := os.Stat(path); err != nil {
		return
	}
	l.mu.Lock()
	l.kmsg = path
	l.mu.Unlock()
}

// writeKmsg writes one record. The kernel rate-limits each open /dev/kmsg
// file (10 records per 5 s unless printk.devkmsg=on), which would drop most
// of the timeline: a fresh open per record has a fresh budget.
func writeKmsg(path, msg string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	// <5> = notice: kept in the ring buffer, not echoed on a quiet console
	// (the console already has the line from outs).
	_, _ = io.WriteString(f, "<5>"+msg+"\n")
	f.Close()
}

// AddOutput adds a writer (e.g. /dev/console opened after /dev was mounted).
func (l *Log) AddOutput(w io.Writer) {
	l.mu.Lock()
	l.outs = append(l.outs, w)
	l.mu.Unlock()
}

// Since is the time elapsed since spotroot started (monotonic).
func (l *Log) Since() time.Duration { return time.Since(l.start) }

// Printf writes one `spotroot: ...` line.
func (l *Log) Printf(format string, args ...any) {
	msg := "spotroot: " + strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, msg)
	for _, w := range l.outs {
		_, _ = io.WriteString(w, msg+"\n")
	}
	if l.kmsg != "" {
		writeKmsg(l.kmsg, msg)
	}
}

// Phase runs fn and records `<name> ok in Nms` or returns its error unchanged.
func (l *Log) Phase(name string, fn func() error) error {
	t := time.Now()
	l.setCurrent(name)
	var err error
	if l.Fault != nil {
		err = l.Fault(name, "start")
	}
	if err == nil {
		err = fn()
	}
	if err == nil && l.Fault != nil {
		err = l.Fault(name, "end")
	}
	l.setCurrent("")
	if err != nil {
		return &PhaseError{Phase: name, Err: err}
	}
	l.Printf("%s ok in %s", name, ms(time.Since(t)))
	return nil
}

func (l *Log) setCurrent(name string) {
	l.mu.Lock()
	l.current = name
	l.mu.Unlock()
}

// Current is the phase running now ("" between phases): a panic, wherever
// it happens, is reported against it.
func (l *Log) Current() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.current
}

// Lines returns everything logged so far.
func (l *Log) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Slog returns a structured logger whose records become `spotroot: msg k=v`
// lines. A *slog.LevelVar lets the configuration change the level later.
func (l *Log) Slog(level slog.Leveler) *slog.Logger {
	return slog.New(&handler{l: l, level: level})
}

// PhaseError ties an error to the boot phase that produced it.
type PhaseError struct {
	Phase string
	Err   error
}

func (e *PhaseError) Error() string { return e.Phase + ": " + e.Err.Error() }
func (e *PhaseError) Unwrap() error { return e.Err }

func ms(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// MS formats a duration the way the timeline does.
func MS(d time.Duration) string { return ms(d) }
