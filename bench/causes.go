package bench

import (
	"fmt"
	"slices"
	"strings"
)

// derived computes, for a figure of RESULTS.md, the values made of
// several series (ratios, efficiencies, shares) and the measured causes
// of a target that is not met: each line names the series it comes from,
// so a reader can check it against the tables.
func derived(figure string, series []Series) []string {
	switch figure {
	case "1":
		return derivedPush(series)
	case "2":
		return derivedDirect(series)
	case "3":
		return derivedWebhook(series)
	case "4":
		return derivedFanOut(series)
	case "5":
		return derivedScaleOut(series)
	case "6":
		return derivedWrites(series)
	case "8":
		return derivedBuilds(series)
	}
	return nil
}

// findCase is find with the exact case.
func findCase(series []Series, figure, name, kase string) *Series {
	for i, s := range series {
		if s.Figure == figure && s.Name == name && s.Case == kase {
			return &series[i]
		}
	}
	return nil
}

func med(s *Series) float64 { return Summarize(s.Samples).Median }
func p99(s *Series) float64 { return Summarize(s.Samples).P99 }

// cpuBusy describes a "machine CPU busy" series: its median and the
// programs its note names.
func cpuBusy(series []Series, figure, casePrefix string) string {
	s := find(series, figure, "machine CPU busy", casePrefix)
	if s == nil {
		return ""
	}
	programs := s.Note[strings.LastIndex(s.Note, ": ")+2:]
	return fmt.Sprintf("%.0f%% of the machine's CPUs busy (median of %d samples; by program: %s)", med(s), len(s.Samples), programs)
}

func derivedPush(series []Series) []string {
	total := find(series, "1", "push → DevLoop Succeeded", "total")
	if total == nil {
		return nil
	}
	var out []string
	type share struct {
		name string
		ms   float64
	}
	var shares []share
	for _, s := range series {
		if s.Figure == "1" && strings.HasPrefix(s.Case, "phase: ") {
			shares = append(shares, share{strings.TrimPrefix(s.Case, "phase: "), med(&s)})
		}
	}
	slices.SortFunc(shares, func(a, b share) int {
		switch {
		case a.ms > b.ms:
			return -1
		case a.ms < b.ms:
			return 1
		}
		return 0
	})
	var parts []string
	for _, s := range shares[:min(3, len(shares))] {
		parts = append(parts, fmt.Sprintf("%s %s ms (%.0f%%)", s.name, trim(s.ms), 100*s.ms/med(total)))
	}
	if len(parts) > 0 {
		out = append(out, "Largest phases by median: "+strings.Join(parts, "; ")+".")
	}
	if ours := find(series, "1", "push → DevLoop Succeeded", "without the stand-in's commit"); ours != nil {
		out = append(out, fmt.Sprintf("Without the stand-in's commit (GitHub's part, here about ten git processes in the test-only gitserve.Apply): **%s ms** median (target < 1500 ms: %s).",
			trim(med(ours)), yesNo(med(ours) < 1500)))
	}
	if direct := find(series, "2", "one job of the demo app", "direct"); direct != nil {
		out = append(out, fmt.Sprintf("Cause, measured: the job's work alone — checkout, render, build, push, Helm upgrade, rollout wait, done directly with the same libraries (figure 2) — takes **%s ms** median on this machine; "+
			"the queue, Firestore and the event stream add the rest (figure 2's system ratio).", trim(med(direct))))
	}
	iso := find(series, "8", "cached build of a demo-like image", "BuildKit, pushed, cache from")
	build, push := find(series, "1", "push → DevLoop Succeeded", "phase: build"), find(series, "1", "push → DevLoop Succeeded", "phase: push")
	if iso != nil && build != nil && push != nil {
		out = append(out, fmt.Sprintf("Cause, measured: a build and push of the same kind alone on the engine, the runner's way (figure 8), takes **%s ms** median; in the stack the build and push phases take %s ms.",
			trim(med(iso)), trim(med(build)+med(push))))
	}
	if busy := cpuBusy(series, "1", "push"); busy != "" {
		out = append(out, "Cause, measured: while one push at a time ran, "+busy+
			". The Docker Engine, the control plane, both emulators and the stack's processes share two CPUs, so every phase waits for CPU.")
	}
	return out
}

func derivedDirect(series []Series) []string {
	pipe := find(series, "2", "one job of the demo app", "pipeline")
	direct := find(series, "2", "one job of the demo app", "direct")
	if pipe == nil || direct == nil {
		return nil
	}
	r := med(pipe) / med(direct)
	out := []string{fmt.Sprintf("Pipeline ÷ direct (medians): **%.2f×** (target ≤ 1.10×: %s).", r, yesNo(r <= 1.10))}
	if total := find(series, "1", "push → DevLoop Succeeded", "total"); total != nil {
		r := med(total) / med(direct)
		out = append(out, fmt.Sprintf("Push → DevLoop Succeeded (figure 1) ÷ direct (medians): **%.2f×** (target ≤ 1.10×: %s).", r, yesNo(r <= 1.10)))
		if ours := find(series, "1", "push → DevLoop Succeeded", "without the stand-in's commit"); ours != nil {
			out = append(out, fmt.Sprintf("Without the stand-in's commit (figure 1) ÷ direct: **%.2f×**. What the system adds to a bare job is figure 1's phases outside the job: delivery, webhook, queue and pickup, the job's lookups, and the event's way to /v1/events.",
				med(ours)/med(direct)))
		}
	}
	return out
}

func derivedWebhook(series []Series) []string {
	var out []string
	calls := find(series, "3", "Firestore calls per delivery", "")
	for _, c := range []string{"1", "8", "32"} {
		raw := find(series, "3", "emulator alone: Firestore create + Pub/Sub publish", "concurrency "+c)
		one := find(series, "3", "webhook → 2xx", "concurrency "+c+", one repository")
		if raw == nil || one == nil {
			continue
		}
		line := fmt.Sprintf("Concurrency %s: the emulator alone takes %s ms median, %s ms p99 for its 2 round trips; the webhook (one repository) %s ms median, %s ms p99.",
			c, trim(med(raw)), trim(p99(raw)), trim(med(one)), trim(p99(one)))
		if calls != nil {
			// Each delivery makes its Firestore calls and one publish in
			// sequence; at the emulator's pace per round trip that is the
			// floor of the handler's latency.
			trips := med(calls) + 1
			line += fmt.Sprintf(" Its %.0f round trips (%.0f Firestore calls + 1 publish, in sequence) at the emulator's pace cost ≈ %s ms at p99 before any product code.",
				trips, med(calls), trim(p99(raw)/2*trips))
		}
		out = append(out, line)
	}
	if busy := cpuBusy(series, "3", "sustained deliveries/s: PublicAPI"); busy != "" {
		out = append(out, "Cause, measured: during the sustained run, "+busy+"; the emulators run on the same two CPUs as the handler and the load driver.")
	}
	if busy := cpuBusy(series, "3", "sustained deliveries/s: emulator alone"); busy != "" {
		out = append(out, "The emulator alone, at the same concurrency: "+busy+".")
	}
	return out
}

func derivedFanOut(series []Series) []string {
	var out []string
	for _, n := range []string{"100", "1000"} {
		if busy := cpuBusy(series, "4", n+" streams"); busy != "" {
			out = append(out, fmt.Sprintf("With %s streams, from each write until every stream had the event: %s. The streams' readers run in the benchmark's process, on the same two CPUs as the API: each event is written once but encoded and read %s times.", n, busy, n))
		}
	}
	return out
}

func derivedScaleOut(series []Series) []string {
	one := find(series, "5", "jobs per minute", "1 ")
	if one == nil {
		return nil
	}
	var out []string
	for _, n := range []int{2, 4} {
		if s := find(series, "5", "jobs per minute", fmt.Sprintf("%d ", n)); s != nil {
			e := med(s) / (float64(n) * med(one))
			out = append(out, fmt.Sprintf("Efficiency with %d runners: **%.2f** (target ≥ 0.90: %s).", n, e, yesNo(e >= 0.90)))
		}
	}
	for _, n := range []int{1, 2, 4} {
		if busy := cpuBusy(series, "5", fmt.Sprintf("%d runner", n)); busy != "" {
			out = append(out, fmt.Sprintf("Cause, measured: with %d runner process(es), %s.", n, busy))
		}
	}
	if len(out) > 2 {
		out = append(out, "A machine whose CPUs are already nearly all busy with one runner cannot run more jobs per minute with more runners: each runner's builds, pushes and deploys use the same Docker Engine, registry, control plane and emulators on the same two CPUs. Linear scale-out needs runners on machines of their own (Cloud Run instances), which this machine cannot show.")
	}
	return out
}

func derivedWrites(series []Series) []string {
	var out []string
	for _, s := range series {
		if s.Figure != "6" || s.Name != "Firestore writes per job" || s.Target == nil {
			continue
		}
		st := Summarize(s.Samples)
		if !s.Target.Met(st) {
			out = append(out, fmt.Sprintf("%s: median %s, max %s writes against %s.", s.Case, trim(st.Median), trim(st.Max), s.Target.String("writes")))
		}
	}
	if len(out) > 0 {
		out = append(out, "Cause, measured (writes by collection in the notes below): every job writes a fixed set — claim and finish (jobs 2), "+
			"the release lock taken and let go (releases 2), the iteration counter and the deployed commit (repositories 2), its state at the start, "+
			"while it runs (at most once a second, only when it changed) and at the end (states ≈ 3) — and each chunk of events costs 2 writes: "+
			"the chunk and the repository's sequence counter, which numbers events for resumable streams in the same transaction. "+
			"Chunks go at most every 250 ms while status events come (a phase change is not held back longer), and at most once a second for build output alone.")
	}
	return out
}

func derivedBuilds(series []Series) []string {
	const name = "cached build of a demo-like image"
	var out []string
	bk, legacy := findCase(series, "8", name, "BuildKit"), find(series, "8", name, "legacy")
	if bk != nil && legacy != nil {
		out = append(out, fmt.Sprintf("The legacy builder takes %.1f× as long as BuildKit (medians).", med(legacy)/med(bk)))
	}
	pushed, cached := findCase(series, "8", name, "BuildKit, pushed"), find(series, "8", name, "BuildKit, pushed, cache from")
	if pushed != nil && cached != nil {
		out = append(out, fmt.Sprintf("Build and push with the previous image as a cache source (what lets a new runner start warm): %s ms median; without: %s ms.",
			trim(med(cached)), trim(med(pushed))))
	}
	return out
}
