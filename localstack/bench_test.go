package localstack_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/kube-git-deploy/kube-git-deploy/bench"
	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Sample counts of the stack benchmarks (make bench runs them once each,
// -benchtime=1x: one op is a whole series).
const (
	pushWarmup, pushSamples     = 3, 20
	writesWarmup, writesPerStep = 1, 7 // × 3 Dockerfile sizes
	scaleRepos, scaleRounds     = 8, 3 // jobs per round, rounds per runner count
	startSamples                = 20
)

// BenchmarkLocalStack measures the product's main path on the local
// stack (startStack: the real binaries, emulators, registry, control
// plane, Docker Engine) and records every series for bench/RESULTS.md:
//
//   - push: push → DevLoop Succeeded of the demo app, split by phase;
//   - writes: Firestore writes per job against build-log lines;
//   - scaleout: jobs per minute with 1, 2 and 4 runner processes;
//   - ready: process start → ready of PublicAPI, PrivateAPI and the API.
func BenchmarkLocalStack(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	st, d := startStack(b, ctx, io.Discard)
	sb := &stackBench{st: st, d: d, store: openStore(b, ctx, st)}
	// Build the sample app once; pushes change message.txt only.
	files, err := demo.Files(ctx, st.URLs.Registry, demo.Owner, demo.Name, "bench")
	if err != nil {
		b.Fatal(err)
	}
	sb.files = files
	b.Run("push", func(b *testing.B) { sb.push(b, ctx) })
	b.Run("writes", func(b *testing.B) { sb.writes(b, ctx) })
	b.Run("scaleout", func(b *testing.B) { sb.scaleOut(b, ctx) })
	b.Run("ready", func(b *testing.B) { sb.ready(b, ctx) })
}

type stackBench struct {
	st    *localstack.Stack
	d     *demo.Demo
	store *store.Store
	files map[string][]byte
	seq   int
	// pushed holds the files each repository has: a push sends the ones
	// that changed (and message.txt), as a developer's push does; sending
	// the app's binary again made the stand-in's commit cost 0.4-0.6 s of
	// every push.
	pushed map[string]map[string][]byte
}

func openStore(b *testing.B, ctx context.Context, st *localstack.Stack) *store.Store {
	fs, err := firestore.NewClient(ctx, st.Config.Project)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fs.Close() })
	box, err := secret.NewBox(bytes.Repeat([]byte{1}, secret.KeySize)) // reads jobs only
	if err != nil {
		b.Fatal(err)
	}
	s, err := store.New(fs, box)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func record(b *testing.B, s bench.Series) {
	if err := bench.Record(s); err != nil {
		b.Fatal(err)
	}
}

// follower reads a repository's /v1/events from before the pushes it
// waits for, noting when each event arrived.
type follower struct {
	mu     sync.Mutex
	events []arrival
	notify chan struct{}
	err    error
}

type arrival struct {
	e  *v1pb.LogEntry
	at time.Time
}

func follow(ctx context.Context, d *demo.Demo, repository string) *follower {
	f := &follower{notify: make(chan struct{}, 1)}
	go func() {
		err := d.Events(ctx, repository, func(e *v1pb.LogEntry) bool {
			f.mu.Lock()
			f.events = append(f.events, arrival{e, time.Now()})
			f.mu.Unlock()
			select {
			case f.notify <- struct{}{}:
			default:
			}
			return true
		})
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		select {
		case f.notify <- struct{}{}:
		default:
		}
	}()
	return f
}

// iteration is one job's events as the follower saw them.
type iteration struct {
	jobID  string
	number int
	events []arrival
	status string
}

// wait returns the iteration of commit once its final DevLoopEvent has
// arrived.
func (f *follower) wait(ctx context.Context, commit string) (*iteration, error) {
	for {
		f.mu.Lock()
		it := scan(f.events, commit)
		err := f.err
		f.mu.Unlock()
		if it != nil && it.status != "" {
			return it, nil
		}
		if err != nil {
			return nil, fmt.Errorf("events ended before commit %s finished: %w", commit, err)
		}
		select {
		case <-f.notify:
		case <-ctx.Done():
			return nil, fmt.Errorf("commit %s: %w", commit, ctx.Err())
		}
	}
}

func scan(events []arrival, commit string) *iteration {
	var it *iteration
	for _, a := range events {
		ev := a.e.GetEvent()
		if meta := ev.GetMetaEvent(); meta != nil {
			add := meta.GetMetadata().GetAdditional()
			if it == nil && add[event.KeyCommit] == commit {
				n, _ := strconv.Atoi(add[event.KeyIteration])
				it = &iteration{jobID: add[event.KeyJobID], number: n}
			}
		}
		if it == nil {
			continue
		}
		if dl := ev.GetDevLoopEvent(); dl != nil && int(dl.GetIteration()) != it.number-1 {
			continue
		}
		it.events = append(it.events, a)
		if dl := ev.GetDevLoopEvent(); dl != nil && (dl.GetStatus() == event.Succeeded || dl.GetStatus() == event.Failed) {
			it.status = dl.GetStatus()
			return it
		}
	}
	return it
}

// pushDemo commits files with a new message.txt to owner/name.
func (sb *stackBench) pushDemo(ctx context.Context, owner, name string, files map[string][]byte) (*demo.Pushed, error) {
	sb.seq++
	if sb.pushed == nil {
		sb.pushed = map[string]map[string][]byte{}
	}
	has := sb.pushed[owner+"/"+name]
	f := map[string][]byte{}
	for k, v := range files {
		if old, ok := has[k]; !ok || !bytes.Equal(old, v) {
			f[k] = v
		}
	}
	sb.pushed[owner+"/"+name] = maps.Clone(files)
	f["app/message.txt"] = []byte(fmt.Sprintf("bench push %d at %s\n", sb.seq, time.Now().Format(time.RFC3339Nano)))
	p, err := sb.d.Push(ctx, owner, name, "main", fmt.Sprintf("bench %d", sb.seq), f)
	if err != nil {
		return nil, err
	}
	if p.JobID == "" {
		return nil, fmt.Errorf("push %s: no job: %+v", p.After, p.Deliveries)
	}
	return p, nil
}

// phases of push → DevLoop Succeeded, each from the end of the previous
// one; together they are the whole.
var phaseNames = []string{
	"stand-in commit (push until the stand-in began the delivery: its git commit)",
	"delivery (until PublicAPI created the job)",
	"webhook answered (job created until the stand-in reported the 2xx)",
	"queue + pickup (2xx until the runner claimed the job)",
	"checkout + render (claim until the MetaEvent)",
	"build (MetaEvent until the push's first line, or the build's end)",
	"push (image push until BuildEvent Complete)",
	"Helm (BuildEvent Complete until StatusCheck Started)",
	"status check (StatusCheck Started until Succeeded)",
	"final events (StatusCheck Succeeded until DevLoop Succeeded)",
	"seen on /v1/events (DevLoop Succeeded's timestamp until it arrived)",
}

// push: push → DevLoop Succeeded of the demo app, pushes one at a time.
func (sb *stackBench) push(b *testing.B, ctx context.Context) {
	const repo = demo.Owner + "/" + demo.Name
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	f := follow(fctx, sb.d, repo)
	var total []time.Duration
	phases := make([][]time.Duration, len(phaseNames))
	var cpu bench.CPUMeter
	var ours []time.Duration // from the delivery's start
	for i := range pushWarmup + pushSamples {
		if i >= pushWarmup {
			cpu.Start()
		}
		t0 := time.Now()
		p, err := sb.pushDemo(ctx, demo.Owner, demo.Name, sb.files)
		if err != nil {
			b.Fatal(err)
		}
		answered := time.Now()
		it, err := f.wait(ctx, p.After)
		if err != nil {
			b.Fatal(err)
		}
		if it.status != event.Succeeded {
			b.Fatalf("push %d: iteration %d %s", i, it.number, it.status)
		}
		seen := it.events[len(it.events)-1].at
		if i < pushWarmup {
			continue
		}
		cpu.Stop()
		total = append(total, seen.Sub(t0))
		job, err := sb.store.Job(ctx, it.jobID)
		if err != nil {
			b.Fatal(err)
		}
		pushStart, _, err := sb.buildLog(ctx, repo, it.jobID)
		if err != nil {
			b.Fatal(err)
		}
		var delivered time.Time
		for _, dl := range p.Deliveries {
			if dl.At.After(t0) && (delivered.IsZero() || dl.At.Before(delivered)) {
				delivered = dl.At
			}
		}
		if delivered.IsZero() {
			b.Fatalf("push %d: no delivery time among %+v", i, p.Deliveries)
		}
		marks := phaseMarks(it, t0, delivered, job.CreatedAt, answered, job.StartedAt, pushStart, seen)
		for k := range phases {
			phases[k] = append(phases[k], marks[k+1].Sub(marks[k]))
		}
		ours = append(ours, seen.Sub(delivered))
	}
	record(b, bench.Series{Figure: "1", Name: "push → DevLoop Succeeded", Case: "total", Unit: "ms",
		Warmup: pushWarmup, Samples: bench.Millis(total), Target: &bench.Target{Stat: "median", Op: "<", Value: 1500},
		Note: "demo app, message.txt changed, cached build; one push at a time; push to the GitHub stand-in until the final DevLoopEvent arrived on /v1/events"})
	record(b, bench.Series{Figure: "1", Name: "push → DevLoop Succeeded", Case: "without the stand-in's commit (the delivery began until the final event arrived)", Unit: "ms",
		Warmup: pushWarmup, Samples: bench.Millis(ours)})
	record(b, cpu.Series("1", "machine CPU busy", "push until the final event arrived"))
	for k, name := range phaseNames {
		record(b, bench.Series{Figure: "1", Name: "push → DevLoop Succeeded", Case: "phase: " + name, Unit: "ms",
			Warmup: pushWarmup, Samples: bench.Millis(phases[k])})
	}
}

// phaseMarks returns the boundaries of phaseNames (one more than phases),
// from the iteration's own event timestamps where it has them.
func phaseMarks(it *iteration, t0, delivered, created, answered, started, pushStart, seen time.Time) []time.Time {
	var meta, built, scStart, scEnd, done time.Time
	for _, a := range it.events {
		ev, ts := a.e.GetEvent(), a.e.GetTimestamp().AsTime()
		switch {
		case ev.GetMetaEvent() != nil:
			meta = ts
		case ev.GetBuildEvent().GetStatus() == event.Complete:
			built = ts
		case ev.GetStatusCheckEvent().GetStatus() == event.Started:
			scStart = ts
		case ev.GetStatusCheckEvent().GetStatus() == event.Succeeded:
			scEnd = ts
		case ev.GetDevLoopEvent().GetStatus() == event.Succeeded:
			done = ts
		}
	}
	if pushStart.IsZero() || pushStart.Before(meta) || pushStart.After(built) {
		pushStart = built // no push line: the push counts as build
	}
	return []time.Time{t0, delivered, created, answered, started, meta, pushStart, built, scStart, scEnd, done, seen}
}

// buildLog reads the job's v2 events: when the image push began (its
// first output line) and how many build-log lines the job had.
func (sb *stackBench) buildLog(ctx context.Context, repo, jobID string) (pushStart time.Time, lines int, err error) {
	evs, err := sb.d.JobEventsV2(ctx, repo, jobID)
	if err != nil {
		return time.Time{}, 0, err
	}
	for _, e := range evs {
		l := e.GetSkaffoldLogEvent()
		if l == nil || !strings.HasPrefix(l.GetTaskId(), event.TaskBuild) {
			continue
		}
		lines++
		if pushStart.IsZero() && strings.HasPrefix(l.GetMessage(), "The push refers to") {
			pushStart = e.GetTimestamp().AsTime()
		}
	}
	return pushStart, lines, nil
}

// runners keeps exactly n runner processes of the stack running.
func (sb *stackBench) runners(b *testing.B, ctx context.Context, prefix string, n int, env []string) func() {
	if p := sb.st.Process("runner"); p != nil && isRunning(p) {
		stopProcess(b, p)
	}
	var ps []*localstack.Process
	for i := range n {
		p, err := sb.st.StartRunner(ctx, fmt.Sprintf("%s-%d", prefix, i+1), env)
		if err != nil {
			b.Fatal(err)
		}
		ps = append(ps, p)
	}
	return func() {
		for _, p := range ps {
			stopProcess(b, p)
		}
	}
}

func isRunning(p *localstack.Process) bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

func stopProcess(b *testing.B, p *localstack.Process) {
	if err := p.Signal(syscall.SIGTERM); err != nil && isRunning(p) {
		b.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(time.Minute):
		p.Signal(syscall.SIGKILL)
		<-p.Done()
	}
}

// withSteps returns the sample's files with steps extra cached build
// steps before message.txt (each a COPY of a file of its own, which
// BuildKit reports as a step; LABEL would not be one), each adding
// build-log lines.
func withSteps(files map[string][]byte, steps int) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range files {
		out[k] = v
	}
	var extra strings.Builder
	for i := range steps {
		fmt.Fprintf(&extra, "COPY extra/f%d /extra/f%d\n", i, i)
		out[fmt.Sprintf("app/extra/f%d", i)] = []byte(strconv.Itoa(i))
	}
	out["app/Dockerfile"] = []byte(strings.Replace(string(files["app/Dockerfile"]), "COPY message.txt", extra.String()+"COPY message.txt", 1))
	return out
}

// writes: the runner's Firestore writes per job, counted by a proxy in
// front of the emulator, for Dockerfiles with more and more build steps
// (build-log lines).
func (sb *stackBench) writes(b *testing.B, ctx context.Context) {
	counter, err := bench.NewWriteCounter(sb.st.URLs.FirestoreHost)
	if err != nil {
		b.Fatal(err)
	}
	defer counter.Close()
	stop := sb.runners(b, ctx, "runner-counted", 1, []string{"FIRESTORE_EMULATOR_HOST=" + counter.Addr})
	defer stop()
	const repo = demo.Owner + "/" + demo.Name
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := follow(fctx, sb.d, repo)
	for _, steps := range []int{0, 30, 120} {
		files := withSteps(sb.files, steps)
		var writes, lines []float64
		byColl := map[string]int64{}
		for i := range writesWarmup + writesPerStep {
			before, beforeColl := counter.Writes(), counter.WritesByCollection()
			p, err := sb.pushDemo(ctx, demo.Owner, demo.Name, files)
			if err != nil {
				b.Fatal(err)
			}
			it, err := f.wait(ctx, p.After)
			if err != nil {
				b.Fatal(err)
			}
			if it.status != event.Succeeded {
				b.Fatalf("steps=%d: iteration %d %s", steps, it.number, it.status)
			}
			// The runner finishes the job (its last writes) after the final
			// event: wait for that, plus its state write.
			if err := sb.waitFinished(ctx, it.jobID); err != nil {
				b.Fatal(err)
			}
			n := counter.Writes() - before
			_, l, err := sb.buildLog(ctx, repo, it.jobID)
			if err != nil {
				b.Fatal(err)
			}
			if i < writesWarmup {
				continue
			}
			writes, lines = append(writes, float64(n)), append(lines, float64(l))
			for k, v := range counter.WritesByCollection() {
				byColl[k] += v - beforeColl[k]
			}
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(byColl)) {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(byColl[k])/float64(len(writes))))
		}
		ls := bench.Summarize(lines)
		record(b, bench.Series{Figure: "6", Name: "Firestore writes per job", Case: fmt.Sprintf("%d extra Dockerfile steps, build-log lines median %.0f", steps, ls.Median),
			Unit: "writes", Warmup: writesWarmup, Samples: writes, Target: &bench.Target{Stat: "max", Op: "<=", Value: 20 + ls.Median/50},
			Note: fmt.Sprintf("%d extra steps: writes per job by collection (mean): %s", steps, strings.Join(parts, ", "))})
		record(b, bench.Series{Figure: "6", Name: "build-log lines per job", Case: fmt.Sprintf("%d extra Dockerfile steps", steps),
			Unit: "lines", Warmup: writesWarmup, Samples: lines,
			Note: "document writes of the runner (every write of each Commit/BatchWrite) counted by a gRPC proxy in front of the Firestore emulator, push until the job is finished"})
	}
}

// waitFinished polls the job until the runner marked it finished.
func (sb *stackBench) waitFinished(ctx context.Context, id string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j, err := sb.store.Job(ctx, id)
		if err != nil {
			return err
		}
		if !j.FinishedAt.IsZero() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %s not finished after 2 minutes: %s", id, j.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scaleOut: jobs per minute with 1, 2 and 4 runner processes on the one
// subscription; each round pushes to scaleRepos repositories at once.
func (sb *stackBench) scaleOut(b *testing.B, ctx context.Context) {
	type repoFiles struct {
		name  string
		files map[string][]byte
	}
	var repos []repoFiles
	for i := range scaleRepos {
		name := fmt.Sprintf("scale%d", i)
		if _, err := sb.d.CreateRepo(ctx, demo.Owner, name, demo.Owner); err != nil {
			b.Fatal(err)
		}
		if _, err := sb.d.Track(ctx, demo.Owner, name); err != nil {
			b.Fatal(err)
		}
		files := map[string][]byte{}
		for k, v := range sb.files {
			files[k] = v
		}
		files["kube-git-deploy.toml"] = []byte(demo.ConfigFile(sb.st.URLs.Registry, demo.Owner, name))
		repos = append(repos, repoFiles{name, files})
	}
	round := func(b *testing.B) (elapsed time.Duration, latencies []time.Duration) {
		t0 := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, len(repos))
		for _, r := range repos {
			wg.Go(func() {
				mu.Lock()
				p, err := sb.pushDemo(ctx, demo.Owner, r.name, r.files)
				mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
				start := time.Now()
				if err := sb.waitFinished(ctx, p.JobID); err != nil {
					errs <- err
					return
				}
				j, err := sb.store.Job(ctx, p.JobID)
				if err != nil {
					errs <- err
					return
				}
				if j.Status != store.StatusSucceeded {
					errs <- fmt.Errorf("%s: job %s %s: %s", r.name, j.ID, j.Status, j.Error)
					return
				}
				mu.Lock()
				latencies = append(latencies, j.FinishedAt.Sub(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		return time.Since(t0), latencies
	}
	for _, n := range []int{1, 2, 4} {
		stop := sb.runners(b, ctx, fmt.Sprintf("runner-scale%d", n), n, nil)
		if n == 1 {
			round(b) // warm-up: every repository's first build and release
		}
		var perMin []float64
		var lat []time.Duration
		var cpu bench.CPUMeter
		for range scaleRounds {
			cpu.Start()
			el, l := round(b)
			cpu.Stop()
			perMin = append(perMin, float64(len(repos))/el.Minutes())
			lat = append(lat, l...)
		}
		stop()
		record(b, bench.Series{Figure: "5", Name: "jobs per minute", Case: fmt.Sprintf("%d runner process(es)", n), Unit: "jobs/min",
			Warmup: map[bool]int{true: 1}[n == 1], Samples: perMin,
			Note: fmt.Sprintf("one sample is a round of %d pushes at once to %d repositories, first push until the last job finished", scaleRepos, scaleRepos)})
		record(b, bench.Series{Figure: "5", Name: "job latency under load", Case: fmt.Sprintf("%d runner process(es)", n), Unit: "ms",
			Samples: bench.Millis(lat), Note: "2xx until the job was finished, per job of the rounds"})
		record(b, cpu.Series("5", "machine CPU busy", fmt.Sprintf("%d runner process(es), per round", n)))
	}
}

// ready: process start → ready of the functions (PublicAPI and PrivateAPI
// are one binary) and the API service, each started startSamples times
// after one warm-up start, on ports of their own.
func (sb *stackBench) ready(b *testing.B, ctx context.Context) {
	env := sb.st.ProcessEnv()
	bin := sb.st.Config.BinDir
	var pub, priv, api []time.Duration
	for i := range startSamples + 1 {
		ports := freePorts(b, 2)
		e := append(append([]string{}, env...), "PUBLIC_HTTP_PORT="+strconv.Itoa(ports[0]), "PRIVATE_HTTP_PORT="+strconv.Itoa(ports[1]))
		times := startAndWait(b, ctx, filepath.Join(bin, localstack.FunctionsBinary), nil, e,
			fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[0]), fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[1]))
		ports = freePorts(b, 2)
		at := startAndWait(b, ctx, filepath.Join(bin, localstack.APIBinary),
			[]string{"--rpc-port", strconv.Itoa(ports[0]), "--rpc-http-port", strconv.Itoa(ports[1])}, env,
			fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]))
		if i == 0 {
			continue // warm-up: the page cache, the emulators' first requests
		}
		pub, priv, api = append(pub, times[0]), append(priv, times[1]), append(api, at[0])
	}
	target := &bench.Target{Stat: "median", Op: "<", Value: 150}
	note := "exec until the endpoint first answered 200 (polled every 2 ms), binary built once"
	record(b, bench.Series{Figure: "7", Name: "start → ready", Case: "PublicAPI (functions binary, /healthz)", Unit: "ms", Warmup: 1, Samples: bench.Millis(pub), Target: target, Note: note})
	record(b, bench.Series{Figure: "7", Name: "start → ready", Case: "PrivateAPI (functions binary, /healthz)", Unit: "ms", Warmup: 1, Samples: bench.Millis(priv), Target: target, Note: note})
	record(b, bench.Series{Figure: "7", Name: "start → ready", Case: "API service (/readyz)", Unit: "ms", Warmup: 1, Samples: bench.Millis(api), Target: target, Note: note})
}

func freePorts(b *testing.B, n int) []int {
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// startAndWait starts path and returns, for each url, the time from the
// start until it answered 200; then it stops the process.
func startAndWait(b *testing.B, ctx context.Context, path string, args, env []string, urls ...string) []time.Duration {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	client := &http.Client{Timeout: time.Second}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()
	times := make([]time.Duration, len(urls))
	deadline := t0.Add(time.Minute)
	for i, u := range urls {
		for {
			if resp, err := client.Get(u); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					times[i] = time.Since(t0)
					break
				}
			}
			select {
			case err := <-exited:
				b.Fatalf("%s exited before it was ready: %v\n%s", path, err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: %s did not answer 200 within a minute\n%s", path, u, out.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return times
}
