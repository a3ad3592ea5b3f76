package store_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// TestSequences: every event of a repository gets a number of the
// repository's own sequence — unique, gapless, increasing with the order
// batches are committed and, within a batch, with the order the events
// were emitted (v1 and v2 interleaved) — also when several jobs of the
// repository write at the same time. Another repository counts on its
// own.
func TestSequences(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	e.track(t, "bob", "app")
	const jobs, events = 4, 250
	var wg sync.WaitGroup
	for i := range jobs {
		j := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "seq-" + string(rune('a'+i))})
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := store.NewJobWriter(e.store, j.JobRef(), 0, store.WriterOptions{MaxEvents: 7, FlushInterval: time.Millisecond,
				// Four writers contend for one counter document: on a busy
				// machine the emulator's transactions take long (a make test
				// beside a CI run passed 30 s). The test is about numbering.
				WriteTimeout: testTimeout})
			if err != nil {
				t.Error(err)
				return
			}
			for k := range events {
				v1, v2 := logLine(k)
				switch k % 3 { // both, v1 only, v2 only
				case 1:
					v2 = nil
				case 2:
					v1 = nil
				}
				if err := w.Emit(v1, v2); err != nil {
					t.Error(err)
					return
				}
			}
			if err := w.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	other := e.createJob(t, store.Job{Owner: "bob", Name: "app", DeliveryID: "seq-bob"})
	v1, v2 := logLine(0)
	if err := e.store.AppendEvents(e.ctx, store.EventBatch{Job: other.JobRef(), V1: []*v1pb.LogEntry{v1}, V2: []*v2pb.Event{v2}}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	var all []int64
	perBatchLast := map[string]int64{}
	err := e.store.ReadEvents(e.ctx, "alice/app", store.From{}, func(b store.EventBatch) error {
		seqs := slices.Concat(b.V1Seq, b.V2Seq)
		if len(b.V1Seq) != len(b.V1) || len(b.V2Seq) != len(b.V2) {
			t.Errorf("batch %s-%d: %d/%d sequence numbers for %d/%d events", b.Job.ID, b.Chunk, len(b.V1Seq), len(b.V2Seq), len(b.V1), len(b.V2))
		}
		slices.Sort(seqs)
		if prev, ok := perBatchLast[b.Job.ID]; ok && seqs[0] <= prev {
			t.Errorf("job %s chunk %d starts at %d, not after its previous chunk's %d", b.Job.ID, b.Chunk, seqs[0], prev)
		}
		perBatchLast[b.Job.ID] = seqs[len(seqs)-1]
		// Emission order within the batch: events alternate both, v1,
		// v2, so v1 and v2 numbers interleave rather than v1 first.
		all = append(all, seqs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	want := jobs * (events/3*4 + 2) // per 3 emits: both (2) + v1 (1) + v2 (1); 250 = 83*3+1
	if len(all) != want {
		t.Fatalf("%d numbered events, want %d", len(all), want)
	}
	for i, s := range all {
		if s != int64(i+1) {
			t.Fatalf("sequence %v… is not 1..%d without gaps or repeats (at %d: %d)", all[:min(len(all), 10)], want, i, s)
		}
	}
	var bob []int64
	if err := e.store.ReadEvents(e.ctx, "bob/app", store.From{}, func(b store.EventBatch) error {
		bob = append(bob, slices.Concat(b.V1Seq, b.V2Seq)...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(bob, []int64{1, 2}) {
		t.Errorf("bob/app's sequence = %v, want its own 1, 2", bob)
	}
}

// TestResume: From{AfterSeq} delivers exactly the events numbered higher,
// also from the middle of a batch; IterationStart finds an iteration's
// position; events carry an expiry.
func TestResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "carol", "app")
	var jobs []*store.Job
	for i := range 3 {
		j := e.createJob(t, store.Job{Owner: "carol", Name: "app", DeliveryID: "resume-" + string(rune('a'+i))})
		jobs = append(jobs, j)
		for chunk := range 2 {
			var v1s []*v1pb.LogEntry
			for k := range 5 {
				v1, _ := logLine(k)
				v1s = append(v1s, v1)
			}
			if err := e.store.AppendEvents(e.ctx, store.EventBatch{Job: j.JobRef(), Chunk: chunk, V1: v1s}); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(from store.From) []int64 {
		t.Helper()
		var seqs []int64
		if err := e.store.ReadEvents(e.ctx, "carol/app", from, func(b store.EventBatch) error {
			if len(b.V1) != len(b.V1Seq) {
				t.Errorf("batch with %d events and %d numbers", len(b.V1), len(b.V1Seq))
			}
			seqs = append(seqs, b.V1Seq...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	if got := read(store.From{}); len(got) != 30 || got[0] != 1 || got[29] != 30 {
		t.Fatalf("all events = %v, want 1..30", got)
	}
	if got := read(store.From{AfterSeq: 13}); len(got) != 17 || got[0] != 14 {
		t.Errorf("after 13 = %v, want 14..30 (from the middle of a batch)", got)
	}
	if got := read(store.From{AfterSeq: 30}); len(got) != 0 {
		t.Errorf("after the last = %v, want nothing", got)
	}
	start, err := e.store.IterationStart(e.ctx, "carol", "app", jobs[2].Iteration)
	if err != nil || start != 20 {
		t.Errorf("IterationStart(third) = %d, %v; want 20", start, err)
	}
	if _, err := e.store.IterationStart(e.ctx, "carol", "app", 99); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("IterationStart(unknown) = %v, want ErrNotFound", err)
	}
	if err := e.store.ReadEvents(e.ctx, "", store.From{AfterSeq: 3}, func(store.EventBatch) error { return nil }); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("a sequence number without a repository scope = %v, want ErrInvalid", err)
	}
	snap, err := e.client.Collection(store.EventsCollection).Where("job_id", "==", jobs[0].ID).Limit(1).Documents(e.ctx).GetAll()
	if err != nil || len(snap) != 1 {
		t.Fatal(err)
	}
	if exp, _ := snap[0].DataAt("expire_at"); exp.(time.Time).Sub(t0) != store.DefaultRetention {
		t.Errorf("expire_at = %v, want written + %v", exp, store.DefaultRetention)
	}
}
