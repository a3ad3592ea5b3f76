// Package eventtopic publishes every stored event to a Pub/Sub topic, so
// that Cloud Functions, BigQuery subscriptions or chat bots can react to
// jobs without holding an API stream open — like Cloud Build's
// cloud-builds topic.
//
// One message per event, in both Skaffold schemas (a stored event has a v1
// and a v2 form, each with its own sequence number):
//
//	data        the event as one JSON object: Skaffold's --event-log-file
//	            line (protobuf JSON, lowerCamel names), a v1 LogEntry or a
//	            v2 Event, with kgdSequence set
//	attributes  repository  owner/name
//	            job_id      the job (the seed-002 envelope's event_id)
//	            sequence    the event's number in its repository's sequence
//	            schema      v1 or v2
//	            kind        the event's type, the oneof field's name:
//	                        buildEvent, taskEvent, skaffoldLogEvent, ...
//	ordering    the job id: a subscription with message ordering enabled
//	            receives each job's events in the order they were stored
//
// Messages are published once their events are stored (Publisher.Send is
// a store.WriterOptions.Written hook), in store order, without blocking the
// job: the Pub/Sub client batches and sends them in the background, and
// Close waits for what is under way. A runner that hands a job back at
// shutdown flushes first, so the next runner's events of the job come
// after its own: across such a restart every event is published exactly
// once, in order. A runner that is killed may not have published its last
// events; the runner that takes the job over publishes the job's stored
// events again (the worker's Replay) before ending it, so none is lost and
// some may come twice: the sequence attribute identifies an event. A publish that fails after the
// client's own retries pauses the job's ordering key; the Publisher logs
// it, resumes the key and carries on, so one failure never stops a job's
// later events (the failed ones are counted in Stats and missing).
package eventtopic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// DefaultTopic is the events topic's id; terraform creates the same.
const DefaultTopic = "kgd-events"

// Message attributes.
const (
	AttrRepository = "repository"
	AttrJobID      = "job_id"
	AttrSequence   = "sequence"
	AttrSchema     = "schema"
	AttrKind       = "kind"
)

// Publisher publishes stored events to one topic. It is safe for
// concurrent use by the writers of several jobs.
type Publisher struct {
	p   *pubsub.Publisher
	log *slog.Logger
	wg  sync.WaitGroup

	mu     sync.Mutex
	closed bool

	published, failed atomic.Int64
}

// New returns a Publisher to topic (an id in client's project or a full
// name). The topic is not checked here: publishing to a missing one fails
// and is logged.
func New(client *pubsub.Client, topic string, log *slog.Logger) *Publisher {
	p := client.Publisher(topic)
	p.EnableMessageOrdering = true
	// Events come in bursts (a build's output); the library's batching
	// (up to 10 ms or 100 messages) keeps the calls few.
	return &Publisher{p: p, log: log}
}

// Stats counts messages published and messages that failed.
type Stats struct{ Published, Failed int64 }

// Stats returns the counts so far.
func (p *Publisher) Stats() Stats {
	return Stats{Published: p.published.Load(), Failed: p.failed.Load()}
}

// Send publishes the events of a stored batch; it is a
// store.WriterOptions.Written hook and never waits for Pub/Sub. Batches
// sent after Close are dropped.
func (p *Publisher) Send(b store.EventBatch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.failed.Add(int64(len(b.V1) + len(b.V2)))
		return
	}
	repo := b.Job.Owner + "/" + b.Job.Name
	// Store order: each event's v1 form, then its v2 form, numbered as
	// stored; merging the two lists by sequence restores it.
	i, j := 0, 0
	for i < len(b.V1) || j < len(b.V2) {
		if j >= len(b.V2) || (i < len(b.V1) && seqAt(b.V1Seq, i) < seqAt(b.V2Seq, j)) {
			e := proto.Clone(b.V1[i]).(*v1pb.LogEntry)
			seq := seqAt(b.V1Seq, i)
			if seq > 0 {
				e.KgdSequence = &seq
			}
			p.publish(repo, b.Job.ID, seq, "v1", kind(e.GetEvent()), e)
			i++
			continue
		}
		e := proto.Clone(b.V2[j]).(*v2pb.Event)
		seq := seqAt(b.V2Seq, j)
		if seq > 0 {
			e.KgdSequence = &seq
		}
		p.publish(repo, b.Job.ID, seq, "v2", kind(e), e)
		j++
	}
}

// publish sends one message; the caller holds mu, so a job's messages are
// handed to the client in order.
func (p *Publisher) publish(repo, jobID string, seq int64, schema, kind string, m proto.Message) {
	data, err := protojson.Marshal(m)
	if err == nil {
		// protojson varies its spacing on purpose; one compact line is
		// the --event-log-file form.
		var buf bytes.Buffer
		if err = json.Compact(&buf, data); err == nil {
			data = buf.Bytes()
		}
	}
	if err != nil {
		p.failed.Add(1)
		p.log.Error("could not encode an event for the events topic", logging.KeyJobID, jobID, logging.KeyErr, err.Error())
		return
	}
	msg := &pubsub.Message{
		Data:        data,
		OrderingKey: jobID,
		Attributes: map[string]string{
			AttrRepository: repo, AttrJobID: jobID, AttrSequence: strconv.FormatInt(seq, 10),
			AttrSchema: schema, AttrKind: kind,
		},
	}
	res := p.p.Publish(context.Background(), msg)
	p.wg.Go(func() {
		if _, err := res.Get(context.Background()); err != nil {
			p.failed.Add(1)
			// The key is paused after a failure: later events of the job
			// would fail at once. Resume it, so they are still published.
			p.p.ResumePublish(jobID)
			p.log.Warn("could not publish an event to the events topic", logging.KeyJobID, jobID, logging.KeyRepo, repo,
				"sequence", seq, logging.KeyErr, err.Error())
			return
		}
		p.published.Add(1)
	})
}

// Flush returns once every event sent so far is published (or failed):
// call it before another runner may continue a job, so that the job's
// events reach the topic in order.
func (p *Publisher) Flush() { p.p.Flush() }

// Close publishes what was sent, waits for it (Pub/Sub's own retries
// included) and stops the client; Send drops batches afterwards. It gives
// up waiting when ctx ends (Pub/Sub unreachable at shutdown) and says how
// many events it had not seen published by then.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.p.Flush()
		p.wg.Wait()
		p.p.Stop()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("events topic: stopped waiting for publishes: %w", ctx.Err())
	}
}

func seqAt(s []int64, i int) int64 {
	if i < len(s) {
		return s[i]
	}
	return 0
}

// kind names the event's type: the name of its set event_type field.
func kind(m proto.Message) string {
	if m == nil {
		return ""
	}
	r := m.ProtoReflect()
	o := r.Descriptor().Oneofs().ByName("event_type")
	if o == nil {
		return ""
	}
	if f := r.WhichOneof(o); f != nil {
		return f.JSONName()
	}
	return ""
}

// Ensure creates the topic (an id in project) unless it exists, and the
// subscriptions given (ids) on it, with message ordering enabled. It is for
// local runs and tests against the emulator; in the cloud terraform owns
// them.
func Ensure(ctx context.Context, client *pubsub.Client, project, topic string, subscriptions ...string) error {
	name := "projects/" + project + "/topics/" + topic
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name}); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	var errs []error
	for _, s := range subscriptions {
		_, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
			Name: "projects/" + project + "/subscriptions/" + s, Topic: name,
			AckDeadlineSeconds: 60, EnableMessageOrdering: true,
		})
		if err != nil && status.Code(err) != codes.AlreadyExists {
			errs = append(errs, fmt.Errorf("create subscription %s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}
