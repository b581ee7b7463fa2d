package boot

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spotroot/spotroot/internal/safego"
)

// Fault kinds the chaos tests inject (fault_on.go reads one from the kernel
// command line in the test build; the in-process chaos test sets them
// directly). Nothing in a product build calls Fault.
// Fault returns a bootlog.Log.Fault hook that injects kind once at
// phase:point.
func Fault(phase, point, kind string) func(string, string) error {
	var once sync.Once
	return func(p, pt string) error {
		if p != phase || pt != point {
			return nil
		}
		var err error
		once.Do(func() { err = inject(p, kind) })
		return err
	}
}

func inject(phase, kind string) error {
	switch kind {
	case "error":
		return &os.SyscallError{Syscall: "injected " + phase, Err: syscall.EIO}
	case "panic":
		panic("injected panic in " + phase)
	case "goroutine-panic":
		safego.Go("injected goroutine", func() { panic("injected panic in a goroutine during " + phase) })
		time.Sleep(time.Second) // the panic's fallback execs meanwhile
		return nil
	case "fatal":
		var mu sync.Mutex
		mu.Unlock() // "fatal error: sync: unlock of unlocked mutex"
	}
	return fmt.Errorf("unknown fault kind %q", kind)
}
