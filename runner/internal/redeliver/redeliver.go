// Package redeliver asks GitHub to redeliver push webhooks that PublicAPI
// did not accept. GitHub never retries a failed delivery: a push made while
// PublicAPI was down, or answered 5xx, would never be built. A Sweeper
// reads the recent deliveries of every tracked repository's hook with the
// repository's own token and asks GitHub to deliver each failed push again.
// A redelivery keeps the delivery's GUID and its signed body, and the
// webhook deduplicates on both, so redelivering is always safe; the
// Sweeper still claims every redelivery in Firestore first
// (store.ClaimRedelivery) so that runners sweeping at the same time ask
// once.
//
// Which deliveries are redelivered: push events delivered within Window
// whose GUID has no successful delivery yet and whose failure may pass
// (no answer, 408, 425, 429 or 5xx; PublicAPI's other 4xx answers are
// final: bad signature, untracked repository, malformed event). A
// redelivery that fails too is retried after RetryBackoff, doubling up to
// maxBackoff, at most MaxAttempts redeliveries per GUID.
//
// GitHub's rate limits are respected per token: a 403 or 429 rate-limit
// answer stops every request with that token until the time GitHub names
// (Retry-After, X-RateLimit-Reset), or for a minute; the Sweeper
// remembers it in memory across sweeps.
package redeliver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Defaults of Config.
const (
	// DefaultWindow is how far back deliveries are read: GitHub keeps
	// them, and redelivers them, for 3 days.
	DefaultWindow = 72 * time.Hour
	// DefaultMaxPerHook caps the deliveries read per hook per sweep, so a
	// busy repository costs at most five requests.
	DefaultMaxPerHook = 500
	// DefaultPageSize is GitHub's largest page of deliveries.
	DefaultPageSize = 100
	// DefaultMaxAttempts is how many redeliveries of one GUID are asked
	// for at most (GitHub's log shows them; a person's count too).
	DefaultMaxAttempts = 8
	// DefaultRetryBackoff is the wait after the first failed redelivery
	// before the next; it doubles with each attempt, up to maxBackoff.
	DefaultRetryBackoff = 15 * time.Minute
)

// maxBackoff caps the wait between redeliveries of one GUID: with the
// defaults, eight attempts span about a day of outage.
const maxBackoff = 6 * time.Hour

// rateLimitWait is how long a token rests after a rate-limit answer that
// names no time, as GitHub asks ("wait at least one minute").
const rateLimitWait = time.Minute

// firstSweepDelay is how long Run waits before its first sweep (or every,
// if shorter), so a starting runner does its own work first.
const firstSweepDelay = 30 * time.Second

// releaseTimeout bounds giving a claim back after a refused redelivery,
// which is done even when the sweep's context has ended.
const releaseTimeout = 10 * time.Second

// ErrRateLimited reports that GitHub rate limited a token; its
// repositories are swept again after the limit ends.
var ErrRateLimited = errors.New("rate limited by GitHub")

// Config configures a Sweeper. Zero values take the defaults above.
type Config struct {
	// Owner identifies this runner in redelivery claims (host/pid).
	Owner string
	// Window is how far back deliveries are read and redelivered.
	Window time.Duration
	// MaxPerHook caps the deliveries read per hook per sweep.
	MaxPerHook int
	// PageSize is how many deliveries one request reads (at most 100).
	PageSize int
	// MaxAttempts caps the redeliveries of one GUID.
	MaxAttempts int
	// RetryBackoff is the wait after a failed redelivery before the next.
	RetryBackoff time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// GitHubClient returns a GitHub client that authenticates with token.
// The Sweeper calls it once per token per sweep; main builds it over one
// http.Client with a timeout, with BaseURL set to GITHUB_API_URL.
type GitHubClient func(token string) *github.Client

// Sweeper redelivers failed push webhooks; see the package documentation.
// It is safe for concurrent use, and several runners may sweep at once.
type Sweeper struct {
	cfg    Config
	store  *store.Store
	github GitHubClient
	log    *slog.Logger

	mu      sync.Mutex
	limited map[string]time.Time // token fingerprint → rate limited until
}

// New returns a Sweeper over st that reaches GitHub through gitHub.
func New(cfg Config, st *store.Store, gitHub GitHubClient, log *slog.Logger) (*Sweeper, error) {
	if st == nil || gitHub == nil || log == nil || cfg.Owner == "" {
		return nil, errors.New("redeliver: owner, store, GitHub client and logger are required")
	}
	if cfg.Window < 0 || cfg.MaxPerHook < 0 || cfg.PageSize < 0 || cfg.PageSize > 100 || cfg.MaxAttempts < 0 || cfg.RetryBackoff < 0 {
		return nil, fmt.Errorf("redeliver: invalid config %+v", cfg)
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxPerHook == 0 {
		cfg.MaxPerHook = DefaultMaxPerHook
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sweeper{cfg: cfg, store: st, github: gitHub, log: log, limited: map[string]time.Time{}}, nil
}

// Report counts what one sweep did.
type Report struct {
	// Repositories is how many repositories' deliveries were read.
	Repositories int
	// Checked is how many deliveries (of any event) within the window
	// were read.
	Checked int
	// Redelivered is how many redeliveries GitHub accepted.
	Redelivered int
	// Skipped is how many failed push deliveries were left alone: a
	// later delivery of the GUID succeeded, another sweep claimed the
	// redelivery, the failure is final (4xx), the backoff has not passed
	// or the attempts are used up.
	Skipped int
	// Deferred is how many repositories were not read because their
	// token is rate limited.
	Deferred int
	// Failed is how many repositories could not be swept (their errors
	// are returned).
	Failed int
}

// Run sweeps every every until ctx ends, the first time after a short
// delay. every ≤ 0 returns at once (redelivery off). Sweep errors are
// logged, with the repository, as they happen.
func (s *Sweeper) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		return
	}
	t := time.NewTimer(min(every, firstSweepDelay))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		rep, err := s.Sweep(ctx)
		if ctx.Err() != nil {
			return
		}
		level := slog.LevelDebug
		if rep.Redelivered > 0 || err != nil {
			level = slog.LevelInfo
		}
		s.log.Log(ctx, level, "webhook redelivery sweep", "repositories", rep.Repositories, "checked", rep.Checked,
			"redelivered", rep.Redelivered, "skipped", rep.Skipped, "deferred", rep.Deferred, "failed", rep.Failed,
			logging.KeyDurationMS, time.Since(start).Milliseconds())
		t.Reset(every)
	}
}

// Sweep reads the recent deliveries of every tracked repository that has
// a hook and redelivers the failed pushes. One repository's failure does
// not stop the others: each is logged with its repository and all are
// returned joined.
func (s *Sweeper) Sweep(ctx context.Context) (Report, error) {
	var rep Report
	repos, err := s.store.Repositories(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "redelivery sweep: cannot list repositories", logging.KeyErr, err.Error())
		return rep, fmt.Errorf("redelivery sweep: %w", err)
	}
	clients := map[string]*github.Client{} // by token fingerprint, for this sweep
	rejected := map[string]error{}         // tokens GitHub refused (401) in this sweep
	var errs []error
	fail := func(r *store.Repository, err error) {
		rep.Failed++
		s.log.WarnContext(ctx, "redelivery sweep of repository failed", logging.KeyRepo, r.Owner+"/"+r.Name, logging.KeyErr, err.Error())
		errs = append(errs, fmt.Errorf("redeliver %s/%s: %w", r.Owner, r.Name, err))
	}
	for i := range repos {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		r := &repos[i]
		if r.HookID == 0 {
			continue
		}
		tok, err := s.store.RepositoryToken(ctx, r)
		if err != nil {
			fail(r, err)
			continue
		}
		fp := fingerprint(tok.AccessToken)
		if until, ok := s.limitedUntil(fp); ok {
			rep.Deferred++
			s.log.DebugContext(ctx, "redelivery sweep: token rate limited, repository deferred",
				logging.KeyRepo, r.Owner+"/"+r.Name, "until", until)
			continue
		}
		if err := rejected[fp]; err != nil {
			fail(r, fmt.Errorf("token refused by GitHub earlier in this sweep: %w", err))
			continue
		}
		c := clients[fp]
		if c == nil {
			c = s.github(tok.AccessToken)
			clients[fp] = c
		}
		err = s.sweepRepo(ctx, c, r, &rep)
		if err == nil {
			continue
		}
		if until, ok := rateLimitedUntil(err, s.cfg.Now()); ok {
			s.limit(fp, until)
			err = fmt.Errorf("%w until %s: %w", ErrRateLimited, until.UTC().Format(time.RFC3339), err)
		} else if isStatus(err, http.StatusUnauthorized) {
			rejected[fp] = err
		}
		fail(r, err)
	}
	return rep, errors.Join(errs...)
}

// sweepRepo reads r's recent deliveries and redelivers its failed pushes.
// It stops at the first rate-limit answer and returns it.
func (s *Sweeper) sweepRepo(ctx context.Context, c *github.Client, r *store.Repository, rep *Report) error {
	now := s.cfg.Now()
	deliveries, err := s.list(ctx, c, r, now.Add(-s.cfg.Window))
	if err != nil {
		return err
	}
	rep.Repositories++
	rep.Checked += len(deliveries)

	// The deliveries of each push GUID, newest first as GitHub lists them;
	// the oldest push first.
	byGUID := map[string][]*github.HookDelivery{}
	var guids []string
	for _, d := range deliveries {
		if d.GetEvent() != "push" || d.GetGUID() == "" {
			continue
		}
		g := d.GetGUID()
		if byGUID[g] == nil {
			guids = append(guids, g)
		}
		byGUID[g] = append(byGUID[g], d)
	}
	slices.Reverse(guids)
	var errs []error
	for _, g := range guids {
		err := s.consider(ctx, c, r, byGUID[g], now, rep)
		if err == nil {
			continue
		}
		if _, limited := rateLimitedUntil(err, now); limited || ctx.Err() != nil {
			return errors.Join(append(errs, err)...)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// list reads the hook's deliveries newest first, down to since and at
// most MaxPerHook of them.
func (s *Sweeper) list(ctx context.Context, c *github.Client, r *store.Repository, since time.Time) ([]*github.HookDelivery, error) {
	opts := &github.ListCursorOptions{PerPage: s.cfg.PageSize}
	var out []*github.HookDelivery
	for {
		page, resp, err := c.Repositories.ListHookDeliveries(ctx, r.Owner, r.Name, r.HookID, opts)
		if err != nil {
			return nil, fmt.Errorf("list deliveries of hook %d: %w", r.HookID, err)
		}
		for _, d := range page {
			if d.GetDeliveredAt().Before(since) {
				return out, nil
			}
			out = append(out, d)
			if len(out) == s.cfg.MaxPerHook {
				s.log.DebugContext(ctx, "redelivery sweep: read the most deliveries allowed per hook; older ones wait",
					logging.KeyRepo, r.Owner+"/"+r.Name, "deliveries", len(out))
				return out, nil
			}
		}
		if len(page) == 0 || resp == nil || resp.Cursor == "" {
			return out, nil
		}
		opts.Cursor = resp.Cursor
	}
}

// consider redelivers one push GUID, given its deliveries newest first,
// if it failed and may be retried now.
func (s *Sweeper) consider(ctx context.Context, c *github.Client, r *store.Repository, ds []*github.HookDelivery, now time.Time, rep *Report) error {
	attempts, ok, failed := 0, false, false
	for _, d := range ds {
		if succeeded(d) {
			ok = true
		} else {
			failed = true
		}
		if d.GetRedelivery() {
			attempts++
		}
	}
	if ok {
		if failed {
			rep.Skipped++ // failed, but delivered since (or before)
		}
		return nil
	}
	latest := ds[0]
	log := s.log.With(logging.KeyRepo, r.Owner+"/"+r.Name, logging.KeyDeliveryID, latest.GetGUID(),
		"status", latest.GetStatus(), "status_code", latest.GetStatusCode(), "attempt", attempts)
	switch {
	case !retryable(latest):
		rep.Skipped++
		log.DebugContext(ctx, "failed push delivery not redelivered: PublicAPI refused it")
		return nil
	case attempts >= s.cfg.MaxAttempts:
		rep.Skipped++
		log.DebugContext(ctx, "failed push delivery not redelivered: attempts used up")
		return nil
	case attempts > 0 && now.Before(latest.GetDeliveredAt().Add(s.backoff(attempts))):
		rep.Skipped++
		return nil
	}
	claim := store.Redelivery{Owner: r.Owner, Name: r.Name, GUID: latest.GetGUID(), Attempt: attempts,
		HookID: r.HookID, DeliveryID: latest.GetID(), ClaimedBy: s.cfg.Owner, ClaimedAt: now}
	if err := s.store.ClaimRedelivery(ctx, claim); errors.Is(err, store.ErrAlreadyExists) {
		rep.Skipped++ // redelivered already, by this or another runner
		return nil
	} else if err != nil {
		return err
	}
	_, _, err := c.Repositories.RedeliverHookDelivery(ctx, r.Owner, r.Name, r.HookID, latest.GetID())
	var accepted *github.AcceptedError
	if err == nil || errors.As(err, &accepted) {
		rep.Redelivered++
		log.InfoContext(ctx, "asked GitHub to redeliver a failed push delivery")
		return nil
	}
	// GitHub refused: give the attempt back for a later sweep.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if rerr := s.store.ReleaseRedelivery(rctx, r.Owner, r.Name, claim.GUID, claim.Attempt); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return fmt.Errorf("redeliver delivery %d (%s): %w", latest.GetID(), latest.GetGUID(), err)
}

// backoff is the wait after the attempts-th failed redelivery.
func (s *Sweeper) backoff(attempts int) time.Duration {
	d := s.cfg.RetryBackoff
	for i := 1; i < attempts && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// succeeded reports whether GitHub recorded d as delivered: a 2xx answer,
// status "OK".
func succeeded(d *github.HookDelivery) bool {
	code := d.GetStatusCode()
	return code >= 200 && code <= 299 && d.GetStatus() == "OK"
}

// retryable reports whether a failed delivery may succeed when sent again:
// it got no answer, or one that says "later" (408, 425, 429, 5xx). Other
// answers are PublicAPI's final word on the delivery.
func retryable(d *github.HookDelivery) bool {
	switch code := d.GetStatusCode(); {
	case code == 0, code >= 500:
		return true
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests:
		return true
	case code >= 200 && code <= 299:
		return true // answered 2xx but not "OK" (e.g. timed out while answering)
	default:
		return false
	}
}

// fingerprint identifies a token in memory without keeping it.
func fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:12])
}

func (s *Sweeper) limitedUntil(fp string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.limited[fp]
	if !ok {
		return time.Time{}, false
	}
	if !s.cfg.Now().Before(until) {
		delete(s.limited, fp)
		return time.Time{}, false
	}
	return until, true
}

func (s *Sweeper) limit(fp string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until.After(s.limited[fp]) {
		s.limited[fp] = until
	}
}

// rateLimitedUntil reports whether err is a GitHub rate-limit answer and
// until when to wait, as GitHub documents: Retry-After seconds; else, if
// X-RateLimit-Remaining is 0, X-RateLimit-Reset; else a minute. go-github
// v60 types 403s only; a 429 is a plain *ErrorResponse.
func rateLimitedUntil(err error, now time.Time) (time.Time, bool) {
	var (
		primary   *github.RateLimitError
		secondary *github.AbuseRateLimitError
		other     *github.ErrorResponse
		resp      *http.Response
	)
	switch {
	case errors.As(err, &primary):
		resp = primary.Response
		if retry := retryAfter(resp, now); !retry.IsZero() {
			return retry, true
		}
		if reset := primary.Rate.Reset.Time; reset.After(now) {
			return reset, true
		}
		return now.Add(rateLimitWait), true
	case errors.As(err, &secondary):
		resp = secondary.Response
		if retry := retryAfter(resp, now); !retry.IsZero() {
			return retry, true
		}
		if secondary.RetryAfter != nil && *secondary.RetryAfter > 0 {
			return now.Add(*secondary.RetryAfter), true
		}
		return now.Add(rateLimitWait), true
	case errors.As(err, &other) && other.Response != nil:
		resp = other.Response
	default:
		return time.Time{}, false
	}
	h := resp.Header
	if resp.StatusCode != http.StatusTooManyRequests &&
		!(resp.StatusCode == http.StatusForbidden && (h.Get("Retry-After") != "" || h.Get("X-RateLimit-Remaining") == "0")) {
		return time.Time{}, false
	}
	if retry := retryAfter(resp, now); !retry.IsZero() {
		return retry, true
	}
	if h.Get("X-RateLimit-Remaining") == "0" {
		if sec, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil && time.Unix(sec, 0).After(now) {
			return time.Unix(sec, 0), true
		}
	}
	return now.Add(rateLimitWait), true
}

// retryAfter is the time resp's Retry-After header (seconds, or an HTTP
// date) names, or zero.
func retryAfter(resp *http.Response, now time.Time) time.Time {
	if resp == nil {
		return time.Time{}
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return time.Time{}
	}
	if sec, err := strconv.Atoi(v); err == nil && sec >= 0 {
		return now.Add(time.Duration(max(sec, 1)) * time.Second)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t
	}
	return time.Time{}
}

// isStatus reports whether err is GitHub's answer with status code.
func isStatus(err error, code int) bool {
	var e *github.ErrorResponse
	return errors.As(err, &e) && e.Response != nil && e.Response.StatusCode == code
}
