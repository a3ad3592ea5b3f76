package skaffold_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

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
// 10 and 100 concurrent HTTP streams of /v1/events, through the emulator's
// listener, the feed and the gateway. One op is one event delivered to all
// streams; p50-ms and p99-ms are over every (event, stream) pair.
func BenchmarkEventLatency(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run("streams="+strconv.Itoa(n), func(b *testing.B) {
			be, a := benchBackend(b)
			ctx, cancel := context.WithCancel(be.ctx)
			defer cancel()
			got := make(chan time.Duration, 1024)
			var ready sync.WaitGroup
			for range n {
				s := a.openStream(b, ctx, "/v1/events")
				ready.Add(1)
				go func() {
					first := true
					for {
						line, err := s.r.ReadBytes('\n')
						if err != nil {
							return
						}
						var f struct {
							Result struct {
								Entry string `json:"entry"`
							} `json:"result"`
						}
						if json.Unmarshal(line, &f) != nil {
							continue
						}
						sent, _ := strconv.ParseInt(f.Result.Entry, 10, 64)
						if first {
							first = false
							ready.Done()
							continue
						}
						got <- time.Since(time.Unix(0, sent))
					}
				}()
			}
			ref := store.JobRef{ID: "bench", Owner: "octo", Name: "bench", Iteration: 1}
			write := func(chunk int) {
				err := be.store.AppendEvents(be.ctx, store.EventBatch{Job: ref, Chunk: chunk,
					V1: []*v1pb.LogEntry{{Entry: strconv.FormatInt(time.Now().UnixNano(), 10)}}})
				if err != nil {
					b.Fatal(err)
				}
			}
			write(0) // every stream is connected and caught up
			ready.Wait()
			var lat []time.Duration
			b.ResetTimer()
			for i := range b.N {
				write(i + 1)
				for range n {
					select {
					case d := <-got:
						lat = append(lat, d)
					case <-time.After(30 * time.Second):
						b.Fatal("an event did not arrive within 30s")
					}
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
		})
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
