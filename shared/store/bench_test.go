package store_test

import (
	"strconv"
	"testing"
	"time"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// BenchmarkJobWriter measures events (a v1 and a v2 form of one build log
// line) per second through Emit and the final Flush, with the default
// options, against the emulator.
func BenchmarkJobWriter(b *testing.B) {
	e := newEnv(b, 10*time.Minute)
	e.track(b, "alice", "app")
	job := e.createJob(b, store.Job{Owner: "alice", Name: "app", DeliveryID: "bench"})
	type line struct {
		v1 *v1pb.LogEntry
		v2 *v2pb.Event
	}
	lines := make([]line, 1000)
	for i := range lines {
		lines[i].v1, lines[i].v2 = logLine(i)
	}
	w, err := store.NewJobWriter(e.store, job.JobRef(), 0, store.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(e.ctx)

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l := lines[i%len(lines)]
		if err := w.Emit(l.v1, l.v2); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(e.ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkCreateJob measures sequential CreateJob transactions on one
// repository (each reads and updates the repository document).
func BenchmarkCreateJob(b *testing.B) {
	e := newEnv(b, 10*time.Minute)
	e.track(b, "alice", "app")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, err := e.store.CreateJob(e.ctx, store.Job{Owner: "alice", Name: "app", SHA: "abc", DeliveryID: "bench-" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}
