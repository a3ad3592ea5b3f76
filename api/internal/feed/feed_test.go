package feed_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/feed"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// fakeStore stands in for Firestore: it numbers each repository's events
// as store.AppendEvents does, and WatchEventsCommitted and ReadEvents
// select by store.From as store.Store does (their behaviour against the
// emulator is tested in shared/store and, through this package, in
// api/internal/skaffold). The feed's bookkeeping — sharing, positions,
// bounds, restarts, linger, failure, lag — is what is under test here.
type fakeStore struct {
	mu      sync.Mutex
	batches []committed // in commit order
	next    map[string]int64
	clock   time.Time
	wake    chan struct{}
	watches []store.From // the From of every WatchEventsCommitted call
	reads   int
	fail    error // returned by running watches once set
}

type committed struct {
	b       store.EventBatch
	created time.Time
}

var _ feed.Source = (*fakeStore)(nil)

func newStore() *fakeStore {
	return &fakeStore{next: map[string]int64{}, clock: time.Now().Add(-time.Minute), wake: make(chan struct{})}
}

// write commits one batch of repo ("owner/name") with a v1 event per
// entry, numbered in the repository's sequence, one millisecond after
// the previous batch (or at the same instant, with same).
func (w *fakeStore) write(repo string, entries ...string) { w.commit(repo, true, false, entries) }

func (w *fakeStore) writeSameInstant(repo string, entries ...string) {
	w.commit(repo, true, true, entries)
}

// writeUnnumbered commits a batch stored before sequence numbers existed.
func (w *fakeStore) writeUnnumbered(repo string, entries ...string) {
	w.commit(repo, false, false, entries)
}

func (w *fakeStore) commit(repo string, numbered, same bool, entries []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	owner, name, _ := strings.Cut(repo, "/")
	b := store.EventBatch{Job: store.JobRef{ID: fmt.Sprintf("job-%d", len(w.batches)), Owner: owner, Name: name}}
	for _, e := range entries {
		b.V1 = append(b.V1, &v1pb.LogEntry{Entry: e})
		if numbered {
			w.next[repo]++
			b.V1Seq = append(b.V1Seq, w.next[repo])
		}
	}
	if !same {
		w.clock = w.clock.Add(time.Millisecond)
	}
	w.batches = append(w.batches, committed{b, w.clock})
	close(w.wake)
	w.wake = make(chan struct{})
}

func (w *fakeStore) breakAll(err error) {
	w.mu.Lock()
	w.fail = err
	close(w.wake)
	w.wake = make(chan struct{})
	w.mu.Unlock()
}

// now is the fake's clock: the commit time of the last batch.
func (w *fakeStore) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.clock
}

func (w *fakeStore) selected(scope string, c committed, from store.From) (store.EventBatch, bool) {
	if scope != "" && c.b.Job.Owner+"/"+c.b.Job.Name != scope {
		return store.EventBatch{}, false
	}
	if from.AfterSeq > 0 {
		out := store.EventBatch{Job: c.b.Job, Chunk: c.b.Chunk}
		for i, e := range c.b.V1 {
			if i < len(c.b.V1Seq) && c.b.V1Seq[i] > from.AfterSeq {
				out.V1, out.V1Seq = append(out.V1, e), append(out.V1Seq, c.b.V1Seq[i])
			}
		}
		return out, len(out.V1) > 0
	}
	return c.b, !c.created.Before(from.Since)
}

func (w *fakeStore) WatchEventsCommitted(ctx context.Context, scope string, from store.From, fn func(store.EventBatch, time.Time) error) error {
	w.mu.Lock()
	w.watches = append(w.watches, from)
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
		for _, c := range pending {
			sent++
			if b, ok := w.selected(scope, c, from); ok {
				if err := fn(b, c.created); err != nil {
					return err
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

func (w *fakeStore) ReadEvents(ctx context.Context, scope string, from store.From, fn func(store.EventBatch) error) error {
	w.mu.Lock()
	w.reads++
	all := slices.Clone(w.batches)
	w.mu.Unlock()
	for _, c := range all {
		if b, ok := w.selected(scope, c, from); ok {
			if err := fn(b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *fakeStore) watchCalls() []store.From {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.watches)
}

func (w *fakeStore) readCalls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reads
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func subscribe(t *testing.T, f *feed.Feed, scope string, from, window store.From) *feed.Subscription {
	t.Helper()
	s, err := f.Subscribe(scope, from, window)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// read returns the entries of the next n events of s.
func read(t *testing.T, s *feed.Subscription, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	for len(out) < n {
		b, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		for _, e := range b.V1 {
			out = append(out, e.GetEntry())
		}
	}
	return out
}

func entries(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// waitFor polls cond until it holds or 5 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: timed out", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	all      = store.From{}
	fromZero = store.From{}
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func TestLingerAndRestart(t *testing.T) {
	w := newStore()
	f := feed.New(w, feed.Options{Linger: 100 * time.Millisecond}, discard())
	defer f.Close()
	w.write("o/a", "a")
	s1 := subscribe(t, f, "", all, all)
	s2 := subscribe(t, f, "", all, all)
	if read(t, s1, 1)[0] != "a" || read(t, s2, 1)[0] != "a" {
		t.Fatal("replay")
	}
	s1.Close()
	s2.Close()
	// A reconnect within the linger reuses the listener.
	s3 := subscribe(t, f, "", all, all)
	if read(t, s3, 1)[0] != "a" || len(w.watchCalls()) != 1 {
		t.Errorf("reconnect within linger: %d watch calls, want 1", len(w.watchCalls()))
	}
	s3.Close()
	waitFor(t, "the listener to be dropped after its linger", func() bool { return f.Listeners() == 0 })
	s4 := subscribe(t, f, "", all, all)
	if read(t, s4, 1)[0] != "a" || len(w.watchCalls()) != 2 {
		t.Errorf("after linger: %d watch calls, want 2", len(w.watchCalls()))
	}
}

func TestListenerFailure(t *testing.T) {
	w := newStore()
	f := feed.New(w, feed.Options{}, discard())
	defer f.Close()
	w.write("octo/app", "a")
	s := subscribe(t, f, "octo/app", fromZero, fromZero)
	read(t, s, 1)
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
	w := newStore()
	c := &clock{t: time.Now()}
	f := feed.New(w, feed.Options{MaxLag: 3, LagGrace: time.Second, Now: c.Now}, discard())
	w.write("octo/app", "0")
	slow := subscribe(t, f, "octo/app", fromZero, fromZero)
	read(t, slow, 1) // caught up once
	fast := subscribe(t, f, "octo/app", fromZero, fromZero)
	read(t, fast, 1)
	for range 5 {
		w.write("octo/app", "x")
	}
	// A burst that arrives at once does not cut off a stream that keeps up.
	read(t, fast, 5)
	c.Set(c.Now().Add(2 * time.Second)) // older than the grace
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := slow.Next(ctx)
	if !errors.Is(err, feed.ErrTooSlow) || !strings.Contains(err.Error(), "since=1 to resume") {
		t.Errorf("slow stream: %v, want ErrTooSlow naming since=1", err)
	}
	// During replay a new stream may be any distance behind.
	late := subscribe(t, f, "octo/app", fromZero, fromZero)
	read(t, late, 6)
	f.Close()
	if _, err := fast.Next(ctx); !errors.Is(err, feed.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if _, err := f.Subscribe("", all, all); !errors.Is(err, feed.ErrClosed) {
		t.Errorf("Subscribe after Close: %v", err)
	}
}

// TestResume: a one-repository stream starts after any sequence number —
// from the shared history when it holds the position, else by reading
// the store until it reaches the history — and gets exactly the events
// numbered higher, once each, also from the middle of a batch; one
// listener serves them all.
func TestResume(t *testing.T) {
	w := newStore()
	f := feed.New(w, feed.Options{PageEvents: 4}, discard())
	defer f.Close()
	w.write("octo/other", "o1")
	for i := 0; i < 20; i += 5 {
		w.write("octo/app", entries("e", i+1, i+6)...) // numbered i+1..i+5
	}
	// The replay window starts after 10: the listener starts there.
	window := store.From{AfterSeq: 10}
	def := subscribe(t, f, "octo/app", window, window)
	if got := read(t, def, 10); !slices.Equal(got, entries("e", 11, 21)) {
		t.Errorf("default stream = %v, want e11..e20", got)
	}
	streams := []*feed.Subscription{def}
	for _, tc := range []struct {
		since int64
		reads bool
	}{{12, false}, {15, false}, {20, false}, {7, true}, {0, true}, {3, true}} {
		before := w.readCalls()
		s := subscribe(t, f, "octo/app", store.From{AfterSeq: tc.since}, window)
		got := read(t, s, 20-int(tc.since))
		if want := entries("e", int(tc.since)+1, 21); !slices.Equal(got, want) {
			t.Errorf("since %d = %v, want %v", tc.since, got, want)
		}
		if read := w.readCalls() > before; read != tc.reads {
			t.Errorf("since %d read the store: %t, want %t", tc.since, read, tc.reads)
		}
		streams = append(streams, s)
	}
	// And live, once each.
	w.write("octo/app", "live")
	w.write("octo/app", "live2")
	for i, s := range streams {
		if got := read(t, s, 2); !slices.Equal(got, []string{"live", "live2"}) {
			t.Errorf("stream %d live = %v", i, got)
		}
	}
	if n := len(w.watchCalls()); n != 1 {
		t.Errorf("%d listeners started, want 1", n)
	}
}

// TestResumeJoinsAfterStart: a stream that resumes before the replay
// window of a scope without a listener reads the store, and the listener
// starts at the window for the streams after it.
func TestResumeJoinsAfterStart(t *testing.T) {
	w := newStore()
	f := feed.New(w, feed.Options{PageEvents: 2}, discard())
	defer f.Close()
	w.write("octo/app", entries("e", 1, 11)...)
	w.write("octo/app", entries("e", 11, 16)...)
	window := store.From{AfterSeq: 10}
	s := subscribe(t, f, "octo/app", store.From{AfterSeq: 2}, window)
	if got := read(t, s, 13); !slices.Equal(got, entries("e", 3, 16)) {
		t.Errorf("resumed stream = %v", got)
	}
	if got := w.watchCalls(); len(got) != 1 || got[0] != window {
		t.Errorf("listeners started at %v, want one at %v", got, window)
	}
	w.write("octo/app", "live")
	if got := read(t, s, 1); got[0] != "live" {
		t.Errorf("live = %v", got)
	}
}

// TestUnnumbered: batches stored before sequence numbers existed are
// replayed by a stream from the start of a complete history and skipped
// by one that reads the store.
func TestUnnumbered(t *testing.T) {
	w := newStore()
	f := feed.New(w, feed.Options{}, discard())
	defer f.Close()
	w.writeUnnumbered("octo/app", "old")
	w.write("octo/app", "new")
	s := subscribe(t, f, "octo/app", fromZero, fromZero)
	if got := read(t, s, 2); !slices.Equal(got, []string{"old", "new"}) {
		t.Errorf("from the start = %v", got)
	}
	// A listener that started later, so that the history is not complete.
	g := feed.New(w, feed.Options{}, discard())
	defer g.Close()
	late := subscribe(t, g, "octo/app", store.From{AfterSeq: 1}, store.From{AfterSeq: 1})
	s2 := subscribe(t, g, "octo/app", fromZero, store.From{AfterSeq: 1})
	if got := read(t, s2, 1); !slices.Equal(got, []string{"new"}) {
		t.Errorf("from the start through the store = %v", got)
	}
	w.write("octo/app", "live")
	if a, b := read(t, s2, 1), read(t, late, 1); a[0] != "live" || b[0] != "live" {
		t.Errorf("live = %v %v", a, b)
	}
}

// TestMaxHistory: a scope never holds more than MaxHistory events (and
// its newest batch), however slow its streams: a one-repository stream
// whose next batch was dropped reads the store and loses nothing; an
// all-repositories stream ends with ErrTooSlow. The listener is replaced
// after delivering MaxHistory events, from where it stood, unnoticed.
func TestMaxHistory(t *testing.T) {
	w := newStore()
	f := feed.New(w, feed.Options{MaxHistory: 10, LagGrace: time.Hour, PageEvents: 3}, discard())
	defer f.Close()
	repo := subscribe(t, f, "octo/app", fromZero, fromZero)
	allRepos := subscribe(t, f, "", store.From{Since: w.now()}, all)
	keeps := subscribe(t, f, "octo/app", fromZero, fromZero)
	var want []string
	for i := range 30 {
		batch := entries(fmt.Sprintf("b%d-", i), 0, 2)
		w.write("octo/app", batch...)
		want = append(want, batch...)
		if got := read(t, keeps, 2); !slices.Equal(got, batch) {
			t.Fatalf("the stream that keeps up got %v, want %v", got, batch)
		}
		if ev := f.Stats().Events; ev > 2*10 {
			t.Fatalf("the two scopes' histories hold %d events, more than MaxHistory each", ev)
		}
	}
	if got := read(t, repo, 60); !slices.Equal(got, want) {
		t.Errorf("the slow one-repository stream = %v, want every event once", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := allRepos.Next(ctx); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("the slow all-repositories stream: %v, want ErrTooSlow", err)
	}
	st := f.Stats()
	if st.Restarts < 4 || st.Reads == 0 {
		t.Errorf("stats %+v: want the listeners replaced after every 10 events and store reads", st)
	}
	// The replacements started where their predecessors stood: only the
	// first octo/app listener started from the beginning.
	zero := 0
	for _, from := range w.watchCalls() {
		if from.AfterSeq == 0 && from.Since.IsZero() {
			zero++
		}
	}
	if zero != 1 {
		t.Errorf("%d listeners started from the beginning, want 1: %v", zero, w.watchCalls())
	}
	w.write("octo/app", "live")
	if a, b := read(t, repo, 1), read(t, keeps, 1); a[0] != "live" || b[0] != "live" {
		t.Errorf("live after the replacements = %v %v", a, b)
	}
}

// TestRestartSameInstant: an all-repositories listener replaced after
// MaxHistory events starts at the commit time of the last batch it
// delivered and skips the batches of that instant it already had, so
// nothing committed at that instant is lost or repeated.
func TestRestartSameInstant(t *testing.T) {
	w := newStore()
	f := feed.New(w, feed.Options{MaxHistory: 2, LagGrace: time.Hour}, discard())
	defer f.Close()
	s := subscribe(t, f, "", store.From{Since: w.now()}, all)
	var got []string
	w.write("octo/a", "1", "2") // a restart after this one
	got = append(got, read(t, s, 2)...)
	w.writeSameInstant("octo/b", "3") // at the restart's instant
	got = append(got, read(t, s, 1)...)
	w.writeSameInstant("octo/a", "4") // a restart after this one, at the same instant
	got = append(got, read(t, s, 1)...)
	w.write("octo/b", "5", "6") // a restart
	got = append(got, read(t, s, 2)...)
	w.writeSameInstant("octo/c", "7")
	w.write("octo/c", "8")
	got = append(got, read(t, s, 2)...)
	if !slices.Equal(got, entries("", 1, 9)) {
		t.Errorf("across restarts = %v, want 1..8 once each", got)
	}
	if st := f.Stats(); st.Restarts < 2 {
		t.Errorf("restarts = %d, want at least 2", st.Restarts)
	}
}

// TestWindow: an all-repositories stream starts at its commit time; the
// history drops what is older than the window once every stream has read
// it.
func TestWindow(t *testing.T) {
	w := newStore()
	now := w.now()
	c := &clock{t: now}
	f := feed.New(w, feed.Options{Window: 10 * time.Millisecond, Now: c.Now}, discard())
	defer f.Close()
	for i := range 20 {
		w.write(fmt.Sprintf("octo/r%d", i%3), fmt.Sprint(i))
	}
	at := func(i int) time.Time { return now.Add(time.Duration(i+1) * time.Millisecond) } // commit time of event i
	s := subscribe(t, f, "", store.From{Since: at(5)}, store.From{Since: at(5)})
	if got := read(t, s, 15); !slices.Equal(got, entries("", 5, 20)) {
		t.Errorf("from event 5's commit time = %v", got)
	}
	s2 := subscribe(t, f, "", store.From{Since: at(12)}, store.From{Since: at(12)})
	if got := read(t, s2, 8); !slices.Equal(got, entries("", 12, 20)) {
		t.Errorf("from event 12's commit time = %v", got)
	}
	// Time passes; the next batch trims what both streams read and the
	// window no longer covers.
	c.Set(at(25))
	w.write("octo/r0", "20")
	read(t, s, 1)
	read(t, s2, 1)
	// Events 15..20 were committed at or after at(25)-10ms = at(15).
	if ev := f.Stats().Events; ev != 6 {
		t.Errorf("history holds %d events, want 6 (committed within the window)", ev)
	}
}
