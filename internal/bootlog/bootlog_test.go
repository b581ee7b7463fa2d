package bootlog

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPhaseLinesAndErrors(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	if err := l.Phase("mounts", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := l.Phase("dhcp", func() error { return boom })
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != "dhcp" || !errors.Is(err, boom) {
		t.Fatalf("phase error = %#v", err)
	}
	out := buf.String()
	if !strings.HasPrefix(out, "spotroot: mounts ok in ") || !strings.HasSuffix(out, "ms\n") {
		t.Fatalf("unexpected timeline line %q", out)
	}
	if strings.Contains(out, "dhcp") {
		t.Fatalf("a failed phase must not log ok: %q", out)
	}
}

func TestKmsgAndSlog(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	kmsg := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(kmsg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l.AttachKmsg(kmsg)
	l.Slog(slog.LevelInfo).With("vol", "vol-1").Info("attached", "device", "/dev/sdf", "note", "two words")
	l.Slog(slog.LevelInfo).Debug("hidden")
	for i := range 12 { // more than the kernel's per-open burst of 10
		l.Printf("line %d", i)
	}
	want := `spotroot: attached vol=vol-1 device=/dev/sdf note="two words"`
	if got, _, _ := strings.Cut(buf.String(), "\n"); got != want {
		t.Fatalf("console got %q want %q", got, want)
	}
	k, _ := os.ReadFile(kmsg)
	if !strings.HasPrefix(string(k), "<5>"+want+"\n") || strings.Count(string(k), "<5>spotroot: ") != 13 {
		t.Fatalf("kmsg got %q", k)
	}
	if n := len(l.Lines()); n != 13 {
		t.Fatalf("lines = %d", n)
	}
}
