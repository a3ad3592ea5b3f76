// Package queue carries job messages (package job) through Google Cloud
// Pub/Sub: a Publisher for the functions that accept pushes, a Subscriber
// for the runner, and Ensure, which creates the topics and subscriptions
// for local runs and tests.
//
// Delivery is at least once. A handler error nacks the message, so Pub/Sub
// redelivers it; after the subscription's maximum delivery attempts Pub/Sub
// moves it to the dead-letter topic. A body that is not a valid job (a
// poison message) never reaches the handler and goes the same way.
//
// The package takes a *pubsub.Client from its caller and never creates or
// closes one.
package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Default resource ids, used by DefaultNames. Terraform creates the same
// names in the cloud.
const (
	DefaultTopic                  = "kgd-jobs"
	DefaultSubscription           = "kgd-runner"
	DefaultDeadLetterTopic        = "kgd-jobs-dead"
	DefaultDeadLetterSubscription = "kgd-jobs-dead-sub"
)

// Names identifies the Pub/Sub resources of the job queue: ids within
// Project, not full resource names.
type Names struct {
	// Project is the Google Cloud project id.
	Project string
	// Topic receives job messages.
	Topic string
	// Subscription is the runner's subscription on Topic.
	Subscription string
	// DeadLetterTopic receives messages Subscription gave up on.
	DeadLetterTopic string
	// DeadLetterSubscription keeps the dead letters; without a
	// subscription, messages published to DeadLetterTopic are dropped.
	DeadLetterSubscription string
}

// DefaultNames returns the default resource ids in project.
func DefaultNames(project string) Names {
	return Names{
		Project:                project,
		Topic:                  DefaultTopic,
		Subscription:           DefaultSubscription,
		DeadLetterTopic:        DefaultDeadLetterTopic,
		DeadLetterSubscription: DefaultDeadLetterSubscription,
	}
}

// TopicName returns the full name of Topic: "projects/P/topics/T".
func (n Names) TopicName() string { return topicName(n.Project, n.Topic) }

// SubscriptionName returns the full name of Subscription:
// "projects/P/subscriptions/S".
func (n Names) SubscriptionName() string { return subscriptionName(n.Project, n.Subscription) }

// DeadLetterTopicName returns the full name of DeadLetterTopic.
func (n Names) DeadLetterTopicName() string { return topicName(n.Project, n.DeadLetterTopic) }

// DeadLetterSubscriptionName returns the full name of DeadLetterSubscription.
func (n Names) DeadLetterSubscriptionName() string {
	return subscriptionName(n.Project, n.DeadLetterSubscription)
}

func topicName(project, id string) string { return "projects/" + project + "/topics/" + id }

func subscriptionName(project, id string) string {
	return "projects/" + project + "/subscriptions/" + id
}

// validate checks that every name is set; Pub/Sub checks the rest.
func (n Names) validate() error {
	for _, f := range []struct{ field, value string }{
		{"Project", n.Project},
		{"Topic", n.Topic},
		{"Subscription", n.Subscription},
		{"DeadLetterTopic", n.DeadLetterTopic},
		{"DeadLetterSubscription", n.DeadLetterSubscription},
	} {
		if f.value == "" {
			return fmt.Errorf("queue names: %s is empty", f.field)
		}
	}
	if n.Topic == n.DeadLetterTopic {
		return errors.New("queue names: Topic and DeadLetterTopic are the same")
	}
	return nil
}

// Limits and defaults of EnsureOptions; the limits are Pub/Sub's.
const (
	DefaultMaxDeliveryAttempts = 5
	MinMaxDeliveryAttempts     = 5
	MaxMaxDeliveryAttempts     = 100

	DefaultAckDeadline = 60 * time.Second
	MinAckDeadline     = 10 * time.Second
	MaxAckDeadline     = 600 * time.Second

	// MaxBackoff is the longest retry backoff Pub/Sub accepts.
	MaxBackoff = 600 * time.Second
)

// EnsureOptions configures the main subscription created by Ensure. The zero
// value gives the defaults.
type EnsureOptions struct {
	// MaxDeliveryAttempts is how often a message is delivered before it is
	// moved to the dead-letter topic: 5–100; 0 means 5.
	MaxDeliveryAttempts int
	// AckDeadline is the subscription's ack deadline: 10 s–600 s; 0 means
	// 60 s. The Subscriber extends it while a handler runs.
	AckDeadline time.Duration
	// MinBackoff and MaxBackoff, when either is set, give the subscription a
	// retry policy: a nacked message is redelivered after an exponential
	// backoff between them (each 0–600 s; Pub/Sub uses 10 s and 600 s for a
	// zero bound). When both are zero there is no retry policy and a nacked
	// message is redelivered at once, so all attempts can be spent within
	// a second; the cloud subscription should have one.
	MinBackoff, MaxBackoff time.Duration
}

func (o EnsureOptions) withDefaults() (EnsureOptions, error) {
	if o.MaxDeliveryAttempts == 0 {
		o.MaxDeliveryAttempts = DefaultMaxDeliveryAttempts
	}
	if o.MaxDeliveryAttempts < MinMaxDeliveryAttempts || o.MaxDeliveryAttempts > MaxMaxDeliveryAttempts {
		return o, fmt.Errorf("max delivery attempts %d: must be between %d and %d", o.MaxDeliveryAttempts, MinMaxDeliveryAttempts, MaxMaxDeliveryAttempts)
	}
	if o.AckDeadline == 0 {
		o.AckDeadline = DefaultAckDeadline
	}
	if o.AckDeadline < MinAckDeadline || o.AckDeadline > MaxAckDeadline || o.AckDeadline%time.Second != 0 {
		return o, fmt.Errorf("ack deadline %s: must be whole seconds between %s and %s", o.AckDeadline, MinAckDeadline, MaxAckDeadline)
	}
	for _, b := range []time.Duration{o.MinBackoff, o.MaxBackoff} {
		if b < 0 || b > MaxBackoff {
			return o, fmt.Errorf("retry backoff %s: must be between 0 and %s", b, MaxBackoff)
		}
	}
	if o.MaxBackoff != 0 && o.MinBackoff > o.MaxBackoff {
		return o, fmt.Errorf("retry backoff: minimum %s is more than maximum %s", o.MinBackoff, o.MaxBackoff)
	}
	return o, nil
}

// Ensure creates the job queue's resources unless they exist: the topic,
// the dead-letter topic, a subscription on the dead-letter topic (so dead
// letters are kept), and the main subscription with a dead-letter policy.
// It is idempotent: a resource that already exists counts as success and is
// left as it is, even if its settings differ from opts.
//
// Ensure is for local runs and tests against the emulator. In the cloud,
// terraform owns these resources. There the dead-letter policy also needs
// IAM: the project's Pub/Sub service agent
// (service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com) must be
// allowed to publish to the dead-letter topic and to subscribe to
// (acknowledge on) the main subscription, or messages are never
// forwarded.
func Ensure(ctx context.Context, client *pubsub.Client, n Names, opts EnsureOptions) error {
	if err := n.validate(); err != nil {
		return fmt.Errorf("ensure queue: %w", err)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return fmt.Errorf("ensure queue: %w", err)
	}
	for _, t := range []string{n.TopicName(), n.DeadLetterTopicName()} {
		_, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: t})
		if err := ignoreExists(err); err != nil {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	subs := []*pubsubpb.Subscription{
		{
			Name:               n.DeadLetterSubscriptionName(),
			Topic:              n.DeadLetterTopicName(),
			AckDeadlineSeconds: int32(DefaultAckDeadline / time.Second),
		},
		{
			Name:               n.SubscriptionName(),
			Topic:              n.TopicName(),
			AckDeadlineSeconds: int32(opts.AckDeadline / time.Second),
			DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{
				DeadLetterTopic:     n.DeadLetterTopicName(),
				MaxDeliveryAttempts: int32(opts.MaxDeliveryAttempts),
			},
			RetryPolicy: retryPolicy(opts),
		},
	}
	for _, s := range subs {
		_, err := client.SubscriptionAdminClient.CreateSubscription(ctx, s)
		if err := ignoreExists(err); err != nil {
			return fmt.Errorf("create subscription %s: %w", s.Name, err)
		}
	}
	return nil
}

func retryPolicy(o EnsureOptions) *pubsubpb.RetryPolicy {
	if o.MinBackoff == 0 && o.MaxBackoff == 0 {
		return nil
	}
	p := &pubsubpb.RetryPolicy{}
	if o.MinBackoff != 0 {
		p.MinimumBackoff = durationpb.New(o.MinBackoff)
	}
	if o.MaxBackoff != 0 {
		p.MaximumBackoff = durationpb.New(o.MaxBackoff)
	}
	return p
}

func ignoreExists(err error) error {
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return err
}
