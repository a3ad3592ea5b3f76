package store_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func (e *env) newWriter(t testing.TB, ref store.JobRef, start int, opts store.WriterOptions) *store.JobWriter {
	t.Helper()
	w, err := store.NewJobWriter(e.store, ref, start, opts)
	if err != nil {
		t.Fatalf("NewJobWriter: %v", err)
	}
	t.Cleanup(func() { w.Close(e.ctx) })
	return w
}

func TestNewJobWriter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	ok := store.JobRef{ID: "j1", Owner: "alice", Name: "app", Iteration: 1}
	tests := []struct {
		name  string
		s     *store.Store
		ref   store.JobRef
		start int
	}{
		{name: "nil-store", s: nil, ref: ok},
		{name: "no-job-id", s: e.store, ref: store.JobRef{Owner: "alice", Name: "app"}},
		{name: "bad-owner", s: e.store, ref: store.JobRef{ID: "j1", Owner: "a/b", Name: "app"}},
		{name: "negative-start", s: e.store, ref: ok, start: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := store.NewJobWriter(tt.s, tt.ref, tt.start, store.WriterOptions{}); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("NewJobWriter() = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestJobWriterManyEvents streams a 10,000-line build: the lines must be
// batched into few documents and all read back in order.
func TestJobWriterManyEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{})

	const n = 10000
	for i := range n {
		if err := w.Emit(logLine(i)); err != nil {
			t.Fatalf("Emit(%d): %v", i, err)
		}
	}
	if err := w.Close(e.ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	docs := e.count(t, store.EventsCollection, "job_id", job.ID)
	if docs > 150 {
		t.Errorf("%d events documents for %d events, want at most 150", docs, n)
	}
	t.Logf("%d events in %d documents", n, docs)
	h, err := e.store.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatalf("JobEvents: %v", err)
	}
	if len(h.V1) != n || len(h.V2) != n {
		t.Fatalf("read back %d v1 and %d v2 events, want %d each", len(h.V1), len(h.V2), n)
	}
	for i := range n {
		want1, want2 := logLine(i)
		if diff := cmp.Diff(want1, h.V1[i], protocmp.Transform()); diff != "" {
			t.Fatalf("v1 event %d (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(want2, h.V2[i], protocmp.Transform()); diff != "" {
			t.Fatalf("v2 event %d (-want +got):\n%s", i, diff)
		}
	}
	if h.NextChunk != docs {
		t.Errorf("NextChunk = %d, want %d (chunks without gaps)", h.NextChunk, docs)
	}
}

func TestJobWriterChunking(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	events := func(n, size int) []*v2pb.Event {
		var out []*v2pb.Event
		for i := range n {
			msg := strconv.Itoa(i) + ":" + strings.Repeat("y", size)
			out = append(out, &v2pb.Event{EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{Message: msg}}})
		}
		return out
	}
	tests := []struct {
		name     string
		opts     store.WriterOptions
		events   []*v2pb.Event
		wantDocs int
	}{
		{name: "by-count", opts: store.WriterOptions{MaxEvents: 10}, events: events(35, 10), wantDocs: 4},
		// 200 KiB each, 512 KiB per chunk by default: 2 | 2 | 1.
		{name: "by-size", events: events(5, 200<<10), wantDocs: 3},
		{name: "oversized-event-alone", opts: store.WriterOptions{MaxBytes: 1 << 10}, events: events(3, 300<<10), wantDocs: 3},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "chunking-" + strconv.Itoa(i)})
			tt.opts.FlushInterval = time.Hour // only full chunks before Flush
			w := e.newWriter(t, job.JobRef(), 0, tt.opts)
			for _, ev := range tt.events {
				if err := w.Emit(nil, ev); err != nil {
					t.Fatalf("Emit: %v", err)
				}
			}
			if err := w.Flush(e.ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if got := e.count(t, store.EventsCollection, "job_id", job.ID); got != tt.wantDocs {
				t.Errorf("documents = %d, want %d", got, tt.wantDocs)
			}
			h, err := e.store.JobEvents(e.ctx, job.ID)
			if err != nil {
				t.Fatalf("JobEvents: %v", err)
			}
			if diff := cmp.Diff(tt.events, h.V2, protocmp.Transform()); diff != "" {
				t.Errorf("events read back differ (-want +got):\n%.2000s", diff)
			}
			if len(h.V1) != 0 {
				t.Errorf("read back %d v1 events, want none", len(h.V1))
			}
		})
	}
}

// TestJobWriterFlush checks that Flush writes a partial chunk at once and
// that a writer taking a job over continues at NextChunk.
func TestJobWriterFlush(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	opts := store.WriterOptions{FlushInterval: time.Hour}

	first := e.newWriter(t, job.JobRef(), 0, opts)
	for i := range 3 {
		if err := first.Emit(logLine(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Flush(e.ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := first.Flush(e.ctx); err != nil { // nothing buffered: no write
		t.Fatalf("second Flush: %v", err)
	}
	h, err := e.store.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.V2) != 3 || h.NextChunk != 1 {
		t.Fatalf("after Flush: %d events, next chunk %d; want 3, 1", len(h.V2), h.NextChunk)
	}
	// The first runner dies here (its writer is simply abandoned);
	// another one takes over.
	second := e.newWriter(t, job.JobRef(), h.NextChunk, opts)
	for i := 3; i < 5; i++ {
		if err := second.Emit(logLine(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := second.Close(e.ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	h, err = e.store.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var want []*v2pb.Event
	for i := range 5 {
		_, v2 := logLine(i)
		want = append(want, v2)
	}
	if diff := cmp.Diff(want, h.V2, protocmp.Transform()); diff != "" {
		t.Errorf("events after takeover (-want +got):\n%s", diff)
	}
}

// TestJobWriterLostOwnership: when another writer already wrote the chunk
// this one is about to write, the writer stops and reports ErrAlreadyExists.
func TestJobWriterLostOwnership(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})

	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{FlushInterval: time.Hour})
	_, theirs := logLine(100)
	if err := e.store.AppendEvents(e.ctx, store.EventBatch{Job: job.JobRef(), Chunk: 0, V2: []*v2pb.Event{theirs}}); err != nil {
		t.Fatalf("AppendEvents by the new owner: %v", err)
	}
	if err := w.Emit(logLine(1)); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	if err := w.Flush(e.ctx); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Flush = %v, want ErrAlreadyExists", err)
	}
	if err := w.Emit(logLine(2)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("Emit after losing ownership = %v, want ErrAlreadyExists", err)
	}
	if err := w.SetState(&v1pb.State{}, &v2pb.State{}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("SetState after losing ownership = %v, want ErrAlreadyExists", err)
	}
	if err := w.Close(e.ctx); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("Close after losing ownership = %v, want ErrAlreadyExists", err)
	}
	h, err := e.store.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*v2pb.Event{theirs}, h.V2, protocmp.Transform()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if _, err := e.store.State(e.ctx, "alice", "app"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("State = %v, want ErrNotFound (nothing written after the loss)", err)
	}
}

// TestJobWriterBackgroundError: a write error of the background goroutine
// (here: the chunk taken by another writer) surfaces in the next Emit.
func TestJobWriterBackgroundError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	_, theirs := logLine(0)
	if err := e.store.AppendEvents(e.ctx, store.EventBatch{Job: job.JobRef(), Chunk: 0, V2: []*v2pb.Event{theirs}}); err != nil {
		t.Fatal(err)
	}
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{MaxEvents: 1, FlushInterval: time.Hour})
	// Each Emit fills a chunk and wakes the goroutine; its failed write
	// must show up in a later Emit before the context ends.
	for i := 1; ; i++ {
		err := w.Emit(logLine(i))
		if errors.Is(err, store.ErrAlreadyExists) {
			break
		}
		if err != nil {
			t.Fatalf("Emit %d = %v, want nil or ErrAlreadyExists", i, err)
		}
		if e.ctx.Err() != nil {
			t.Fatalf("the background error never reached Emit")
		}
		if i%100 == 0 {
			// Give the goroutine a chance to run on a busy machine
			// without sleeping: Flush waits for its write to end.
			if err := w.Flush(e.ctx); errors.Is(err, store.ErrAlreadyExists) {
				break
			}
		}
	}
	if err := w.Close(e.ctx); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("Close = %v, want ErrAlreadyExists", err)
	}
}

func TestJobWriterEmitErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{})

	huge := &v1pb.LogEntry{Entry: strings.Repeat("z", store.MaxEventBatchBytes)}
	if err := w.Emit(huge, nil); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Emit(huge) = %v, want ErrTooLarge", err)
	}
	if err := w.Emit(nil, nil); err != nil {
		t.Fatalf("Emit(nil, nil) = %v", err)
	}
	if err := w.Emit(logLine(1)); err != nil { // the writer still works
		t.Fatalf("Emit after ErrTooLarge: %v", err)
	}
	if err := w.Close(e.ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.Close(e.ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := w.Emit(logLine(2)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Emit after Close = %v, want ErrClosed", err)
	}
	if err := w.Flush(e.ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	if h, err := e.store.JobEvents(e.ctx, job.ID); err != nil || len(h.V1) != 1 {
		t.Errorf("JobEvents = %v, %v; want the one event", h, err)
	}
}

// TestJobWriterStateCoalescing sets the state 200 times in a burst: the
// store's version counter shows how many writes reached Firestore.
func TestJobWriterStateCoalescing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	interval := time.Second
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{StateInterval: interval})

	state := func(i int) (*v1pb.State, *v2pb.State) {
		s := strconv.Itoa(i)
		return &v1pb.State{BuildState: &v1pb.BuildState{Artifacts: map[string]string{"app": s}}},
			&v2pb.State{BuildState: &v2pb.BuildState{Artifacts: map[string]string{"app": s}}}
	}
	start := time.Now()
	const n = 200
	for i := range n {
		if err := w.Emit(logLine(i)); err != nil {
			t.Fatal(err)
		}
		if err := w.SetState(state(i)); err != nil {
			t.Fatalf("SetState(%d): %v", i, err)
		}
	}
	if err := w.Close(e.ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	elapsed := time.Since(start)

	got, err := e.store.State(e.ctx, "alice", "app")
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	want1, want2 := state(n - 1)
	if diff := cmp.Diff(want1, got.V1, protocmp.Transform()); diff != "" {
		t.Errorf("final v1 state (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want2, got.V2, protocmp.Transform()); diff != "" {
		t.Errorf("final v2 state (-want +got):\n%s", diff)
	}
	if got.JobID != job.ID || got.Iteration != job.Iteration {
		t.Errorf("state of job %s iteration %d, want %s %d", got.JobID, got.Iteration, job.ID, job.Iteration)
	}
	// One write at once, at most one per interval after it, one at Close.
	bound := int64(2 + elapsed/interval)
	if got.Version < 1 || got.Version > bound {
		t.Errorf("%d state writes for %d SetState calls in %v, want 1..%d", got.Version, n, elapsed, bound)
	}
	t.Logf("%d SetState calls in %v: %d state writes", n, elapsed, got.Version)
}

// TestJobWriterUnchangedState: a state equal to the one written is not
// written again (a job sets its state after every log line).
func TestJobWriterUnchangedState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "same")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "same", DeliveryID: "d-same"})
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{StateInterval: time.Millisecond})
	state := func(artifacts map[string]string) (*v1pb.State, *v2pb.State) {
		return &v1pb.State{BuildState: &v1pb.BuildState{Artifacts: artifacts}}, nil
	}
	// Maps of several keys: their encoding must not depend on map order.
	a := map[string]string{"app": "In Progress", "web": "Complete", "db": "Complete", "cache": "Complete"}
	b := map[string]string{"app": "Complete", "web": "Complete", "db": "Complete", "cache": "Complete"}
	steps := []struct {
		artifacts   map[string]string
		wantVersion int64
	}{
		{a, 1}, {a, 1}, {a, 1}, {b, 2}, {b, 2}, {a, 3},
	}
	for i, step := range steps {
		for range 10 {
			if err := w.SetState(state(step.artifacts)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(e.ctx); err != nil {
			t.Fatal(err)
		}
		got, err := e.store.State(e.ctx, "alice", "same")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != step.wantVersion {
			t.Errorf("step %d: %d state writes, want %d", i, got.Version, step.wantVersion)
		}
	}
}

// recordHandler passes the records it handles to a channel as their
// message followed by their chunk attribute if any ("events written
// chunk=3"), so a test can wait for the writer's background writes without
// sleeping, and see their order.
type recordHandler struct{ msgs chan<- string }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "chunk" {
			msg += " chunk=" + a.Value.String()
		}
		return true
	})
	h.msgs <- msg
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// awaitRecord reads recordHandler's records until want (or, with prefix,
// a record starting with want and a space), failing t at ctx's deadline.
func awaitRecord(t *testing.T, ctx context.Context, msgs <-chan string, want string, prefix bool) {
	t.Helper()
	for {
		select {
		case m := <-msgs:
			if m == want || (prefix && strings.HasPrefix(m, want+" ")) {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no %q record before the deadline", want)
		}
	}
}

// TestJobWriterBackground checks that the goroutine writes a partial chunk
// and the state on its own, without Flush.
func TestJobWriterBackground(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	msgs := make(chan string, 100)
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{
		FlushInterval: 10 * time.Millisecond,
		StateInterval: 10 * time.Millisecond,
		Logger:        slog.New(recordHandler{msgs}),
	})
	wait := func(want string) { t.Helper(); awaitRecord(t, e.ctx, msgs, want, true) }

	for i := range 3 {
		if err := w.Emit(logLine(i)); err != nil {
			t.Fatal(err)
		}
	}
	wait("events written")
	h, err := e.store.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.V1) != 3 {
		t.Errorf("after the background write: %d events, want 3", len(h.V1))
	}

	v2 := &v2pb.State{BuildState: &v2pb.BuildState{Artifacts: map[string]string{"app": "Complete"}}}
	if err := w.SetState(nil, v2); err != nil {
		t.Fatal(err)
	}
	wait("state written")
	st, err := e.store.State(e.ctx, "alice", "app")
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if diff := cmp.Diff(v2, st.V2, protocmp.Transform()); diff != "" {
		t.Errorf("state after the background write (-want +got):\n%s", diff)
	}
}

// TestJobWriterFinalStateFirst: once an iteration's final DevLoopEvent is
// emitted, its state lands before its last events, so a watcher that sees
// the final event reads the final state. The final event is emitted while
// the background goroutine is busy writing a backlog of one-event chunks:
// it must stop at the iteration's end, not write the final event in the
// same loop (which a busy CI machine once showed).
func TestJobWriterFinalStateFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "final")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "final", DeliveryID: "d-final"})
	msgs := make(chan string, 1000)
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{
		MaxEvents: 1, FlushInterval: time.Millisecond, StateInterval: time.Hour,
		Logger: slog.New(recordHandler{msgs}),
	})
	status := func(s string) (*v1pb.State, *v2pb.State) {
		return &v1pb.State{DeployState: &v1pb.DeployState{Status: s}}, nil
	}
	devLoop := func(s string) *v1pb.LogEntry {
		return &v1pb.LogEntry{Event: &v1pb.Event{EventType: &v1pb.Event_DevLoopEvent{DevLoopEvent: &v1pb.DevLoopEvent{Status: s}}}}
	}
	next := func(want string) { t.Helper(); awaitRecord(t, e.ctx, msgs, want, false) }
	if err := w.SetState(status("In Progress")); err != nil {
		t.Fatal(err)
	}
	next("state written") // the next one is at least StateInterval away
	const backlog = 200
	if err := w.Emit(devLoop("In Progress"), nil); err != nil {
		t.Fatal(err)
	}
	for i := range backlog - 1 {
		if err := w.Emit(logLine(i)); err != nil {
			t.Fatal(err)
		}
	}
	next("events written chunk=0") // the goroutine is writing the backlog, one chunk per write
	if err := w.Emit(devLoop("Succeeded"), nil); err != nil {
		t.Fatal(err)
	}
	if err := w.SetState(status("Complete")); err != nil {
		t.Fatal(err)
	}
	// The goroutine writes the final state, then the final event, without
	// waiting for Close.
	var order []string
	for m := ""; m != "events written chunk="+strconv.Itoa(backlog); {
		select {
		case m = <-msgs:
			if m == "state written" || strings.HasPrefix(m, "events written chunk="+strconv.Itoa(backlog)) {
				order = append(order, m)
			}
		case <-e.ctx.Done():
			t.Fatalf("the final event was not written before the deadline (writes seen: %q)", order)
		}
	}
	if want := []string{"state written", "events written chunk=" + strconv.Itoa(backlog)}; !slices.Equal(order, want) {
		t.Errorf("writes after the final event was emitted: %q, want %q", order, want)
	}
	st, err := e.store.State(e.ctx, "alice", "final")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.V1.GetDeployState().GetStatus(); got != "Complete" {
		t.Errorf("state once the final event is written = %q, want Complete", got)
	}
	if err := w.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	h, err := e.store.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.V1) != backlog+1 || h.V1[backlog].GetEvent().GetDevLoopEvent().GetStatus() != "Succeeded" {
		t.Errorf("%d events recorded, want %d ending with the final DevLoopEvent", len(h.V1), backlog+1)
	}
}

// TestJobWriterOutputInterval: partial chunks of output alone are written
// at most once per OutputInterval; a status event is not held back by it,
// and takes the waiting output with it.
func TestJobWriterOutputInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "output")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "output", DeliveryID: "d-output"})
	msgs := make(chan string, 100)
	w := e.newWriter(t, job.JobRef(), 0, store.WriterOptions{
		FlushInterval: time.Millisecond, OutputInterval: time.Hour, StateInterval: time.Hour,
		Logger: slog.New(recordHandler{msgs}),
	})
	next := func(want string) { t.Helper(); awaitRecord(t, e.ctx, msgs, want, false) }
	if err := w.Emit(logLine(0)); err != nil {
		t.Fatal(err)
	}
	next("events written chunk=0") // no chunk yet: the first output goes at once
	if err := w.Emit(logLine(1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Emit(logLine(2)); err != nil {
		t.Fatal(err)
	}
	// Output waits (an hour here); a status event goes within
	// FlushInterval, with the output before it in the same chunk.
	status := &v1pb.LogEntry{Event: &v1pb.Event{EventType: &v1pb.Event_BuildEvent{BuildEvent: &v1pb.BuildEvent{Artifact: "app", Status: "Complete"}}}}
	if err := w.Emit(status, nil); err != nil {
		t.Fatal(err)
	}
	next("events written chunk=1")
	h, err := e.store.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h.NextChunk != 2 || len(h.V1) != 4 || h.V1[3].GetEvent().GetBuildEvent() == nil {
		t.Errorf("after the status event: %d chunks, %d v1 events, want 2 chunks of 4 events ending with the BuildEvent", h.NextChunk, len(h.V1))
	}
}
