// Package feed fans the stored event history out to many streams.
//
// A Feed keeps at most one Firestore listener per scope (all
// repositories, or one "owner/name"). The listener starts at a position
// (a repository's sequence number, or a commit time for all repositories)
// and then delivers every new batch as it is written; what it delivers is
// appended to the scope's in-memory history, which is shared and never
// modified. Each stream (a Subscription) reads that history at its own
// cursor, so the seam between replay and live has no gap and no
// duplicate, and nothing is copied per stream.
//
// Where a stream starts:
//   - One repository: after a sequence number (Subscribe's from.AfterSeq).
//     When the history holds that position the stream starts there, in
//     memory. When it starts before the history (a client resuming from
//     far back, or the history has dropped it), the stream catches up by
//     itself with one-time reads of the store, PageEvents events at a
//     time, and joins the shared history once it has reached it: the
//     positions are exact, so again without gap or duplicate. So one
//     listener serves every position of a scope, and a stream far behind
//     costs Firestore reads, never memory beyond one page.
//   - All repositories: at a commit time (from.Since). The stream starts
//     at the first batch of the history committed at or after it; the
//     history keeps the batches of the replay window (Options.Window) for
//     that, as far as MaxHistory allows.
//
// A stream that reads too slowly cannot hold anyone up: once it has caught
// up with the head, being more than MaxLag events behind for longer than
// LagGrace ends it with ErrTooSlow, naming the sequence number to resume
// after. (The grace keeps a burst of batches that arrives at once from
// cutting off streams that keep up.)
//
// Memory is bounded by MaxHistory, twice over:
//   - The history of a scope holds at most MaxHistory events (and at least
//     its newest batch): older batches are dropped whether or not every
//     stream has read them. A one-repository stream whose next batch was
//     dropped goes back to reading the store; an all-repositories stream
//     ends with ErrTooSlow. With all repositories in scope, batches older
//     than the window that every stream has read are dropped too.
//   - Firestore's client keeps every document a listener has matched in
//     memory for as long as the listener runs, so a listener that has
//     delivered MaxHistory events is replaced by a fresh one that starts
//     right after the last batch delivered (the sequence number, or the
//     commit time with the batches of that instant skipped): the oldest
//     position the history still needs from Firestore, which is its head.
//     The history and its streams do not notice.
//
// Order: a stream delivers its scope's batches in the order the listener
// delivered them (store.WatchEvents: one repository by sequence number;
// all repositories by commit time, ties broken by document id), also
// across listener replacements and catch-up reads.
//
// A scope's listener and history are dropped Linger after its last stream
// ends, and when the listener fails (its streams end with the error; the
// next stream starts a new listener).
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// ErrTooSlow ends a stream that fell too far behind the live events.
var ErrTooSlow = errors.New("stream fell too far behind the live events")

// ErrClosed ends the streams of a closed Feed.
var ErrClosed = errors.New("event feed closed: the server is shutting down")

// Source is where the events come from (store.Store).
type Source interface {
	// WatchEventsCommitted replays and then follows a scope's batches
	// from a position, handing each with its commit time.
	WatchEventsCommitted(ctx context.Context, scope string, from store.From, fn func(store.EventBatch, time.Time) error) error
	// ReadEvents reads a scope's stored batches from a position once.
	ReadEvents(ctx context.Context, scope string, from store.From, fn func(store.EventBatch) error) error
}

// Options tune a Feed.
type Options struct {
	// MaxLag is how many events a caught-up stream may fall behind the
	// head before it is ended with ErrTooSlow; 0 means 10,000.
	MaxLag int
	// LagGrace is how long a stream may stay more than MaxLag events
	// behind; 0 means 5 seconds.
	LagGrace time.Duration
	// MaxHistory bounds the events a scope holds in memory and the events
	// a listener delivers before it is replaced; 0 means 500,000.
	MaxHistory int
	// Linger is how long a scope's listener outlives its last stream, so
	// a client that reconnects does not cause a new replay from
	// Firestore; 0 means 30 seconds.
	Linger time.Duration
	// Window is how far back a stream of all repositories replays: the
	// history of that scope keeps what is younger; 0 means 1 hour.
	Window time.Duration
	// PageEvents is how many events a stream that catches up by itself
	// reads from the store at a time; 0 means 1,000.
	PageEvents int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Feed serves event streams. Its methods are safe for concurrent use.
type Feed struct {
	src  Source
	opts Options
	log  *slog.Logger

	ctx    context.Context // ends listeners when the feed closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	scopes   map[string]*scope
	closed   bool
	starts   int // listeners started (restarts excluded)
	restarts int // listeners replaced after MaxHistory events
	reads    int // pages read by streams catching up
}

// New returns a Feed reading from src.
func New(src Source, opts Options, log *slog.Logger) *Feed {
	if opts.MaxLag <= 0 {
		opts.MaxLag = 10_000
	}
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = 500_000
	}
	if opts.LagGrace <= 0 {
		opts.LagGrace = 5 * time.Second
	}
	if opts.Linger <= 0 {
		opts.Linger = 30 * time.Second
	}
	if opts.Window <= 0 {
		opts.Window = time.Hour
	}
	if opts.PageEvents <= 0 {
		opts.PageEvents = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Feed{src: src, opts: opts, log: log, ctx: ctx, cancel: cancel, scopes: map[string]*scope{}}
}

// entry is one batch of a history.
type entry struct {
	b       store.EventBatch
	created time.Time // commit time
	end     int       // events in every batch up to and including this one
	arrived time.Time
}

// scope is one listener and the history it delivered.
type scope struct {
	name   string
	all    bool // all repositories
	cancel context.CancelFunc

	mu sync.Mutex
	// hist[head:] is the history, from batch number base on. Positions
	// (Subscription.pos) count from the first batch ever delivered.
	hist    []entry
	head    int
	base    int
	dropped int // events in the dropped batches
	events  int // events in the history
	// One repository: the history holds every numbered event above low,
	// and when complete also the unnumbered batches from the start.
	low      int64
	complete bool
	wake     chan struct{} // closed and replaced when a batch arrives or the scope ends
	err      error         // why the listener stopped; set once
	subs     map[*Subscription]struct{}
	linger   *time.Timer
}

func (s *scope) total() int {
	if len(s.hist) == s.head {
		return s.dropped
	}
	return s.hist[len(s.hist)-1].end
}

func (s *scope) len() int { return len(s.hist) - s.head }

// at returns the batch at position pos; pos must be in the history.
func (s *scope) at(pos int) entry { return s.hist[s.head+pos-s.base] }

// add appends a batch and trims the history. s.mu must be held.
func (s *scope) add(b store.EventBatch, created, now time.Time, opts Options) {
	n := len(b.V1) + len(b.V2)
	s.hist = append(s.hist, entry{b: b, created: created, end: s.total() + n, arrived: now})
	s.events += n
	s.trim(now, opts)
	close(s.wake)
	s.wake = make(chan struct{})
}

// trim drops what the history no longer holds: with all repositories in
// scope, the batches older than the window that every stream has read;
// in any scope, the oldest batches while it holds more than max events
// (keeping the newest batch). s.mu must be held.
func (s *scope) trim(now time.Time, opts Options) {
	n := 0 // batches to drop
	if s.all {
		read := s.base + s.len()
		for sub := range s.subs {
			read = min(read, sub.pos)
		}
		cut := now.Add(-opts.Window)
		for n < s.len() && s.base+n < read && s.hist[s.head+n].created.Before(cut) {
			n++
		}
	}
	events := s.events
	if n > 0 {
		events = s.total() - s.hist[s.head+n-1].end
	}
	for n < s.len()-1 && events > opts.MaxHistory {
		events -= len(s.hist[s.head+n].b.V1) + len(s.hist[s.head+n].b.V2)
		n++
	}
	if n == 0 {
		return
	}
	for i := s.head; i < s.head+n; i++ {
		if !s.all {
			s.low = max(s.low, s.hist[i].b.LastSeq())
		}
		s.hist[i] = entry{} // let the batch go
	}
	s.complete = false
	s.dropped = s.hist[s.head+n-1].end
	s.events = events
	s.base += n
	s.head += n
	if s.head > len(s.hist)/2 {
		s.hist = append([]entry(nil), s.hist[s.head:]...)
		s.head = 0
	}
}

// covers reports whether a one-repository history can serve a stream
// positioned after sequence number seq. s.mu must be held.
func (s *scope) covers(seq int64) bool {
	if seq == 0 {
		return s.complete
	}
	return seq >= s.low
}

// Subscribe starts a stream of scope's events ("" for all repositories)
// at from: after from.AfterSeq for one repository (0: from the first
// stored event), or from the batches committed at or after from.Since for
// all. window is where the scope's listener starts if the stream has to
// start one: the replay window of new streams, which the history then
// holds for the next ones. The caller must Close the subscription.
func (f *Feed) Subscribe(scopeName string, from, window store.From) (*Subscription, error) {
	all := scopeName == ""
	if all && from.AfterSeq != 0 {
		return nil, fmt.Errorf("subscribe: a sequence number needs a repository scope: %w", store.ErrInvalid)
	}
	if all {
		window = store.From{Since: from.Since}
	}
	sub := &Subscription{f: f, name: scopeName, all: all, seq: from.AfterSeq, since: from.Since, window: window}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	s := f.scopes[scopeName]
	if s == nil {
		s = f.startLocked(scopeName, window)
	}
	f.joinLocked(sub, s) // else it starts by reading the store
	return sub, nil
}

// joinLocked makes sub read s's history from its position, if the
// history covers it. f.mu must be held.
func (f *Feed) joinLocked(sub *Subscription, s *scope) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.len()
	var i int
	switch {
	case sub.all:
		i = sort.Search(n, func(i int) bool { return !s.hist[s.head+i].created.Before(sub.since) })
	case !s.covers(sub.seq):
		return false
	case sub.seq == 0:
		i = 0 // from the start, unnumbered batches included
	default:
		i = sort.Search(n, func(i int) bool { return s.hist[s.head+i].b.LastSeq() > sub.seq })
	}
	sub.s, sub.pos = s, s.base+i
	s.subs[sub] = struct{}{}
	if s.linger != nil {
		s.linger.Stop()
		s.linger = nil
	}
	return true
}

// Listeners returns the number of scopes with a running listener.
func (f *Feed) Listeners() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.scopes)
}

// Stats are a Feed's counters.
type Stats struct {
	// Listeners is the number of scopes with a running listener.
	Listeners int
	// Events is the number of events the histories hold.
	Events int
	// Starts counts the listeners started for a scope that had none.
	Starts int
	// Restarts counts listeners replaced after MaxHistory events.
	Restarts int
	// Reads counts the pages streams read from the store to catch up.
	Reads int
}

// Stats returns the feed's counters.
func (f *Feed) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := Stats{Listeners: len(f.scopes), Starts: f.starts, Restarts: f.restarts, Reads: f.reads}
	for _, s := range f.scopes {
		s.mu.Lock()
		st.Events += s.events
		s.mu.Unlock()
	}
	return st
}

// errRestart ends a listener that has delivered MaxHistory events.
var errRestart = errors.New("listener restart")

type batchKey struct {
	job   string
	chunk int
}

func (f *Feed) startLocked(name string, from store.From) *scope {
	ctx, cancel := context.WithCancel(f.ctx)
	s := &scope{name: name, all: name == "", cancel: cancel, wake: make(chan struct{}), subs: map[*Subscription]struct{}{},
		low: from.AfterSeq, complete: name != "" && from.AfterSeq == 0}
	f.scopes[name] = s
	f.starts++
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		start := f.opts.Now()
		// The newest commit time delivered and the batches committed then:
		// a restarted listener starts at that time, and skips them.
		var lastCreated time.Time
		var lastSeq int64
		seen := map[batchKey]bool{}
		var err error
		for {
			received := 0
			err = f.src.WatchEventsCommitted(ctx, name, from, func(b store.EventBatch, created time.Time) error {
				k := batchKey{b.Job.ID, b.Chunk}
				if seen[k] {
					return nil
				}
				if created.After(lastCreated) {
					lastCreated = created
					clear(seen)
				}
				if created.Equal(lastCreated) {
					seen[k] = true
				}
				lastSeq = max(lastSeq, b.LastSeq())
				s.mu.Lock()
				s.add(b, created, f.opts.Now(), f.opts)
				s.mu.Unlock()
				received += len(b.V1) + len(b.V2)
				// A repository's unnumbered batches cannot be resumed
				// after: such a listener goes on.
				if received >= f.opts.MaxHistory && (s.all || lastSeq > 0) {
					return errRestart
				}
				return nil
			})
			if !errors.Is(err, errRestart) {
				break
			}
			if s.all {
				from = store.From{Since: lastCreated}
			} else {
				from = store.From{AfterSeq: lastSeq}
			}
			f.mu.Lock()
			f.restarts++
			f.mu.Unlock()
		}
		switch {
		case f.ctx.Err() != nil:
			err = ErrClosed
		case err == nil || ctx.Err() != nil:
			err = context.Canceled // dropped after its last stream lingered
		default:
			f.log.Error("event listener failed", logging.KeyRepo, name, logging.KeyErr, err.Error(),
				logging.KeyDurationMS, f.opts.Now().Sub(start).Milliseconds())
			err = fmt.Errorf("event listener of scope %q: %w", name, err)
		}
		f.drop(s)
		s.mu.Lock()
		s.err = err
		close(s.wake)
		s.mu.Unlock()
	}()
	return s
}

// drop forgets s so that the next Subscribe starts a new listener.
func (f *Feed) drop(s *scope) {
	f.mu.Lock()
	if f.scopes[s.name] == s {
		delete(f.scopes, s.name)
	}
	f.mu.Unlock()
	s.cancel()
}

// leave takes sub off its scope; a scope without subscriptions is dropped
// after the feed's Linger.
func (f *Feed) leave(sub *Subscription) {
	s := sub.s
	sub.s = nil
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
	if len(s.subs) > 0 || s.err != nil || s.linger != nil {
		return
	}
	s.linger = time.AfterFunc(f.opts.Linger, func() {
		// Under f.mu, so that no Subscribe can join between the check
		// and the drop.
		f.mu.Lock()
		s.mu.Lock()
		idle := len(s.subs) == 0 && f.scopes[s.name] == s
		if idle {
			delete(f.scopes, s.name)
		}
		s.mu.Unlock()
		f.mu.Unlock()
		if idle {
			s.cancel()
		}
	})
}

// Close ends every listener and stream and waits for the listeners.
func (f *Feed) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
}

// Subscription is one stream's cursor: in a scope's history, or, while it
// catches up, in the store. Next and Close must not be called
// concurrently.
type Subscription struct {
	f      *Feed
	name   string
	all    bool
	window store.From

	s        *scope // nil while reading the store
	pos      int
	caughtUp bool
	since    time.Time // all repositories: where the stream started

	// seq is the sequence number the stream stands after (one
	// repository): the last one it delivered.
	seq int64
	// page is what the stream read from the store and has not delivered;
	// end says the read reached the end of what was stored.
	page []store.EventBatch
	end  bool

	once sync.Once
}

// Next returns the next batch, waiting for one to be written if the
// stream is at the head. It fails with ctx's error, ErrTooSlow, ErrClosed,
// the listener's error or the store's.
func (sub *Subscription) Next(ctx context.Context) (store.EventBatch, error) {
	for {
		if sub.f.ctx.Err() != nil {
			return store.EventBatch{}, ErrClosed
		}
		if sub.s == nil {
			if len(sub.page) > 0 {
				b := sub.page[0]
				sub.page[0] = store.EventBatch{}
				sub.page = sub.page[1:]
				sub.seq = max(sub.seq, b.LastSeq())
				return b, nil
			}
			if sub.f.rejoin(sub) {
				continue
			}
			if err := sub.read(ctx); err != nil {
				return store.EventBatch{}, err
			}
			continue
		}
		s := sub.s
		s.mu.Lock()
		if sub.pos < s.base {
			// Dropped before this stream read it.
			s.mu.Unlock()
			if sub.all {
				return store.EventBatch{}, fmt.Errorf("%w: more than %d events behind; reconnect to replay", ErrTooSlow, sub.f.opts.MaxHistory)
			}
			sub.f.leave(sub) // and read the store from sub.seq on
			continue
		}
		if i := sub.pos - s.base; i < s.len() {
			e := s.at(sub.pos)
			behind := s.total() - e.end
			age := sub.f.opts.Now().Sub(e.arrived)
			sub.pos++
			atHead := i+1 == s.len()
			s.mu.Unlock()
			if sub.caughtUp && behind > sub.f.opts.MaxLag && age > sub.f.opts.LagGrace {
				return store.EventBatch{}, sub.tooSlow(behind)
			}
			sub.caughtUp = sub.caughtUp || atHead
			if sub.all {
				return e.b, nil
			}
			b, ok := after(e.b, sub.seq)
			if !ok {
				continue
			}
			sub.seq = max(sub.seq, b.LastSeq())
			return b, nil
		}
		if err := s.err; err != nil {
			s.mu.Unlock()
			return store.EventBatch{}, err
		}
		sub.caughtUp = true
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return store.EventBatch{}, ctx.Err()
		case <-wake:
		}
	}
}

func (sub *Subscription) tooSlow(behind int) error {
	if sub.all {
		return fmt.Errorf("%w: %d events behind (the limit is %d); reconnect to replay", ErrTooSlow, behind, sub.f.opts.MaxLag)
	}
	return fmt.Errorf("%w: %d events behind (the limit is %d); reconnect with since=%d to resume", ErrTooSlow, behind, sub.f.opts.MaxLag, sub.seq)
}

// after returns b without its events numbered at most seq, and whether
// anything is left. Unnumbered batches are only read from the start.
func after(b store.EventBatch, seq int64) (store.EventBatch, bool) {
	last := b.LastSeq()
	switch {
	case last == 0:
		return b, seq == 0
	case last <= seq:
		return b, false
	case (len(b.V1Seq) == 0 || b.V1Seq[0] > seq) && (len(b.V2Seq) == 0 || b.V2Seq[0] > seq):
		return b, true
	}
	out := store.EventBatch{Job: b.Job, Chunk: b.Chunk}
	for i, e := range b.V1 {
		if i < len(b.V1Seq) && b.V1Seq[i] > seq {
			out.V1, out.V1Seq = append(out.V1, e), append(out.V1Seq, b.V1Seq[i])
		}
	}
	for i, e := range b.V2 {
		if i < len(b.V2Seq) && b.V2Seq[i] > seq {
			out.V2, out.V2Seq = append(out.V2, e), append(out.V2Seq, b.V2Seq[i])
		}
	}
	return out, true
}

// rejoin joins sub, which reads the store, to its scope's history when
// that covers sub's position. With no listener running, the first stream
// that has read to the end of the store starts one.
func (f *Feed) rejoin(sub *Subscription) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	s := f.scopes[sub.name]
	if s == nil {
		if !sub.end {
			return false
		}
		from := sub.window
		if from.AfterSeq > sub.seq {
			from = store.From{AfterSeq: sub.seq}
		}
		s = f.startLocked(sub.name, from)
	}
	if f.joinLocked(sub, s) {
		return true
	}
	sub.end = false // the history is ahead: read on
	return false
}

// errPageFull ends a page read from the store.
var errPageFull = errors.New("page full")

// read reads the next page of sub's scope from the store, after sub.seq.
// Unnumbered batches are skipped: a stream that reads the store resumes
// after a number.
func (sub *Subscription) read(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sub.f.ctx, cancel)
	defer stop()
	var page []store.EventBatch
	n := 0
	err := sub.f.src.ReadEvents(ctx, sub.name, store.From{AfterSeq: sub.seq}, func(b store.EventBatch) error {
		b, ok := after(b, sub.seq)
		if !ok || b.LastSeq() == 0 {
			return nil
		}
		page = append(page, b)
		if n += len(b.V1) + len(b.V2); n >= sub.f.opts.PageEvents {
			return errPageFull
		}
		return nil
	})
	sub.f.mu.Lock()
	sub.f.reads++
	sub.f.mu.Unlock()
	switch {
	case sub.f.ctx.Err() != nil:
		return ErrClosed
	case err == nil:
		sub.end = true
	case errors.Is(err, errPageFull):
		sub.end = false
	default:
		return fmt.Errorf("read events of %q after %d: %w", sub.name, sub.seq, err)
	}
	sub.page = page
	return nil
}

// Close ends the subscription; a scope without subscriptions is dropped
// after the feed's Linger.
func (sub *Subscription) Close() {
	sub.once.Do(func() {
		if sub.s != nil {
			sub.f.leave(sub)
		}
		sub.page = nil
	})
}
