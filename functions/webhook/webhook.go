// Package webhook receives GitHub webhook deliveries for tracked
// repositories (PublicAPI's POST /api/v0/github/repositories/{user}/{repo}/web_hook)
// and turns verified pushes into jobs: recorded in Firestore, then
// published to Pub/Sub for the runner.
//
// Order of checks, each answered without writing anything: a signature
// header and a declared body size within bounds (401, 413), tracked
// repository (404) — so an unauthenticated request costs one lookup and
// no body is read for an untracked repository — then the body (413),
// its HMAC-SHA256 signature with the repository's own secret (401), event
// type (ping → 200; other non-push events → 200 and ignored), content
// type (415), payload (400).
//
// A verified push is recorded under two idempotency keys: its
// X-GitHub-Delivery id (a redelivery) and the push itself — repository,
// ref, before, after and push time, all inside the signed body — because
// GitHub does not sign the delivery id: a captured delivery replayed with
// a new id is answered as a duplicate and creates no job. It is answered
// only after the job is durably recorded and published.
package webhook

import (
	"context"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/functions/internal/web"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Header names GitHub sends with every delivery.
const (
	EventHeader    = "X-GitHub-Event"
	DeliveryHeader = "X-GitHub-Delivery"
)

// MaxBody is the largest body accepted: GitHub does not deliver payloads
// over 25 MB.
const MaxBody = 25 << 20

// Route is the webhook's route pattern.
const Route = "POST /api/v0/github/repositories/{user}/{repo}/web_hook"

// answerWithin bounds the work for one delivery: GitHub gives up after
// 10 s and does not retry.
const answerWithin = 8 * time.Second

// Store is the persistence the handler needs.
type Store interface {
	Repository(ctx context.Context, owner, name string) (*store.Repository, error)
	CreateJob(ctx context.Context, j store.Job) (*store.Job, error)
	Job(ctx context.Context, id string) (*store.Job, error)
	MarkJobPublished(ctx context.Context, id, messageID string, at time.Time) error
}

// Publisher publishes job messages.
type Publisher interface {
	Publish(ctx context.Context, m job.Message) (string, error)
}

// Handler serves the webhook route.
type Handler struct {
	store Store
	pub   Publisher
	log   *slog.Logger
	now   func() time.Time
}

// New returns a Handler. now may be nil for time.Now.
func New(st Store, pub Publisher, log *slog.Logger, now func() time.Time) (*Handler, error) {
	if st == nil || pub == nil || log == nil {
		return nil, errors.New("webhook: store, publisher and logger are required")
	}
	if now == nil {
		now = time.Now
	}
	return &Handler{store: st, pub: pub, log: log, now: now}, nil
}

// Register adds the webhook route to m.
func (h *Handler) Register(m *web.Mux) { m.Handle(Route, h.handleWebhook) }

// handleWebhook handles the POST /api/v0/github/repositories/{user}/{repo}/web_hook route.
func (h *Handler) handleWebhook(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), answerWithin)
	defer cancel()
	owner, name := r.PathValue("user"), r.PathValue("repo")
	if r.Header.Get(SignatureHeader) == "" {
		return web.Errorf(http.StatusUnauthorized, nil, "missing %s header", SignatureHeader)
	}
	if r.ContentLength > MaxBody {
		return web.Errorf(http.StatusRequestEntityTooLarge, nil, "body of %d bytes is over the %d byte limit", r.ContentLength, MaxBody)
	}
	repo, err := h.store.Repository(ctx, owner, name)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return web.Errorf(http.StatusNotFound, err, "repository %s/%s is not tracked", owner, name)
	case err != nil:
		return web.Errorf(http.StatusServiceUnavailable, err, "could not look up the repository; redeliver later")
	}
	body, err := web.ReadBody(r, MaxBody)
	if err != nil {
		return err
	}
	if err := Verify(repo.WebhookSecret, body, r.Header.Get(SignatureHeader)); err != nil {
		return web.Errorf(http.StatusUnauthorized, err, "invalid or missing webhook signature")
	}

	event := r.Header.Get(EventHeader)
	switch event {
	case "ping":
		return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "event": "ping"})
	case "push":
	case "":
		return web.Errorf(http.StatusBadRequest, nil, "missing %s header", EventHeader)
	default:
		return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "ignored": "event " + event + " does not trigger builds"})
	}

	payload, err := pushPayload(r.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	push, err := ParsePush(payload)
	switch {
	case errors.Is(err, ErrUnsupportedRef):
		return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "ignored": "ref is neither a branch nor a tag"})
	case err != nil:
		return web.Errorf(http.StatusBadRequest, err, "malformed push event: %v", err)
	}
	if push.Deleted {
		return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "ignored": "ref " + push.Ref + " was deleted"})
	}
	delivery := r.Header.Get(DeliveryHeader)
	if delivery == "" {
		return web.Errorf(http.StatusBadRequest, nil, "missing %s header", DeliveryHeader)
	}
	return h.record(ctx, w, repo, push, delivery)
}

// pushPayload returns the JSON payload of a delivery: the body for
// content type json, the "payload" field for form-encoded hooks.
func pushPayload(contentType string, body []byte) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, web.Errorf(http.StatusUnsupportedMediaType, err, "unsupported content type %q: want application/json", contentType)
	}
	switch mt {
	case "application/json":
		return body, nil
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil || !form.Has("payload") {
			return nil, web.Errorf(http.StatusBadRequest, err, "form-encoded delivery without a payload field")
		}
		return []byte(form.Get("payload")), nil
	default:
		return nil, web.Errorf(http.StatusUnsupportedMediaType, nil, "unsupported content type %q: want application/json", mt)
	}
}

// record creates the job for a verified push and publishes it, unless the
// repository's automatic builds are off (then the job waits as pending for
// a user's Execute). A redelivery of a recorded delivery publishes the
// job again only if its first publication never completed.
func (h *Handler) record(ctx context.Context, w http.ResponseWriter, repo *store.Repository, push Push, delivery string) error {
	log := h.log.With(logging.KeyRepo, repo.Owner+"/"+repo.Name, logging.KeyDeliveryID, delivery, logging.KeyCommitSHA, push.After)
	msg := job.Message{
		Version: job.Version, Repository: repo.Owner + "/" + repo.Name, Ref: push.Ref, SHA: push.After,
		Before: push.Before, DeliveryID: delivery, Trigger: job.TriggerPush,
		JobID: "placeholder", PublishedAt: h.now(),
	}
	if err := msg.Validate(); err != nil {
		return web.Errorf(http.StatusBadRequest, err, "push event cannot become a job: %v", err)
	}
	status := store.StatusQueued
	if !repo.Triggers.AutoBuild {
		status = store.StatusPending
	}
	created, err := h.store.CreateJob(ctx, store.Job{
		Owner: repo.Owner, Name: repo.Name, Ref: push.Ref, SHA: push.After, Before: push.Before,
		DeliveryID: delivery, PushedAt: push.PushedAt, Trigger: string(job.TriggerPush), Status: status,
		Actor: push.Pusher,
	})
	var dup *store.DuplicateDeliveryError
	switch {
	case errors.As(err, &dup):
		existing, err := h.store.Job(ctx, dup.JobID)
		if err != nil {
			return web.Errorf(http.StatusServiceUnavailable, err, "could not read the job of this delivery; redeliver later")
		}
		if existing.Status == store.StatusQueued && existing.PublishedAt.IsZero() {
			log.WarnContext(ctx, "redelivery of a job never published; publishing it now", logging.KeyJobID, existing.ID)
			if err := h.publish(ctx, existing, msg); err != nil {
				return err
			}
		}
		if dup.Replay {
			log.WarnContext(ctx, "a known push under a new delivery id (a replay?); no job created", logging.KeyJobID, existing.ID)
		}
		return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "job_id": existing.ID, "duplicate": true, "status": existing.Status})
	case errors.Is(err, store.ErrNotFound):
		return web.Errorf(http.StatusNotFound, err, "repository %s/%s is not tracked", repo.Owner, repo.Name)
	case err != nil:
		return web.Errorf(http.StatusServiceUnavailable, err, "could not record the job; redeliver later")
	}
	log = log.With(logging.KeyJobID, created.ID)
	if created.Status == store.StatusQueued {
		if err := h.publish(ctx, created, msg); err != nil {
			return err
		}
	}
	log.InfoContext(ctx, "push recorded", "status", created.Status, "iteration", created.Iteration)
	return web.JSON(w, http.StatusAccepted, map[string]any{
		"ok": true, "job_id": created.ID, "status": created.Status, "iteration": created.Iteration,
	})
}

// publish announces j on Pub/Sub and records that it did. A failure is
// answered 503: the job stays recorded but unpublished, and a redelivery
// of the webhook publishes it.
func (h *Handler) publish(ctx context.Context, j *store.Job, msg job.Message) error {
	msg.JobID = j.ID
	msg.PublishedAt = h.now()
	id, err := h.pub.Publish(ctx, msg)
	if err != nil {
		return web.Errorf(http.StatusServiceUnavailable, err, "job %s recorded but not queued; redeliver the webhook", j.ID)
	}
	if err := h.store.MarkJobPublished(ctx, j.ID, id, h.now()); err != nil {
		// The message is out; a later redelivery may publish it again,
		// which the runner's claim makes harmless.
		h.log.WarnContext(ctx, "job published but not marked", logging.KeyJobID, j.ID, logging.KeyErr, err.Error())
	}
	return nil
}
