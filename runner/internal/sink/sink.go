// Package sink sends every stored event of every job to destinations an
// operator configured (never a repository's own configuration):
//
//   - Webhook POSTs the seed-002 event envelopes of each stored batch
//     (package eventlog) to an HTTPS endpoint as NDJSON, signed with
//     HMAC-SHA256 the way GitHub signs its webhooks (see Verify).
//   - GRPC streams the Skaffold v2 events of each job to an operator's
//     kgd.sink.v1.EventSink service, one client stream per job.
//
// Both are fed by Send, which is meant to be a store.WriterOptions.Written
// hook: it runs on a job writer's goroutine and never blocks. It converts
// the batch and puts it on a bounded in-memory queue (DefaultQueueSize
// batches; when full, the oldest batch is dropped, counted and logged).
// One goroutine per sink delivers the queue in the order Send was called,
// so a job's batches arrive in order. A failed delivery (no answer, a
// timeout, or an answer that says "later") is retried with exponential
// backoff, from MinBackoff doubling up to MaxBackoff with jitter and
// honouring Retry-After, for as long as the sink runs, and nothing behind
// it is sent meanwhile. A batch the receiver refuses outright (any other
// 4xx; a gRPC code other than Unavailable, DeadlineExceeded or
// ResourceExhausted) is logged and dropped: sending it again would not
// help.
//
// Delivery is at least once: a receiver may see a batch (webhook: the same
// X-KGD-Delivery; gRPC: the same kgd_sequence) more than once, and must
// de-duplicate. Events are lost only when the queue overflows, when the
// receiver refuses them, and when Close gives up; all are counted in
// Stats.Dropped.
//
// A sink starts its goroutine in its constructor; Close stops it and must
// be called.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Defaults of the sinks' configurations.
const (
	// DefaultQueueSize is how many batches wait for delivery at most; a
	// batch is at most store.DefaultMaxEvents (100) events, so a full
	// queue holds up to a million events (a few hundred MB at worst).
	DefaultQueueSize = 10000
	// DefaultMinBackoff is the wait after the first failed attempt; it
	// doubles with each further failure of the same batch.
	DefaultMinBackoff = time.Second
	// DefaultMaxBackoff caps the wait between attempts.
	DefaultMaxBackoff = time.Minute
	// DefaultTimeout bounds one attempt: a POST, or one send or the
	// acknowledgment of a gRPC stream.
	DefaultTimeout = 30 * time.Second
)

// maxRetryAfter caps the wait a receiver's Retry-After asks for, so a
// wrong header cannot stall a sink for days.
const maxRetryAfter = 10 * time.Minute

// dropLogInterval is the shortest time between two warnings about a full
// queue; each warning says how many batches were dropped since the last.
const dropLogInterval = time.Minute

// Stats counts what a sink did since it was created.
type Stats struct {
	// Sent is how many batches were delivered: answered 2xx (webhook) or
	// acknowledged by the end of their stream (gRPC).
	Sent int64
	// Retried is how many attempts failed in a way worth retrying (each
	// is followed by a wait, then another attempt unless Close gives up).
	Retried int64
	// Dropped is how many batches were given up: pushed out of a full
	// queue, refused by the receiver, sent after Close, or still
	// undelivered when Close's context ended.
	Dropped int64
}

// UndeliveredError is what Close returns when its context ended before
// every batch was delivered.
type UndeliveredError struct {
	// Batches is how many batches were given up.
	Batches int
	// Err is the context's error.
	Err error
}

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("sink closed with %d batches undelivered: %v", e.Batches, e.Err)
}

func (e *UndeliveredError) Unwrap() error { return e.Err }

// delivery holds what both sinks share: the queue, the counters, the
// backoff policy and the lifecycle of the delivering goroutine.
type delivery[T any] struct {
	log        *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration

	mu            sync.Mutex
	queue         ring[T]
	closed        bool
	droppedUnlogd int64     // overflow drops not yet logged
	lastDropLog   time.Time // when overflow drops were last logged

	wake   chan struct{}      // a batch was queued (capacity 1)
	drain  chan struct{}      // closed by Close: deliver what is queued, then stop
	done   chan struct{}      // closed when the goroutine has stopped
	cancel context.CancelFunc // ends the goroutine's context: Close gave up

	closeOnce   sync.Once
	undelivered int // set by the goroutine before it closes done

	sent, retried, dropped atomic.Int64
}

// newDelivery returns the shared state of a sink and the context of its
// goroutine, which ends when Close gives up. The goroutine is the sink's
// own: its context starts here, not from a caller's.
func newDelivery[T any](log *slog.Logger, queueSize int, minBackoff, maxBackoff time.Duration) (*delivery[T], context.Context) {
	ctx, cancel := context.WithCancel(context.Background())
	return &delivery[T]{
		log: log, minBackoff: minBackoff, maxBackoff: maxBackoff,
		queue: newRing[T](queueSize),
		wake:  make(chan struct{}, 1), drain: make(chan struct{}), done: make(chan struct{}),
		cancel: cancel,
	}, ctx
}

// sharedDefaults fills the zero values of the shared settings and checks
// them.
func sharedDefaults(queueSize *int, timeout, minBackoff, maxBackoff *time.Duration) error {
	if *queueSize < 0 || *timeout < 0 || *minBackoff < 0 || *maxBackoff < 0 {
		return errors.New("queue size, timeout and backoffs must not be negative")
	}
	if *queueSize == 0 {
		*queueSize = DefaultQueueSize
	}
	if *timeout == 0 {
		*timeout = DefaultTimeout
	}
	if *minBackoff == 0 {
		*minBackoff = DefaultMinBackoff
	}
	if *maxBackoff == 0 {
		*maxBackoff = DefaultMaxBackoff
	}
	if *maxBackoff < *minBackoff {
		return fmt.Errorf("max backoff %s is below min backoff %s", *maxBackoff, *minBackoff)
	}
	return nil
}

// push queues v, dropping the oldest batch when the queue is full. It
// never blocks.
func (d *delivery[T]) push(v T) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.dropped.Add(1)
		d.log.Warn("event sink: batch sent after Close dropped")
		return
	}
	overflow := d.queue.push(v)
	size := d.queue.cap()
	var logDrops int64
	if overflow {
		d.dropped.Add(1)
		d.droppedUnlogd++
		if now := time.Now(); now.Sub(d.lastDropLog) >= dropLogInterval {
			logDrops, d.droppedUnlogd, d.lastDropLog = d.droppedUnlogd, 0, now
		}
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	if logDrops > 0 {
		d.log.Warn("event sink: queue full, oldest batches dropped", "dropped", logDrops, "queue_size", size)
	}
}

// pop returns the oldest queued batch.
func (d *delivery[T]) pop() (T, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queue.pop()
}

// queued is how many batches wait.
func (d *delivery[T]) queued() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queue.len()
}

// waitResult says why wait returned.
type waitResult int

const (
	waitQueued  waitResult = iota // a batch may be queued
	waitDrained                   // Close was called and the queue is empty
	waitTimer                     // the timer fired
	waitStopped                   // Close gave up
)

// wait blocks until a batch may be queued, the queue is drained after
// Close, timer fires (nil: never) or ctx ends (Close gave up). Call it
// only after pop found the queue empty.
func (d *delivery[T]) wait(ctx context.Context, timer <-chan time.Time) waitResult {
	select {
	case <-d.wake:
		return waitQueued
	case <-d.drain:
		if d.queued() > 0 {
			return waitQueued
		}
		return waitDrained
	case <-timer:
		return waitTimer
	case <-ctx.Done():
		return waitStopped
	}
}

// stop records how many batches the goroutine leaves undelivered (the
// queue's and pending more) and ends the goroutine's life.
func (d *delivery[T]) stop(pending int) {
	d.mu.Lock()
	d.closed = true
	n := d.queue.len() + pending
	d.queue = newRing[T](0) // let the batches go
	d.mu.Unlock()
	d.undelivered = n
	d.dropped.Add(int64(n))
	close(d.done)
}

// close stops accepting batches and waits until the goroutine delivered
// every queued batch or ctx ends; then it gives up.
func (d *delivery[T]) close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.drain)
	})
	select {
	case <-d.done:
	case <-ctx.Done():
		d.cancel()
		<-d.done
	}
	d.cancel()
	if d.undelivered > 0 {
		err := ctx.Err()
		if err == nil {
			err = context.Canceled
		}
		return &UndeliveredError{Batches: d.undelivered, Err: err}
	}
	return nil
}

func (d *delivery[T]) stats() Stats {
	return Stats{Sent: d.sent.Load(), Retried: d.retried.Load(), Dropped: d.dropped.Load()}
}

// backoff waits before attempt n+1 (n ≥ 1 failed attempts so far): the
// backoff with jitter, or longer if the receiver asked with retryAfter.
// It reports false if ctx ended (Close gave up) meanwhile.
func (d *delivery[T]) backoff(ctx context.Context, n int, retryAfter time.Duration) bool {
	wait := d.backoffFor(n)
	if retryAfter > wait {
		wait = min(retryAfter, maxRetryAfter)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoffFor is the wait after the n-th failed attempt: minBackoff
// doubled n-1 times, capped at maxBackoff, less a random part of up to a
// half so that runners restarted together do not retry together.
func (d *delivery[T]) backoffFor(n int) time.Duration {
	b := d.minBackoff
	for i := 1; i < n && b < d.maxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.maxBackoff)
	if half := b / 2; half > 0 {
		b = b - half + rand.N(half+1)
	}
	return b
}

// retryAfter is the wait an HTTP Retry-After header (seconds, or an HTTP
// date) asks for, or 0.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if sec, err := strconv.Atoi(v); err == nil && sec >= 0 {
		return time.Duration(sec) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// ring is a bounded FIFO that drops its oldest element when full.
type ring[T any] struct {
	buf  []T
	head int
	n    int
}

func newRing[T any](size int) ring[T] { return ring[T]{buf: make([]T, size)} }

func (r *ring[T]) len() int { return r.n }
func (r *ring[T]) cap() int { return len(r.buf) }

// push appends v; it reports whether the oldest element was dropped to
// make room.
func (r *ring[T]) push(v T) (overflow bool) {
	if r.n == len(r.buf) {
		var zero T
		r.buf[r.head] = zero
		r.head = (r.head + 1) % len(r.buf)
		r.n--
		overflow = true
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
	return overflow
}

func (r *ring[T]) pop() (T, bool) {
	var zero T
	if r.n == 0 {
		return zero, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v, true
}

// repository names a job's repository "owner/name", as headers, metadata
// and logs do.
func repository(j store.JobRef) string { return j.Owner + "/" + j.Name }
