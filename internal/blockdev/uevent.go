// Package blockdev finds the block device of an attached EBS volume the
// moment the kernel adds it, and the filesystem on it.
package blockdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/spotroot/spotroot/internal/safego"
)

// Uevent is one kernel object event.
type Uevent struct {
	Action, DevPath, Subsystem, DevName, DevType string
}

// Listener receives kernel uevents. Open it before looking at /sys/block, so
// a device added between the scan and the first read is not missed.
type Listener struct {
	f      *os.File
	events chan Uevent
	done   chan struct{}
}

// Listen opens a NETLINK_KOBJECT_UEVENT socket bound to the kernel's group.
func Listen() (*Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// A large buffer keeps a burst of events (a disk with many partitions)
	// from overflowing; an overflow is survivable anyway since we rescan.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent bind: %w", err)
	}
	l := &Listener{f: os.NewFile(uintptr(fd), "uevent"), events: make(chan Uevent, 64), done: make(chan struct{})}
	safego.Go("uevent listener", l.read)
	return l, nil
}

// NewTestListener returns a listener fed by the caller, for tests.
func NewTestListener() (*Listener, chan<- Uevent) {
	l := &Listener{events: make(chan Uevent, 64), done: make(chan struct{})}
	return l, l.events
}

// Events delivers uevents; a zero Uevent means "something was lost, rescan".
func (l *Listener) Events() <-chan Uevent { return l.events }

// Close stops the listener.
func (l *Listener) Close() error {
	select {
	case <-l.done:
		return nil
	default:
	}
	close(l.done)
	if l.f != nil {
		return l.f.Close()
	}
	return nil
}

func (l *Listener) read() {
	buf := make([]byte, 64<<10)
	for {
		n, err := l.f.Read(buf)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				l.send(Uevent{}) // overflow: ask for a rescan
				continue
			}
			return // closed
		}
		if ev, ok := parseUevent(buf[:n]); ok {
			l.send(ev)
		}
	}
}

func (l *Listener) send(ev Uevent) {
	select {
	case l.events <- ev:
	case <-l.done:
	default:
		// The consumer is behind: one pending wake-up is enough, it rescans.
	}
}

// parseUevent decodes "action@devpath\0KEY=VAL\0…". Messages from udevd
// ("libudev" header) are ignored: the kernel's are the ground truth here.
func parseUevent(b []byte) (Uevent, bool) {
	fields := bytes.Split(b, []byte{0})
	if len(fields) == 0 || !bytes.Contains(fields[0], []byte("@")) {
		return Uevent{}, false
	}
	var ev Uevent
	for _, f := range fields[1:] {
		k, v, ok := bytes.Cut(f, []byte("="))
		if !ok {
			continue
		}
		switch string(k) {
		case "ACTION":
			ev.Action = string(v)
		case "DEVPATH":
			ev.DevPath = string(v)
		case "SUBSYSTEM":
			ev.Subsystem = string(v)
		case "DEVNAME":
			ev.DevName = string(v)
		case "DEVTYPE":
			ev.DevType = string(v)
		}
	}
	return ev, ev.Action != ""
}

// WaitFor evaluates check now and again after every event until it reports
// done, fails, or ctx ends. check must be cheap: it runs per event.
func (l *Listener) WaitFor(ctx context.Context, check func() (bool, error)) error {
	for {
		ok, err := check()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.events:
		}
	}
}
