package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spotroot/spotroot/e2e/images"
)

// Goal is one line of the bench's summary: a target an issue set, and how
// to read this run's figure for it from the report. Every part of the bench
// registers its own goals (registerGoals, from an init in its file), so a
// new figure brings its line along without touching the others.
type Goal struct {
	Item   string // the issue and item it comes from, e.g. "16.1"; lines sort by it
	Name   string // what is measured, on which profile
	Target string // the goal as a reader states it, e.g. "≤ 1000 ms"
	// Check reads the run's figure: what to print, whether it meets the
	// target, and false when the run did not measure it (a ✘ "not measured").
	Check func(r *Report) (measured string, met, measuredOK bool)
}

var goals []Goal

func registerGoals(gs ...Goal) { goals = append(goals, gs...) }

// GoalResult is a goal checked against one run.
type GoalResult struct {
	Goal
	Measured string
	Met      bool
	Missing  bool
}

// CheckGoals evaluates every registered goal against r, by Item.
func CheckGoals(r *Report, gs []Goal) []GoalResult {
	gs = slices.Clone(gs)
	slices.SortStableFunc(gs, func(a, b Goal) int { return strings.Compare(a.Item, b.Item) })
	var out []GoalResult
	for _, g := range gs {
		m, met, ok := g.Check(r)
		out = append(out, GoalResult{Goal: g, Measured: m, Met: met && ok, Missing: !ok})
	}
	return out
}

// WriteGoals prints one line per goal: ✔ or ✘, the figure and the target.
func WriteGoals(w io.Writer, rs []GoalResult) {
	if len(rs) == 0 {
		return
	}
	met := 0
	for _, r := range rs {
		if r.Met {
			met++
		}
	}
	fmt.Fprintf(w, "\n== goals: %d of %d hold ==\n", met, len(rs))
	for _, r := range rs {
		mark := "✘"
		if r.Met {
			mark = "✔"
		}
		m := r.Measured
		if r.Missing {
			m = "not measured in this run"
		}
		fmt.Fprintf(w, "%s %s %s: %s (goal %s)\n", mark, r.Item, r.Name, m, r.Target)
	}
}

// medianOf reads a metric's median, formatted with its spread.
func medianOf(r *Report, section, config, metric, unit string) (Stats, string, bool) {
	st, ok := r.Stats(section, config, metric)
	if !ok || st.N == 0 {
		return Stats{}, "", false
	}
	return st, cell(st, unit) + " " + unit, true
}

// The handoff (issue 16 item 1, held on the kind profile: the hostile one
// adds its pending instance and late credentials, seconds by design) and
// the binary size (item 2).
func init() {
	const exec = "spotroot start → exec of the volume's init"
	registerGoals(
		Goal{Item: "16.1", Name: "handoff, kind, attach 0s: spotroot start → exec (median)", Target: "≤ 1000 ms",
			Check: func(r *Report) (string, bool, bool) {
				st, s, ok := medianOf(r, secSpotroot, colName(profileKind, 0), exec, "ms")
				return s, st.Median <= 1000, ok
			}},
		Goal{Item: "16.1", Name: "handoff, kind, attach " + benchLatency.String() + ": spotroot start → exec (median)",
			Target: fmt.Sprintf("≤ attach latency + 1000 ms = %d ms", benchLatency.Milliseconds()+1000),
			Check: func(r *Report) (string, bool, bool) {
				st, s, ok := medianOf(r, secSpotroot, colName(profileKind, benchLatency), exec, "ms")
				return s, st.Median <= float64(benchLatency.Milliseconds()+1000), ok
			}},
		Goal{Item: "16.1", Name: "spotroot's addition over the floor, kind, attach 0s (kernel → persistent init minus kernel → image init, medians)",
			Target: "≤ 1.200 s",
			Check: func(r *Report) (string, bool, bool) {
				sp, ok1 := r.Stats(secSpotroot, colName(profileKind, 0), "kernel start → persistent init running")
				fl, ok2 := r.Stats(secFloor, "image init", "kernel start → init")
				if !ok1 || !ok2 {
					return "", false, false
				}
				d := sp.Median - fl.Median
				return fmt.Sprintf("%.3f s (%.3f − %.3f)", d, sp.Median, fl.Median), d <= 1.2, true
			}},
		Goal{Item: "16.2", Name: "PID 1 binary size, CA roots and all (-tags fallbackroots)", Target: fmt.Sprintf("≤ %d B (10 MiB)", images.PID1Budget),
			Check: func(r *Report) (string, bool, bool) {
				st, ok := r.Stats(secBinary, "spotroot", "PID 1 binary size with CA roots (+fallbackroots)")
				return fmt.Sprintf("%.0f B (%.2f MiB)", st.Median, st.Median/(1<<20)), st.Median <= images.PID1Budget, ok && st.N > 0
			}},
	)
}
