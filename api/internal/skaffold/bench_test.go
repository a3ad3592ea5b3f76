package skaffold_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/bench"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func benchBackend(b *testing.B) (*backend, *api) {
	be := newBackend(b)
	// A benchmark's b.N may need longer than a test's bound.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	be.ctx = ctx
	return be, be.startAPI(apiOptions{})
}

// BenchmarkEventLatency measures the time from the start of an event's
// write (AppendEvents, one events document) to its arrival on each of 1,
// 10, 100 and 1000 concurrent HTTP streams of /v1/events, through the
// emulator's listener, the feed and the gateway. Every case runs on the
// same API and emulators, after a warm-up (the first case never meets a
// cold JVM) and a few warm-up events of its own. p50/p99 are over every
// (event, stream) pair. One op is the whole series (make bench runs it
// with -benchtime=1x); the series are recorded for bench/RESULTS.md.
func BenchmarkEventLatency(b *testing.B) {
	const warmup, samples = 5, 30
	be, a := benchBackend(b)
	type arrival struct {
		seq int
		d   time.Duration
	}
	// run opens n streams, waits until each has seen the case's first
	// event, then writes warmup+samples events one at a time, each once
	// every stream has received the previous one.
	run := func(name string, n, warmup, samples int, cpu *bench.CPUMeter) []time.Duration {
		ctx, cancel := context.WithCancel(be.ctx)
		defer cancel()
		got := make(chan arrival, 4*n)
		var ready sync.WaitGroup
		ready.Add(n)
		for range n {
			s := a.openStream(b, ctx, "/v1/events")
			go func() {
				defer s.resp.Body.Close()
				first := true
				for {
					line, err := s.r.ReadBytes('\n')
					if err != nil {
						return
					}
					at := time.Now()
					var f struct {
						Result struct {
							Entry string `json:"entry"`
						} `json:"result"`
					}
					if json.Unmarshal(line, &f) != nil {
						continue
					}
					// name/seq/unix-nanos; other cases' events are replays.
					parts := strings.Split(f.Result.Entry, "/")
					if len(parts) != 3 || parts[0] != name {
						continue
					}
					seq, _ := strconv.Atoi(parts[1])
					sent, _ := strconv.ParseInt(parts[2], 10, 64)
					if seq == 0 {
						if first {
							first = false
							ready.Done()
						}
						continue
					}
					got <- arrival{seq, at.Sub(time.Unix(0, sent))}
				}
			}()
		}
		ref := store.JobRef{ID: "bench-" + name, Owner: "octo", Name: "bench", Iteration: 1}
		write := func(seq int) {
			err := be.store.AppendEvents(be.ctx, store.EventBatch{Job: ref, Chunk: seq,
				V1: []*v1pb.LogEntry{{Entry: fmt.Sprintf("%s/%d/%d", name, seq, time.Now().UnixNano())}}})
			if err != nil {
				b.Fatal(err)
			}
		}
		write(0) // every stream is connected and caught up
		waitGroup(b, &ready, time.Minute)
		var lat []time.Duration
		for seq := 1; seq <= warmup+samples; seq++ {
			if seq > warmup && cpu != nil {
				cpu.Start()
			}
			write(seq)
			for range n {
				select {
				case r := <-got:
					if r.seq > warmup {
						lat = append(lat, r.d)
					}
				case <-time.After(30 * time.Second):
					b.Fatalf("%s: event %d did not arrive on every stream within 30s", name, seq)
				}
			}
			if seq > warmup && cpu != nil {
				cpu.Stop()
			}
		}
		return lat
	}
	for b.Loop() {
		run("warmup", 10, 20, 20, nil) // the JVM, the listener, the gateway
		for _, n := range []int{1, 10, 100, 1000} {
			var cpu bench.CPUMeter
			lat := run("streams"+strconv.Itoa(n), n, warmup, samples, &cpu)
			s := bench.Series{Figure: "4", Name: "event written → received on /v1/events", Case: fmt.Sprintf("%d stream(s)", n), Unit: "ms",
				Warmup: warmup, Samples: bench.Millis(lat),
				Note: fmt.Sprintf("%d events one at a time, each received by every stream: one sample per (event, stream); in-process API on the emulators, after a warm-up case", samples)}
			if n == 1000 {
				s.Target = &bench.Target{Stat: "p99", Op: "<", Value: 100}
			}
			if err := bench.Record(s); err != nil {
				b.Fatal(err)
			}
			if n >= 100 {
				// The readers are in this process too: its share is the API's
				// and theirs.
				if err := bench.Record(cpu.Series("4", "machine CPU busy", fmt.Sprintf("%d streams, from the write until every stream received the event", n))); err != nil {
					b.Fatal(err)
				}
			}
			st := bench.Summarize(s.Samples)
			b.ReportMetric(st.Median, fmt.Sprintf("p50-ms-%d", n))
			b.ReportMetric(st.P99, fmt.Sprintf("p99-ms-%d", n))
		}
	}
}

// waitGroup waits for wg, failing b after timeout.
func waitGroup(b *testing.B, wg *sync.WaitGroup, timeout time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		b.Fatalf("streams not ready within %s", timeout)
	}
}

// BenchmarkEventThroughput measures events per second sustained from a
// runner's JobWriter (documents of up to 100 events, written every 250 ms
// at most) to 10 HTTP streams that each receive every event. One op is one
// event emitted.
func BenchmarkEventThroughput(b *testing.B) {
	be, a := benchBackend(b)
	ctx, cancel := context.WithCancel(be.ctx)
	defer cancel()
	const streams = 10
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range streams {
		s := a.openStream(b, ctx, "/v1/events")
		wg.Go(func() {
			for range b.N {
				if _, err := s.r.ReadBytes('\n'); err != nil {
					b.Errorf("stream: %v", err)
					return
				}
			}
		})
	}
	w, err := store.NewJobWriter(be.store, store.JobRef{ID: "bench", Owner: "octo", Name: "bench", Iteration: 1}, 0, store.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		if err := w.Emit(&v1pb.LogEntry{Entry: fmt.Sprintf("Step %d/%d : RUN make", i, b.N)}, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(be.ctx); err != nil {
		b.Fatal(err)
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
