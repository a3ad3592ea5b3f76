package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Machine describes where a run took place.
type Machine struct {
	Date               string
	CPUs               int
	CPU, Go, Docker    string
	Kernel             string
	LoadStart, LoadEnd string // /proc/loadavg's 1, 5 and 15 minute loads
	// Note is a remark about the run (kgdbench -note).
	Note string
}

// ReadSeries reads a samples file written by Record.
func ReadSeries(path string) ([]Series, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read samples: %w", err)
	}
	defer f.Close()
	var out []Series
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var s Series
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return nil, fmt.Errorf("read samples %s: %w", path, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read samples %s: %w", path, err)
	}
	return out, nil
}

// figures are the sections of RESULTS.md: the definitions.
var figures = []struct{ id, title, what string }{
	{"1", "Push → DevLoop Succeeded (local stack, demo app)",
		"A commit changing the demo app's `message.txt` (the push sends the changed file only) pushed to the GitHub stand-in, which delivers the signed webhook; " +
			"the time until the iteration's final DevLoopEvent arrives on the API's `/v1/events` (a stream opened before the pushes). " +
			"The phases partition the total, each from the end of the previous one, taken from the events' own timestamps " +
			"(and the job document's `started_at`, the claim, and the stand-in's delivery record). The machine's CPU use is sampled over each push."},
	{"2", "The same job done directly (runner overhead)",
		"The demo app's job through `Pipeline.Run` and the same work done directly with the same libraries " +
			"(go-git checkout of a new commit, `repoconfig` render, build + push, Helm upgrade, rollout wait), alternating. " +
			"Ratios: pipeline ÷ direct is the pipeline's own overhead; push → DevLoop Succeeded (figure 1) ÷ direct is the whole " +
			"system's overhead (webhook, queue, Firestore, events) over a bare job."},
	{"3", "Webhook → 2xx and deliveries/s",
		"Signed copies of a recorded GitHub push (each a new commit) to PublicAPI's handler on a loopback HTTP server over the emulators; " +
			"the emulator alone (one Firestore create + one acked Pub/Sub publish, no product code) at the same concurrency shows where the emulator is the limit."},
	{"4", "Event written → received on /v1/events",
		"One events document written with `AppendEvents`; the time until each of N HTTP streams of `/v1/events` received it. " +
			"Every case on one warm API and emulator (a warm-up case runs first)."},
	{"5", "Scale-out: jobs per minute with 1, 2 and 4 runner processes",
		"Rounds of pushes to 8 tracked repositories at once on the local stack, consumed by N runner processes on the one subscription. " +
			"Efficiency = median jobs/min with N runners ÷ (N × median with 1); the target is linear within 10% (≥ 0.90)."},
	{"6", "Firestore writes per job",
		"Document writes of the runner (each write of a Commit or BatchWrite) counted by a gRPC proxy in front of the Firestore emulator, " +
			"for Dockerfiles with more build steps (more build-log lines). Target: ≤ 20 + lines/50. PublicAPI's writes for the delivery are not in these counts."},
	{"7", "Process start → ready",
		"Exec of the binary (built once) until its health endpoint first answers 200, polled every 2 ms; PublicAPI and PrivateAPI are the functions binary."},
	{"8", "Builds: BuildKit and the legacy builder",
		"A cached build of a demo-like image (its binary's layer cached, `message.txt` changed each sample) through the Docker Engine API, " +
			"build only with each of the engine's builders (`KGD_BUILDER`), and with BuildKit also build and push to a loopback registry, with and without the previous image as a cache source."},
}

// Markdown renders RESULTS.md.
func Markdown(m Machine, series []Series, failures []string) []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Benchmark results")
	p("")
	p("Written by `make bench` (bench/cmd/kgdbench); do not edit by hand. How it measures: [bench/doc.go](doc.go).")
	p("")
	p("| | |")
	p("|---|---|")
	p("| date | %s |", m.Date)
	p("| machine | %d CPUs, %s, %s |", m.CPUs, m.CPU, m.Kernel)
	p("| Go | %s |", m.Go)
	p("| Docker | %s |", m.Docker)
	p("| load average (1, 5, 15 min) | %s at the start, %s at the end |", m.LoadStart, m.LoadEnd)
	p("")
	if m.Note != "" {
		p("**Note on this run:** %s", m.Note)
		p("")
	}
	p("Samples are taken after a warm-up (column *warm-up*: samples taken first and dropped); percentiles are nearest-rank. " +
		"A machine shared with other work gives slower and noisier figures: compare the load average above with the CPU count.")
	p("")
	for _, fig := range figures {
		var ss []Series
		for _, s := range series {
			if s.Figure == fig.id {
				ss = append(ss, s)
			}
		}
		p("## %s. %s", fig.id, fig.title)
		p("")
		p("%s", fig.what)
		p("")
		if len(ss) == 0 {
			p("**Not measured in this run.**")
			p("")
			continue
		}
		p("| figure | case | n | warm-up | median | p95 | p99 | max | unit | target | met |")
		p("|---|---|---:|---:|---:|---:|---:|---:|---|---|---|")
		for _, s := range ss {
			st := Summarize(s.Samples)
			target, met := "", ""
			if s.Target != nil {
				target, met = s.Target.String(s.Unit), yesNo(s.Target.Met(st))
			}
			p("| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |", s.Name, s.Case, st.N, s.Warmup,
				trim(st.Median), trim(st.P95), trim(st.P99), trim(st.Max), s.Unit, target, met)
		}
		p("")
		for _, line := range derived(fig.id, series) {
			p("- %s", line)
		}
		var notes []string
		for _, s := range ss {
			if s.Note != "" && !slices.Contains(notes, s.Note) {
				notes = append(notes, s.Note)
			}
		}
		for _, n := range notes {
			p("- *%s*", n)
		}
		p("")
	}
	if len(failures) > 0 {
		p("## Steps that failed")
		p("")
		for _, f := range failures {
			p("- %s", f)
		}
		p("")
	}
	return b.Bytes()
}

func yesNo(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

// find returns the series of figure with name and a case starting with
// casePrefix.
func find(series []Series, figure, name, casePrefix string) *Series {
	for i, s := range series {
		if s.Figure == figure && s.Name == name && strings.HasPrefix(s.Case, casePrefix) {
			return &series[i]
		}
	}
	return nil
}
