package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// Defaults of WriterOptions.
const (
	DefaultFlushInterval  = 250 * time.Millisecond
	DefaultOutputInterval = time.Second
	DefaultMaxEvents      = 100
	DefaultMaxBytes       = 512 << 10
	DefaultStateInterval  = time.Second
	DefaultWriteTimeout   = 30 * time.Second
)

// maxEventBytes bounds one event (v1 and v2 encodings together): it must fit
// into an events document alone, with room for the document's other fields.
const maxEventBytes = MaxEventBatchBytes - 4<<10

// ErrClosed reports a use of a JobWriter after Close.
var ErrClosed = errors.New("job writer closed")

// WriterOptions tunes a JobWriter. Zero fields take the defaults.
type WriterOptions struct {
	// FlushInterval is the longest an event waits in memory before it is
	// written (default 250 ms). A full chunk is written at once.
	FlushInterval time.Duration
	// OutputInterval is the shortest time between two partial chunks that
	// hold only output (log lines, v2 SkaffoldLogEvents; default 1 s): a
	// build printing without pause costs one chunk a second, not four,
	// while a status event still waits at most FlushInterval.
	OutputInterval time.Duration
	// MaxEvents is the most events per chunk document (default 100).
	MaxEvents int
	// MaxBytes is the most encoded event bytes per chunk document (default
	// 512 KiB, at most MaxEventBatchBytes); a single larger event gets a
	// chunk of its own.
	MaxBytes int
	// StateInterval is the shortest time between two state writes
	// (default 1 s); SetState calls in between are coalesced.
	StateInterval time.Duration
	// WriteTimeout bounds each write of the background goroutine (default
	// 30 s). Flush and Close use their context instead.
	WriteTimeout time.Duration
	// Logger receives debug records of the writes; nil discards them.
	// Errors are returned, not logged.
	Logger *slog.Logger
	// Written, when set, is called with each chunk once it is stored, with
	// its sequence numbers, in the order the chunks were stored (the
	// runner logs each event). It runs on the writer's goroutine: it must
	// not block.
	Written func(EventBatch)
}

func (o WriterOptions) withDefaults() WriterOptions {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.OutputInterval <= 0 {
		o.OutputInterval = DefaultOutputInterval
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	o.MaxBytes = min(o.MaxBytes, maxEventBytes)
	if o.StateInterval <= 0 {
		o.StateInterval = DefaultStateInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// JobWriter is the write path of one job's events and state. Emit and
// SetState only buffer, so a runner never waits for Firestore while it
// streams build output; a background goroutine writes the buffer as event
// chunks (by count and by size, at least every FlushInterval) and the
// latest state (at most once per StateInterval).
//
// The goroutine is started by NewJobWriter and stopped by Close, which must
// be called. It also ends on its own after a failed write; the error is then
// returned by the next Emit, SetState, Flush or Close, and the writer writes
// nothing more. In particular ErrAlreadyExists means another writer owns the
// next chunk (this runner lost the job to another one), and the writer stops.
// A runner that still holds the lease (RenewLease succeeds) may read
// JobEvents again and continue with a new writer at NextChunk: that happens
// when a runner it took the job over from wrote one more chunk late.
//
// A JobWriter is safe for concurrent use.
type JobWriter struct {
	s    *Store
	job  JobRef
	opts WriterOptions
	log  *slog.Logger

	// ctx bounds the background writes. It is not derived from a caller's
	// context on purpose: the writer must be able to record a job's last
	// events after the job's own context ended. Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{} // wakes the goroutine; capacity 1
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the goroutine returned

	mu       sync.Mutex // guards the fields below
	buf      []pendingEvent
	bufBytes int
	state    *pendingState // latest state not yet written
	written  *pendingState // the state last written
	err      error         // first write error; sticky
	closed   bool
	hold     bool // the iteration ended: events wait for its final state
	final    bool // hold, and the final state was set: the goroutine writes both
	// lastChunk is when the last chunk was written (see OutputInterval).
	lastChunk time.Time

	writeMu   sync.Mutex // serialises writes; guards next and lastState
	next      int        // next chunk number
	lastState time.Time  // when state was last written
}

type pendingEvent struct {
	v1, v2 []byte
	at     time.Time // when it was emitted
	output bool      // only output: may wait for OutputInterval
}

func (e pendingEvent) size() int { return len(e.v1) + len(e.v2) }

type pendingState struct{ v1, v2 []byte }

func (s *pendingState) equal(o *pendingState) bool {
	return s != nil && o != nil && bytes.Equal(s.v1, o.v1) && bytes.Equal(s.v2, o.v2)
}

// stateEncoding encodes states the same way each time (map fields sorted),
// so that an unchanged state is recognised and not written again.
var stateEncoding = proto.MarshalOptions{Deterministic: true}

// NewJobWriter returns a writer of job's events starting at chunk
// startChunk (0 for a new job, JobHistory.NextChunk for a job taken over)
// and starts its background goroutine.
func NewJobWriter(s *Store, job JobRef, startChunk int, opts WriterOptions) (*JobWriter, error) {
	if s == nil {
		return nil, fmt.Errorf("new job writer: nil store: %w", ErrInvalid)
	}
	if err := job.check(); err != nil {
		return nil, fmt.Errorf("new job writer: %w", err)
	}
	if startChunk < 0 {
		return nil, fmt.Errorf("new job writer for job %s: start chunk %d: %w", job.ID, startChunk, ErrInvalid)
	}
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	w := &JobWriter{
		s: s, job: job, opts: opts,
		log:    opts.Logger.With("job_id", job.ID, "repo", job.Owner+"/"+job.Name),
		ctx:    ctx,
		cancel: cancel,
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		next:   startChunk,
	}
	go w.run()
	return w, nil
}

// Emit buffers one event in either or both schemas (nil skips a schema;
// two nils do nothing). The events are encoded before Emit returns, so the
// caller may reuse them. Emit never blocks on I/O and never drops an
// event: it returns ErrTooLarge for an event that cannot fit into any
// document, ErrClosed after Close, and the writer's error once a write
// failed.
func (w *JobWriter) Emit(v1 *v1pb.LogEntry, v2 *v2pb.Event) error {
	if v1 == nil && v2 == nil {
		return nil
	}
	var e pendingEvent
	var err error
	if v1 != nil {
		if e.v1, err = proto.Marshal(v1); err != nil {
			return fmt.Errorf("emit event of job %s: marshal v1: %w", w.job.ID, err)
		}
		e.v1 = nonNilBytes(e.v1)
	}
	if v2 != nil {
		if e.v2, err = proto.Marshal(v2); err != nil {
			return fmt.Errorf("emit event of job %s: marshal v2: %w", w.job.ID, err)
		}
		e.v2 = nonNilBytes(e.v2)
	}
	if e.size() > maxEventBytes {
		return fmt.Errorf("emit event of job %s: %d bytes: %w", w.job.ID, e.size(), ErrTooLarge)
	}
	e.at = time.Now()
	e.output = isOutput(v1, v2)

	w.mu.Lock()
	if err := w.unusableLocked(); err != nil {
		w.mu.Unlock()
		return err
	}
	w.buf = append(w.buf, e)
	w.bufBytes += e.size()
	if finalDevLoop(v1) {
		// The iteration's end: from now on events wait for the final
		// state, the next SetState, which lands first (see flushLocked).
		w.hold, w.final = true, false
	}
	// A status event wakes the goroutine, which may be waiting out the
	// OutputInterval of the output before it.
	wake := len(w.buf) == 1 || !e.output || len(w.buf) >= w.opts.MaxEvents || w.bufBytes >= w.opts.MaxBytes
	w.mu.Unlock()
	if wake {
		w.wake()
	}
	return nil
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// SetState records the job's current state. Only the latest state is
// kept; it is written at most once per StateInterval, always after the
// events emitted before it, and the last one always lands (Flush, Close).
//
// A state set after an iteration's final DevLoopEvent is its final state:
// the goroutine writes it at once, then the events held since the final
// one, so a client that sees the iteration end and then asks for the state
// gets the final one, without waiting for Close.
func (w *JobWriter) SetState(v1 *v1pb.State, v2 *v2pb.State) error {
	var st pendingState
	var err error
	if v1 != nil {
		if st.v1, err = stateEncoding.Marshal(v1); err != nil {
			return fmt.Errorf("set state of job %s: marshal v1: %w", w.job.ID, err)
		}
	}
	if v2 != nil {
		if st.v2, err = stateEncoding.Marshal(v2); err != nil {
			return fmt.Errorf("set state of job %s: marshal v2: %w", w.job.ID, err)
		}
	}
	w.mu.Lock()
	if err := w.unusableLocked(); err != nil {
		w.mu.Unlock()
		return err
	}
	// A state equal to the one pending (maybe being written), or with
	// none pending to the one written, is not written again: a job sets
	// its state after every event, log lines included.
	changed := !st.equal(w.state) && (w.state != nil || !st.equal(w.written))
	first := w.state == nil && changed
	if changed {
		w.state = &st
	}
	finalNow := w.hold && !w.final
	if finalNow {
		w.final = true
	}
	w.mu.Unlock()
	if first || finalNow {
		w.wake()
	}
	return nil
}

// Flush writes every buffered event, then the latest state if it changed.
// An error caused by ctx leaves the buffer intact for a later Flush; any
// other error stops the writer.
func (w *JobWriter) Flush(ctx context.Context) error {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	w.mu.Lock()
	err := w.unusableLocked()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	return w.flushLocked(ctx)
}

// Close stops the background goroutine, then writes what is left as Flush
// does. It returns the writer's error, if any. Calling it again returns the
// same result.
func (w *JobWriter) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.closed = true
	w.mu.Unlock()

	defer w.cancel()
	close(w.stop)
	select {
	case <-w.done:
	case <-ctx.Done():
		w.cancel() // abort the background write in progress
		<-w.done
	}

	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return err
	}
	if err := w.flushLocked(ctx); err != nil {
		w.fail(err)
		return err
	}
	return nil
}

func (w *JobWriter) unusableLocked() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("job %s: %w", w.job.ID, ErrClosed)
	}
	return nil
}

func (w *JobWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *JobWriter) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// flushLocked writes everything; w.writeMu must be held.
func (w *JobWriter) flushLocked(ctx context.Context) error {
	w.mu.Lock()
	hold := w.hold
	w.mu.Unlock()
	var err error
	if hold {
		// The iteration ended: its final state lands before its final
		// events, so a client that sees the last event and then asks for
		// the state gets the final one (Skaffold, too, updates its state
		// before it sends an event).
		err = w.writeStateLocked(ctx)
		if err == nil {
			err = w.writeEventsLocked(ctx, allEvents)
		}
	} else {
		err = w.writeEventsLocked(ctx, allEvents)
		if err == nil {
			err = w.writeStateLocked(ctx)
		}
	}
	if err == nil && hold {
		w.mu.Lock()
		w.hold, w.final = false, false
		w.mu.Unlock()
	}
	if err != nil && ctx.Err() == nil {
		w.fail(err)
	}
	return err
}

// run is the background goroutine: it writes full chunks as soon as they
// are full, partial ones when their oldest event is FlushInterval old, and
// the state when StateInterval has passed since the last state write.
func (w *JobWriter) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
		case <-timer.C:
		}
		wait, err := w.background()
		if err != nil {
			w.fail(err)
			return
		}
		if wait > 0 {
			timer.Reset(wait)
		}
	}
}

// background does the writes that are due and returns how long to wait
// until the next one is (0: nothing pending).
func (w *JobWriter) background() (time.Duration, error) {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return 0, err // Flush failed; stop
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.opts.WriteTimeout)
	defer cancel()
	w.mu.Lock()
	hold, final := w.hold, w.final
	w.mu.Unlock()
	if hold {
		if !final {
			return 0, nil // the final state comes next, or Flush or Close
		}
		// The final state, then the end of the iteration.
		return 0, w.flushLocked(ctx)
	}

	if err := w.writeEventsLocked(ctx, fullChunks); err != nil {
		return 0, err
	}
	now := time.Now()
	w.mu.Lock()
	eventsAt := w.eventsDueLocked()
	eventsDue := !eventsAt.IsZero() && !now.Before(eventsAt)
	stateDue := w.state != nil && now.Sub(w.lastState) >= w.opts.StateInterval
	w.mu.Unlock()
	if eventsDue || stateDue {
		// A state is written only after the events emitted before it.
		if err := w.writeEventsLocked(ctx, dueEvents); err != nil {
			return 0, err
		}
	}
	if stateDue {
		if err := w.writeStateLocked(ctx); err != nil {
			return 0, err
		}
	}

	now = time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	var wait time.Duration
	if at := w.eventsDueLocked(); !at.IsZero() {
		wait = max(at.Sub(now), time.Millisecond)
	}
	if w.state != nil {
		d := max(w.opts.StateInterval-now.Sub(w.lastState), time.Millisecond)
		if wait == 0 || d < wait {
			wait = d
		}
	}
	return wait, nil
}

// eventsWrite says which buffered events writeEventsLocked writes.
type eventsWrite int

const (
	// fullChunks writes only full chunks, and nothing once the iteration
	// ended (the background goroutine).
	fullChunks eventsWrite = iota
	// dueEvents writes partial chunks too, and nothing once the iteration
	// ended (the background goroutine).
	dueEvents
	// allEvents writes everything, the end of the iteration included
	// (Flush and Close, after the final state).
	allEvents
)

// writeEventsLocked writes the buffered events as chunks, as which says.
// w.writeMu must be held. Events leave the buffer only once written.
//
// The background goroutine stops at the end of an iteration even in the
// middle of a loop: an iteration's final event emitted while it writes
// earlier ones must wait for Flush or Close, which write the final state
// first.
func (w *JobWriter) writeEventsLocked(ctx context.Context, which eventsWrite) error {
	for {
		w.mu.Lock()
		if w.hold && which != allEvents {
			w.mu.Unlock()
			return nil
		}
		n, size := 0, 0
		for n < len(w.buf) && n < w.opts.MaxEvents {
			if n > 0 && size+w.buf[n].size() > w.opts.MaxBytes {
				break
			}
			size += w.buf[n].size()
			n++
		}
		full := n == w.opts.MaxEvents || n < len(w.buf)
		batch := w.buf[:n:n]
		w.mu.Unlock()
		if n == 0 || (which == fullChunks && !full) {
			return nil
		}

		raw := make([]rawEvent, len(batch))
		for i, e := range batch {
			raw[i] = rawEvent{v1: e.v1, v2: e.v2}
		}
		if err := w.writeChunk(ctx, raw); err != nil {
			return err
		}
		chunk := w.next
		w.next++
		w.mu.Lock()
		w.lastChunk = time.Now()
		w.buf = w.buf[n:]
		w.bufBytes -= size
		if len(w.buf) == 0 {
			w.buf = nil // let the backing array go
		}
		w.mu.Unlock()
		// Once the writer's state says so: an event emitted after this
		// record is throttled from this chunk on (OutputInterval).
		w.log.LogAttrs(ctx, slog.LevelDebug, "events written",
			slog.Int("chunk", chunk), slog.Int("events", n), slog.Int("bytes", size))
	}
}

func (w *JobWriter) writeChunk(ctx context.Context, raw []rawEvent) error {
	first, err := w.s.appendRaw(ctx, w.job, w.next, raw)
	if err == nil {
		w.notifyWritten(raw, first)
		return nil
	}
	if errors.Is(err, ErrAlreadyExists) {
		// The Firestore client retries a commit whose answer was lost; the
		// retry then finds the document it wrote itself.
		var v1, v2 [][]byte
		for _, e := range raw {
			if e.v1 != nil {
				v1 = append(v1, e.v1)
			}
			if e.v2 != nil {
				v2 = append(v2, e.v2)
			}
		}
		if same, first, cerr := w.s.sameChunk(ctx, w.job, w.next, v1, v2); cerr == nil && same {
			w.log.LogAttrs(ctx, slog.LevelDebug, "event chunk found already written", slog.Int("chunk", w.next))
			w.notifyWritten(raw, first)
			return nil
		}
	}
	return err
}

// notifyWritten hands a stored chunk to WriterOptions.Written, numbered as
// appendRaw numbered it (each event's v1, then its v2, from first).
func (w *JobWriter) notifyWritten(raw []rawEvent, first int64) {
	if w.opts.Written == nil {
		return
	}
	b := EventBatch{Job: w.job, Chunk: w.next}
	next := first
	for _, e := range raw {
		if e.v1 != nil {
			m := new(v1pb.LogEntry)
			if proto.Unmarshal(e.v1, m) == nil {
				b.V1, b.V1Seq = append(b.V1, m), append(b.V1Seq, next)
			}
			next++
		}
		if e.v2 != nil {
			m := new(v2pb.Event)
			if proto.Unmarshal(e.v2, m) == nil {
				b.V2, b.V2Seq = append(b.V2, m), append(b.V2Seq, next)
			}
			next++
		}
	}
	w.opts.Written(b)
}

// writeStateLocked writes the pending state, if any; w.writeMu must be held.
func (w *JobWriter) writeStateLocked(ctx context.Context) error {
	w.mu.Lock()
	st := w.state
	w.mu.Unlock()
	if st == nil {
		return nil
	}
	if err := w.s.putStateRaw(ctx, w.job, st.v1, st.v2); err != nil {
		return err
	}
	w.lastState = time.Now()
	w.log.LogAttrs(ctx, slog.LevelDebug, "state written")
	w.mu.Lock()
	w.written = st
	if w.state == st {
		w.state = nil
	}
	w.mu.Unlock()
	return nil
}

// eventsDueLocked returns when the buffered events are due to be written
// as a partial chunk (zero: none buffered); w.mu must be held. Events are
// due FlushInterval after the oldest; if all of them are output, also not
// before OutputInterval after the last chunk.
func (w *JobWriter) eventsDueLocked() time.Time {
	if len(w.buf) == 0 {
		return time.Time{}
	}
	at := w.buf[0].at.Add(w.opts.FlushInterval)
	if !slices.ContainsFunc(w.buf, func(e pendingEvent) bool { return !e.output }) {
		at = later(at, w.lastChunk.Add(w.opts.OutputInterval))
	}
	return at
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// isOutput reports whether an event is only output: a v1 entry without an
// event and a v2 SkaffoldLogEvent, either of them possibly absent.
func isOutput(v1 *v1pb.LogEntry, v2 *v2pb.Event) bool {
	return (v1 == nil || v1.GetEvent() == nil) && (v2 == nil || v2.GetSkaffoldLogEvent() != nil)
}

// finalDevLoop reports whether e is the DevLoopEvent that ends an
// iteration.
func finalDevLoop(e *v1pb.LogEntry) bool {
	switch e.GetEvent().GetDevLoopEvent().GetStatus() {
	case "Succeeded", "Failed", "Canceled":
		return true
	}
	return false
}
