package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
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
