package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"time"
)

// OutEnv names the file (JSON lines, appended to) that Record writes to.
// When it is unset Record does nothing, so the benchmarks also run on
// their own with go test -bench.
const OutEnv = "KGD_BENCH_OUT"

// Target is a figure's goal: Stat of the samples compared with Value
// using Op ("<", "<=" or ">=").
type Target struct {
	Stat  string  `json:"stat"` // "median", "p95", "p99" or "max"
	Op    string  `json:"op"`
	Value float64 `json:"value"`
}

// String renders the target, e.g. "p99 < 50 ms".
func (t Target) String(unit string) string {
	return fmt.Sprintf("%s %s %s %s", t.Stat, t.Op, trim(t.Value), unit)
}

// Met reports whether st meets the target.
func (t Target) Met(st Stats) bool {
	v := st.Get(t.Stat)
	switch t.Op {
	case "<":
		return v < t.Value
	case "<=":
		return v <= t.Value
	case ">=":
		return v >= t.Value
	case ">":
		return v > t.Value
	}
	return false
}

// Series is one measured figure: its samples, in the order taken, after
// Warmup samples that were taken and dropped.
type Series struct {
	// Figure groups series into the sections of RESULTS.md ("1" to "8").
	Figure string `json:"figure"`
	// Name is what was measured; Case the variant ("concurrency=8, one
	// repository"); Unit the samples' unit ("ms", "deliveries/s").
	Name string `json:"name"`
	Case string `json:"case,omitempty"`
	Unit string `json:"unit"`
	// Warmup is how many samples were taken first and dropped.
	Warmup  int       `json:"warmup"`
	Samples []float64 `json:"samples"`
	// Target, when set, is the goal for the figure.
	Target *Target `json:"target,omitempty"`
	// Note explains the measurement in one line (what one sample is).
	Note string `json:"note,omitempty"`
}

var mu sync.Mutex

// Record appends s to the file named by $KGD_BENCH_OUT, if set.
func Record(s Series) error {
	path := os.Getenv(OutEnv)
	if path == "" {
		return nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("record %s: %w", s.Name, err)
	}
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("record %s: %w", s.Name, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("record %s: %w", s.Name, err)
	}
	return f.Close()
}

// Millis converts durations to milliseconds, for Series.Samples.
func Millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// Stats summarizes samples.
type Stats struct {
	N                          int
	Min, Median, P95, P99, Max float64
	Mean                       float64
}

// Get returns the named statistic ("median" or "p50", "p95", "p99",
// "max", "min", "mean").
func (s Stats) Get(name string) float64 {
	switch name {
	case "median", "p50":
		return s.Median
	case "p95":
		return s.P95
	case "p99":
		return s.P99
	case "max":
		return s.Max
	case "min":
		return s.Min
	case "mean":
		return s.Mean
	}
	return math.NaN()
}

// Summarize computes the statistics of samples: percentiles by the
// nearest-rank method (p99 of 20 samples is their maximum).
func Summarize(samples []float64) Stats {
	if len(samples) == 0 {
		return Stats{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Stats{N: len(s), Min: s[0], Median: rank(50), P95: rank(95), P99: rank(99), Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// trim formats v with at most 3 significant decimals.
func trim(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}
