package main

import "fmt"

// The pool at fleet scale (issue 16 item 3), read from the 1000-claimant
// race under the hostile simulator's throttling buckets.
func init() {
	const c = "1000 claimants"
	perClaim := func(metric string, limit float64) func(r *Report) (string, bool, bool) {
		return func(r *Report) (string, bool, bool) {
			st, ok := r.Stats(secPool, c, metric)
			if !ok || st.N == 0 {
				return "", false, false
			}
			return fmt.Sprintf("%.1f", st.Median), st.Median <= limit, true
		}
	}
	registerGoals(
		Goal{Item: "16.3", Name: "pool race, 1000 claimants at once: AttachVolume requests per claim", Target: "≤ 2.0",
			Check: perClaim("  AttachVolume per claim", 2.0)},
		Goal{Item: "16.3", Name: "pool race, 1000 claimants at once: EC2 requests in all per claim", Target: "≤ 5",
			Check: perClaim("EC2 API calls per successful claim", 5)},
	)
}
