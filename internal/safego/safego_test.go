package safego

import (
	"strings"
	"testing"
)

func TestGoHandsPanicToHandler(t *testing.T) {
	got := make(chan string, 1)
	SetHandler(func(name string, v any, stack []byte) {
		got <- name + ": " + v.(string) + " stack=" + map[bool]string{true: "yes", false: "no"}[strings.Contains(string(stack), "safego_test")]
	})
	defer SetHandler(nil)
	Go("dhcp", func() { panic("boom") })
	if s := <-got; s != "dhcp: boom stack=yes" {
		t.Fatalf("handler got %q", s)
	}
}

func TestRecoverWithoutPanicIsQuiet(t *testing.T) {
	called := false
	SetHandler(func(string, any, []byte) { called = true })
	defer SetHandler(nil)
	done := make(chan struct{})
	Go("quiet", func() { close(done) })
	<-done
	func() { defer Recover("x") }()
	if called {
		t.Fatal("handler called without a panic")
	}
}

func TestDefaultRepanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "op: boom") {
			t.Fatalf("recovered %v, want a re-panic naming the goroutine", r)
		}
	}()
	func() {
		defer Recover("op")
		panic("boom")
	}()
}
