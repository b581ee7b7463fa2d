package main

import (
	"fmt"

	"github.com/spotroot/spotroot/e2e/sim"
)

// The simulator's two clouds the QEMU runs boot against, side by side:
//
//   - kind: every hostile behaviour off, so a figure moves only when the
//     code does — the one to compare commits by, and the one the goals
//     are held against;
//   - hostile: sim.DefaultHostile (lagging views, lost answers, throttling,
//     late credentials, a pending instance, clock skew): what a bad day
//     costs.
const (
	profileKind    = "kind"
	profileHostile = "hostile"
)

// kindReason is the written reason sim.Hostile.Disable wants.
const kindReason = "bench kind profile: stable figures for comparing commits (the hostile profile runs beside it)"

var profiles = []string{profileKind, profileHostile}

// applyProfile sets w's hostile profile for a bench run.
func applyProfile(w *sim.World, profile string) error {
	switch profile {
	case profileKind:
		return w.Hostile.Disable("*", kindReason)
	case profileHostile, "":
		return nil // sim.Load's DefaultHostile, with its seed
	}
	return fmt.Errorf("unknown bench profile %q (kind, hostile)", profile)
}
