package feed_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/feed"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// scriptedWatcher stands in for Firestore's listener: each WatchEvents
// call replays the batches written so far and then follows new ones, as
// store.WatchEvents does (its behaviour against the emulator is tested in
// shared/store and, through this package, in api/internal/skaffold). The
// feed's bookkeeping — listener sharing, linger, failure, lag — is what
// is under test here.
type scriptedWatcher struct {
	mu      sync.Mutex
	batches []store.EventBatch
	wake    chan struct{}
	calls   int
	fail    error // returned by running watches once set
}

func newWatcher() *scriptedWatcher { return &scriptedWatcher{wake: make(chan struct{})} }

func (w *scriptedWatcher) write(entries ...string) {
	w.mu.Lock()
	b := store.EventBatch{}
	for _, e := range entries {
		b.V1 = append(b.V1, &v1pb.LogEntry{Entry: e})
	}
	w.batches = append(w.batches, b)
	close(w.wake)
	w.wake = make(chan struct{})
	w.mu.Unlock()
}

func (w *scriptedWatcher) breakAll(err error) {
	w.mu.Lock()
	w.fail = err
	close(w.wake)
	w.wake = make(chan struct{})
	w.mu.Unlock()
}

func (w *scriptedWatcher) WatchEvents(ctx context.Context, _ string, _ store.From, fn func(store.EventBatch) error) error {
	w.mu.Lock()
	w.calls++
	w.mu.Unlock()
	sent := 0
	for {
		w.mu.Lock()
		if w.fail != nil {
			err := w.fail
			w.mu.Unlock()
			return err
		}
		pending := w.batches[sent:]
		wake := w.wake
		w.mu.Unlock()
		for _, b := range pending {
			if err := fn(b); err != nil {
				return err
			}
			sent++
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

func (w *scriptedWatcher) watchCalls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func next(t *testing.T, s *feed.Subscription) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return b.V1[0].GetEntry()
}

func TestLingerAndRestart(t *testing.T) {
	w := newWatcher()
	f := feed.New(w, feed.Options{Linger: 100 * time.Millisecond}, discard())
	defer f.Close()
	w.write("a")
	s1, _ := f.Subscribe("")
	s2, _ := f.Subscribe("")
	if next(t, s1) != "a" || next(t, s2) != "a" {
		t.Fatal("replay")
	}
	s1.Close()
	s2.Close()
	// A reconnect within the linger reuses the listener.
	s3, _ := f.Subscribe("")
	if next(t, s3) != "a" || w.watchCalls() != 1 {
		t.Errorf("reconnect within linger: %d watch calls, want 1", w.watchCalls())
	}
	s3.Close()
	time.Sleep(400 * time.Millisecond)
	if n := f.Listeners(); n != 0 {
		t.Errorf("listeners after linger = %d, want 0", n)
	}
	s4, _ := f.Subscribe("")
	defer s4.Close()
	if next(t, s4) != "a" || w.watchCalls() != 2 {
		t.Errorf("after linger: %d watch calls, want 2", w.watchCalls())
	}
}

func TestListenerFailure(t *testing.T) {
	w := newWatcher()
	f := feed.New(w, feed.Options{}, discard())
	defer f.Close()
	w.write("a")
	s, _ := f.Subscribe("octo/app")
	next(t, s)
	boom := errors.New("firestore unavailable")
	w.breakAll(boom)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.Next(ctx); !errors.Is(err, boom) {
		t.Errorf("Next after the listener failed: %v, want %v", err, boom)
	}
	s.Close()
	if n := f.Listeners(); n != 0 {
		t.Errorf("a failed listener is kept: %d", n)
	}
}

func TestTooSlowAndClose(t *testing.T) {
	w := newWatcher()
	f := feed.New(w, feed.Options{MaxLag: 3, LagGrace: 300 * time.Millisecond}, discard())
	w.write("0")
	slow, _ := f.Subscribe("")
	next(t, slow) // caught up once
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Wait until the slow stream is at the head before the burst.
	fast, _ := f.Subscribe("")
	next(t, fast)
	for i := 1; i <= 5; i++ {
		w.write("x")
	}
	// A burst that arrives at once does not cut off a stream that keeps up.
	for range 5 {
		next(t, fast)
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := slow.Next(ctx); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("slow stream: %v, want ErrTooSlow", err)
	}
	// During replay a new stream may be any distance behind.
	late, _ := f.Subscribe("")
	for range 6 {
		next(t, late)
	}
	f.Close()
	if _, err := fast.Next(ctx); !errors.Is(err, feed.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if _, err := f.Subscribe(""); !errors.Is(err, feed.ErrClosed) {
		t.Errorf("Subscribe after Close: %v", err)
	}
}

// TestMaxHistory: a scope drops what every stream has read once it holds
// more than MaxHistory events; a new stream then gets a new listener that
// replays everything, while the old streams go on.
func TestMaxHistory(t *testing.T) {
	w := newWatcher()
	f := feed.New(w, feed.Options{MaxHistory: 3, LagGrace: time.Hour}, discard())
	defer f.Close()
	old, _ := f.Subscribe("")
	for i := range 5 {
		w.write(string(rune('a' + i)))
		if got := next(t, old); got != string(rune('a'+i)) {
			t.Fatalf("old stream got %q at %d", got, i)
		}
	}
	// The old scope dropped its beginning: a new stream gets a new
	// listener, and the whole history.
	fresh, _ := f.Subscribe("")
	defer fresh.Close()
	for i := range 5 {
		if got := next(t, fresh); got != string(rune('a'+i)) {
			t.Errorf("new stream replay %d = %q", i, got)
		}
	}
	if w.watchCalls() != 2 {
		t.Errorf("watch calls = %d, want 2 (a new listener for the new stream)", w.watchCalls())
	}
	w.write("f")
	if next(t, old) != "f" || next(t, fresh) != "f" {
		t.Error("live event missing")
	}
	// The old listener ends with its last stream; the new one stays.
	old.Close()
	deadline := time.Now().Add(5 * time.Second)
	for f.Listeners() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := f.Listeners(); n != 1 {
		t.Errorf("listeners = %d, want 1", n)
	}
}

// TestMaxHistoryKeepsUnread: batches a stream has not read yet are kept,
// however many there are.
func TestMaxHistoryKeepsUnread(t *testing.T) {
	w := newWatcher()
	f := feed.New(w, feed.Options{MaxHistory: 2, LagGrace: time.Hour}, discard())
	defer f.Close()
	s, _ := f.Subscribe("")
	defer s.Close()
	for i := range 6 {
		w.write(string(rune('a' + i)))
	}
	for i := range 6 {
		if got := next(t, s); got != string(rune('a'+i)) {
			t.Errorf("event %d = %q", i, got)
		}
	}
}
