package queue_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.PubSub) }

// testTimeout bounds every test, so a broken one fails instead of hanging.
const testTimeout = 30 * time.Second

// quiet is how long a test waits to make sure something does not happen.
// Redeliveries on the emulator take ~100 ms, so this is plenty.
const quiet = 1500 * time.Millisecond

// testEnv is a job queue in a project of its own on the emulator.
type testEnv struct {
	ctx    context.Context
	client *pubsub.Client
	names  queue.Names
	logs   *lockedBuffer
	logger *slog.Logger
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	project := emulatortest.ProjectID(t)
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatalf("pubsub.NewClient: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	names := queue.DefaultNames(project)
	if err := queue.Ensure(ctx, client, names, queue.EnsureOptions{}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	logs := &lockedBuffer{}
	return &testEnv{
		ctx:    ctx,
		client: client,
		names:  names,
		logs:   logs,
		logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (e *testEnv) publisher(t *testing.T) *queue.Publisher {
	t.Helper()
	p := queue.NewPublisher(e.client, e.names.Topic)
	t.Cleanup(p.Stop)
	return p
}

// receive runs a Subscriber on the main subscription until the test ends
// and checks that Receive then returns nil.
func (e *testEnv) receive(t *testing.T, h queue.Handler) {
	t.Helper()
	e.receiveOn(t, e.names.Subscription, queue.SubscriberOptions{Logger: e.logger}, h)
}

// receiveOn is receive for any subscription and options.
func (e *testEnv) receiveOn(t *testing.T, subscription string, opts queue.SubscriberOptions, h queue.Handler) {
	t.Helper()
	s := queue.NewSubscriber(e.client, subscription, opts)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- s.Receive(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Receive returned %v after cancel, want nil", err)
		}
	})
}

// receiveRaw acknowledges every message on subscription (an id) with the
// plain client and sends it on the returned channel, until the test ends.
func (e *testEnv) receiveRaw(t *testing.T, subscription string) <-chan *pubsub.Message {
	t.Helper()
	ch := make(chan *pubsub.Message, 100)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() {
		done <- e.client.Subscriber(subscription).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
			m.Ack()
			ch <- m
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("receive from %s: %v", subscription, err)
		}
	})
	return ch
}

// publishRaw publishes data as it is, bypassing job.Encode.
func (e *testEnv) publishRaw(t *testing.T, data string) string {
	t.Helper()
	p := e.client.Publisher(e.names.Topic)
	defer p.Stop()
	id, err := p.Publish(e.ctx, &pubsub.Message{Data: []byte(data)}).Get(e.ctx)
	if err != nil {
		t.Fatalf("publish raw %q: %v", data, err)
	}
	return id
}

// next returns the next value from ch, failing the test when ctx ends first.
func next[T any](t *testing.T, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("waiting for %s: %v", what, ctx.Err())
		panic("unreachable")
	}
}

// none fails the test if ch yields a value within the quiet period.
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Errorf("unexpected %s: %+v", what, v)
	case <-time.After(quiet):
	}
}

func topicReq(name string) *pubsubpb.GetTopicRequest { return &pubsubpb.GetTopicRequest{Topic: name} }

func subReq(name string) *pubsubpb.GetSubscriptionRequest {
	return &pubsubpb.GetSubscriptionRequest{Subscription: name}
}

type received struct {
	m job.Message
	d queue.Delivery
}

func newJob(id string) job.Message {
	return job.Message{
		Version:     job.Version,
		JobID:       id,
		Repository:  "octo-org/hello-world",
		Ref:         "refs/heads/feature/x",
		SHA:         "0123456789abcdef0123456789abcdef01234567",
		Before:      "fedcba9876543210fedcba9876543210fedcba98",
		DeliveryID:  "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		Trigger:     job.TriggerPush,
		PublishedAt: time.Date(2026, 10, 20, 12, 30, 45, 123456789, time.UTC),
	}
}

func TestNames(t *testing.T) {
	n := queue.DefaultNames("demo-local")
	got := []string{n.TopicName(), n.SubscriptionName(), n.DeadLetterTopicName(), n.DeadLetterSubscriptionName()}
	want := []string{
		"projects/demo-local/topics/kgd-jobs",
		"projects/demo-local/subscriptions/kgd-runner",
		"projects/demo-local/topics/kgd-jobs-dead",
		"projects/demo-local/subscriptions/kgd-jobs-dead-sub",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("full names (-want +got):\n%s", diff)
	}
}

func TestEnsureRejects(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	project := emulatortest.ProjectID(t)
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatalf("pubsub.NewClient: %v", err)
	}
	defer client.Close()
	noDLQ := queue.DefaultNames(project)
	noDLQ.DeadLetterTopic = ""
	sameTopic := queue.DefaultNames(project)
	sameTopic.DeadLetterTopic = sameTopic.Topic

	tests := []struct {
		name  string
		names queue.Names
		opts  queue.EnsureOptions
	}{
		{"attempts below 5", queue.DefaultNames(project), queue.EnsureOptions{MaxDeliveryAttempts: 4}},
		{"attempts above 100", queue.DefaultNames(project), queue.EnsureOptions{MaxDeliveryAttempts: 101}},
		{"ack deadline below 10s", queue.DefaultNames(project), queue.EnsureOptions{AckDeadline: 9 * time.Second}},
		{"ack deadline above 600s", queue.DefaultNames(project), queue.EnsureOptions{AckDeadline: 601 * time.Second}},
		{"ack deadline fraction", queue.DefaultNames(project), queue.EnsureOptions{AckDeadline: 10500 * time.Millisecond}},
		{"negative backoff", queue.DefaultNames(project), queue.EnsureOptions{MinBackoff: -time.Second}},
		{"backoff above 600s", queue.DefaultNames(project), queue.EnsureOptions{MaxBackoff: 601 * time.Second}},
		{"min backoff above max", queue.DefaultNames(project), queue.EnsureOptions{MinBackoff: time.Minute, MaxBackoff: time.Second}},
		{"missing name", noDLQ, queue.EnsureOptions{}},
		{"dead letter topic is the topic", sameTopic, queue.EnsureOptions{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := queue.Ensure(ctx, client, tt.names, tt.opts); err == nil {
				t.Errorf("Ensure(%+v) = nil, want an error", tt.opts)
			}
		})
	}
	// Nothing was created by the rejected calls.
	_, err = client.TopicAdminClient.GetTopic(ctx, topicReq(queue.DefaultNames(project).TopicName()))
	if status.Code(err) != codes.NotFound {
		t.Errorf("GetTopic after rejected Ensure calls: %v, want NotFound", err)
	}
}

func TestEnsure(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // first Ensure
	opts := queue.EnsureOptions{MaxDeliveryAttempts: 7, AckDeadline: 20 * time.Second}
	for i := range 2 { // Ensure again: existing resources are success
		if err := queue.Ensure(e.ctx, e.client, e.names, opts); err != nil {
			t.Fatalf("Ensure #%d on existing resources: %v", i+2, err)
		}
	}

	type subInfo struct {
		Topic         string
		AckDeadline   int32
		DeadLetter    string
		MaxAttempts   int32
		HasRetryPolcy bool
	}
	get := func(name string) subInfo {
		t.Helper()
		s, err := e.client.SubscriptionAdminClient.GetSubscription(e.ctx, subReq(name))
		if err != nil {
			t.Fatalf("GetSubscription %s: %v", name, err)
		}
		return subInfo{s.GetTopic(), s.GetAckDeadlineSeconds(), s.GetDeadLetterPolicy().GetDeadLetterTopic(),
			s.GetDeadLetterPolicy().GetMaxDeliveryAttempts(), s.GetRetryPolicy() != nil}
	}
	// The first Ensure's defaults stay: Ensure does not update.
	got := []subInfo{get(e.names.SubscriptionName()), get(e.names.DeadLetterSubscriptionName())}
	want := []subInfo{
		{Topic: e.names.TopicName(), AckDeadline: 60, DeadLetter: e.names.DeadLetterTopicName(), MaxAttempts: 5},
		{Topic: e.names.DeadLetterTopicName(), AckDeadline: 60},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("subscriptions (-want +got):\n%s", diff)
	}

	// A fresh set of names gets the options, including a retry policy.
	n2 := e.names
	n2.Subscription, n2.DeadLetterSubscription = "kgd-other", "kgd-other-dead"
	opts.MinBackoff = 10 * time.Second
	if err := queue.Ensure(e.ctx, e.client, n2, opts); err != nil {
		t.Fatalf("Ensure with options: %v", err)
	}
	wantOpts := subInfo{Topic: n2.TopicName(), AckDeadline: 20, DeadLetter: n2.DeadLetterTopicName(), MaxAttempts: 7, HasRetryPolcy: true}
	if diff := cmp.Diff(wantOpts, get(n2.SubscriptionName())); diff != "" {
		t.Errorf("subscription with options (-want +got):\n%s", diff)
	}
}

func TestPublishReceive(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := make(chan received, 10)
	e.receive(t, func(ctx context.Context, m job.Message, d queue.Delivery) error {
		got <- received{m, d}
		return nil
	})

	want := newJob("job-1")
	id, err := e.publisher(t).Publish(e.ctx, want)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	r := next(t, e.ctx, got, "the job")
	if diff := cmp.Diff(want, r.m); diff != "" {
		t.Errorf("received job (-want +got):\n%s", diff)
	}
	wantAttrs := map[string]string{"version": "1", "repository": "octo-org/hello-world", "job_id": "job-1", "trigger": "push"}
	if diff := cmp.Diff(wantAttrs, r.d.Attributes); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
	if r.d.ID != id || r.d.Attempt != 1 || r.d.PublishTime.IsZero() {
		t.Errorf("delivery = %+v, want ID %s, attempt 1 and a publish time", r.d, id)
	}
	none(t, got, "redelivery of an acknowledged job")
}

func TestPublishSetsPublishedAt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := make(chan received, 10)
	e.receive(t, func(ctx context.Context, m job.Message, d queue.Delivery) error {
		got <- received{m, d}
		return nil
	})
	m := newJob("job-now")
	m.PublishedAt = time.Time{}
	start := time.Now()
	if _, err := e.publisher(t).Publish(e.ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	r := next(t, e.ctx, got, "the job")
	if at := r.m.PublishedAt; at.Before(start.Add(-time.Second)) || at.After(time.Now()) || at.Location() != time.UTC {
		t.Errorf("PublishedAt = %v, want a UTC time between %v and now", at, start)
	}
}

func TestRedeliveryAfterError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	attempts := make(chan int, 10)
	e.receive(t, func(ctx context.Context, m job.Message, d queue.Delivery) error {
		attempts <- d.Attempt
		if d.Attempt == 1 {
			return errors.New("docker daemon not ready")
		}
		return nil
	})
	if _, err := e.publisher(t).Publish(e.ctx, newJob("job-retry")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := []int{next(t, e.ctx, attempts, "attempt 1"), next(t, e.ctx, attempts, "attempt 2")}
	if diff := cmp.Diff([]int{1, 2}, got); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	none(t, attempts, "delivery after the job was acknowledged")
	if !strings.Contains(e.logs.String(), "docker daemon not ready") {
		t.Errorf("the handler's error was not logged; logs:\n%s", e.logs)
	}
}

func TestPoisonMessagesGoToDeadLetter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	called := make(chan received, 10)
	e.receive(t, func(ctx context.Context, m job.Message, d queue.Delivery) error {
		called <- received{m, d}
		return nil
	})
	dead := e.receiveRaw(t, e.names.DeadLetterSubscription)

	bodies := []string{`{"version":99}`, `not json`}
	ids := map[string]string{} // message id → body
	for _, b := range bodies {
		ids[e.publishRaw(t, b)] = b
	}
	var got []string
	for range bodies {
		m := next(t, e.ctx, dead, "a dead letter")
		got = append(got, string(m.Data))
		t.Logf("dead letter %q, attributes %v", m.Data, m.Attributes)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{`not json`, `{"version":99}`}, got); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	select {
	case r := <-called:
		t.Errorf("handler was called for a poison message: %+v", r)
	default:
	}

	// Each poison delivery was logged (attempts 1..5) without its body.
	attempts := map[string][]int{}
	for _, rec := range e.logs.records(t) {
		if rec.Level == "WARN" && strings.HasPrefix(rec.Msg, "poison") {
			attempts[rec.MessageID] = append(attempts[rec.MessageID], rec.Attempt)
		}
	}
	want := map[string][]int{}
	for id := range ids {
		want[id] = []int{1, 2, 3, 4, 5}
	}
	if diff := cmp.Diff(want, attempts); diff != "" {
		t.Errorf("logged poison attempts by message id (-want +got):\n%s", diff)
	}
	for _, b := range bodies {
		if strings.Contains(e.logs.String(), b) {
			t.Errorf("logs contain the poison body %q:\n%s", b, e.logs)
		}
	}
}

func TestFailingJobGoesToDeadLetter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	attempts := make(chan int, 10)
	e.receive(t, func(ctx context.Context, m job.Message, d queue.Delivery) error {
		attempts <- d.Attempt
		return fmt.Errorf("build %s: exit status 1", m.ShortSHA())
	})
	dead := e.receiveRaw(t, e.names.DeadLetterSubscription)

	m := newJob("job-doomed")
	if _, err := e.publisher(t).Publish(e.ctx, m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	var got []int
	for i := range queue.DefaultMaxDeliveryAttempts {
		got = append(got, next(t, e.ctx, attempts, fmt.Sprintf("attempt %d", i+1)))
	}
	if diff := cmp.Diff([]int{1, 2, 3, 4, 5}, got); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	d := next(t, e.ctx, dead, "the dead letter")
	deadJob, err := job.Decode(d.Data)
	if err != nil {
		t.Fatalf("dead letter does not decode: %v", err)
	}
	if diff := cmp.Diff(m, deadJob); diff != "" {
		t.Errorf("dead letter (-want +got):\n%s", diff)
	}
	if d.Attributes["job_id"] != "job-doomed" {
		t.Errorf("dead letter attributes = %v, want job_id job-doomed", d.Attributes)
	}
	none(t, attempts, "delivery after dead-lettering")
}

func TestPublishInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	raw := e.receiveRaw(t, e.names.Subscription)
	p := e.publisher(t)

	bad := newJob("job-bad")
	bad.SHA = "HEAD"
	id, err := p.Publish(e.ctx, bad)
	if !errors.Is(err, job.ErrInvalid) || id != "" {
		t.Fatalf("Publish(invalid) = %q, %v; want \"\", an error wrapping job.ErrInvalid", id, err)
	}
	// A valid message published after it is the only one to arrive.
	if _, err := p.Publish(e.ctx, newJob("job-good")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	m := next(t, e.ctx, raw, "the valid job")
	if got := m.Attributes["job_id"]; got != "job-good" {
		t.Errorf("first message has job_id %q, want job-good", got)
	}
	none(t, raw, "message")
}

func TestPublishMissingTopic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := queue.NewPublisher(e.client, "no-such-topic")
	defer p.Stop()
	_, err := p.Publish(e.ctx, newJob("job-lost"))
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "publish job job-lost") {
		t.Errorf("Publish to a missing topic = %v, want NotFound naming the job", err)
	}
}

func TestReceiveMissingSubscription(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := queue.NewSubscriber(e.client, "no-such-subscription", queue.SubscriberOptions{})
	err := s.Receive(e.ctx, func(context.Context, job.Message, queue.Delivery) error {
		t.Error("handler called")
		return nil
	})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Receive on a missing subscription = %v, want NotFound", err)
	}
}

// TestShutdownTimeout stops Receive while a handler ignores its cancelled
// context: Receive gives up after ShutdownTimeout instead of hanging.
func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.publisher(t).Publish(e.ctx, newJob("job-stuck")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	s := queue.NewSubscriber(e.client, e.names.Subscription, queue.SubscriberOptions{
		Logger:          e.logger,
		ShutdownTimeout: 200 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	started, cancelled, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer close(release)
	done := make(chan error, 1)
	go func() {
		done <- s.Receive(ctx, func(ctx context.Context, m job.Message, d queue.Delivery) error {
			close(started)
			<-ctx.Done()
			close(cancelled)
			<-release // a handler that does not stop when told to
			return ctx.Err()
		})
	}()
	next(t, e.ctx, started, "the handler to start")
	cancel()
	next(t, e.ctx, cancelled, "the handler's context to be cancelled")
	if err := next(t, e.ctx, done, "Receive to give up"); !errors.Is(err, queue.ErrShutdownTimeout) {
		t.Errorf("Receive after cancel = %v, want ErrShutdownTimeout", err)
	}
}

// TestShutdownRedelivers stops Receive while a handler runs: the handler
// sees its context cancelled and returns an error, Receive returns nil, and
// the job comes back to the next Receive (as it would to another runner).
func TestShutdownRedelivers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Short leases bound the wait should a redelivery land on the closed
	// stream (see the comment in NewSubscriber).
	n := e.names
	n.Subscription, n.DeadLetterSubscription = "kgd-short-lease", "kgd-short-lease-dead"
	if err := queue.Ensure(e.ctx, e.client, n, queue.EnsureOptions{AckDeadline: 10 * time.Second}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	id, err := e.publisher(t).Publish(e.ctx, newJob("job-interrupted"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	opts := queue.SubscriberOptions{Logger: e.logger, MaxDurationPerAckExtension: 10 * time.Second}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- queue.NewSubscriber(e.client, n.Subscription, opts).Receive(ctx,
			func(ctx context.Context, m job.Message, d queue.Delivery) error {
				close(started)
				<-ctx.Done()
				return ctx.Err()
			})
	}()
	next(t, e.ctx, started, "the handler to start")
	cancel()
	if err := next(t, e.ctx, done, "Receive to return"); err != nil {
		t.Fatalf("Receive after cancel = %v, want nil", err)
	}

	again := make(chan queue.Delivery, 10)
	e.receiveOn(t, n.Subscription, opts, func(ctx context.Context, m job.Message, d queue.Delivery) error {
		again <- d
		return nil
	})
	// Attempt is 2 but for a rare race (see NewSubscriber) that costs the
	// emulator an extra attempt.
	if d := next(t, e.ctx, again, "the redelivery"); d.ID != id || d.Attempt < 2 {
		t.Errorf("redelivery = %+v, want message %s, attempt 2", d, id)
	}
	if !strings.Contains(e.logs.String(), "job interrupted by shutdown") {
		t.Errorf("the interruption was not logged; logs:\n%s", e.logs)
	}
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of a
// slog handler and reads by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type logRecord struct {
	Level     string `json:"level"`
	Msg       string `json:"msg"`
	MessageID string `json:"message_id"`
	Attempt   int    `json:"attempt"`
}

func (l *lockedBuffer) records(t *testing.T) []logRecord {
	t.Helper()
	var recs []logRecord
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		var r logRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}
