// Package feed fans the stored event history out to many streams.
//
// A Feed keeps at most one Firestore listener per scope (all repositories,
// or one "owner/name"). The listener replays the scope's stored events and
// then delivers new ones as they are written; every batch it delivers is
// appended to the scope's in-memory history, which is shared and never
// modified. Each stream (a Subscription) reads that history at its own
// cursor: a new stream replays from the first batch and then follows the
// head, so the seam between replay and live has no gap and no duplicate,
// and nothing is copied per stream. A stream that reads too slowly cannot
// hold anyone up; once it has caught up with the head, being more than
// MaxLag events behind for longer than LagGrace ends it with ErrTooSlow,
// and the client reconnects to replay. (The grace keeps a burst of
// batches that arrives at once from cutting off streams that keep up.)
//
// A scope's listener and history are dropped Linger after its last stream
// ends, and when the listener fails (its streams end with the error; the
// next stream starts a new listener, which replays from Firestore).
//
// Memory is bounded by MaxHistory: once a scope holds more events than
// that, the batches every open stream has already read are dropped. A
// scope that has dropped its beginning can no longer serve a replay, so
// the next new stream starts a fresh listener for the scope (which replays
// from Firestore) and the old one ends with its last stream.
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// ErrTooSlow ends a stream that fell more than MaxLag events behind.
var ErrTooSlow = errors.New("stream fell too far behind the live events")

// ErrClosed ends the streams of a closed Feed.
var ErrClosed = errors.New("event feed closed: the server is shutting down")

// Watcher replays and then follows the event batches of a scope, as
// store.Store.WatchEvents does.
type Watcher interface {
	WatchEvents(ctx context.Context, scope string, from store.From, fn func(store.EventBatch) error) error
}

// Options tune a Feed.
type Options struct {
	// MaxLag is how many events a caught-up stream may fall behind the
	// head before it is ended with ErrTooSlow; 0 means 10,000.
	MaxLag int
	// LagGrace is how long a stream may stay more than MaxLag events
	// behind; 0 means 5 seconds.
	LagGrace time.Duration
	// MaxHistory is how many events a scope keeps in memory before it
	// drops what every open stream has read; 0 means 500,000.
	MaxHistory int
	// Linger is how long a scope's listener outlives its last stream, so
	// a client that reconnects does not cause a new replay from
	// Firestore; 0 means 30 seconds.
	Linger time.Duration
}

// Feed serves event streams. Its methods are safe for concurrent use.
type Feed struct {
	w    Watcher
	opts Options
	log  *slog.Logger

	ctx    context.Context // ends listeners when the feed closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	scopes map[string]*scope
	closed bool
}

// New returns a Feed reading from w.
func New(w Watcher, opts Options, log *slog.Logger) *Feed {
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
	ctx, cancel := context.WithCancel(context.Background())
	return &Feed{w: w, opts: opts, log: log, ctx: ctx, cancel: cancel, scopes: map[string]*scope{}}
}

// scope is one listener and the history it delivered.
type scope struct {
	name   string
	cancel context.CancelFunc

	mu sync.Mutex
	// batches holds the history from batch number base on; ends and
	// arrived run parallel to it. Positions (Subscription.pos) count
	// from the first batch ever delivered.
	batches []store.EventBatch
	ends    []int         // ends[i]: events in every batch up to and including batches[i]
	arrived []time.Time   // arrived[i]: when batches[i] was delivered
	base    int           // batches dropped from the front
	dropped int           // events in them
	wake    chan struct{} // closed and replaced when a batch arrives or the scope ends
	err     error         // why the listener stopped; set once
	subs    map[*Subscription]struct{}
	retired bool // replaced by a newer listener: no new streams, no linger
	linger  *time.Timer
}

func (s *scope) total() int {
	if len(s.ends) == 0 {
		return s.dropped
	}
	return s.ends[len(s.ends)-1]
}

// trim drops the batches every subscription has read while the scope
// holds more than max events. s.mu must be held.
func (s *scope) trim(max int) {
	if s.total()-s.dropped <= max {
		return
	}
	low := s.base + len(s.batches)
	for sub := range s.subs {
		low = min(low, sub.pos)
	}
	n := low - s.base
	if n <= 0 {
		return
	}
	s.dropped = s.ends[n-1]
	s.base = low
	s.batches = slices.Clone(s.batches[n:])
	s.ends = slices.Clone(s.ends[n:])
	s.arrived = slices.Clone(s.arrived[n:])
}

// Subscribe starts a stream of scope's events from the first stored one.
// The caller must Close the subscription.
func (f *Feed) Subscribe(scopeName string) (*Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	s := f.scopes[scopeName]
	if s != nil {
		s.mu.Lock()
		partial := s.base > 0
		if partial {
			// Its beginning is gone, so it cannot replay: it serves its
			// streams to their end, and a new listener serves new ones.
			s.retired = true
			if len(s.subs) == 0 {
				s.cancel()
			}
		}
		s.mu.Unlock()
		if partial {
			s = nil
		}
	}
	if s == nil {
		s = f.startLocked(scopeName)
	}
	sub := &Subscription{f: f, s: s}
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	if s.linger != nil {
		s.linger.Stop()
		s.linger = nil
	}
	s.mu.Unlock()
	return sub, nil
}

// Listeners returns the number of scopes with a running listener.
func (f *Feed) Listeners() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.scopes)
}

func (f *Feed) startLocked(name string) *scope {
	ctx, cancel := context.WithCancel(f.ctx)
	s := &scope{name: name, cancel: cancel, wake: make(chan struct{}), subs: map[*Subscription]struct{}{}}
	f.scopes[name] = s
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		start := time.Now()
		err := f.w.WatchEvents(ctx, name, store.From{}, func(b store.EventBatch) error {
			s.mu.Lock()
			s.batches = append(s.batches, b)
			s.ends = append(s.ends, s.total()+len(b.V1)+len(b.V2))
			s.arrived = append(s.arrived, time.Now())
			s.trim(f.opts.MaxHistory)
			close(s.wake)
			s.wake = make(chan struct{})
			s.mu.Unlock()
			return nil
		})
		switch {
		case f.ctx.Err() != nil:
			err = ErrClosed
		case err == nil || ctx.Err() != nil:
			err = context.Canceled // dropped after its last stream lingered
		default:
			f.log.Error("event listener failed", logging.KeyRepo, name, logging.KeyErr, err.Error(),
				logging.KeyDurationMS, time.Since(start).Milliseconds())
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

func (f *Feed) release(sub *Subscription) {
	s := sub.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
	if len(s.subs) > 0 || s.err != nil {
		return
	}
	if s.retired {
		s.cancel()
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

// Subscription is one stream's cursor in a scope's history.
type Subscription struct {
	f        *Feed
	s        *scope
	pos      int
	caughtUp bool
	once     sync.Once
}

// Next returns the next batch, waiting for one to be written if the
// stream is at the head. It fails with ctx's error, ErrTooSlow, ErrClosed
// or the listener's error.
func (sub *Subscription) Next(ctx context.Context) (store.EventBatch, error) {
	s := sub.s
	for {
		s.mu.Lock()
		if i := sub.pos - s.base; i < len(s.batches) {
			b := s.batches[i]
			behind := s.total() - s.ends[i]
			age := time.Since(s.arrived[i])
			sub.pos++
			atHead := i+1 == len(s.batches)
			s.mu.Unlock()
			if sub.caughtUp && behind > sub.f.opts.MaxLag && age > sub.f.opts.LagGrace {
				return store.EventBatch{}, fmt.Errorf("%w: %d events behind (the limit is %d); reconnect to replay", ErrTooSlow, behind, sub.f.opts.MaxLag)
			}
			sub.caughtUp = sub.caughtUp || atHead
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

// Close ends the subscription; a scope without subscriptions is dropped
// after the feed's Linger.
func (sub *Subscription) Close() {
	sub.once.Do(func() { sub.f.release(sub) })
}
