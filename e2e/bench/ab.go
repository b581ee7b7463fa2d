package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"

	"github.com/spotroot/spotroot/e2e/harness"
)

// A/B against another build (-against). On this 2-core TCG host the same
// binary's start → exec moves by ±30 % from one minute to the next (a
// shared machine's load), so two medians of five taken minutes apart
// cannot show a 10 % change. Each round boots this build and the other
// one back to back, and the table shows the per-round differences: the
// host's drift is common to both runs of a pair and cancels out.

const (
	secAB        = "A/B: this build − the -against build, paired run by run (same round, back to back)"
	againstLabel = "against"
	metricExec   = "spotroot start → exec of the volume's init"
)

// againstEnv is the bench environment with the AMI rebuilt around the
// -against binary; the volume template is shared.
func againstEnv(ctx context.Context, benv harness.Env, work, bin, guest, userdata string) (*harness.Env, error) {
	logf("A/B: building an AMI around %s", bin)
	aenv := benv
	aenv.SpotrootBin = bin
	aenv.AMI = filepath.Join(work, "env", "bench-ami-against.img")
	if err := benchAMI(ctx, &benv, aenv.AMI, bin, guest, userdata); err != nil {
		return nil, fmt.Errorf("A/B AMI: %w", err)
	}
	return &aenv, nil
}

// addPaired reports this build's start → exec minus the -against build's,
// pair by pair, for one configuration (kind, attach 0s).
func addPaired(rep *Report, col string) {
	mine := rep.Values(secSpotroot, col, metricExec)
	theirs := rep.Values(secSpotroot, againstLabel+", "+col, metricExec)
	d, faster := paired(mine, theirs)
	if len(d) == 0 {
		return
	}
	for _, v := range d {
		rep.Add(secAB, col, "start → exec, this build − against", "ms", v)
	}
	st := Summarize(d)
	rep.Note("A/B %s: this build − against: median %+.0f ms over %d pairs; this build faster in %d of %d (two-sided sign test p = %.3f).",
		col, st.Median, len(d), faster, len(d), signTest(faster, len(d)))
}

// paired returns a[i] − b[i] for the pairs both have, and how many are
// negative (a faster).
func paired(a, b []float64) (d []float64, negative int) {
	for i := 0; i < len(a) && i < len(b); i++ {
		d = append(d, a[i]-b[i])
		if a[i] < b[i] {
			negative++
		}
	}
	return d, negative
}

// signTest is the two-sided sign test's p-value for k of n pairs one way,
// ties counted against: how often a fair coin is at least this lopsided.
func signTest(k, n int) float64 {
	if n == 0 {
		return 1
	}
	lo := min(k, n-k)
	p := 0.0
	for i := 0; i <= lo; i++ {
		p += binom(n, i)
	}
	return math.Min(1, 2*p/math.Pow(2, float64(n)))
}

func binom(n, k int) float64 {
	r := 1.0
	for i := 1; i <= k; i++ {
		r = r * float64(n-k+i) / float64(i)
	}
	return r
}
