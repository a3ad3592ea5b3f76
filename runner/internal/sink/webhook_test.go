package sink_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/sink"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/eventlog"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

var testSecret = []byte("0123456789abcdef-test-secret")

// answer is how the receiver answers one request.
type answer struct {
	code       int
	retryAfter string
	hangUp     bool // close the connection without answering
}

// request is one request the receiver got.
type request struct {
	at       time.Time
	header   http.Header
	body     []byte
	verified bool
	envs     []eventlog.Event
	answer   answer
}

// receiver is a webhook endpoint on loopback that verifies signatures and
// records every request. answers[n] answers the n-th request; requests
// past the end are answered 200.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	answers []answer

	mu       sync.Mutex
	requests []request
	// block, when set, holds the first request until closed, after
	// announcing it on arrived.
	block, arrived chan struct{}
}

func newReceiver(t *testing.T, answers ...answer) *receiver {
	r := &receiver{t: t, answers: answers}
	r.srv = httptest.NewServer(http.HandlerFunc(r.handle))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		r.t.Errorf("read request body: %v", err)
		return
	}
	got := request{at: time.Now(), header: req.Header.Clone(), body: body,
		verified: sink.Verify(testSecret, body, req.Header.Get(sink.HeaderSignature))}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var e eventlog.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			r.t.Errorf("body line %q: %v", sc.Text(), err)
		}
		got.envs = append(got.envs, e)
	}
	r.mu.Lock()
	n := len(r.requests)
	a := answer{code: http.StatusOK}
	if n < len(r.answers) {
		a = r.answers[n]
	}
	got.answer = a
	r.requests = append(r.requests, got)
	block := r.block
	r.mu.Unlock()
	if n == 0 && block != nil {
		close(r.arrived)
		<-block
	}
	if a.hangUp {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			r.t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.WriteHeader(a.code)
}

// got returns the requests so far.
func (r *receiver) got() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.requests...)
}

// accepted returns the envelopes of the requests answered 2xx, by job, in
// the order received.
func (r *receiver) accepted() map[string][]eventlog.Event {
	out := map[string][]eventlog.Event{}
	for _, req := range r.got() {
		if req.answer.hangUp || req.answer.code/100 != 2 {
			continue
		}
		job := req.header.Get(sink.HeaderJob)
		out[job] = append(out[job], req.envs...)
	}
	return out
}

func newWebhook(t *testing.T, r *receiver, queueSize int) *sink.Webhook {
	t.Helper()
	w, err := sink.NewWebhook(sink.WebhookConfig{URL: r.srv.URL, AllowHTTP: true, Secret: testSecret, QueueSize: queueSize,
		Timeout: 10 * time.Second, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}, r.srv.Client(), testLogger(t))
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	t.Cleanup(func() { _ = w.Close(t.Context()) })
	return w
}

func closeSink(t *testing.T, c interface{ Close(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// wantEnvelopes converts batches as a reader of the event log would, by
// job.
func wantEnvelopes(batches []store.EventBatch) map[string][]eventlog.Event {
	var c eventlog.Converter
	out := map[string][]eventlog.Event{}
	for _, b := range batches {
		out[b.Job.ID] = append(out[b.Job.ID], c.Envelopes(b)...)
	}
	return out
}

// TestWebhookDelivers sends the interleaved batches of three jobs and
// checks that every envelope arrives once, in order per job, signed, with
// the delivery headers; batches without envelopes send nothing.
func TestWebhookDelivers(t *testing.T) {
	t.Parallel()
	r := newReceiver(t)
	w := newWebhook(t, r, 0)
	var seqA, seqB int64 = 1, 1
	batches := interleave(
		jobBatches("job-a1", "octo", "app", &seqA, event.V2Succeeded),
		jobBatches("job-b1", "octo", "api", &seqB, event.V2Failed),
		jobBatches("job-a2", "octo", "app", &seqA, event.V2Succeeded),
	)
	for _, b := range batches {
		w.Send(b)
	}
	closeSink(t, w)

	if diff := cmp.Diff(wantEnvelopes(batches), r.accepted(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("envelopes received (-want +got):\n%s", diff)
	}
	reqs := r.got()
	if got, want := len(reqs), 9; got != want { // 3 jobs × 3 batches with envelopes
		t.Errorf("requests = %d, want %d", got, want)
	}
	envelopeChunks := []int{0, 1, 3} // chunk 2 has no envelopes
	seen := map[string]int{}
	for _, req := range reqs {
		if !req.verified {
			t.Errorf("request %s: signature %q does not verify", req.header.Get(sink.HeaderDelivery), req.header.Get(sink.HeaderSignature))
		}
		job := req.header.Get(sink.HeaderJob)
		repo := map[string]string{"job-a1": "octo/app", "job-a2": "octo/app", "job-b1": "octo/api"}[job]
		wantHeader := map[string]string{
			"Content-Type":        sink.ContentType,
			"User-Agent":          sink.UserAgent,
			sink.HeaderEvent:      sink.EventEvents,
			sink.HeaderRepository: repo,
			sink.HeaderJob:        job,
			sink.HeaderDelivery:   fmt.Sprintf("%s-%d", job, envelopeChunks[seen[job]%len(envelopeChunks)]),
			sink.HeaderSignature:  hmacHeader(testSecret, req.body),
		}
		for k, want := range wantHeader {
			if got := req.header.Get(k); got != want {
				t.Errorf("request of %s: %s = %q, want %q", job, k, got, want)
			}
		}
		seen[job]++
	}
	if diff := cmp.Diff(sink.Stats{Sent: 9}, w.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

// TestWebhookRetries answers the first requests with failures and checks
// what is retried, what is dropped, and that order is kept.
func TestWebhookRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		answers []answer
		// wantDeliveries are the X-KGD-Delivery of every request, in order.
		wantDeliveries []string
		// wantAccepted are the chunks answered 2xx, in order.
		wantAccepted []string
		wantStats    sink.Stats
		// minGap is the least time between the first two requests.
		minGap time.Duration
	}{{
		name:           "502-twice-then-200",
		answers:        []answer{{code: 502}, {code: 502}},
		wantDeliveries: []string{"j-0", "j-0", "j-0", "j-1"},
		wantAccepted:   []string{"j-0", "j-1"},
		wantStats:      sink.Stats{Sent: 2, Retried: 2},
	}, {
		name:           "hang-up-then-200",
		answers:        []answer{{hangUp: true}},
		wantDeliveries: []string{"j-0", "j-0", "j-1"},
		wantAccepted:   []string{"j-0", "j-1"},
		wantStats:      sink.Stats{Sent: 2, Retried: 1},
	}, {
		name:           "429-retry-after",
		answers:        []answer{{code: 429, retryAfter: "1"}},
		wantDeliveries: []string{"j-0", "j-0", "j-1"},
		wantAccepted:   []string{"j-0", "j-1"},
		wantStats:      sink.Stats{Sent: 2, Retried: 1},
		minGap:         time.Second,
	}, {
		name:           "503-retry-after",
		answers:        []answer{{code: 503, retryAfter: "1"}, {code: 500}},
		wantDeliveries: []string{"j-0", "j-0", "j-0", "j-1"},
		wantAccepted:   []string{"j-0", "j-1"},
		wantStats:      sink.Stats{Sent: 2, Retried: 2},
		minGap:         time.Second,
	}, {
		name:           "400-dropped",
		answers:        []answer{{code: 400}},
		wantDeliveries: []string{"j-0", "j-1"},
		wantAccepted:   []string{"j-1"},
		wantStats:      sink.Stats{Sent: 1, Dropped: 1},
	}, {
		name:           "401-dropped-after-retry",
		answers:        []answer{{code: 500}, {code: 401}},
		wantDeliveries: []string{"j-0", "j-0", "j-1"},
		wantAccepted:   []string{"j-1"},
		wantStats:      sink.Stats{Sent: 1, Retried: 1, Dropped: 1},
	}, {
		name:           "404-dropped",
		answers:        []answer{{code: 404}, {code: 403}},
		wantDeliveries: []string{"j-0", "j-1"},
		wantStats:      sink.Stats{Dropped: 2},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newReceiver(t, tc.answers...)
			w := newWebhook(t, r, 0)
			var seq int64 = 1
			batches := jobBatches("j", "octo", "app", &seq, event.V2Succeeded)[:2]
			for _, b := range batches {
				w.Send(b)
			}
			closeSink(t, w)

			reqs := r.got()
			var deliveries, accepted []string
			for _, req := range reqs {
				id := req.header.Get(sink.HeaderDelivery)
				deliveries = append(deliveries, id)
				if !req.answer.hangUp && req.answer.code/100 == 2 {
					accepted = append(accepted, id)
				}
				if !req.verified {
					t.Errorf("request %s does not verify", id)
				}
			}
			if diff := cmp.Diff(tc.wantDeliveries, deliveries); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAccepted, accepted); diff != "" {
				t.Errorf("accepted (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantStats, w.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
			if tc.minGap > 0 && len(reqs) >= 2 {
				if gap := reqs[1].at.Sub(reqs[0].at); gap < tc.minGap {
					t.Errorf("second attempt %s after the first, want at least %s (Retry-After)", gap, tc.minGap)
				}
			}
		})
	}
}

// TestWebhookQueueDropsOldest fills the queue while the receiver holds
// the first request: the oldest queued batches make room for new ones.
func TestWebhookQueueDropsOldest(t *testing.T) {
	t.Parallel()
	r := newReceiver(t)
	r.block, r.arrived = make(chan struct{}), make(chan struct{})
	w := newWebhook(t, r, 2)
	var seq int64 = 1
	var batches []store.EventBatch
	for i := range 5 {
		b := jobBatches("j", "octo", "app", &seq, event.V2Succeeded)[0]
		b.Chunk = i
		batches = append(batches, b)
	}
	w.Send(batches[0])
	<-r.arrived // batch 0 is in flight, the queue is empty
	for _, b := range batches[1:] {
		w.Send(b)
	}
	if got, want := w.Stats(), (sink.Stats{Dropped: 2}); got != want {
		t.Errorf("Stats after overflow = %+v, want %+v", got, want)
	}
	close(r.block)
	closeSink(t, w)

	var got []string
	for _, req := range r.got() {
		got = append(got, req.header.Get(sink.HeaderDelivery))
	}
	if diff := cmp.Diff([]string{"j-0", "j-3", "j-4"}, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if got, want := w.Stats(), (sink.Stats{Sent: 3, Dropped: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// TestWebhookCloseUnreachable closes a sink whose receiver does not
// answer: Close returns when its context ends and counts what is left.
func TestWebhookCloseUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // connections are refused from now on
	w, err := sink.NewWebhook(sink.WebhookConfig{URL: "http://" + addr + "/events", AllowHTTP: true, Secret: testSecret,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}, &http.Client{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var seq int64 = 1
	for _, b := range jobBatches("j", "octo", "app", &seq, event.V2Succeeded) {
		w.Send(b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err = w.Close(ctx)
	var undelivered *sink.UndeliveredError
	if !errors.As(err, &undelivered) || undelivered.Batches != 3 {
		t.Fatalf("Close = %v, want an *UndeliveredError of 3 batches", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if got := w.Stats(); got.Sent != 0 || got.Dropped != 3 {
		t.Errorf("Stats = %+v, want 0 sent and 3 dropped", got)
	}
	w.Send(jobBatches("k", "octo", "app", &seq, event.V2Succeeded)[0]) // after Close: dropped, not queued
	if got := w.Stats().Dropped; got != 4 {
		t.Errorf("Dropped after a Send after Close = %d, want 4", got)
	}
}

func TestNewWebhook(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     sink.WebhookConfig
		wantErr bool
	}{
		{"https", sink.WebhookConfig{URL: "https://hooks.example.com/kgd", Secret: testSecret}, false},
		{"http-refused", sink.WebhookConfig{URL: "http://127.0.0.1:8080/kgd", Secret: testSecret}, true},
		{"http-allowed", sink.WebhookConfig{URL: "http://127.0.0.1:8080/kgd", Secret: testSecret, AllowHTTP: true}, false},
		{"other-scheme", sink.WebhookConfig{URL: "ftp://hooks.example.com/kgd", Secret: testSecret, AllowHTTP: true}, true},
		{"no-host", sink.WebhookConfig{URL: "https:///kgd", Secret: testSecret}, true},
		{"empty-url", sink.WebhookConfig{Secret: testSecret}, true},
		{"no-secret", sink.WebhookConfig{URL: "https://hooks.example.com/kgd"}, true},
		{"short-secret", sink.WebhookConfig{URL: "https://hooks.example.com/kgd", Secret: []byte("fifteen-bytes..")}, true},
		{"16-byte-secret", sink.WebhookConfig{URL: "https://hooks.example.com/kgd", Secret: []byte("sixteen-bytes...")}, false},
		{"negative-queue", sink.WebhookConfig{URL: "https://hooks.example.com/kgd", Secret: testSecret, QueueSize: -1}, true},
		{"backoffs-swapped", sink.WebhookConfig{URL: "https://hooks.example.com/kgd", Secret: testSecret,
			MinBackoff: time.Minute, MaxBackoff: time.Second}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w, err := sink.NewWebhook(tc.cfg, &http.Client{}, testLogger(t))
			if (err != nil) != tc.wantErr {
				t.Fatalf("NewWebhook(%+v) error = %v, want error %t", tc.cfg, err, tc.wantErr)
			}
			if err == nil {
				closeSink(t, w) // nothing was sent: nothing contacted
			}
		})
	}
}

// hmacHeader signs body independently of the package.
func hmacHeader(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestVerify(t *testing.T) {
	t.Parallel()
	body := []byte(`{"apiVersion":"skaffold.dev/v1alpha2","kind":"Event"}` + "\n")
	good := hmacHeader(testSecret, body)
	for _, tc := range []struct {
		name   string
		secret []byte
		body   []byte
		header string
		want   bool
	}{
		{"valid", testSecret, body, good, true},
		{"valid-uppercase-hex", testSecret, body, "sha256=" + upper(good[len("sha256="):]), true},
		{"forged-body", testSecret, append(bytes.Clone(body), ' '), good, false},
		{"wrong-secret", []byte("another-secret-of-16+"), body, good, false},
		{"missing", testSecret, body, "", false},
		{"no-prefix", testSecret, body, good[len("sha256="):], false},
		{"sha1-prefix", testSecret, body, "sha1=" + good[len("sha256="):], false},
		{"truncated", testSecret, body, good[:len(good)-2], false},
		{"not-hex", testSecret, body, "sha256=" + string(bytes.Repeat([]byte("zz"), sha256.Size)), false},
		{"empty-secret", nil, body, hmacHeader(nil, body), false},
		{"empty-body", testSecret, nil, hmacHeader(testSecret, nil), true},
		{"trailing-space", testSecret, body, good + " ", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := sink.Verify(tc.secret, tc.body, tc.header); got != tc.want {
				t.Errorf("Verify(%q, %q, %q) = %t, want %t", tc.secret, tc.body, tc.header, got, tc.want)
			}
		})
	}
}

func upper(s string) string { return string(bytes.ToUpper([]byte(s))) }

// FuzzVerify checks Verify against an independent HMAC: the right
// signature verifies, anything else does not, and nothing panics.
func FuzzVerify(f *testing.F) {
	body := []byte(`{"apiVersion":"skaffold.dev/v1alpha2","kind":"Event"}` + "\n")
	f.Add(testSecret, body, hmacHeader(testSecret, body))
	f.Add(testSecret, body, "sha256=")
	f.Add([]byte{}, []byte{}, "")
	f.Add([]byte("k"), []byte("x"), "sha256="+hex.EncodeToString(make([]byte, sha256.Size)))
	f.Add(testSecret, []byte{0, 0xff, '\n'}, "sha256=ZZ")
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		want := hmacHeader(secret, body)
		got := sink.Verify(secret, body, header)
		if got && (len(secret) == 0 || !equalFoldHex(header, want)) {
			t.Fatalf("Verify(%q, %q, %q) = true; the signature is %q", secret, body, header, want)
		}
		if len(secret) == 0 {
			return
		}
		if !sink.Verify(secret, body, want) {
			t.Fatalf("Verify(%q, %q, its own signature %q) = false", secret, body, want)
		}
		if sink.Verify(secret, append(bytes.Clone(body), 0), want) {
			t.Fatalf("Verify accepted a signature of %q for a longer body", body)
		}
		other := bytes.Clone(secret)
		other[0] ^= 1
		if sink.Verify(other, body, want) {
			t.Fatalf("Verify accepted a signature made with another secret")
		}
	})
}

// equalFoldHex reports whether header is want with the hex digits in
// either case.
func equalFoldHex(header, want string) bool {
	return len(header) == len(want) && header[:len("sha256=")] == "sha256=" &&
		bytes.EqualFold([]byte(header), []byte(want))
}
