package skaffold_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// soakSize reads a size of the soak from the environment (KGD_SOAK_*), or
// its default.
func soakSize(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}

// memFigures are the process's memory and goroutine figures at a moment.
type memFigures struct {
	goroutines int
	heap       uint64 // HeapAlloc after a GC, bytes
	rss, hwm   int64  // VmRSS and VmHWM, KiB
}

func measure(t *testing.T) memFigures {
	t.Helper()
	// Twice: a sync.Pool's objects survive one collection (victim cache).
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f := memFigures{goroutines: runtime.NumGoroutine(), heap: ms.HeapAlloc}
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			f.rss = n
		case "VmHWM":
			f.hwm = n
		}
	}
	return f
}

// TestSoak writes many jobs' events through the store while many streams
// connect, read a while (resuming, replaying, over gRPC and HTTP, v1 and
// v2, one repository or all) and disconnect; afterwards the API's
// goroutines return to what they were before and its heap has not grown
// beyond a generous bound, and no scope's history held more than
// MaxHistory events.
//
// Sizes: KGD_SOAK_JOBS (default 60: the 200 take two minutes or
// more on a busy 2-core machine, whose emulator then commits only a few
// transactions a second), KGD_SOAK_EVENTS per job (500), KGD_SOAK_STREAMS
// (100), KGD_SOAK_REPOS (10), KGD_SOAK_CHUNK events per events document
// (500), KGD_SOAK_CLAIM=1 to create and claim real jobs (with iterations,
// so that a stream of one repository replays its last iterations;
// without, the jobs are only events and such a stream replays the
// repository's whole history). Not parallel: it counts the process's
// goroutines.
func TestSoak(t *testing.T) {
	jobs := soakSize(t, "KGD_SOAK_JOBS", 60)
	perJob := soakSize(t, "KGD_SOAK_EVENTS", 500)
	nStreams := soakSize(t, "KGD_SOAK_STREAMS", 100)
	nRepos := soakSize(t, "KGD_SOAK_REPOS", 10)
	// Events per events document, half v1, half v2: one per job by
	// default, as the emulator on a busy 2-core machine commits only
	// about ten such transactions a second.
	perChunk := soakSize(t, "KGD_SOAK_CHUNK", perJob)
	claim := os.Getenv("KGD_SOAK_CLAIM") == "1" // jobs claimed, with iterations: 2 more writes per job
	const maxHistory = 20_000

	b := newBackend(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b.ctx = ctx
	a := b.startAPI(apiOptions{maxHistory: maxHistory})
	repos := make([]string, nRepos)
	for i := range repos {
		repos[i] = fmt.Sprintf("soak-%d", i)
		b.track("octo", repos[i], allOn)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: nStreams}}

	// Warm-up: the client connections and the code paths, then wait for
	// the listeners to go (Linger) before the baseline.
	for _, tr := range transports {
		wctx, wcancel := context.WithCancel(ctx)
		tr.open(t, a, wctx, streamParams{scope: "octo/" + repos[0]})
		tr.open(t, a, wctx, streamParams{})
		waitFor(t, "warm-up streams", func() bool { return a.svc.Streams() == 2 })
		wcancel()
	}
	waitFor(t, "the warm-up to end", func() bool { return a.svc.Streams() == 0 && a.feed.Listeners() == 0 })
	before := settle(t, 0)

	// Peak figures, sampled.
	var peakHistory, peakStreams atomic.Int64
	var peakHeap atomic.Uint64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			if n := int64(a.feed.Stats().Events); n > peakHistory.Load() {
				peakHistory.Store(n)
			}
			if n := int64(a.svc.Streams()); n > peakStreams.Load() {
				peakStreams.Store(n)
			}
		}
	})

	// Writers: one per repository, its jobs one after another, each
	// claimed (so it has an iteration) and written in chunks.
	start := time.Now()
	var written atomic.Int64
	var writers sync.WaitGroup
	writeErrs := make(chan error, nRepos)
	for r, name := range repos {
		writers.Go(func() {
			for j := r; j < jobs; j += nRepos {
				job := &store.Job{ID: fmt.Sprintf("soak-%d", j), Owner: "octo", Name: name, Iteration: j/nRepos + 1}
				var err error
				if claim {
					job, err = b.store.CreateJob(ctx, store.Job{Owner: "octo", Name: name, DeliveryID: fmt.Sprintf("soak-%d", j)})
					if err == nil {
						job, err = b.store.ClaimJob(ctx, job.ID, "soak-runner", time.Hour, time.Now())
					}
				}
				for c := 0; err == nil && c*perChunk < perJob; c++ {
					batch := store.EventBatch{Job: job.JobRef(), Chunk: c}
					for i := c * perChunk; i < min((c+1)*perChunk, perJob); i += 2 {
						text := fmt.Sprintf("%s/%d/%d", name, j, i)
						batch.V1 = append(batch.V1, &v1pb.LogEntry{Entry: text})
						batch.V2 = append(batch.V2, &v2pb.Event{EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{Message: text}}})
					}
					if err = b.store.AppendEvents(ctx, batch); err == nil {
						written.Add(int64(len(batch.V1) + len(batch.V2)))
					}
				}
				if err != nil {
					writeErrs <- fmt.Errorf("write job %d of %s: %w", j, name, err)
					return
				}
			}
		})
	}
	writing, doneWriting := context.WithCancel(ctx)
	go func() { writers.Wait(); doneWriting() }()

	// Streams: each connects, reads a while, disconnects, and again,
	// until the writers are done.
	var received, connections, cutOff atomic.Int64
	var clients sync.WaitGroup
	clientErrs := make(chan error, nStreams)
	for i := range nStreams {
		clients.Go(func() {
			var last int64 // the last sequence number of a scoped stream
			for round := 0; writing.Err() == nil; round++ {
				// Rounds in pairs per repository: the first replays the
				// window, the second resumes where it stopped.
				p := streamParams{sequence: true}
				if i%4 != 3 {
					p.scope = "octo/" + repos[(i+round/2)%nRepos]
					if round%2 == 0 {
						last = 0
					} else if last > 0 {
						p.since = strconv.FormatInt(last, 10)
					}
				}
				n, lastSeq, err := soakRead(writing, a, hc, i%4, p, last, 200+(i*37+round*101)%5000)
				connections.Add(1)
				received.Add(int64(n))
				last = lastSeq
				switch st, _ := status.FromError(err); {
				case err == nil, writing.Err() != nil:
				case st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "behind"):
					cutOff.Add(1) // a client too slow for the writers: allowed
				default:
					clientErrs <- fmt.Errorf("stream %d round %d %+v: %w", i, round, p, err)
					return
				}
			}
		})
	}
	<-writing.Done()
	writeTime := time.Since(start)
	clients.Wait()
	close(clientErrs)
	for err := range clientErrs {
		t.Error(err)
	}
	select {
	case err := <-writeErrs:
		t.Fatal(err)
	default:
	}
	hc.CloseIdleConnections()
	waitFor(t, "every stream to end", func() bool { return a.svc.Streams() == 0 })
	waitFor(t, "every listener to end (Linger)", func() bool { return a.feed.Listeners() == 0 })
	stopSampling()
	sampler.Wait()
	after := settle(t, before.goroutines)

	t.Logf("soak: %d repositories, %d jobs × %d events = %d events written in %v (%.0f events/s); %d streams made %d connections (peak %d open), received %d events, %d cut off as too slow",
		nRepos, jobs, perJob, written.Load(), writeTime.Round(time.Millisecond), float64(written.Load())/writeTime.Seconds(),
		nStreams, connections.Load(), peakStreams.Load(), received.Load(), cutOff.Load())
	st := a.feed.Stats()
	t.Logf("soak: feed: %d listeners started, %d replaced after MaxHistory events, %d pages read from the store by streams catching up", st.Starts, st.Restarts, st.Reads)
	t.Logf("soak: goroutines %d before, %d after; heap (after GC) %.1f MiB before, %.1f MiB after, peak in use %.1f MiB; RSS %.1f MiB before, %.1f MiB after, high-water %.1f MiB; peak history %d events (MaxHistory %d per scope, %d scopes)",
		before.goroutines, after.goroutines, mib(before.heap), mib(after.heap), mib(peakHeap.Load()),
		float64(before.rss)/1024, float64(after.rss)/1024, float64(after.hwm)/1024, peakHistory.Load(), maxHistory, nRepos+1)
	if written.Load() != int64(jobs*perJob) {
		t.Errorf("wrote %d events, want %d", written.Load(), jobs*perJob)
	}
	if received.Load() == 0 {
		t.Error("the streams received nothing")
	}
	if int(peakHistory.Load()) > (nRepos+1)*(maxHistory+perChunk) {
		t.Errorf("the histories held %d events at the peak, more than MaxHistory %d (+ one batch) for each of %d scopes", peakHistory.Load(), maxHistory, nRepos+1)
	}
	if growth := int64(after.heap) - int64(before.heap); growth > 64<<20 {
		t.Errorf("the heap grew by %.1f MiB over the soak, more than 64 MiB", float64(growth)/(1<<20))
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// settle waits until the process's goroutines are at most want (0: until
// their number stops changing) and returns the figures then.
func settle(t *testing.T, want int) memFigures {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	prev, stable := -1, 0
	for {
		n := runtime.NumGoroutine()
		switch {
		case want > 0 && n <= want:
			return measure(t)
		case want == 0 && n == prev:
			if stable++; stable == 10 {
				return measure(t)
			}
		default:
			stable = 0
		}
		prev = n
		if time.Now().After(deadline) {
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("goroutines: %d, want them back to %d (the baseline)", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// soakRead opens one stream (mode: 0 gRPC v1, 1 HTTP v1, 2 gRPC v2,
// 3 HTTP v2), reads up to n events or until ctx ends, checking that the
// sequence numbers of a scoped stream increase from after, and returns
// how many it read and the last number.
func soakRead(ctx context.Context, a *api, hc *http.Client, mode int, p streamParams, after int64, n int) (int, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next func() (int64, error)
	switch mode {
	case 0, 2:
		md := []string{skaffold.SequenceKey, "true"}
		if p.scope != "" {
			md = append(md, skaffold.ScopeKey, p.scope)
		}
		if p.since != "" {
			md = append(md, skaffold.SinceKey, p.since)
		}
		gctx := metadata.AppendToOutgoingContext(ctx, md...)
		if mode == 0 {
			s, err := a.v1.Events(gctx, &emptypb.Empty{})
			if err != nil {
				return 0, after, err
			}
			next = func() (int64, error) { e, err := s.Recv(); return e.GetKgdSequence(), err }
		} else {
			s, err := a.v2.Events(gctx, &emptypb.Empty{})
			if err != nil {
				return 0, after, err
			}
			next = func() (int64, error) { e, err := s.Recv(); return e.GetKgdSequence(), err }
		}
	default:
		q := "?sequence=true"
		if p.scope != "" {
			q += "&repository=" + p.scope
		}
		if p.since != "" {
			q += "&since=" + p.since
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.httpURL+fmt.Sprintf("/v%d/events", (mode+1)/2)+q, nil)
		if err != nil {
			return 0, after, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, after, err
		}
		defer resp.Body.Close()
		h := &httpEvents{s: &httpStream{resp: resp, r: bufio.NewReader(resp.Body)}, v2: mode == 3}
		next = func() (int64, error) { _, seq, err := h.next(); return seq, err }
	}
	read := 0
	last := after
	for read < n {
		seq, err := next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return read, last, nil
			}
			return read, last, err
		}
		if p.scope != "" {
			if seq <= last {
				return read, last, fmt.Errorf("event %d numbered %d, not after %d", read, seq, last)
			}
			last = seq
		}
		read++
	}
	return read, last, nil
}
