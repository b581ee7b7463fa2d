package crash

import (
	"slices"
	"strings"
	"testing"
)

func TestOptionsFromEnv(t *testing.T) {
	for _, k := range []string{"SPOTROOT_CRASH_SEED", "SPOTROOT_CRASH_SEEDS", "SPOTROOT_CRASH_TIMING", "SPOTROOT_CRASH_POINT", "SPOTROOT_CRASH_PARALLEL"} {
		t.Setenv(k, "")
	}
	if o := OptionsFromEnv(7, Full); !slices.Equal(o.Seeds, []uint64{7}) || o.Timing != Full || o.Only != "" || o.Parallel <= 1 {
		t.Fatalf("defaults: %+v", o)
	}
	t.Setenv("SPOTROOT_CRASH_SEEDS", "3")
	t.Setenv("SPOTROOT_CRASH_TIMING", "quick")
	if o := OptionsFromEnv(7, Full); !slices.Equal(o.Seeds, []uint64{7, 8, 9}) || o.Timing != Quick {
		t.Fatalf("SEEDS=3, TIMING=quick: %+v", o)
	}
	t.Setenv("SPOTROOT_CRASH_SEED", "42")
	if o := OptionsFromEnv(7, Full); !slices.Equal(o.Seeds, []uint64{42}) {
		t.Fatalf("SEED=42 wins: %+v", o)
	}
}

// The reproduction line selects exactly the failing point.
func TestReproSelectsThePoint(t *testing.T) {
	pts := Flows[4].points([]string{"CreateTags spotroot:moving-to", "CreateSnapshot"})
	r := Result{Seed: 9, Point: pts[len(pts)-1]}
	line := r.Repro(Full)
	if !strings.Contains(line, "SPOTROOT_CRASH_SEED=9 ") || !strings.Contains(line, "-run TestCrashMatrix ./e2e") {
		t.Fatalf("repro = %s", line)
	}
	only := strings.SplitN(strings.SplitN(line, "SPOTROOT_CRASH_POINT='", 2)[1], "'", 2)[0]
	var matched []string
	for _, f := range Flows {
		for _, p := range f.points([]string{"CreateTags spotroot:moving-to", "CreateSnapshot"}) {
			if strings.Contains(p.String(), only) {
				matched = append(matched, p.String())
			}
		}
	}
	if len(matched) != 1 || matched[0] != r.Point.String() {
		t.Fatalf("SPOTROOT_CRASH_POINT=%q matches %v, want only %s", only, matched, r.Point)
	}
}
