package boot

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// peakRSS reports kilobytes, at least the peak /proc/self/status shows
// (a test process's ru_maxrss also counts the process it was forked from;
// PID 1's has nothing before it).
func TestPeakRSS(t *testing.T) {
	got := peakRSS()
	kb, err := strconv.ParseInt(strings.TrimSuffix(got, "kB"), 10, 64)
	if err != nil || !strings.HasSuffix(got, "kB") || kb <= 0 {
		t.Fatalf("peakRSS() = %q, want <positive>kB", got)
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			hwm, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if kb < hwm {
				t.Errorf("peakRSS %d kB below VmHWM %d kB", kb, hwm)
			}
		}
	}
}
