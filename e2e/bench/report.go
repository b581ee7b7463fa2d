package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Report collects samples by section, metric and configuration, keeping the
// order they were first seen in, and renders them as tables (one column per
// configuration: median [min … max]) and as CSV.
type Report struct {
	sections []*section
	notes    []string
}

type section struct {
	title   string
	configs []string
	metrics []metric
	samples map[[2]string][]float64 // {metric, config}
}

type metric struct{ name, unit string }

// Stats are a sample's count, minimum, median and maximum.
type Stats struct {
	N                int
	Min, Median, Max float64
}

// Summarize computes Stats (the median of an even count is the mean of the
// middle two).
func Summarize(v []float64) Stats {
	if len(v) == 0 {
		return Stats{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{N: len(s), Min: s[0], Median: m, Max: s[len(s)-1]}
}

func (r *Report) section(title string) *section {
	for _, s := range r.sections {
		if s.title == title {
			return s
		}
	}
	s := &section{title: title, samples: map[[2]string][]float64{}}
	r.sections = append(r.sections, s)
	return s
}

// Add records one sample.
func (r *Report) Add(sectionTitle, config, name, unit string, v float64) {
	s := r.section(sectionTitle)
	if !slices.Contains(s.configs, config) {
		s.configs = append(s.configs, config)
	}
	if !slices.ContainsFunc(s.metrics, func(m metric) bool { return m.name == name }) {
		s.metrics = append(s.metrics, metric{name, unit})
	}
	k := [2]string{name, config}
	s.samples[k] = append(s.samples[k], v)
}

// Note adds a line printed after the tables.
func (r *Report) Note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// Stats returns the stats of one metric.
func (r *Report) Stats(sectionTitle, config, name string) (Stats, bool) {
	for _, s := range r.sections {
		if s.title == sectionTitle {
			v, ok := s.samples[[2]string{name, config}]
			return Summarize(v), ok
		}
	}
	return Stats{}, false
}

// Values returns one metric's samples in the order they were added.
func (r *Report) Values(sectionTitle, config, name string) []float64 {
	for _, s := range r.sections {
		if s.title == sectionTitle {
			return slices.Clone(s.samples[[2]string{name, config}])
		}
	}
	return nil
}

func format(v float64, unit string) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case unit == "ms" || unit == "kB" || unit == "B" || unit == "calls" || unit == "insns" || unit == "events":
		if v == math.Trunc(v) || math.Abs(v) >= 100 {
			return strconv.FormatFloat(v, 'f', 0, 64)
		}
		return strconv.FormatFloat(v, 'f', 1, 64)
	case unit == "s":
		return strconv.FormatFloat(v, 'f', 3, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func cell(st Stats, unit string) string {
	if st.N == 0 {
		return "—"
	}
	if st.N == 1 || st.Min == st.Max {
		return format(st.Median, unit)
	}
	return fmt.Sprintf("%s [%s … %s]", format(st.Median, unit), format(st.Min, unit), format(st.Max, unit))
}

// WriteTable renders every section as an aligned table.
func (r *Report) WriteTable(w io.Writer) {
	for _, s := range r.sections {
		if len(s.metrics) == 0 {
			continue
		}
		rows := [][]string{append([]string{"metric"}, s.configs...)}
		nmax := 0
		for _, m := range s.metrics {
			row := []string{m.name + " (" + m.unit + ")"}
			for _, c := range s.configs {
				st := Summarize(s.samples[[2]string{m.name, c}])
				nmax = max(nmax, st.N)
				row = append(row, cell(st, m.unit))
			}
			rows = append(rows, row)
		}
		width := make([]int, len(rows[0]))
		for _, row := range rows {
			for i, c := range row {
				width[i] = max(width[i], len([]rune(c)))
			}
		}
		fmt.Fprintf(w, "\n== %s (median [min … max], up to %d samples) ==\n", s.title, nmax)
		for i, row := range rows {
			var b strings.Builder
			for j, c := range row {
				if j > 0 {
					b.WriteString("  ")
				}
				b.WriteString(c)
				if j < len(row)-1 {
					b.WriteString(strings.Repeat(" ", width[j]-len([]rune(c))))
				}
			}
			fmt.Fprintln(w, b.String())
			if i == 0 {
				fmt.Fprintln(w, strings.Repeat("-", len([]rune(b.String()))))
			}
		}
	}
	if len(r.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range r.notes {
			fmt.Fprintln(w, n)
		}
	}
}

// WriteCSV writes section,metric,config,unit,n,min,median,max rows.
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"section", "metric", "config", "unit", "n", "min", "median", "max"})
	for _, s := range r.sections {
		for _, m := range s.metrics {
			for _, c := range s.configs {
				v, ok := s.samples[[2]string{m.name, c}]
				if !ok {
					continue
				}
				st := Summarize(v)
				f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
				_ = cw.Write([]string{s.title, m.name, c, m.unit, strconv.Itoa(st.N), f(st.Min), f(st.Median), f(st.Max)})
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// Save writes the CSV to path.
func (r *Report) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.WriteCSV(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
