package main

import (
	"strings"
	"testing"
	"time"
)

func TestBucketFloor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		starts []time.Duration
		want   time.Duration
	}{
		{"one", make([]time.Duration, 1), 0},
		{"the attach bucket holds 50", make([]time.Duration, 50), 0},
		// 1000 at once: 950 AttachVolume after the first 50, at 5/s.
		{"1000 at once", make([]time.Duration, 1000), 190 * time.Second},
		// Far apart, nobody waits: the floor is the last start.
		{"spread out", []time.Duration{0, 10 * time.Second, 20 * time.Second}, 20 * time.Second},
	} {
		got := BucketFloor(tc.starts)
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("%s: floor %v, want %v", tc.name, got, tc.want)
		}
	}
	// Spread over 60 s, 1000 still outrun AttachVolume's refill: the floor
	// stays near 190 s, and never below the last start.
	st := startOffsets(1000, time.Minute, 1)
	if f := BucketFloor(st); f < 185*time.Second || f > 195*time.Second {
		t.Errorf("1000 over a minute: floor %v", f)
	}
}

func TestFleetGoals(t *testing.T) {
	r := PoolResult{N: 1000, Claimed: 1000, Wall: 200 * time.Second, Floor: 190 * time.Second,
		Calls: map[string]int{"AttachVolume": 1500, "DescribeVolumes": 2500, "CreateTags": 1000}}
	lines := strings.Join(fleetGoals(r), "\n")
	for _, want := range []string{"✔ 16.3 pool, 1000 claimants at once: wall 200.0 s, bucket floor 190.0 s, 1.05×",
		"✔ 16.3 pool, 1000 claimants at once: AttachVolume requests per claim 1.50", "✔ 16.3 pool, 1000 claimants at once: EC2 requests in all per claim 5.00"} {
		if !strings.Contains(lines, want) {
			t.Errorf("goals lack %q:\n%s", want, lines)
		}
	}
	r.Calls["DescribeVolumes"]++
	r.Claimed, r.Dups = 999, 1
	lines = strings.Join(fleetGoals(r), "\n")
	if strings.Contains(lines, "✔") {
		t.Errorf("a failed race holds a goal:\n%s", lines)
	}
}
