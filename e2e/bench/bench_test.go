package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Stats
	}{
		{nil, Stats{}},
		{[]float64{3}, Stats{1, 3, 3, 3}},
		{[]float64{5, 1, 3}, Stats{3, 1, 3, 5}},
		{[]float64{4, 1, 3, 2}, Stats{4, 1, 2.5, 4}},
	} {
		if got := Summarize(tc.in); got != tc.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestReportTableAndCSV(t *testing.T) {
	r := &Report{}
	for _, v := range []float64{2.5, 2.25, 2.75} {
		r.Add("timeline", "attach 0s", "kernel start → spotroot start", "s", v)
	}
	r.Add("timeline", "attach 2s", "phase claim", "ms", 812)
	r.Add("timeline", "attach 0s", "phase claim", "ms", 640)
	r.Note("a note")
	var tb bytes.Buffer
	r.WriteTable(&tb)
	out := tb.String()
	for _, want := range []string{
		"== timeline (median [min … max], up to 3 samples) ==",
		"kernel start → spotroot start (s)  2.500 [2.250 … 2.750]  —",
		"phase claim (ms)                   640                    812",
		"a note",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var cb bytes.Buffer
	if err := r.WriteCSV(&cb); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&cb).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"section", "metric", "config", "unit", "n", "min", "median", "max"},
		{"timeline", "kernel start → spotroot start", "attach 0s", "s", "3", "2.25", "2.5", "2.75"},
		{"timeline", "phase claim", "attach 0s", "ms", "1", "640", "640", "640"},
		{"timeline", "phase claim", "attach 2s", "ms", "1", "812", "812", "812"},
	}
	if len(recs) != len(want) {
		t.Fatalf("CSV = %q", recs)
	}
	for i := range want {
		if strings.Join(recs[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("CSV row %d = %q, want %q", i, recs[i], want[i])
		}
	}
}

func TestStamperAndParsers(t *testing.T) {
	st := &stamper{}
	st.Write([]byte("spotroot: start pid=1 uptime=2.413s\nspotroot: claim ok in 6"))
	st.Write([]byte("40ms\nBENCHINIT uptime=4.500000 kind=persistent root=/dev/nvme1n1p1 pid=1\n"))
	if up, _, err := uptimeOf(st, "spotroot: start pid=1"); err != nil || up != 2.413 {
		t.Fatalf("start uptime = %v, %v", up, err)
	}
	if up, _, err := uptimeOf(st, "BENCHINIT uptime="); err != nil || up != 4.5 {
		t.Fatalf("init uptime = %v, %v", up, err)
	}
	if m := rePhase.FindStringSubmatch("spotroot: claim ok in 640ms"); m == nil || m[1] != "claim" || m[2] != "640" {
		t.Fatalf("phase = %q", m)
	}
	if m := reExec.FindStringSubmatch("spotroot: exec /sbin/benchinit (pid 1 start→exec 3138ms, peak rss 12296kB)"); m == nil || m[2] != "3138" || m[3] != "12296" {
		t.Fatalf("exec = %q", m)
	}

	rep := &Report{}
	st.Write([]byte("BENCHSTAT ctxt=3712 loc=1402 majflt=97 pgpgin=14336\n"))
	if err := addSchedCounters(rep, secSpotroot, "attach 0s", st); err != nil {
		t.Fatal(err)
	}
	if s, _ := rep.Stats(secSpotroot, "attach 0s", "context switches, kernel start → init (/proc/stat ctxt)"); s.Median != 3712 {
		t.Errorf("context switches = %+v, want 3712", s)
	}
	if s, _ := rep.Stats(secSpotroot, "attach 0s", "local timer interrupts, kernel start → init (/proc/interrupts LOC)"); s.Median != 1402 {
		t.Errorf("timer interrupts = %+v, want 1402", s)
	}
	if s, _ := rep.Stats(secSpotroot, "attach 0s", "page faults that read the disk, kernel start → init (/proc/vmstat pgmajfault)"); s.Median != 97 {
		t.Errorf("major faults = %+v, want 97", s)
	}
	if s, _ := rep.Stats(secSpotroot, "attach 0s", "read from disks, kernel start → init (/proc/vmstat pgpgin)"); s.Median != 14336 {
		t.Errorf("KiB read = %+v, want 14336", s)
	}
	if err := addSchedCounters(rep, secSpotroot, "x", &stamper{}); err == nil {
		t.Error("no BENCHSTAT line: no error")
	}

	b := &Bench{Rep: &Report{}}
	st = &stamper{}
	st.Write([]byte(strings.Join([]string{
		"BENCHKMSG 1163837 pci 0000:00:06.0: [1b36:0010] type 00 class 0x010802",
		"BENCHKMSG 5747300 pci 0000:04:00.0: [1b36:0010] type 00 class 0x010802",
		"BENCHKMSG 5813112 nvme nvme1: 1/0/0 default/read/poll queues",
		"BENCHKMSG 5824690  nvme1n1: p1",
		"BENCHKMSG 5830190 spotroot: block device volume=vol-0123456789abcdef0 disk=/dev/nvme1n1 uptime=5.801s",
	}, "\n") + "\n"))
	if err := b.deviceLatency(st, "attach 0s"); err != nil {
		t.Fatal(err)
	}
	if s, _ := b.Rep.Stats(secSpotroot, "attach 0s", "kernel adds the disk (last controller record before it) → spotroot notices it"); s.Median != 17.078 {
		t.Errorf("notice latency = %+v, want 17.078 ms", s)
	}
	if s, _ := b.Rep.Stats(secSpotroot, "attach 0s", "partition scan logged (just after the disk appears) → spotroot notices it"); s.Median != 5.5 {
		t.Errorf("scan → notice = %+v, want 5.5 ms", s)
	}
	if s, _ := b.Rep.Stats(secSpotroot, "attach 0s", "kernel sees the hot-plugged NVMe function → disk being added"); s.Median != 65.812 {
		t.Errorf("hot-plug → disk = %+v, want 65.812 ms", s)
	}
}

// TestPoolRaceSmall runs the pool race at a small N: every claimant must get
// its own volume, and the calls must be counted. No timing is asserted.
func TestPoolRaceSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := PoolRace(ctx, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r.Claimed != 10 || r.Dups != 0 {
		t.Fatalf("claimed %d, doubly attached %d", r.Claimed, r.Dups)
	}
	// At least: list the pool and one AttachVolume (the disk's appearance,
	// not another DescribeVolumes, confirms the attach); no tag without
	// tag_claims.
	if r.Calls["AttachVolume"] < 10 || r.Calls["CreateTags"] != 0 || r.Calls["DescribeVolumes"] < 10 {
		t.Fatalf("calls = %v", r.Calls)
	}
	rep := &Report{}
	rep.section(secPool)
	if err := addPoolResult(rep, r); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	if !strings.Contains(buf.String(), "EC2 API calls per successful claim (calls)") {
		t.Fatalf("pool table:\n%s", buf.String())
	}
	t.Logf("pool race 10: %v, %s", r.Wall, r.CallsSummary())
}

// Every goal prints one line: ✔ when the run's figure meets it, ✘ when it
// does not or the run did not measure it; new goals append to the table.
func TestGoals(t *testing.T) {
	r := &Report{}
	for _, v := range []float64{900, 950, 1200} {
		r.Add(secSpotroot, colName(profileKind, 0), "spotroot start → exec of the volume's init", "ms", v)
	}
	r.Add(secSpotroot, colName(profileKind, benchLatency), "spotroot start → exec of the volume's init", "ms", 3500)
	r.Add(secSpotroot, colName(profileKind, 0), "kernel start → persistent init running", "s", 3.0)
	r.Add(secFloor, "image init", "kernel start → init", "s", 2.0)
	extra := Goal{Item: "99.1", Name: "a later goal", Target: "≤ 1", Check: func(*Report) (string, bool, bool) { return "0.5", true, true }}
	res := CheckGoals(r, append(goals, extra))
	var b bytes.Buffer
	WriteGoals(&b, res)
	out := b.String()
	for _, want := range []string{
		"== goals: 3 of 5 hold ==",
		"✔ 16.1 handoff, kind, attach 0s: spotroot start → exec (median): 950 [900 … 1200] ms (goal ≤ 1000 ms)",
		"✘ 16.1 handoff, kind, attach 2s: spotroot start → exec (median): 3500 ms (goal ≤ attach latency + 1000 ms = 3000 ms)",
		"✔ 16.1 spotroot's addition over the floor",
		"✘ 16.2 PID 1 binary size, CA roots and all (-tags fallbackroots): not measured in this run",
		"✔ 99.1 a later goal: 0.5 (goal ≤ 1)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "16.2") > strings.Index(out, "99.1") {
		t.Errorf("goals not in item order:\n%s", out)
	}
}

// The A/B table pairs run i of this build with run i of the other one;
// the sign test says how lopsided the pairs are.
func TestPairedAndSignTest(t *testing.T) {
	d, neg := paired([]float64{100, 90, 120, 80}, []float64{110, 100, 115})
	if want := []float64{-10, -10, 5}; !slices.Equal(d, want) || neg != 2 {
		t.Fatalf("paired = %v, %d negative; want %v, 2", d, neg, want)
	}
	for _, c := range []struct {
		k, n int
		want float64
	}{
		{0, 0, 1}, {4, 8, 1}, {7, 8, 0.0703125}, {8, 8, 0.0078125}, {0, 8, 0.0078125}, {1, 10, 0.021484375},
	} {
		if got := signTest(c.k, c.n); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("signTest(%d, %d) = %v, want %v", c.k, c.n, got, c.want)
		}
	}
	rep := &Report{}
	for i, v := range []float64{1500, 1400, 1600} {
		rep.Add(secSpotroot, "kind, attach 0s", metricExec, "ms", v)
		rep.Add(secSpotroot, "against, kind, attach 0s", metricExec, "ms", v+100*float64(i-1))
	}
	addPaired(rep, "kind, attach 0s")
	if got := rep.Values(secAB, "kind, attach 0s", "start → exec, this build − against"); !slices.Equal(got, []float64{100, 0, -100}) {
		t.Fatalf("A/B row %v", got)
	}
}
