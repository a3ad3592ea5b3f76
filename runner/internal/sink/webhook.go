package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/eventlog"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Headers of a webhook delivery.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256 of the body
	// with the secret; see Verify.
	HeaderSignature = "X-KGD-Signature-256"
	// HeaderDelivery identifies the batch, "<job id>-<chunk>"; it is the
	// same in every attempt, so receivers can de-duplicate.
	HeaderDelivery = "X-KGD-Delivery"
	// HeaderEvent is the kind of payload, always EventEvents.
	HeaderEvent = "X-KGD-Event"
	// HeaderRepository is the job's repository, "owner/name".
	HeaderRepository = "X-KGD-Repository"
	// HeaderJob is the job id.
	HeaderJob = "X-KGD-Job"
)

// EventEvents is the X-KGD-Event of a batch of event envelopes.
const EventEvents = "events"

// ContentType is the body's media type: one envelope per line.
const ContentType = "application/x-ndjson"

// UserAgent is the User-Agent of every delivery.
const UserAgent = "kube-git-deploy-runner"

// MinSecretBytes is the shortest webhook secret accepted.
const MinSecretBytes = 16

// signaturePrefix starts a signature header.
const signaturePrefix = "sha256="

// maxResponseDrain is how much of a response body is read (and thrown
// away) so that the connection can be reused.
const maxResponseDrain = 64 << 10

// WebhookConfig configures a Webhook. Zero durations and sizes take the
// package defaults.
type WebhookConfig struct {
	// URL is the receiver's endpoint; it must be https.
	URL string
	// AllowHTTP accepts an http URL too: for tests and the local stack,
	// whose receivers listen on loopback. Never set it in the cloud.
	AllowHTTP bool
	// Secret signs every body; at least MinSecretBytes bytes.
	Secret []byte
	// QueueSize is how many batches wait for delivery at most.
	QueueSize int
	// Timeout bounds one POST, its answer included.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts.
	MinBackoff, MaxBackoff time.Duration
}

// Webhook POSTs the event envelopes of each stored batch to an operator's
// HTTPS endpoint: see the package documentation for the queue and the
// retries. Each request's body is the batch's envelopes as NDJSON, signed
// in HeaderSignature; a batch without envelopes sends nothing. It is safe
// for concurrent use.
type Webhook struct {
	url    string
	host   string // for logs: the URL may carry credentials
	secret []byte
	client *http.Client
	cfg    WebhookConfig
	log    *slog.Logger
	d      *delivery[webhookBatch]

	convMu sync.Mutex
	conv   eventlog.Converter
}

// webhookBatch is one queued delivery.
type webhookBatch struct {
	job   store.JobRef
	chunk int
	envs  []eventlog.Event
}

func (b webhookBatch) deliveryID() string { return b.job.ID + "-" + strconv.Itoa(b.chunk) }

// NewWebhook returns a Webhook that POSTs through client (whose own
// Timeout, if any, bounds each attempt too) and logs to log, and starts
// its goroutine. Close it.
func NewWebhook(cfg WebhookConfig, client *http.Client, log *slog.Logger) (*Webhook, error) {
	if client == nil || log == nil {
		return nil, errors.New("webhook sink: HTTP client and logger are required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, errors.New("webhook sink: URL does not parse") // the error would repeat the URL
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && cfg.AllowHTTP:
	case u.Scheme == "http":
		return nil, errors.New("webhook sink: URL must be https (http only with AllowHTTP)")
	default:
		return nil, fmt.Errorf("webhook sink: URL scheme %q is not https", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("webhook sink: URL has no host")
	}
	if len(cfg.Secret) < MinSecretBytes {
		return nil, fmt.Errorf("webhook sink: secret must be at least %d bytes", MinSecretBytes)
	}
	if err := sharedDefaults(&cfg.QueueSize, &cfg.Timeout, &cfg.MinBackoff, &cfg.MaxBackoff); err != nil {
		return nil, fmt.Errorf("webhook sink: %w", err)
	}
	secret := bytes.Clone(cfg.Secret)
	cfg.Secret = nil // kept once, in secret
	log = log.With("sink", "webhook", "endpoint", u.Host)
	d, ctx := newDelivery[webhookBatch](log, cfg.QueueSize, cfg.MinBackoff, cfg.MaxBackoff)
	w := &Webhook{
		url: cfg.URL, host: u.Host, secret: secret, client: client, cfg: cfg, log: log, d: d,
	}
	go w.run(ctx)
	return w, nil
}

// Send queues the envelopes of b for delivery; it never blocks. Batches
// of one job must be sent in order (the envelopes of a deploy name the
// resources its earlier events checked). Its signature fits
// store.WriterOptions.Written.
func (w *Webhook) Send(b store.EventBatch) {
	w.convMu.Lock()
	envs := w.conv.Envelopes(b)
	w.convMu.Unlock()
	if len(envs) == 0 {
		return
	}
	w.d.push(webhookBatch{job: b.Job, chunk: b.Chunk, envs: envs})
}

// Close stops accepting batches and delivers the queued ones until ctx
// ends; then it gives up on the rest and returns an *UndeliveredError
// that counts them.
func (w *Webhook) Close(ctx context.Context) error { return w.d.close(ctx) }

// Stats returns the sink's counters.
func (w *Webhook) Stats() Stats { return w.d.stats() }

// run delivers the queue until Close.
func (w *Webhook) run(ctx context.Context) {
	for {
		b, ok := w.d.pop()
		if !ok {
			if w.d.wait(ctx, nil) == waitQueued {
				continue
			}
			w.d.stop(0) // drained, or Close gave up
			return
		}
		if !w.deliver(ctx, b) {
			w.d.stop(1)
			return
		}
	}
}

// deliver POSTs b until it is delivered or refused; it reports false if
// ctx ended first.
func (w *Webhook) deliver(ctx context.Context, b webhookBatch) bool {
	body, err := ndjson(b.envs)
	if err != nil { // cannot happen: envelopes are plain structs
		w.d.dropped.Add(1)
		w.log.Error("event sink: cannot encode envelopes; batch dropped", logging.KeyJobID, b.job.ID, logging.KeyErr, err.Error())
		return true
	}
	log := w.log.With(logging.KeyRepo, repository(b.job), logging.KeyJobID, b.job.ID, logging.KeyDeliveryID, b.deliveryID())
	for attempt := 1; ; attempt++ {
		start := time.Now()
		code, wait, err := w.post(ctx, b, body)
		if ctx.Err() != nil {
			return false
		}
		switch {
		case err == nil && code >= 200 && code <= 299:
			w.d.sent.Add(1)
			log.Debug("event batch delivered", "status", code, "attempt", attempt, logging.KeyDurationMS, time.Since(start).Milliseconds())
			return true
		case err == nil && !retryableStatus(code):
			w.d.dropped.Add(1)
			log.Warn("event sink: receiver refused a batch; dropped", "status", code, "events", len(b.envs))
			return true
		}
		w.d.retried.Add(1)
		attrs := []any{"attempt", attempt}
		if err != nil {
			attrs = append(attrs, logging.KeyErr, err.Error())
		} else {
			attrs = append(attrs, "status", code)
		}
		log.Warn("event sink: delivery failed; retrying", attrs...)
		if !w.d.backoff(ctx, attempt, wait) {
			return false
		}
	}
}

// post makes one attempt and returns the answer's status and the wait it
// asks for, or the error that prevented an answer.
func (w *Webhook) post(ctx context.Context, b webhookBatch, body []byte) (code int, wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("build request") // the error would repeat the URL
	}
	h := req.Header
	h.Set("Content-Type", ContentType)
	h.Set("User-Agent", UserAgent)
	h.Set(HeaderSignature, signature(w.secret, body))
	h.Set(HeaderDelivery, b.deliveryID())
	h.Set(HeaderEvent, EventEvents)
	h.Set(HeaderRepository, repository(b.job))
	h.Set(HeaderJob, b.job.ID)
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, 0, redactURL(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseDrain))
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		wait = retryAfter(resp.Header, time.Now())
	}
	return resp.StatusCode, wait, nil
}

// redactURL drops the URL from a client error, which may hold
// credentials; what failed is kept.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

// retryableStatus reports whether an answer says "later": 408, 425, 429
// and 5xx. Any other non-2xx answer is the receiver's final word.
func retryableStatus(code int) bool {
	switch {
	case code >= 500:
		return true
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests:
		return true
	}
	return false
}

// ndjson encodes envelopes one per line, as eventlog's Writer does.
func ndjson(envs []eventlog.Event) ([]byte, error) {
	var buf bytes.Buffer
	for _, e := range envs {
		line, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), nil
}

// signature is the HeaderSignature value of body.
func signature(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether header, the value of HeaderSignature, signs body
// with secret: "sha256=" followed by the hex HMAC-SHA256 of body keyed
// with secret, compared in constant time. An empty secret verifies
// nothing.
func Verify(secret, body []byte, header string) bool {
	if len(secret) == 0 {
		return false
	}
	hexSum, ok := strings.CutPrefix(header, signaturePrefix)
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}
