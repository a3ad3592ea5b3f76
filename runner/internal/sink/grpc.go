package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sinkpb "github.com/kube-git-deploy/kube-git-deploy/proto/sink/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Metadata of every Send stream.
const (
	// MetadataRepository is the job's repository, "owner/name".
	MetadataRepository = "kgd-repository"
	// MetadataJob is the job id.
	MetadataJob = "kgd-job"
)

// DefaultIdleTimeout is how long a job's stream stays open without a new
// batch before it is closed (and its events acknowledged).
const DefaultIdleTimeout = 30 * time.Second

// maxStreamBatches is how many batches one stream carries at most before
// it is closed, so a long job's unacknowledged events, kept in memory for
// resending, stay bounded (with store.DefaultMaxEvents, 100k events).
const maxStreamBatches = 1000

// GRPCConfig configures a GRPC sink. Zero durations and sizes take the
// package defaults.
type GRPCConfig struct {
	// Target is the receiver's address in gRPC's syntax, e.g.
	// "sink.example.com:443" or "dns:///sink.example.com:443".
	Target string
	// Insecure connects in plaintext instead of TLS (with the system's
	// roots): for tests and the local stack, on loopback. Never set it in
	// the cloud.
	Insecure bool
	// Token, when set, is sent with every stream as "authorization:
	// Bearer <token>" (over TLS only, unless Insecure).
	Token string
	// DialOptions are applied after the sink's own (transport credentials,
	// token, user agent), so they may replace them: say, credentials that
	// trust a private CA.
	DialOptions []grpc.DialOption
	// QueueSize is how many batches wait for delivery at most.
	QueueSize int
	// Timeout bounds opening a stream, each send and the wait for the
	// acknowledgment.
	Timeout time.Duration
	// IdleTimeout is how long a job's stream stays open without a new
	// batch (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts.
	MinBackoff, MaxBackoff time.Duration
}

// GRPC streams the Skaffold v2 events of each job to an operator's
// kgd.sink.v1.EventSink. See the package documentation for the queue and
// the retries.
//
// Each job gets one Send stream, with the metadata MetadataRepository and
// MetadataJob, carrying its events in order, each with kgd_sequence set to
// its repository sequence number. The stream is closed, and the
// receiver's reply acknowledges its events, after the job's final DevLoop
// TaskEvent (Succeeded, Failed or Canceled), after IdleTimeout without a
// new batch, after maxStreamBatches batches, or at Close; later events of
// the job go on a new stream. A batch counts as sent once acknowledged.
// When a stream fails, every event it carried is sent again on a new one:
// receivers de-duplicate on kgd_sequence. Events the receiver refused (a
// final gRPC code) are dropped with their stream.
//
// It is safe for concurrent use.
type GRPC struct {
	conn   *grpc.ClientConn
	client sinkpb.EventSinkClient
	cfg    GRPCConfig
	log    *slog.Logger
	d      *delivery[grpcBatch]

	closeConn    sync.Once
	closeConnErr error

	// streams are the jobs' open streams, by job id; only the
	// delivering goroutine uses them.
	streams map[string]*jobStream
}

// grpcBatch is one queued batch: a job's v2 events.
type grpcBatch struct {
	job    store.JobRef
	events []*v2pb.Event
	seqs   []int64
	final  bool // holds the job's final DevLoop TaskEvent
}

// jobStream is a job's open stream and the batches written to it that
// the receiver has not acknowledged yet.
type jobStream struct {
	job     store.JobRef
	stream  sinkpb.EventSink_SendClient // nil: none open
	cancel  context.CancelFunc          // ends stream
	unacked []grpcBatch                 // events carry kgd_sequence
	written int                         // events of unacked written on stream
	idle    time.Time                   // when the stream is closed if no batch comes
}

// NewGRPC returns a GRPC sink for cfg.Target, logging to log, and starts
// its goroutine; it connects on the first batch. Close it.
func NewGRPC(cfg GRPCConfig, log *slog.Logger) (*GRPC, error) {
	if log == nil {
		return nil, errors.New("gRPC sink: logger is required")
	}
	if cfg.Target == "" {
		return nil, errors.New("gRPC sink: target is required")
	}
	if cfg.IdleTimeout < 0 {
		return nil, errors.New("gRPC sink: idle timeout must not be negative")
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if err := sharedDefaults(&cfg.QueueSize, &cfg.Timeout, &cfg.MinBackoff, &cfg.MaxBackoff); err != nil {
		return nil, fmt.Errorf("gRPC sink: %w", err)
	}
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	if cfg.Insecure {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithUserAgent(UserAgent)}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: cfg.Token, secure: !cfg.Insecure}))
	}
	conn, err := grpc.NewClient(cfg.Target, append(opts, cfg.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("gRPC sink: %w", err)
	}
	log = log.With("sink", "grpc", "endpoint", cfg.Target)
	d, ctx := newDelivery[grpcBatch](log, cfg.QueueSize, cfg.MinBackoff, cfg.MaxBackoff)
	g := &GRPC{conn: conn, client: sinkpb.NewEventSinkClient(conn), cfg: cfg, log: log, d: d, streams: map[string]*jobStream{}}
	go g.run(ctx)
	return g, nil
}

// Send queues the v2 events of b for delivery; it never blocks. A batch
// without v2 events sends nothing. Batches of one job must be sent in
// order. Its signature fits store.WriterOptions.Written; b's events are
// not modified.
func (g *GRPC) Send(b store.EventBatch) {
	if len(b.V2) == 0 {
		return
	}
	g.d.push(grpcBatch{job: b.Job, events: b.V2, seqs: b.V2Seq, final: final(b.V2)})
}

// Close stops accepting batches, delivers the queued ones and closes
// every open stream until ctx ends; then it gives up on the rest
// (queued, or sent but not acknowledged) and returns an
// *UndeliveredError that counts them. It closes the connection.
func (g *GRPC) Close(ctx context.Context) error {
	err := g.d.close(ctx)
	g.closeConn.Do(func() { g.closeConnErr = g.conn.Close() })
	if g.closeConnErr != nil && err == nil {
		err = fmt.Errorf("close gRPC sink connection: %w", g.closeConnErr)
	}
	return err
}

// Stats returns the sink's counters.
func (g *GRPC) Stats() Stats { return g.d.stats() }

// final reports whether events hold a job's final DevLoop TaskEvent.
func final(events []*v2pb.Event) bool {
	for _, e := range events {
		t := e.GetTaskEvent()
		if t.GetTask() != event.TaskDevLoop {
			continue
		}
		switch t.GetStatus() {
		case event.V2Succeeded, event.V2Failed, event.V2Canceled:
			return true
		}
	}
	return false
}

// run delivers the queue and closes idle streams until Close.
func (g *GRPC) run(ctx context.Context) {
	for {
		if !g.closeIdle(ctx, time.Now()) {
			g.stop()
			return
		}
		b, ok := g.d.pop()
		if ok {
			if !g.deliver(ctx, b) {
				g.stop()
				return
			}
			continue
		}
		var timer *time.Timer
		if next, ok := g.nextIdle(); ok {
			timer = time.NewTimer(time.Until(next))
		}
		res := g.d.wait(ctx, timerC(timer))
		if timer != nil {
			timer.Stop()
		}
		switch res {
		case waitDrained:
			for _, js := range g.streams {
				if !g.flush(ctx, js, true) {
					break
				}
			}
			g.stop()
			return
		case waitStopped:
			g.stop()
			return
		}
	}
}

// stop ends the open streams and the goroutine, counting the batches not
// acknowledged as undelivered.
func (g *GRPC) stop() {
	n := 0
	for _, js := range g.streams {
		n += len(js.unacked)
		js.end()
	}
	g.streams = nil
	g.d.stop(n)
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// nextIdle is when the first open stream becomes idle.
func (g *GRPC) nextIdle() (time.Time, bool) {
	var next time.Time
	for _, js := range g.streams {
		if next.IsZero() || js.idle.Before(next) {
			next = js.idle
		}
	}
	return next, !next.IsZero()
}

// closeIdle closes the streams idle at now; it reports false if ctx ended
// first.
func (g *GRPC) closeIdle(ctx context.Context, now time.Time) bool {
	for _, js := range g.streams {
		if !now.Before(js.idle) && !g.flush(ctx, js, true) {
			return false
		}
	}
	return true
}

// deliver writes b on its job's stream, closing the stream after the
// job's final batch; it reports false if ctx ended first.
func (g *GRPC) deliver(ctx context.Context, b grpcBatch) bool {
	events := make([]*v2pb.Event, len(b.events))
	for i, e := range b.events {
		events[i] = proto.CloneOf(e)
		if i < len(b.seqs) {
			events[i].KgdSequence = proto.Int64(b.seqs[i])
		}
	}
	b.events = events
	js := g.streams[b.job.ID]
	if js == nil {
		js = &jobStream{job: b.job}
		g.streams[b.job.ID] = js
	}
	js.unacked = append(js.unacked, b)
	ok := g.flush(ctx, js, b.final || len(js.unacked) >= maxStreamBatches)
	js.idle = time.Now().Add(g.cfg.IdleTimeout)
	return ok
}

// flush writes js's unwritten events, and with closing closes the stream
// and waits for the acknowledgment, until that succeeds or the receiver
// refuses the stream; it reports false if ctx ended first. A failed
// stream is replaced, and all its events written again.
func (g *GRPC) flush(ctx context.Context, js *jobStream, closing bool) bool {
	log := g.log.With(logging.KeyRepo, repository(js.job), logging.KeyJobID, js.job.ID)
	for attempt := 1; ; attempt++ {
		err := g.try(ctx, js, closing)
		if err == nil {
			if closing {
				delete(g.streams, js.job.ID)
			}
			return true
		}
		js.end()
		if ctx.Err() != nil {
			return false
		}
		code := status.Code(err)
		if !retryableCode(code) {
			n := len(js.unacked)
			g.d.dropped.Add(int64(n))
			delete(g.streams, js.job.ID)
			log.Warn("event sink: receiver refused a job's stream; its unacknowledged batches dropped",
				"code", code.String(), logging.KeyErr, err.Error(), "batches", n)
			return true
		}
		g.d.retried.Add(1)
		log.Warn("event sink: stream failed; retrying", "code", code.String(), logging.KeyErr, err.Error(),
			"attempt", attempt, "batches", len(js.unacked))
		if !g.d.backoff(ctx, attempt, 0) {
			return false
		}
	}
}

// try makes one attempt of flush: opens a stream if none is open, writes
// what it lacks and, closing, closes it and waits for the reply.
func (g *GRPC) try(ctx context.Context, js *jobStream, closing bool) error {
	if js.stream == nil {
		sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx,
			MetadataRepository, repository(js.job), MetadataJob, js.job.ID))
		var stream sinkpb.EventSink_SendClient
		err := g.timed(cancel, func() (err error) {
			stream, err = g.client.Send(sctx)
			return err
		})
		if err != nil {
			cancel()
			return err
		}
		js.stream, js.cancel, js.written = stream, cancel, 0
	}
	i := 0
	for _, b := range js.unacked {
		for _, e := range b.events {
			if i++; i <= js.written {
				continue
			}
			err := g.timed(js.cancel, func() error { return js.stream.Send(e) })
			if errors.Is(err, io.EOF) {
				// The stream ended; its status says why.
				err = g.timed(js.cancel, func() error { _, err := js.stream.CloseAndRecv(); return err })
				if err == nil {
					err = status.Error(codes.Unavailable, "receiver ended the stream before all events were sent")
				}
			}
			if err != nil {
				return err
			}
			js.written++
		}
	}
	if !closing {
		return nil
	}
	if err := g.timed(js.cancel, func() error { _, err := js.stream.CloseAndRecv(); return err }); err != nil {
		return err
	}
	js.end()
	g.d.sent.Add(int64(len(js.unacked)))
	g.log.Debug("event batches acknowledged", logging.KeyRepo, repository(js.job), logging.KeyJobID, js.job.ID,
		"batches", len(js.unacked))
	js.unacked = nil
	return nil
}

// timed runs f, cancelling the stream (by cancel) if it takes longer than
// the configured timeout; then it returns DeadlineExceeded.
func (g *GRPC) timed(cancel context.CancelFunc, f func() error) error {
	t := time.AfterFunc(g.cfg.Timeout, cancel)
	err := f()
	if !t.Stop() {
		return status.Errorf(codes.DeadlineExceeded, "no progress within %s", g.cfg.Timeout)
	}
	return err
}

// end forgets js's stream, cancelling it if still open.
func (js *jobStream) end() {
	if js.cancel != nil {
		js.cancel()
	}
	js.stream, js.cancel, js.written = nil, nil, 0
}

// retryableCode reports whether a stream that failed with code may
// succeed when tried again (the sink's own timeouts are DeadlineExceeded).
// Any other code is the receiver's final word.
func retryableCode(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// bearer sends a token with every RPC.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }
