package boot

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/bootlog"
	"github.com/spotroot/spotroot/internal/config"
)

// The marker is written beside the early phases; armWait is the point after
// which it is on disk, and disarm removes it (waiting for the write first,
// so a fallback that comes early never leaves a marker behind).
func TestAttemptMarkerArmsInTheBackground(t *testing.T) {
	for _, early := range []bool{false, true} {
		dir := t.TempDir()
		var out bytes.Buffer
		b := &booter{log: bootlog.New(&out), paths: Paths{Attempt: filepath.Join(dir, "var/lib/spotroot/boot-attempt")}}
		b.checkAttempt()
		if early {
			b.disarm() // a fallback before armWait: no marker may survive
			if _, err := os.Stat(b.paths.Attempt); !os.IsNotExist(err) {
				t.Fatalf("disarm before armWait left the marker: %v", err)
			}
			continue
		}
		b.armWait()
		if !b.armed.Load() {
			t.Fatalf("armWait: not armed; log:\n%s", out.String())
		}
		if rec, ok := readAttempt(b.paths.Attempt); !ok || rec == "" {
			t.Fatalf("armWait returned without the marker on disk")
		}
		b.disarm()
		if _, err := os.Stat(b.paths.Attempt); !os.IsNotExist(err) {
			t.Fatalf("disarm left the marker: %v", err)
		}
	}
}

// log_level (image file, command line, then user-data) reaches the logger
// the phases already hold.
func TestLogLevelFollowsTheConfiguration(t *testing.T) {
	var out bytes.Buffer
	b := &booter{log: bootlog.New(&out)}
	b.slog = b.log.Slog(&b.level)
	b.slog.Debug("hidden at info")
	b.setLogLevel(&config.Config{LogLevel: "debug"})
	b.slog.Debug("shown at debug")
	b.setLogLevel(&config.Config{LogLevel: "error"})
	b.slog.Warn("hidden at error")
	got := out.String()
	if strings.Contains(got, "hidden") || !strings.Contains(got, "shown at debug") {
		t.Fatalf("log:\n%s", got)
	}
}
