package sim

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Server serves a World: the EC2 API, one IMDS per instance, and the
// asynchronous attach/detach work that drives bound Hotpluggers.
type Server struct {
	World *World
	// Logger receives server logs; nil discards them.
	Logger *slog.Logger
	// SkipSignatureCheck accepts any SigV4 signature from a known key.
	SkipSignatureCheck bool

	ctx    context.Context // cancelled by Close, ends async work
	cancel context.CancelFunc
	wg     sync.WaitGroup

	auditMem auditLog // the audit log of a world without a file; goes with the server

	mu      sync.Mutex // guards the fields below; never held while taking World.mu
	hotplug map[string]Hotplugger
	tokens  map[string]map[string]time.Time // instance → IMDS token → expiry
	clock   func() time.Time                // for IMDS tokens and credentials; tests move it
}

// NewServer returns a server for w. Set Logger before serving.
func NewServer(w *World) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		World:   w,
		clock:   time.Now,
		ctx:     ctx,
		cancel:  cancel,
		hotplug: map[string]Hotplugger{},
		tokens:  map[string]map[string]time.Time{},
	}
}

func (s *Server) now() time.Time {
	s.mu.Lock()
	f := s.clock
	s.mu.Unlock()
	return f()
}

// setClock replaces the clock (tests).
func (s *Server) setClock(f func() time.Time) {
	s.mu.Lock()
	s.clock = f
	s.mu.Unlock()
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Bind routes attach/detach of instanceID's volumes to hp (its running VM).
// Without a binding, attachments complete without any hot-plug.
func (s *Server) Bind(instanceID string, hp Hotplugger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hotplug[instanceID] = hp
}

// Unbind forgets the VM of instanceID (it stopped), and its IMDS tokens.
func (s *Server) Unbind(instanceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.hotplug, instanceID)
	delete(s.tokens, instanceID)
}

func (s *Server) hotplugger(instanceID string) Hotplugger {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hotplug[instanceID]
}

// Wait blocks until no asynchronous attach/detach/create work is running.
func (s *Server) Wait() { s.wg.Wait() }

// Close cancels asynchronous work (hot-plug calls see a cancelled context)
// and waits for it to end. Stop the HTTP servers first: calls arriving
// during Close race with it.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// async runs fn in the background after delay, unless Close comes first.
func (s *Server) async(delay time.Duration, fn func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !sleepCtx(s.ctx, delay) {
			return
		}
		fn(s.ctx)
	}()
}

// sleepCtx sleeps d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// saveLocked saves and logs a failure: background paths have no caller to
// return it to.
func (s *Server) saveLocked() {
	if err := s.World.saveLocked(); err != nil {
		s.log().Error("save world", "err", err)
	}
}
