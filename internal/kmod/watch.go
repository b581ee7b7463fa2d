package kmod

import (
	"context"
	"time"

	"golang.org/x/sys/unix"
)

// watcher blocks until sysfs may have changed. Waiting is event-driven on
// the real sysfs (a NETLINK_KOBJECT_UEVENT socket: any event triggers a
// rescan) with a short poll as a safety net, since events can be dropped on
// overflow and a fake tree in tests produces none.
type watcher interface {
	wait(ctx context.Context, max time.Duration)
	close()
}

// pollInterval is the rescan period without events; eventSafetyNet the one
// with them (events wake the wait early, so it can be long).
const (
	pollInterval   = 20 * time.Millisecond
	eventSafetyNet = 100 * time.Millisecond
)

type pollWatcher struct{}

func (pollWatcher) wait(ctx context.Context, max time.Duration) {
	t := time.NewTimer(min(max, pollInterval))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (pollWatcher) close() {}

type ueventWatcher struct{ fd int }

// openUevents returns nil when the socket cannot be opened (no netlink in a
// sandbox); callers fall back to polling.
func openUevents() *ueventWatcher {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil
	}
	return &ueventWatcher{fd: fd}
}

// wait returns after the first uevent (draining any burst), after the
// safety-net interval, or when ctx ends — whichever comes first. Polling the fd in
// short slices keeps ctx responsive without a goroutine.
func (w *ueventWatcher) wait(ctx context.Context, max time.Duration) {
	if ctx.Err() != nil {
		return
	}
	ms := int(min(max, eventSafetyNet) / time.Millisecond)
	if ms < 1 {
		ms = 1
	}
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, ms); err != nil || n == 0 {
		return
	}
	var buf [8192]byte
	for {
		if _, _, err := unix.Recvfrom(w.fd, buf[:], unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

func (w *ueventWatcher) close() { unix.Close(w.fd) }
