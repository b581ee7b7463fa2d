package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// QMP is a small QEMU Machine Protocol client: JSON over a unix socket,
// commands matched to replies by id, events handed to a callback.
type QMP struct {
	conn    net.Conn
	onEvent func(Event)

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  int
	pending map[string]chan qmpReply
	waiters map[string]chan struct{} // DEVICE_DELETED waiters by device id
	err     error                    // set when the connection is gone
	done    chan struct{}            // closed when the reader stops
}

// Event is an asynchronous QMP event.
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// Error is an error reply from QEMU.
type Error struct {
	Command string
	Class   string
	Desc    string
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

type qmpMessage struct {
	qmpReply
	QMP       json.RawMessage `json:"QMP"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// DialQMP connects to a QMP unix socket, retrying until ctx ends (QEMU may
// not have created it yet), reads the greeting and negotiates capabilities.
// onEvent (may be nil) is called from the reader goroutine for every event.
func DialQMP(ctx context.Context, path string, onEvent func(Event)) (*QMP, error) {
	var conn net.Conn
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to QMP socket %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	q := &QMP{
		conn:    conn,
		onEvent: onEvent,
		pending: map[string]chan qmpReply{},
		waiters: map[string]chan struct{}{},
		done:    make(chan struct{}),
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	var greeting qmpMessage
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	if err := dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("QMP greeting on %s: %v", path, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go q.read(dec)
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

func (q *QMP) read(dec *json.Decoder) {
	var err error
	for {
		var m qmpMessage
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data,
				Time: time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)}
			if ev.Name == "DEVICE_DELETED" {
				var d struct {
					Device string `json:"device"`
				}
				_ = json.Unmarshal(m.Data, &d)
				q.mu.Lock()
				if ch, ok := q.waiters[d.Device]; ok && d.Device != "" {
					delete(q.waiters, d.Device)
					close(ch)
				}
				q.mu.Unlock()
			}
			if q.onEvent != nil {
				q.onEvent(ev)
			}
		case m.ID != nil:
			var id string
			_ = json.Unmarshal(m.ID, &id)
			q.mu.Lock()
			ch := q.pending[id]
			delete(q.pending, id)
			q.mu.Unlock()
			if ch != nil {
				ch <- m.qmpReply
			}
		}
	}
	q.mu.Lock()
	q.err = fmt.Errorf("QMP connection closed: %w", err)
	for id, ch := range q.pending {
		close(ch)
		delete(q.pending, id)
	}
	q.mu.Unlock()
	close(q.done)
}

// Execute runs a QMP command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	ch := make(chan qmpReply, 1)
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	q.nextID++
	id := strconv.Itoa(q.nextID)
	q.pending[id] = ch
	q.mu.Unlock()

	msg := map[string]any{"execute": command, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	q.wmu.Lock()
	_, err = q.conn.Write(append(b, '\n'))
	q.wmu.Unlock()
	if err != nil {
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("qmp %s: connection closed before reply", command)
		}
		if r.Error != nil {
			return nil, &Error{Command: command, Class: r.Error.Class, Desc: r.Error.Desc}
		}
		return r.Return, nil
	case <-ctx.Done():
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

// DeviceDeleted registers interest in the DEVICE_DELETED event of device id
// and returns a channel closed when it arrives. Register before device_del.
// Only one waiter per id may be registered at a time.
func (q *QMP) DeviceDeleted(id string) (<-chan struct{}, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.waiters[id]; ok {
		return nil, fmt.Errorf("qmp: already waiting for DEVICE_DELETED of %s", id)
	}
	ch := make(chan struct{})
	q.waiters[id] = ch
	return ch, nil
}

// CancelDeviceDeleted drops a waiter registered with DeviceDeleted.
func (q *QMP) CancelDeviceDeleted(id string) {
	q.mu.Lock()
	delete(q.waiters, id)
	q.mu.Unlock()
}

// Done is closed when the connection is gone (QEMU exited or Close).
func (q *QMP) Done() <-chan struct{} { return q.done }

// Close closes the connection.
func (q *QMP) Close() error {
	err := q.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
