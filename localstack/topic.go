package localstack

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// EventsTopic is the runner's events topic in the local stack (its
// KGD_EVENTS_TOPIC default).
const EventsTopic = "kgd-events"

// TopicEvent is one message of the events topic as a subscriber sees it:
// its attributes.
type TopicEvent struct {
	Job, Repository, Schema, Kind string
	Sequence                      int64
}

// SubscribeEvents creates an ordered subscription on the events topic of
// project (and the topic, if the runner has not yet), so that a test sees
// every event published from now on.
func SubscribeEvents(ctx context.Context, ps *pubsub.Client, project, subscription string) error {
	topic := "projects/" + project + "/topics/" + EventsTopic
	if _, err := ps.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	_, err := ps.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: "projects/" + project + "/subscriptions/" + subscription, Topic: topic,
		AckDeadlineSeconds: 60, EnableMessageOrdering: true,
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create subscription %s: %w", subscription, err)
	}
	return nil
}

// ReceiveEvents receives the events topic's messages on subscription,
// acknowledging each, until enough says the events received so far (by
// job, in the order received) are enough, or ctx ends.
func ReceiveEvents(ctx context.Context, ps *pubsub.Client, subscription string, enough func(map[string][]TopicEvent) bool) (map[string][]TopicEvent, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	got := map[string][]TopicEvent{}
	err := ps.Subscriber(subscription).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		a := m.Attributes
		seq, _ := strconv.ParseInt(a["sequence"], 10, 64)
		e := TopicEvent{Job: a["job_id"], Repository: a["repository"], Schema: a["schema"], Kind: a["kind"], Sequence: seq}
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		got[e.Job] = append(got[e.Job], e)
		if enough(got) {
			cancel()
		}
	})
	mu.Lock()
	defer mu.Unlock()
	if err == nil && !enough(got) {
		err = ctx.Err()
	}
	return got, err
}

// CheckTopicEvents checks that a job's messages on the events topic are
// its stored events, each once and in the order stored (their sequence
// numbers), with the job's repository.
func CheckTopicEvents(got []TopicEvent, batches []store.EventBatch) error {
	var want []int64
	for _, b := range batches {
		want = append(append(want, b.V1Seq...), b.V2Seq...)
	}
	slices.Sort(want)
	seqs := make([]int64, len(got))
	for i, e := range got {
		seqs[i] = e.Sequence
		if len(batches) > 0 && e.Repository != batches[0].Job.Owner+"/"+batches[0].Job.Name {
			return fmt.Errorf("message %d (sequence %d) names repository %q", i, e.Sequence, e.Repository)
		}
		if e.Schema != "v1" && e.Schema != "v2" || e.Kind == "" {
			return fmt.Errorf("message %d (sequence %d) has schema %q, kind %q", i, e.Sequence, e.Schema, e.Kind)
		}
	}
	if !slices.Equal(seqs, want) {
		return fmt.Errorf("the topic had sequence numbers %v; the job stored %v", seqs, want)
	}
	return nil
}

// Sequences returns the number of a job's stored events.
func Sequences(batches []store.EventBatch) int {
	n := 0
	for _, b := range batches {
		n += len(b.V1Seq) + len(b.V2Seq)
	}
	return n
}

// FirstOccurrences returns got without repeated events (the same
// sequence number), each kept where it first came: what a subscriber that
// de-duplicates by the sequence attribute sees.
func FirstOccurrences(got []TopicEvent) []TopicEvent {
	seen := map[int64]bool{}
	var out []TopicEvent
	for _, e := range got {
		if !seen[e.Sequence] {
			seen[e.Sequence] = true
			out = append(out, e)
		}
	}
	return out
}
