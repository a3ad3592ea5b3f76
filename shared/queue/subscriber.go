package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
)

// Delivery describes one delivery of a job message.
type Delivery struct {
	// ID is the message id Pub/Sub assigned when it was published; every
	// redelivery of the message has the same ID.
	ID string
	// Attempt counts deliveries of this message, from 1. It is 0 when the
	// subscription has no dead-letter policy (Pub/Sub counts attempts only
	// then), and approximate: Pub/Sub counts best effort.
	Attempt int
	// PublishTime is when Pub/Sub stored the message.
	PublishTime time.Time
	// Attributes are the message's attributes (see job.Attributes).
	Attributes map[string]string
}

// Handler processes one job. Returning nil acknowledges the message; an
// error nacks it so Pub/Sub redelivers it, and after the subscription's
// maximum delivery attempts moves it to the dead-letter topic. Deliveries
// are at least once, so a handler must make a repeated job harmless.
//
// ctx is cancelled when Receive's context is done; a handler should then
// stop and return an error, so the job is redelivered to another runner.
type Handler func(ctx context.Context, m job.Message, d Delivery) error

// Defaults of SubscriberOptions.
const (
	DefaultMaxOutstanding             = 1
	DefaultMaxExtension               = 60 * time.Minute
	DefaultMaxDurationPerAckExtension = 60 * time.Second
	DefaultShutdownTimeout            = 20 * time.Second
)

// SubscriberOptions configures a Subscriber. The zero value gives the
// defaults.
type SubscriberOptions struct {
	// MaxOutstanding is how many messages are handled at once; 0 means 1,
	// because each job is heavy (a docker build and a helm deploy), and a
	// negative value means no limit.
	MaxOutstanding int
	// MaxExtension is how long a message's lease is extended while its
	// handler runs; after that Pub/Sub may deliver it again, to another
	// runner. 0 means 60 minutes; negative disables extension, so the
	// subscription's ack deadline applies (useful in tests).
	MaxExtension time.Duration
	// MaxDurationPerAckExtension bounds each lease extension, and so how
	// long a message stays invisible after a runner dies mid-job. 0 means
	// 60 s; negative leaves it to the client library (up to 10 minutes).
	// Valid positive values are 10 s to 600 s.
	MaxDurationPerAckExtension time.Duration
	// ShutdownTimeout is how long Receive waits, once its context is done,
	// for running handlers to return; then it returns ErrShutdownTimeout
	// and leaves them running. 0 or negative means 20 s, which leaves time
	// to exit within Kubernetes' default 30 s termination grace period.
	ShutdownTimeout time.Duration
	// Logger receives a warning per poison message and per failed handler,
	// an info record per job interrupted by shutdown and a debug record
	// per acknowledged job. Nil discards them; the
	// runner should always pass its logger.
	Logger *slog.Logger
}

// Subscriber receives job messages from one subscription.
type Subscriber struct {
	s               *pubsub.Subscriber
	shutdownTimeout time.Duration
	log             *slog.Logger
}

// ErrShutdownTimeout is returned by Receive when handlers were still
// running ShutdownTimeout after its context was done.
var ErrShutdownTimeout = errors.New("job handlers still running after the shutdown timeout")

// NewSubscriber returns a Subscriber for subscription, given as an id in the
// client's project or as a full name ("projects/P/subscriptions/S").
func NewSubscriber(client *pubsub.Client, subscription string, opts SubscriberOptions) *Subscriber {
	s := client.Subscriber(subscription)
	rs := &s.ReceiveSettings
	rs.NumGoroutines = 1
	rs.MaxOutstandingMessages = cmp.Or(opts.MaxOutstanding, DefaultMaxOutstanding)
	rs.MaxExtension = cmp.Or(opts.MaxExtension, DefaultMaxExtension)
	rs.MaxDurationPerAckExtension = cmp.Or(opts.MaxDurationPerAckExtension, DefaultMaxDurationPerAckExtension)
	// The library's default shutdown (no ShutdownOptions) keeps the pull
	// stream open until the handlers have returned and their acks and
	// nacks are sent; only then is the stream closed. Its timed modes close
	// the stream first, and the emulator keeps dispatching to a stream the
	// client has closed: a job nacked at shutdown bounced there lease after
	// lease, each bounce counted as a delivery attempt, and it reached the
	// dead-letter topic after 40 s instead of the next runner in 60 ms.
	// Receive bounds the wait itself (ShutdownTimeout). A narrow race
	// remains (about 1 shutdown in 40 on the emulator): a message
	// redelivered just as the stream closes waits out its lease, which
	// MaxDurationPerAckExtension keeps short.
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	return &Subscriber{s: s, shutdownTimeout: timeout, log: log.With("subscription", s.String())}
}

// Receive calls h for each job message until ctx is done, with at most
// MaxOutstanding calls at a time, and acknowledges or nacks each message by
// h's result (see Handler).
//
// A message whose body is not a valid job (see job.Decode) is poison: h is
// not called; the message is logged at Warn level (its id, attempt, size and
// the reason, never its body) and nacked, so after the maximum delivery
// attempts it lands on the dead-letter topic for inspection. Without a
// dead-letter policy on the subscription a poison message is redelivered
// forever; that is logged at Error level.
//
// When ctx is done, Receive stops pulling and cancels the running
// handlers' contexts; once they have returned and their results have been
// sent, it returns nil. A handler interrupted this way should return an
// error, so its job is redelivered, to another runner or after a restart.
// If handlers are still running ShutdownTimeout after ctx was done, Receive
// returns ErrShutdownTimeout without waiting for them (their messages come
// back when their leases expire). Receive returns other errors when the
// subscription cannot be read, for example when it does not exist. Only one
// Receive may run on a Subscriber at a time.
func (s *Subscriber) Receive(ctx context.Context, h Handler) error {
	errc := make(chan error, 1)
	go func() {
		errc <- s.s.Receive(ctx, func(ctx context.Context, msg *pubsub.Message) {
			s.handle(ctx, h, msg)
		})
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		t := time.NewTimer(s.shutdownTimeout)
		defer t.Stop()
		select {
		case err = <-errc:
		case <-t.C:
			return fmt.Errorf("receive jobs from %s: %w (%s)", s.s, ErrShutdownTimeout, s.shutdownTimeout)
		}
	}
	if err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.Canceled) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("receive jobs from %s: %w", s.s, err)
	}
	return nil
}

func (s *Subscriber) handle(ctx context.Context, h Handler, msg *pubsub.Message) {
	d := Delivery{
		ID:          msg.ID,
		PublishTime: msg.PublishTime,
		Attributes:  maps.Clone(msg.Attributes),
	}
	if msg.DeliveryAttempt != nil {
		d.Attempt = *msg.DeliveryAttempt
	}
	m, err := job.Decode(msg.Data)
	if err != nil {
		level, text := slog.LevelWarn, "poison job message: nacked for the dead-letter topic"
		if d.Attempt == 0 {
			level, text = slog.LevelError, "poison job message: nacked, and redelivered forever because the subscription has no dead-letter policy"
		}
		s.log.Log(ctx, level, text,
			"message_id", d.ID, "attempt", d.Attempt, "size", len(msg.Data), "err", err)
		msg.Nack()
		return
	}
	log := s.log.With("job_id", m.JobID, "repo", m.Repository, "message_id", d.ID, "attempt", d.Attempt)
	if err := h(ctx, m, d); err != nil {
		if ctx.Err() != nil {
			log.InfoContext(ctx, "job interrupted by shutdown: nacked for redelivery", "err", err)
		} else {
			log.WarnContext(ctx, "job failed: nacked for redelivery", "err", err)
		}
		msg.Nack()
		return
	}
	log.DebugContext(ctx, "job done: acknowledged")
	msg.Ack()
}
