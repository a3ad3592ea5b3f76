package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"

	"github.com/kube-git-deploy/kube-git-deploy/bench"
	"github.com/kube-git-deploy/kube-git-deploy/functions/internal/web"
	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

const (
	owner, name = "octo", "app"
	testSecret  = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
	// quiet is how long a test waits to make sure no message arrives.
	quiet = 1500 * time.Millisecond
)

// env is the PublicAPI webhook on a real HTTP server, over a Firestore and
// a Pub/Sub of its own project on the emulators.
type env struct {
	ctx      context.Context
	fs       *firestore.Client
	store    *store.Store
	srv      *httptest.Server
	messages <-chan *pubsub.Message
}

type publisherFunc func(context.Context, job.Message) (string, error)

func (f publisherFunc) Publish(ctx context.Context, m job.Message) (string, error) { return f(ctx, m) }

func newEnv(t testing.TB, wrap func(webhook.Publisher) webhook.Publisher) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	project := emulatortest.ProjectID(t)
	fs, err := firestore.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	ps, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	names := queue.DefaultNames(project)
	if err := queue.Ensure(ctx, ps, names, queue.EnsureOptions{}); err != nil {
		t.Fatal(err)
	}
	box, err := secret.NewBox(bytes.Repeat([]byte{7}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(fs, box)
	if err != nil {
		t.Fatal(err)
	}
	pub := queue.NewPublisher(ps, names.Topic)
	t.Cleanup(pub.Stop)
	var p webhook.Publisher = pub
	if wrap != nil {
		p = wrap(pub)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := webhook.New(st, p, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := web.NewMux(log)
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	msgs := make(chan *pubsub.Message, 64)
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ps.Subscriber(names.Subscription).Receive(rctx, func(_ context.Context, m *pubsub.Message) {
			m.Ack()
			select {
			case msgs <- m:
			default: // nobody reads (a benchmark): drop, never block shutdown
			}
		})
	}()
	t.Cleanup(func() { rcancel(); <-done })

	if err := st.TrackRepository(ctx, store.Repository{Owner: owner, Name: name, HookID: 42, WebhookSecret: []byte(testSecret), TrackedBy: "octo", Triggers: store.DefaultTriggers()}); err != nil {
		t.Fatal(err)
	}
	return &env{ctx: ctx, fs: fs, store: st, srv: srv, messages: msgs}
}

type delivery struct {
	path        string // default: the tracked repository's webhook
	event       string
	id          string
	body        []byte
	signature   string // default: a valid one; "-" for none
	contentType string // default: application/json
}

func (e *env) deliver(t *testing.T, d delivery) (int, string) {
	t.Helper()
	if d.path == "" {
		d.path = "/api/v0/github/repositories/" + owner + "/" + name + "/web_hook"
	}
	req, err := http.NewRequestWithContext(e.ctx, http.MethodPost, e.srv.URL+d.path, bytes.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	if d.contentType == "" {
		d.contentType = "application/json"
	}
	req.Header.Set("Content-Type", d.contentType)
	req.Header.Set("User-Agent", "GitHub-Hookshot/abc123")
	if d.event != "" {
		req.Header.Set(webhook.EventHeader, d.event)
	}
	if d.id != "" {
		req.Header.Set(webhook.DeliveryHeader, d.id)
	}
	switch d.signature {
	case "":
		req.Header.Set(webhook.SignatureHeader, webhook.SignatureValue([]byte(testSecret), d.body))
	case "-":
	default:
		req.Header.Set(webhook.SignatureHeader, d.signature)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("response content type %q, want JSON", ct)
	}
	return resp.StatusCode, string(b)
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// count returns the number of documents in a collection of the test's project.
func (e *env) count(t *testing.T, collection string) int {
	t.Helper()
	docs, err := e.fs.Collection(collection).Documents(e.ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	return len(docs)
}

func (e *env) nextMessage(t *testing.T) job.Message {
	t.Helper()
	select {
	case m := <-e.messages:
		jm, err := job.Decode(m.Data)
		if err != nil {
			t.Fatalf("published message does not decode: %v", err)
		}
		return jm
	case <-time.After(20 * time.Second):
		t.Fatal("no job message was published")
	}
	return job.Message{}
}

func (e *env) noMessage(t *testing.T) {
	t.Helper()
	select {
	case m := <-e.messages:
		t.Fatalf("unexpected job message published: %s", m.Data)
	case <-time.After(quiet):
	}
}

func TestSignedPushMakesOneJobAndOneMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	body := fixture(t, "push_branch.json")
	const id = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	code, resp := e.deliver(t, delivery{event: "push", id: id, body: body})
	if code != http.StatusAccepted || !strings.Contains(resp, `"status":"queued"`) {
		t.Fatalf("push = %d %s, want 202 queued", code, resp)
	}
	m := e.nextMessage(t)
	want := job.Message{
		Version: 1, JobID: m.JobID, Repository: owner + "/" + name, Ref: "refs/heads/master",
		SHA: "fd489864e7642b48eaad6e3f155c10e46810ec72", Before: "737d38c599c1b2991664dfc6155d6bf516fcce36",
		DeliveryID: id, Trigger: job.TriggerPush, PublishedAt: m.PublishedAt,
	}
	if m != want {
		t.Errorf("published %+v,\nwant %+v", m, want)
	}
	j, err := e.store.Job(e.ctx, m.JobID)
	if err != nil {
		t.Fatalf("job of the message: %v", err)
	}
	if j.SHA != want.SHA || j.DeliveryID != id || j.Status != store.StatusQueued || j.PublishedAt.IsZero() || j.Iteration != 0 || j.PushedAt.IsZero() || j.Actor != "binkkatal" {
		t.Errorf("stored job = %+v", j)
	}

	// GitHub redelivers the same delivery: no second job, no second message.
	code, resp = e.deliver(t, delivery{event: "push", id: id, body: body})
	if code != http.StatusOK || !strings.Contains(resp, `"duplicate":true`) || !strings.Contains(resp, m.JobID) {
		t.Fatalf("redelivery = %d %s, want 200 duplicate of %s", code, resp, m.JobID)
	}
	e.noMessage(t)
	if n := e.count(t, store.JobsCollection); n != 1 {
		t.Errorf("%d job documents after a redelivery, want 1", n)
	}
}

func TestRejectedDeliveriesWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	body := fixture(t, "push_branch.json")
	forged := webhook.SignatureValue([]byte("not-the-secret"), body)
	tests := []struct {
		name string
		d    delivery
		want int
	}{
		{"forged-signature", delivery{event: "push", id: "d-1", body: body, signature: forged}, http.StatusUnauthorized},
		{"missing-signature", delivery{event: "push", id: "d-2", body: body, signature: "-"}, http.StatusUnauthorized},
		{"malformed-signature", delivery{event: "push", id: "d-3", body: body, signature: "sha256=zz"}, http.StatusUnauthorized},
		{"sha1-only", delivery{event: "push", id: "d-4", body: body, signature: "sha1=0123456789abcdef0123456789abcdef01234567"}, http.StatusUnauthorized},
		{"body-tampered", delivery{event: "push", id: "d-5", body: append(bytes.Clone(body), ' '), signature: webhook.SignatureValue([]byte(testSecret), body)}, http.StatusUnauthorized},
		{"untracked-repository", delivery{path: "/api/v0/github/repositories/octo/other/web_hook", event: "push", id: "d-6", body: body}, http.StatusNotFound},
		{"invalid-repository-name", delivery{path: "/api/v0/github/repositories/octo/..%2F..%2Fx/web_hook", event: "push", id: "d-7", body: body}, http.StatusNotFound},
		{"missing-event", delivery{id: "d-8", body: body}, http.StatusBadRequest},
		{"missing-delivery-id", delivery{event: "push", body: body}, http.StatusBadRequest},
		{"not-json", delivery{event: "push", id: "d-9", body: []byte(`{"ref":`)}, http.StatusBadRequest},
		{"bad-sha", delivery{event: "push", id: "d-10", body: []byte(`{"ref":"refs/heads/main","after":"../../etc"}`)}, http.StatusBadRequest},
		{"bad-branch", delivery{event: "push", id: "d-11", body: []byte(`{"ref":"refs/heads/a..b","after":"fd489864e7642b48eaad6e3f155c10e46810ec72"}`)}, http.StatusBadRequest},
		{"unsupported-content-type", delivery{event: "push", id: "d-12", body: body, contentType: "text/plain"}, http.StatusUnsupportedMediaType},
		{"tag-deleted", delivery{event: "push", id: "d-13", body: fixture(t, "push_tag_deleted.json")}, http.StatusOK},
		{"ping", delivery{event: "ping", id: "d-14", body: fixture(t, "ping.json")}, http.StatusOK},
		{"other-event", delivery{event: "issues", id: "d-15", body: []byte(`{"action":"opened"}`)}, http.StatusOK},
		{"notes-ref", delivery{event: "push", id: "d-16", body: []byte(`{"ref":"refs/notes/commits","after":"fd489864e7642b48eaad6e3f155c10e46810ec72"}`)}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, resp := e.deliver(t, tt.d)
			if code != tt.want {
				t.Errorf("status = %d (%s), want %d", code, resp, tt.want)
			}
			if !strings.Contains(resp, `"ok":`) || strings.Contains(resp, testSecret) {
				t.Errorf("response %s lacks ok or leaks the secret", resp)
			}
		})
	}
	e.noMessage(t)
	for _, c := range []string{store.JobsCollection, store.DeliveriesCollection} {
		if n := e.count(t, c); n != 0 {
			t.Errorf("%d documents in %s after rejected deliveries, want 0", n, c)
		}
	}
}

func TestOversizeBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	body := bytes.Repeat([]byte(" "), webhook.MaxBody+1)
	code, resp := e.deliver(t, delivery{event: "push", id: "big", body: body})
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize body = %d %s, want 413", code, resp)
	}
	if n := e.count(t, store.JobsCollection); n != 0 {
		t.Errorf("%d jobs after an oversize body", n)
	}
}

func TestTagsFormsAndPending(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)

	t.Run("tag-created", func(t *testing.T) {
		code, resp := e.deliver(t, delivery{event: "push", id: "tag-1", body: fixture(t, "push_tag_created.json")})
		if code != http.StatusAccepted {
			t.Fatalf("tag push = %d %s", code, resp)
		}
		m := e.nextMessage(t)
		if m.Ref != "refs/tags/v0.0.1" || m.Tag() != "v0.0.1" || m.Branch() != "" || m.SHA != "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd" {
			t.Errorf("tag job = %+v", m)
		}
	})
	t.Run("form-encoded", func(t *testing.T) {
		form := url.Values{"payload": {string(fixture(t, "push_branch_created.json"))}}.Encode()
		code, resp := e.deliver(t, delivery{event: "push", id: "form-1", body: []byte(form), contentType: "application/x-www-form-urlencoded"})
		if code != http.StatusAccepted {
			t.Fatalf("form delivery = %d %s", code, resp)
		}
		if m := e.nextMessage(t); m.Branch() != "feature-branch" {
			t.Errorf("form job branch = %q", m.Branch())
		}
	})
	t.Run("auto-build-off", func(t *testing.T) {
		if err := e.store.SetTriggers(e.ctx, owner, name, store.Triggers{AutoBuild: false, AutoDeploy: true, AutoSync: true}); err != nil {
			t.Fatal(err)
		}
		code, resp := e.deliver(t, delivery{event: "push", id: "pending-1", body: fixture(t, "push_branch.json")})
		if code != http.StatusAccepted || !strings.Contains(resp, `"status":"pending"`) {
			t.Fatalf("push with auto-build off = %d %s, want 202 pending", code, resp)
		}
		e.noMessage(t)
		jobs, err := e.store.Jobs(e.ctx, owner, name, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 0 || jobs[0].Status != store.StatusPending {
			t.Errorf("newest job %+v, want a pending one", jobs)
		}
	})
}

// TestPublishFailureIsRecoveredByRedelivery: a job recorded but not
// published is published when GitHub redelivers.
func TestPublishFailureIsRecoveredByRedelivery(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	fail.Store(true)
	e := newEnv(t, func(p webhook.Publisher) webhook.Publisher {
		return publisherFunc(func(ctx context.Context, m job.Message) (string, error) {
			if fail.Load() {
				return "", errors.New("pubsub unavailable")
			}
			return p.Publish(ctx, m)
		})
	})
	body := fixture(t, "push_branch.json")
	code, resp := e.deliver(t, delivery{event: "push", id: "flaky-1", body: body})
	if code != http.StatusServiceUnavailable || strings.Contains(resp, "pubsub unavailable") {
		t.Fatalf("push with Pub/Sub down = %d %s, want 503 without internals", code, resp)
	}
	e.noMessage(t)
	fail.Store(false)
	code, resp = e.deliver(t, delivery{event: "push", id: "flaky-1", body: body})
	if code != http.StatusOK || !strings.Contains(resp, `"duplicate":true`) {
		t.Fatalf("redelivery = %d %s", code, resp)
	}
	m := e.nextMessage(t)
	if m.DeliveryID != "flaky-1" {
		t.Errorf("republished message delivery = %q", m.DeliveryID)
	}
	// A third delivery finds it published and publishes nothing.
	e.deliver(t, delivery{event: "push", id: "flaky-1", body: body})
	e.noMessage(t)
	if n := e.count(t, store.JobsCollection); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
}

// BenchmarkWebhook measures PublicAPI's webhook handler on a real HTTP
// server over the emulators, with signed copies of a recorded GitHub push
// (testdata/push_branch.json) each carrying a new commit and push time:
//
//   - latency: delivery → 2xx at concurrency 1, 8 and 32, all to one
//     repository and spread over 32 tracked repositories;
//   - throughput: sustained deliveries/s at concurrency 32 over the 32
//     repositories, in windows of 50 deliveries;
//   - emulator alone: one Firestore document create plus one Pub/Sub
//     publish (acked), the least a delivery must do, at the same
//     concurrencies, to show where the emulators are the limit.
//
// One op is the whole series (make bench runs it with -benchtime=1x); the
// series are recorded for bench/RESULTS.md (package bench).
func BenchmarkWebhook(b *testing.B) {
	const (
		warmup, samples    = 20, 200
		repos              = 32
		windows, perWindow = 20, 50
	)
	e := newEnv(b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	names := []string{name}
	for i := range repos - 1 {
		n := fmt.Sprintf("%s%d", name, i+1)
		if err := e.store.TrackRepository(ctx, store.Repository{Owner: owner, Name: n, HookID: int64(100 + i), WebhookSecret: []byte(testSecret), TrackedBy: "octo", Triggers: store.DefaultTriggers()}); err != nil {
			b.Fatal(err)
		}
		names = append(names, n)
	}
	var recorded map[string]any
	if err := json.Unmarshal(fixture(b, "push_branch.json"), &recorded); err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
	var seq atomic.Int64
	var mu sync.Mutex // recorded, the payload being edited
	// deliver sends one new signed push to repository n and returns how
	// long the answer took and its status.
	deliverTo := func(base, n string) (time.Duration, int) {
		i := seq.Add(1)
		mu.Lock()
		recorded["after"] = fmt.Sprintf("%040x", i)
		recorded["before"] = fmt.Sprintf("%040x", i+1<<40)
		recorded["repository"].(map[string]any)["pushed_at"] = 1_900_000_000 + i
		body, err := json.Marshal(recorded)
		mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v0/github/repositories/"+owner+"/"+n+"/web_hook", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "GitHub-Hookshot/abc123")
		req.Header.Set(webhook.EventHeader, "push")
		req.Header.Set(webhook.DeliveryHeader, fmt.Sprintf("bench-%d", i))
		req.Header.Set(webhook.SignatureHeader, webhook.SignatureValue([]byte(testSecret), body))
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(t0), resp.StatusCode
	}
	deliver := func(n string) (time.Duration, int) { return deliverTo(e.srv.URL, n) }
	record := func(s bench.Series) {
		if err := bench.Record(s); err != nil {
			b.Fatal(err)
		}
	}
	// load runs n calls of op with c workers and returns each call's
	// latency, the failures and the elapsed time.
	load := func(n, c int, op func(i int) (time.Duration, bool)) (lat []time.Duration, failed int, elapsed time.Duration) {
		var next atomic.Int64
		var wg sync.WaitGroup
		var lmu sync.Mutex
		t0 := time.Now()
		for range c {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					d, ok := op(i)
					lmu.Lock()
					lat = append(lat, d)
					if !ok {
						failed++
					}
					lmu.Unlock()
				}
			})
		}
		wg.Wait()
		return lat, failed, time.Since(t0)
	}
	webhookOp := func(spread bool) func(int) (time.Duration, bool) {
		return func(i int) (time.Duration, bool) {
			n := name
			if spread {
				n = names[i%len(names)]
			}
			d, code := deliver(n)
			return d, code >= 200 && code < 300
		}
	}

	project := emulatortest.ProjectID(b) // a topic of the raw loop's own
	ps, err := pubsub.NewClient(ctx, project)
	if err != nil {
		b.Fatal(err)
	}
	defer ps.Close()
	rawNames := queue.DefaultNames(project)
	if err := queue.Ensure(ctx, ps, rawNames, queue.EnsureOptions{}); err != nil {
		b.Fatal(err)
	}
	pub := ps.Publisher(rawNames.Topic)
	pub.PublishSettings.CountThreshold = 1
	defer pub.Stop()
	var rawSeq atomic.Int64
	rawOp := func(int) (time.Duration, bool) {
		t0 := time.Now()
		id := fmt.Sprintf("raw-%d", rawSeq.Add(1))
		if _, err := e.fs.Collection("bench_raw").Doc(id).Create(ctx, map[string]any{"id": id, "at": time.Now()}); err != nil {
			b.Fatal(err)
		}
		if _, err := pub.Publish(ctx, &pubsub.Message{Data: []byte(id)}).Get(ctx); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0), true
	}

	for b.Loop() {
		for _, c := range []int{1, 8, 32} {
			for _, spread := range []bool{false, true} {
				where := "one repository"
				if spread {
					where = fmt.Sprintf("spread over %d repositories", repos)
				}
				load(warmup, c, webhookOp(spread))
				lat, failed, _ := load(samples, c, webhookOp(spread))
				record(bench.Series{Figure: "3", Name: "webhook → 2xx", Case: fmt.Sprintf("concurrency %d, %s; %d of %d not 2xx", c, where, failed, samples),
					Unit: "ms", Warmup: warmup, Samples: bench.Millis(lat), Target: &bench.Target{Stat: "p99", Op: "<", Value: 50},
					Note: "signed recorded GitHub push with a new commit each, in-process PublicAPI handler on a loopback HTTP server, emulators"})
			}
			load(warmup, c, rawOp)
			lat, _, _ := load(samples, c, rawOp)
			record(bench.Series{Figure: "3", Name: "emulator alone: Firestore create + Pub/Sub publish", Case: fmt.Sprintf("concurrency %d", c),
				Unit: "ms", Warmup: warmup, Samples: bench.Millis(lat), Note: "one document Create, then one Publish waited for its ack; no product code"})
		}
		var rate, rawRate []float64
		var failed int
		var cpu, rawCPU bench.CPUMeter
		load(warmup, 32, webhookOp(true))
		for range windows {
			cpu.Start()
			_, f, el := load(perWindow, 32, webhookOp(true))
			cpu.Stop()
			rate, failed = append(rate, float64(perWindow)/el.Seconds()), failed+f
		}
		for range windows {
			rawCPU.Start()
			_, _, el := load(perWindow, 32, rawOp)
			rawCPU.Stop()
			rawRate = append(rawRate, float64(perWindow)/el.Seconds())
		}
		record(bench.Series{Figure: "3", Name: "sustained deliveries/s", Case: fmt.Sprintf("PublicAPI handler, concurrency 32, spread over %d repositories; %d of %d not 2xx", repos, failed, windows*perWindow),
			Unit: "deliveries/s", Warmup: 1, Samples: rate, Target: &bench.Target{Stat: "median", Op: ">=", Value: 500},
			Note: fmt.Sprintf("one sample is a window of %d deliveries", perWindow)})
		record(bench.Series{Figure: "3", Name: "sustained deliveries/s", Case: "emulator alone (Firestore create + Pub/Sub publish), concurrency 32",
			Unit: "ops/s", Samples: rawRate, Note: fmt.Sprintf("one sample is a window of %d create+publish pairs", perWindow)})
		record(cpu.Series("3", "machine CPU busy", "sustained deliveries/s: PublicAPI handler"))
		record(rawCPU.Series("3", "machine CPU busy", "sustained deliveries/s: emulator alone"))

		// Where a delivery's time goes: its Firestore calls, counted by a
		// proxy in front of the emulator (a second handler, so the proxy
		// adds nothing to the latencies above).
		counter, err := bench.NewWriteCounter(os.Getenv(emulator.FirestoreHostEnv))
		if err != nil {
			b.Fatal(err)
		}
		defer counter.Close()
		b.Setenv(emulator.FirestoreHostEnv, counter.Addr)
		ce := newEnv(b, nil)
		sum := func(m map[string]int64) (n int64) {
			for _, v := range m {
				n += v
			}
			return n
		}
		var calls, writes []float64
		before := counter.RPCs()
		for i := range warmup + 30 {
			c0, w0 := sum(counter.RPCs()), counter.Writes()
			if _, code := deliverTo(ce.srv.URL, name); code/100 != 2 {
				b.Fatalf("counted delivery: status %d", code)
			}
			if i >= warmup {
				calls, writes = append(calls, float64(sum(counter.RPCs())-c0)), append(writes, float64(counter.Writes()-w0))
			}
		}
		var methods []string
		for m, n := range counter.RPCs() {
			if d := n - before[m]; d > 0 {
				methods = append(methods, fmt.Sprintf("%s %.1f", m, float64(d)/float64(warmup+30)))
			}
		}
		slices.Sort(methods)
		record(bench.Series{Figure: "3", Name: "Firestore calls per delivery", Case: "one repository, one at a time", Unit: "RPCs", Warmup: warmup, Samples: calls,
			Note: "per delivery, by method: " + strings.Join(methods, ", ")})
		record(bench.Series{Figure: "3", Name: "Firestore document writes per delivery", Case: "one repository, one at a time", Unit: "writes", Warmup: warmup, Samples: writes})
	}
}

// withPush returns a push payload for owner/name with the given before,
// after and push time (repository.pushed_at, Unix seconds).
func withPush(t *testing.T, before, after string, pushedAt int64) []byte {
	t.Helper()
	return []byte(`{"ref":"refs/heads/main","before":"` + before + `","after":"` + after +
		`","created":false,"deleted":false,"forced":true,"repository":{"id":1,"full_name":"octo/app","pushed_at":` +
		strconv.FormatInt(pushedAt, 10) + `}}`)
}

// TestReplayedPushCreatesNoJob: X-GitHub-Delivery is not signed, so a
// captured signed push replayed under a new delivery id must be the same
// push; a force-push back to an older commit and the same change pushed
// again later are new pushes.
func TestReplayedPushCreatesNoJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const a, b = "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
	first := withPush(t, a, b, 1_800_000_000)
	code, resp := e.deliver(t, delivery{event: "push", id: "delivery-1", body: first})
	if code != http.StatusAccepted {
		t.Fatalf("push = %d %s", code, resp)
	}
	original := e.nextMessage(t)

	code, resp = e.deliver(t, delivery{event: "push", id: "replayed-with-a-new-id", body: first})
	if code != http.StatusOK || !strings.Contains(resp, `"duplicate":true`) || !strings.Contains(resp, original.JobID) {
		t.Fatalf("replay = %d %s, want 200 duplicate of %s", code, resp, original.JobID)
	}
	e.noMessage(t)
	if n := e.count(t, store.JobsCollection); n != 1 {
		t.Fatalf("%d jobs after a replay, want 1", n)
	}

	for _, tt := range []struct {
		name string
		body []byte
	}{
		{"force-push-back", withPush(t, b, a, 1_800_000_060)},
		{"same-change-pushed-again-later", withPush(t, a, b, 1_800_000_120)},
	} {
		code, resp := e.deliver(t, delivery{event: "push", id: "delivery-" + tt.name, body: tt.body})
		if code != http.StatusAccepted {
			t.Errorf("%s = %d %s, want 202: a new push", tt.name, code, resp)
			continue
		}
		if m := e.nextMessage(t); m.JobID == original.JobID {
			t.Errorf("%s reused job %s", tt.name, m.JobID)
		}
	}
	jobs, err := e.store.Jobs(e.ctx, owner, name, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.PushedAt.IsZero() {
			t.Errorf("job %s has no push time", j.ID)
		}
	}
}

// failingBody fails the test if the handler reads it.
type failingBody struct{ t *testing.T }

func (b failingBody) Read([]byte) (int, error) {
	b.t.Error("the body of an unauthenticated request was read")
	return 0, io.EOF
}

// TestUnauthenticatedRequestsAreCheap: no body is read before the
// repository is known to be tracked and a signature header is present.
func TestUnauthenticatedRequestsAreCheap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := webhook.New(e.store, publisherFunc(func(context.Context, job.Message) (string, error) {
		t.Error("published")
		return "", nil
	}), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := web.NewMux(log)
	h.Register(mux)
	for _, tt := range []struct {
		name, repo, signature string
		length                int64
		want                  int
	}{
		{"no-signature", name, "", 100, http.StatusUnauthorized},
		{"untracked", "other", "sha256=00", 100, http.StatusNotFound},
		{"declared-too-big", name, "sha256=00", webhook.MaxBody + 1, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(e.ctx, http.MethodPost, "/api/v0/github/repositories/"+owner+"/"+tt.repo+"/web_hook", failingBody{t})
			req.ContentLength = tt.length
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(webhook.EventHeader, "push")
			if tt.signature != "" {
				req.Header.Set(webhook.SignatureHeader, tt.signature)
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status = %d %s, want %d", rec.Code, rec.Body, tt.want)
			}
		})
	}
}

// TestBurstToOneRepository: 32 deliveries at once to one repository, some
// of them GitHub redeliveries of others, are all answered 2xx and each
// distinct push becomes exactly one job: recording a push is one write to
// its own document, so one repository's pushes never queue behind each
// other (before, every delivery ran a transaction on the repository's
// document and most of a burst answered 503).
func TestBurstToOneRepository(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const pushes, redelivered = 28, 4
	type delivered struct {
		id   string
		body []byte
	}
	var all []delivered
	for i := range pushes {
		after := fmt.Sprintf("%040x", i+1)
		all = append(all, delivered{fmt.Sprintf("burst-%d", i), withPush(t, strings.Repeat("0", 39)+"1", after, 1_800_000_000+int64(i))})
	}
	for i := range redelivered {
		all = append(all, all[i]) // the same delivery again, as GitHub redelivers
	}
	var wg sync.WaitGroup
	codes := make([]int, len(all))
	answers := make([]string, len(all))
	start := make(chan struct{})
	for i, d := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i], answers[i] = e.deliver(t, delivery{event: "push", id: d.id, body: d.body})
		}()
	}
	close(start)
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusAccepted && c != http.StatusOK {
			t.Errorf("delivery %d (%s) = %d, want 2xx", i, all[i].id, c)
		}
	}
	if n := e.count(t, store.JobsCollection); n != pushes {
		t.Errorf("%d jobs for %d distinct pushes", n, pushes)
	}
	// Every push is published. A redelivery that arrives while its
	// original is still being published may publish the job again (it
	// cannot tell a publish in flight from one that failed); that is
	// Pub/Sub's at-least-once delivery, which the runner's claim makes
	// harmless. Only a redelivered push may be published twice.
	redeliveredJobs := map[string]bool{}
	for i := range redelivered {
		var r struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal([]byte(answers[i]), &r); err != nil || r.JobID == "" {
			t.Fatalf("delivery %d answered %q: %v", i, answers[i], err)
		}
		redeliveredJobs[r.JobID] = true
	}
	seen := map[string]int{}
	for len(seen) < pushes {
		m := e.nextMessage(t)
		seen[m.JobID]++
		if seen[m.JobID] > 1 && (!redeliveredJobs[m.JobID] || seen[m.JobID] > 2) {
			t.Errorf("job %s published %d times; only a redelivered push may be published twice", m.JobID, seen[m.JobID])
		}
	}
}
