package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestWatchEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	a := store.JobRef{ID: "job-a", Owner: "octo", Name: "app", Iteration: 1}
	b := store.JobRef{ID: "job-b", Owner: "octo", Name: "other", Iteration: 1}
	appendOne := func(ref store.JobRef, chunk int) {
		t.Helper()
		entry := fmt.Sprintf("%s/%d", ref.ID, chunk)
		if err := e.store.AppendEvents(e.ctx, store.EventBatch{Job: ref, Chunk: chunk, V1: []*v1pb.LogEntry{{Entry: entry}}}); err != nil {
			t.Fatal(err)
		}
	}
	// History before anyone watches.
	appendOne(a, 0)
	appendOne(b, 0)
	appendOne(a, 1)

	watch := func(scope string) (<-chan string, context.CancelFunc, <-chan error) {
		ctx, cancel := context.WithCancel(e.ctx)
		got := make(chan string, 16)
		done := make(chan error, 1)
		go func() {
			done <- e.store.WatchEvents(ctx, scope, store.From{}, func(b store.EventBatch) error {
				for _, le := range b.V1 {
					got <- le.GetEntry()
				}
				return nil
			})
		}()
		return got, cancel, done
	}
	next := func(ch <-chan string) string {
		t.Helper()
		select {
		case s := <-ch:
			return s
		case <-time.After(15 * time.Second):
			t.Fatal("no event arrived")
			return ""
		}
	}

	all, stopAll, doneAll := watch("")
	one, stopOne, doneOne := watch("Octo/App")
	for _, want := range []string{"job-a/0", "job-b/0", "job-a/1"} {
		if got := next(all); got != want {
			t.Errorf("replay (all): got %s, want %s", got, want)
		}
	}
	for _, want := range []string{"job-a/0", "job-a/1"} {
		if got := next(one); got != want {
			t.Errorf("replay (octo/app): got %s, want %s", got, want)
		}
	}
	// Live.
	appendOne(b, 1)
	appendOne(a, 2)
	for _, want := range []string{"job-b/1", "job-a/2"} {
		if got := next(all); got != want {
			t.Errorf("live (all): got %s, want %s", got, want)
		}
	}
	if got := next(one); got != "job-a/2" {
		t.Errorf("live (octo/app): got %s, want job-a/2", got)
	}
	stopAll()
	stopOne()
	for _, d := range []<-chan error{doneAll, doneOne} {
		if err := <-d; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchEvents after cancel = %v, want context.Canceled", err)
		}
	}
	if err := e.store.WatchEvents(e.ctx, "not a repo", store.From{}, func(store.EventBatch) error { return nil }); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("WatchEvents(bad scope) = %v, want ErrInvalid", err)
	}
}

// TestWatchEventsCommitted: each batch comes with its commit time, in the
// order of the scope, and a watch from one of those times (From.Since,
// inclusive) starts with that batch.
func TestWatchEventsCommitted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	refs := []store.JobRef{
		{ID: "job-a", Owner: "octo", Name: "app", Iteration: 1},
		{ID: "job-b", Owner: "octo", Name: "other", Iteration: 1},
		{ID: "job-c", Owner: "octo", Name: "app", Iteration: 2},
	}
	for _, ref := range refs {
		if err := e.store.AppendEvents(e.ctx, store.EventBatch{Job: ref, V1: []*v1pb.LogEntry{{Entry: ref.ID}}}); err != nil {
			t.Fatal(err)
		}
	}
	type got struct {
		id      string
		created time.Time
	}
	watch := func(from store.From, n int) []got {
		t.Helper()
		ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
		defer cancel()
		var out []got
		stop := errors.New("enough")
		err := e.store.WatchEventsCommitted(ctx, "", from, func(b store.EventBatch, created time.Time) error {
			out = append(out, got{b.Job.ID, created})
			if len(out) == n {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Fatalf("WatchEventsCommitted = %v after %v", err, out)
		}
		return out
	}
	all := watch(store.From{}, 3)
	for i, g := range all {
		if g.created.IsZero() || (i > 0 && g.created.Before(all[i-1].created)) {
			t.Errorf("commit times %v are not set and non-decreasing", all)
		}
	}
	if again := watch(store.From{Since: all[1].created}, 1); again[0].id != all[1].id || !again[0].created.Equal(all[1].created) {
		t.Errorf("watch from %v starts with %v, want %v", all[1].created, again[0], all[1])
	}
}

// TestLastSequence: 0 before the first event, then the number of the last
// event stored, per repository; a bad repository is ErrInvalid.
func TestLastSequence(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	last := func(owner, name string) int64 {
		t.Helper()
		n, err := e.store.LastSequence(e.ctx, owner, name)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := last("octo", "app"); n != 0 {
		t.Errorf("LastSequence before any event = %d, want 0", n)
	}
	a := store.JobRef{ID: "job-a", Owner: "octo", Name: "app", Iteration: 1}
	b := store.JobRef{ID: "job-b", Owner: "octo", Name: "other", Iteration: 1}
	for chunk, ref := range []store.JobRef{a, b, a} {
		batch := store.EventBatch{Job: ref, Chunk: chunk, V1: []*v1pb.LogEntry{{Entry: "x"}, {Entry: "y"}}, V2: []*v2pb.Event{{}}}
		if err := e.store.AppendEvents(e.ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if n := last("octo", "app"); n != 6 {
		t.Errorf("LastSequence(octo/app) = %d, want 6 (two batches of three)", n)
	}
	if n := last("octo", "other"); n != 3 {
		t.Errorf("LastSequence(octo/other) = %d, want 3", n)
	}
	if _, err := e.store.LastSequence(e.ctx, "octo", ".."); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("LastSequence(octo/..) = %v, want ErrInvalid", err)
	}
}
