package bench

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CPUSnapshot is the machine's CPU time and each process's, read from
// /proc at one moment. Two snapshots give the CPU use in between (Use):
// how busy the machine was, and which programs kept it busy. That is how
// RESULTS.md tells "our code is slow" from "the machine was full".
type CPUSnapshot struct {
	total, idle uint64            // jiffies of all CPUs, and of idle + iowait
	procs       map[int]procTicks // by pid
}

type procTicks struct {
	comm  string
	ticks uint64 // utime + stime
}

// TakeCPU reads a snapshot. Processes that end between two snapshots are
// not counted (short-lived ones, such as a build's RUN steps, are missed;
// the machine's busy share still includes them).
func TakeCPU() (CPUSnapshot, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUSnapshot{}, fmt.Errorf("cpu snapshot: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return CPUSnapshot{}, fmt.Errorf("cpu snapshot: unexpected /proc/stat line %q", line)
	}
	s := CPUSnapshot{procs: map[int]procTicks{}}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return CPUSnapshot{}, fmt.Errorf("cpu snapshot: %q: %w", v, err)
		}
		if i >= 8 { // guest time is already in user and nice
			break
		}
		s.total += n
		if i == 3 || i == 4 { // idle, iowait
			s.idle += n
		}
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if p, ok := readProc(d); ok {
			s.procs[pid] = p
		}
	}
	return s, nil
}

// readProc reads a process's command name and CPU ticks from its stat
// file; the name is in parentheses and may hold spaces.
func readProc(dir string) (procTicks, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return procTicks{}, false
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procTicks{}, false
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 13 { // state is field 3 of stat, utime 14, stime 15
		return procTicks{}, false
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return procTicks{}, false
	}
	return procTicks{comm: string(b[open+1 : end]), ticks: ut + st}, true
}

// CPUUse is the CPU used between two snapshots, as shares of all of the
// machine's CPUs (1 = every CPU busy the whole time).
type CPUUse struct {
	Busy float64
	// ByProgram is each program's (command name's) share.
	ByProgram map[string]float64
}

// Use returns the CPU use from s until later.
func (s CPUSnapshot) Use(later CPUSnapshot) CPUUse {
	u := CPUUse{ByProgram: map[string]float64{}}
	total := float64(later.total - s.total)
	if total <= 0 {
		return u
	}
	u.Busy = 1 - float64(later.idle-s.idle)/total
	// Per-process ticks and /proc/stat's jiffies count in the same unit
	// (USER_HZ); /proc/stat's are summed over every CPU.
	for pid, p := range later.procs {
		before, ok := s.procs[pid]
		if !ok || p.ticks < before.ticks {
			before = procTicks{} // a new process (or a reused pid)
		}
		if d := p.ticks - before.ticks; d > 0 {
			u.ByProgram[program(p.comm)] += float64(d) / total
		}
	}
	return u
}

// program names a process for the by-program shares: kernel workers,
// whose names change with the work queue they serve, count as one.
func program(comm string) string {
	if strings.HasPrefix(comm, "kworker/") {
		return "kworker (kernel)"
	}
	return comm
}

// Add sums two uses of intervals of equal length.
func (u CPUUse) Add(v CPUUse) CPUUse {
	out := CPUUse{Busy: u.Busy + v.Busy, ByProgram: maps.Clone(u.ByProgram)}
	if out.ByProgram == nil {
		out.ByProgram = map[string]float64{}
	}
	for k, x := range v.ByProgram {
		out.ByProgram[k] += x
	}
	return out
}

// Top renders the n programs that used the most, e.g. "java 41%,
// dockerd 22%, runner 12%" (shares of the machine's CPUs).
func (u CPUUse) Top(n int) string {
	names := slices.Collect(maps.Keys(u.ByProgram))
	slices.SortFunc(names, func(a, b string) int {
		switch x, y := u.ByProgram[a], u.ByProgram[b]; {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, name := range names[:min(n, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", name, 100*u.ByProgram[name]))
	}
	return strings.Join(parts, ", ")
}

// CPUMeter accumulates CPU use over several intervals (one per sample),
// for a series of how busy the machine was while a figure was measured.
type CPUMeter struct {
	start   CPUSnapshot
	started bool
	busy    []float64
	sum     CPUUse
}

// Start begins an interval. Errors reading /proc leave the meter empty.
func (m *CPUMeter) Start() {
	s, err := TakeCPU()
	m.start, m.started = s, err == nil
}

// Stop ends the interval begun by Start.
func (m *CPUMeter) Stop() {
	if !m.started {
		return
	}
	m.started = false
	end, err := TakeCPU()
	if err != nil {
		return
	}
	u := m.start.Use(end)
	m.busy = append(m.busy, 100*u.Busy)
	m.sum = m.sum.Add(u)
}

// Series returns the busy shares as a series of figure (unit "% of all
// CPUs"), noting the programs that used the most over all intervals.
func (m *CPUMeter) Series(figure, name, kase string) Series {
	avg := CPUUse{ByProgram: map[string]float64{}}
	if n := float64(len(m.busy)); n > 0 {
		for k, v := range m.sum.ByProgram {
			avg.ByProgram[k] = v / n
		}
	}
	return Series{Figure: figure, Name: name, Case: kase, Unit: "% of all CPUs", Samples: m.busy,
		Note: "CPU use of the whole machine per sample (/proc/stat); by program, averaged: " + avg.Top(6)}
}
