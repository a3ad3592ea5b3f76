package redeliver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/redeliver"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore) }

const testTimeout = 2 * time.Minute

// clock is the sweepers' clock; it starts at the real time, which the
// stand-in stamps its deliveries with, and moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// limiter makes the GitHub API answer a token's requests with a rate-limit
// answer while it is set; it counts each token's requests.
type limiter struct {
	mu     sync.Mutex
	tokens map[string]func(http.ResponseWriter) // token → rate-limit answer
	count  map[string]int
	before func(*http.Request) // called before each request is served
}

func (l *limiter) setBefore(f func(*http.Request)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.before = f
}

func (l *limiter) set(token string, answer func(http.ResponseWriter)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if answer == nil {
		delete(l.tokens, token)
	} else {
		l.tokens[token] = answer
	}
}

func (l *limiter) requests(token string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count[token]
}

type env struct {
	ctx    context.Context
	t      *testing.T
	fs     *firestore.Client
	store  *store.Store
	gh     *githubstandin.Server
	api    *url.URL // the GitHub API as the sweepers reach it: the stand-in behind limiter
	limit  *limiter
	clock  *clock
	log    *slog.Logger
	tokens map[string]string // login → token
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	fs, err := firestore.NewClient(ctx, emulatortest.ProjectID(t))
	if err != nil {
		t.Fatalf("firestore.NewClient: %v", err)
	}
	t.Cleanup(func() { fs.Close() })
	box, err := secret.NewBox(bytes.Repeat([]byte{7}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(fs, box)
	if err != nil {
		t.Fatal(err)
	}
	gh, err := githubstandin.New(githubstandin.Config{ClientID: "cid", ClientSecret: "csecret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := gh.Start(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	lim := &limiter{tokens: map[string]func(http.ResponseWriter){}, count: map[string]int{}}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		lim.mu.Lock()
		lim.count[tok]++
		answer, before := lim.tokens[tok], lim.before
		lim.mu.Unlock()
		if before != nil {
			before(r)
		}
		if answer != nil {
			answer(w)
			return
		}
		gh.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	api, _ := url.Parse(proxy.URL + "/api/v3/")
	return &env{ctx: ctx, t: t, fs: fs, store: st, gh: gh, api: api, limit: lim, clock: &clock{t: time.Now()},
		log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), tokens: map[string]string{}}
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// sweeper returns a Sweeper reaching GitHub as the runner's main does:
// one http.Client with a timeout, one go-github client per token.
func (e *env) sweeper(cfg redeliver.Config) *redeliver.Sweeper {
	e.t.Helper()
	if cfg.Owner == "" {
		cfg.Owner = "runner-test"
	}
	if cfg.Now == nil {
		cfg.Now = e.clock.Now
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	s, err := redeliver.New(cfg, e.store, func(token string) *github.Client {
		c := github.NewClient(hc).WithAuthToken(token)
		c.BaseURL = e.api
		return c
	}, e.log)
	if err != nil {
		e.t.Fatalf("redeliver.New: %v", err)
	}
	return s
}

// repo is a tracked repository of the stand-in with a hook to a receiver.
type repo struct {
	owner, name string
	hookID      int64
	secret      string
}

// track creates owner/name on the stand-in, administered by owner, with a
// hook (all events) to target, and tracks it as PrivateAPI does: the
// repository with its hook and secret, and owner's token.
func (e *env) track(owner, name, target string) repo {
	e.t.Helper()
	if _, _, err := e.gh.CreateRepo(owner, name, owner, false); err != nil {
		e.t.Fatal(err)
	}
	tok := e.tokens[owner]
	if tok == "" {
		tok = e.gh.Token(owner)
		e.tokens[owner] = tok
		if err := e.store.PutToken(e.ctx, store.Token{Caller: "local", Login: owner, AccessToken: tok}); err != nil {
			e.t.Fatal(err)
		}
	}
	sec := rand.Text()
	body := fmt.Sprintf(`{"name":"web","active":true,"events":["*"],"config":{"url":%q,"content_type":"json","secret":%q}}`, target, sec)
	req, _ := http.NewRequest("POST", e.gh.APIURL+"repos/"+owner+"/"+name+"/hooks", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var hook struct {
		ID int64 `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&hook); err != nil || resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("create hook = %s, %v", resp.Status, err)
	}
	err = e.store.TrackRepository(e.ctx, store.Repository{Owner: owner, Name: name, HookID: hook.ID,
		WebhookSecret: []byte(sec), TrackedBy: owner, TrackedByCaller: "local"})
	if err != nil {
		e.t.Fatal(err)
	}
	return repo{owner: owner, name: name, hookID: hook.ID, secret: sec}
}

// push commits a file and returns the GUID of the push's delivery.
func (e *env) push(r repo) string {
	e.t.Helper()
	res, err := e.gh.Push(e.ctx, r.owner, r.name, githubstandin.Commit{Files: map[string][]byte{"f": []byte(rand.Text())}})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(res.Deliveries) != 1 {
		e.t.Fatalf("push deliveries = %+v, want one", res.Deliveries)
	}
	return res.Deliveries[0].GUID
}

func (e *env) claims() int {
	e.t.Helper()
	docs, err := e.fs.Collection(store.RedeliveriesCollection).Documents(e.ctx).GetAll()
	if err != nil {
		e.t.Fatal(err)
	}
	return len(docs)
}

// receiver stands for PublicAPI: it answers what the test sets and
// records every request.
type receiver struct {
	*httptest.Server
	code atomic.Int32
	mu   sync.Mutex
	got  []request
	seen chan struct{}
}

type request struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, code int) *receiver {
	t.Helper()
	rc := &receiver{seen: make(chan struct{}, 100)}
	rc.code.Store(int32(code))
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, request{header: r.Header.Clone(), body: b})
		rc.mu.Unlock()
		w.WriteHeader(int(rc.code.Load()))
		select {
		case rc.seen <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.got...)
}

// byGUID returns the requests carrying delivery guid.
func (rc *receiver) byGUID(guid string) []request {
	var out []request
	for _, r := range rc.requests() {
		if r.header.Get("X-GitHub-Delivery") == guid {
			out = append(out, r)
		}
	}
	return out
}

func sweep(t *testing.T, s *redeliver.Sweeper, ctx context.Context, want redeliver.Report) {
	t.Helper()
	got, err := s.Sweep(ctx)
	if err != nil {
		t.Errorf("Sweep: %v", err)
	}
	if got != want {
		t.Errorf("Sweep = %+v, want %+v", got, want)
	}
}

func TestSweepRedeliversFailedPush(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusServiceUnavailable) // PublicAPI answering 503
	r := e.track("octo", "app", rc.URL+"/webhook")
	guid := e.push(r)
	// Other events that failed are not ours to redeliver.
	e.gh.Deliver(e.ctx, "octo", "app", "ping", []byte(`{"zen":"Keep it logically awesome."}`))
	e.gh.Deliver(e.ctx, "octo", "app", "issues", []byte(`{"action":"opened"}`))
	rc.code.Store(http.StatusAccepted) // PublicAPI is back

	s := e.sweeper(redeliver.Config{})
	sweep(t, s, e.ctx, redeliver.Report{Repositories: 1, Checked: 3, Redelivered: 1})

	got := rc.byGUID(guid)
	if len(got) != 2 {
		t.Fatalf("receiver got %d requests with GUID %s, want the failed one and one redelivery", len(got), guid)
	}
	orig, again := got[0], got[1]
	if !bytes.Equal(orig.body, again.body) {
		t.Error("redelivered body differs from the original")
	}
	for _, h := range []string{"X-GitHub-Event", "X-Hub-Signature-256", "X-Hub-Signature", "X-GitHub-Hook-ID", "Content-Type"} {
		if again.header.Get(h) != orig.header.Get(h) {
			t.Errorf("redelivery %s = %q, want the original's %q", h, again.header.Get(h), orig.header.Get(h))
		}
	}
	if err := webhook.Verify([]byte(r.secret), again.body, again.header.Get(webhook.SignatureHeader)); err != nil {
		t.Errorf("redelivery signature does not verify with the hook secret: %v", err)
	}
	ds := e.gh.Deliveries("octo", "app")
	if last := ds[len(ds)-1]; last.GUID != guid || !last.Redelivery || last.Status != "OK" {
		t.Errorf("newest delivery = %+v, want a successful redelivery of %s", last, guid)
	}
	if n := len(rc.requests()); n != 4 {
		t.Errorf("receiver got %d requests, want 4 (push, ping, issues, redelivered push)", n)
	}
	if n := e.claims(); n != 1 {
		t.Errorf("%d redelivery claims, want 1", n)
	}

	// Delivered now: a second sweep, of this or another runner, leaves it.
	sweep(t, s, e.ctx, redeliver.Report{Repositories: 1, Checked: 4, Skipped: 1})
	sweep(t, e.sweeper(redeliver.Config{Owner: "other"}), e.ctx, redeliver.Report{Repositories: 1, Checked: 4, Skipped: 1})
	if n := len(rc.requests()); n != 4 {
		t.Errorf("receiver got %d requests after more sweeps, want still 4", n)
	}
}

func TestSweepSkipsDeliveredLater(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusBadGateway)
	r := e.track("octo", "app", rc.URL)
	guid := e.push(r)
	rc.code.Store(http.StatusAccepted)
	// Someone pressed "Redeliver" on GitHub.
	if _, err := e.gh.Redeliver(e.ctx, "octo", "app", guid); err != nil {
		t.Fatal(err)
	}
	ok := e.push(r) // delivered at once: nothing to do
	sweep(t, e.sweeper(redeliver.Config{}), e.ctx, redeliver.Report{Repositories: 1, Checked: 3, Skipped: 1})
	if len(rc.byGUID(guid)) != 2 || len(rc.byGUID(ok)) != 1 {
		t.Errorf("receiver got %d and %d requests, want 2 and 1", len(rc.byGUID(guid)), len(rc.byGUID(ok)))
	}
	if n := e.claims(); n != 0 {
		t.Errorf("%d claims, want none", n)
	}
}

func TestSweepIgnoresOldDeliveries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusServiceUnavailable)
	r := e.track("octo", "app", rc.URL)
	e.push(r)
	rc.code.Store(http.StatusAccepted)
	e.clock.Advance(redeliver.DefaultWindow + time.Minute)
	sweep(t, e.sweeper(redeliver.Config{}), e.ctx, redeliver.Report{Repositories: 1})
	// A window of its own: one minute, a minute after the push.
	e.clock.Advance(-redeliver.DefaultWindow + time.Minute)
	sweep(t, e.sweeper(redeliver.Config{Window: time.Minute}), e.ctx, redeliver.Report{Repositories: 1})
	if n := len(rc.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want only the failed push", n)
	}
}

func TestSweepFinalAnswerNotRedelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusUnauthorized) // PublicAPI: invalid signature
	r := e.track("octo", "app", rc.URL)
	e.push(r)
	rc.code.Store(http.StatusAccepted)
	sweep(t, e.sweeper(redeliver.Config{}), e.ctx, redeliver.Report{Repositories: 1, Checked: 1, Skipped: 1})
	if n := len(rc.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
}

func TestSweepParallel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusAccepted)
	e.gh.SetOutage(&githubstandin.Outage{}) // PublicAPI unreachable
	var guids []string
	for i := range 3 {
		guids = append(guids, e.push(e.track("octo", "app"+strconv.Itoa(i), rc.URL)))
	}
	e.gh.SetOutage(nil)

	// Every sweeper reads each hook's deliveries before any redelivers,
	// so all of them see every push failed.
	const sweepers = 4
	var (
		gateMu sync.Mutex
		gates  = map[string]chan struct{}{}
		seen   = map[string]int{}
	)
	e.limit.setBefore(func(r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/deliveries") {
			return
		}
		gateMu.Lock()
		g := gates[r.URL.Path]
		if g == nil {
			g = make(chan struct{})
			gates[r.URL.Path] = g
		}
		if seen[r.URL.Path]++; seen[r.URL.Path] == sweepers {
			close(g)
		}
		gateMu.Unlock()
		select {
		case <-g:
		case <-time.After(20 * time.Second):
			t.Errorf("not all %d sweepers read %s", sweepers, r.URL.Path)
		}
	})
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total redeliver.Report
	)
	for i := range sweepers {
		s := e.sweeper(redeliver.Config{Owner: "runner-" + strconv.Itoa(i)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := s.Sweep(e.ctx)
			if err != nil {
				t.Errorf("Sweep: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			total.Redelivered += rep.Redelivered
		}()
	}
	wg.Wait()
	if total.Redelivered != 3 {
		t.Errorf("%d sweepers redelivered %d times in all, want 3 (once per push)", sweepers, total.Redelivered)
	}
	for _, g := range guids {
		if n := len(rc.byGUID(g)); n != 1 {
			t.Errorf("receiver got delivery %s %d times, want once", g, n)
		}
	}
}

func TestSweepBadTokenDoesNotStopOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusServiceUnavailable)
	revoked := e.track("alice", "a", rc.URL)
	e.push(revoked)
	// alice revoked the app: GitHub no longer knows her stored token.
	if err := e.store.PutToken(e.ctx, store.Token{Caller: "local", Login: "alice", AccessToken: "gho_revoked"}); err != nil {
		t.Fatal(err)
	}
	e.track("alice", "b", rc.URL) // same token: not asked again in this sweep
	// Tracked before trackers were recorded: no token at all.
	if _, _, err := e.gh.CreateRepo("carol", "old", "carol", false); err != nil {
		t.Fatal(err)
	}
	if err := e.store.TrackRepository(e.ctx, store.Repository{Owner: "carol", Name: "old", HookID: 5, WebhookSecret: []byte("x"), TrackedBy: "carol"}); err != nil {
		t.Fatal(err)
	}
	// No hook: nothing to read.
	if err := e.store.TrackRepository(e.ctx, store.Repository{Owner: "dave", Name: "nohook", WebhookSecret: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	good := e.track("bob", "b", rc.URL)
	guid := e.push(good)
	rc.code.Store(http.StatusAccepted)

	rep, err := e.sweeper(redeliver.Config{}).Sweep(e.ctx)
	if want := (redeliver.Report{Repositories: 1, Checked: 1, Redelivered: 1, Failed: 3}); rep != want {
		t.Errorf("Sweep = %+v, want %+v", rep, want)
	}
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Sweep error = %v, want the failures joined (one ErrNotFound)", err)
	}
	for _, want := range []string{"alice/a:", "401 Bad credentials", "alice/b:", "carol/old:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Sweep error %q does not mention %q", err, want)
		}
	}
	if e.limit.requests("gho_revoked") != 1 {
		t.Errorf("the refused token was used %d times, want once", e.limit.requests("gho_revoked"))
	}
	if n := len(rc.byGUID(guid)); n != 2 {
		t.Errorf("bob's push was delivered %d times, want 2", n)
	}
}

func TestSweepRateLimit(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]func(now time.Time) func(http.ResponseWriter){
		"primary-403": func(now time.Time) func(http.ResponseWriter) {
			return func(w http.ResponseWriter) {
				w.Header().Set("X-RateLimit-Limit", "5000")
				w.Header().Set("X-RateLimit-Remaining", "0")
				w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(time.Hour).Unix(), 10))
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `{"message":"API rate limit exceeded for user ID 1.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}`)
			}
		},
		"secondary-403": func(time.Time) func(http.ResponseWriter) {
			return func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `{"message":"You have exceeded a secondary rate limit.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`)
			}
		},
		"429": func(time.Time) func(http.ResponseWriter) {
			return func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "3600")
				w.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(w, `{"message":"Too many requests"}`)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			rc := newReceiver(t, http.StatusServiceUnavailable)
			a1, a2, b := e.track("alice", "a1", rc.URL), e.track("alice", "a2", rc.URL), e.track("bob", "b", rc.URL)
			ga1, ga2, gb := e.push(a1), e.push(a2), e.push(b)
			rc.code.Store(http.StatusAccepted)
			alice := e.tokens["alice"]
			e.limit.set(alice, answer(e.clock.Now()))

			s := e.sweeper(redeliver.Config{})
			rep, err := s.Sweep(e.ctx)
			if want := (redeliver.Report{Repositories: 1, Checked: 1, Redelivered: 1, Deferred: 1, Failed: 1}); rep != want {
				t.Errorf("first Sweep = %+v, want %+v (alice/a1 limited, alice/a2 deferred, bob/b redelivered)", rep, want)
			}
			if !errors.Is(err, redeliver.ErrRateLimited) || !strings.Contains(err.Error(), "alice/a1") {
				t.Errorf("first Sweep error = %v, want ErrRateLimited for alice/a1", err)
			}
			if n := e.limit.requests(alice); n != 1 {
				t.Errorf("alice's token was used %d times, want once", n)
			}

			// GitHub would answer again, but the limit has not ended:
			// alice's token rests, bob's repositories go on.
			e.limit.set(alice, nil)
			e.clock.Advance(30 * time.Minute)
			sweep(t, s, e.ctx, redeliver.Report{Repositories: 1, Checked: 2, Skipped: 1, Deferred: 2})
			if n := e.limit.requests(alice); n != 1 {
				t.Errorf("alice's token was used %d times while limited, want still once", n)
			}

			e.clock.Advance(31 * time.Minute)
			sweep(t, s, e.ctx, redeliver.Report{Repositories: 3, Checked: 4, Redelivered: 2, Skipped: 1})
			for _, g := range []string{ga1, ga2, gb} {
				if n := len(rc.byGUID(g)); n != 2 {
					t.Errorf("delivery %s reached the receiver %d times, want 2", g, n)
				}
			}
		})
	}
}

func TestSweepRetriesFailedRedelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusAccepted)
	r := e.track("octo", "app", rc.URL)
	e.gh.SetOutage(&githubstandin.Outage{}) // PublicAPI stays down
	guid := e.push(r)
	s := e.sweeper(redeliver.Config{MaxAttempts: 2, RetryBackoff: time.Hour})

	sweep(t, s, e.ctx, redeliver.Report{Repositories: 1, Checked: 1, Redelivered: 1})
	// The redelivery failed too; it is retried after the backoff only.
	sweep(t, s, e.ctx, redeliver.Report{Repositories: 1, Checked: 2, Skipped: 1})
	e.clock.Advance(time.Hour + time.Minute)
	sweep(t, s, e.ctx, redeliver.Report{Repositories: 1, Checked: 2, Redelivered: 1})
	// Two attempts were allowed.
	e.clock.Advance(24 * time.Hour)
	e.gh.SetOutage(nil)
	sweep(t, s, e.ctx, redeliver.Report{Repositories: 1, Checked: 3, Skipped: 1})

	var n int
	for _, d := range e.gh.Deliveries("octo", "app") {
		if d.GUID == guid {
			n++
			if d.Status != "failed to connect" || d.StatusCode != 0 {
				t.Errorf("delivery = %+v, want failed to connect", d)
			}
		}
	}
	if n != 3 || e.claims() != 2 || len(rc.requests()) != 0 {
		t.Errorf("%d deliveries of %s, %d claims, %d received; want 3, 2, 0", n, guid, e.claims(), len(rc.requests()))
	}
}

func TestSweepPagesAndCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusInternalServerError)
	r := e.track("octo", "app", rc.URL)
	var guids []string
	for range 5 {
		guids = append(guids, e.push(r))
	}
	rc.code.Store(http.StatusAccepted)

	// At most three deliveries are read: the newest three pushes.
	sweep(t, e.sweeper(redeliver.Config{PageSize: 2, MaxPerHook: 3}), e.ctx, redeliver.Report{Repositories: 1, Checked: 3, Redelivered: 3})
	for i, g := range guids {
		if want := map[bool]int{true: 2, false: 1}[i >= 2]; len(rc.byGUID(g)) != want {
			t.Errorf("push %d delivered %d times, want %d", i, len(rc.byGUID(g)), want)
		}
	}
	// Without the cap, two pages of two and more reach the older two.
	sweep(t, e.sweeper(redeliver.Config{PageSize: 2}), e.ctx, redeliver.Report{Repositories: 1, Checked: 8, Redelivered: 2, Skipped: 3})
	for i, g := range guids {
		if len(rc.byGUID(g)) != 2 {
			t.Errorf("push %d delivered %d times, want 2", i, len(rc.byGUID(g)))
		}
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, http.StatusServiceUnavailable)
	guid := e.push(e.track("octo", "app", rc.URL))
	<-rc.seen
	rc.code.Store(http.StatusAccepted)

	s := e.sweeper(redeliver.Config{Now: time.Now})
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, 50*time.Millisecond)
	}()
	select {
	case <-rc.seen:
	case <-e.ctx.Done():
		t.Fatal("Run redelivered nothing")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := len(rc.byGUID(guid)); n != 2 {
		t.Errorf("push delivered %d times, want 2", n)
	}

	off := make(chan struct{})
	go func() {
		defer close(off)
		s.Run(e.ctx, 0)
	}()
	select {
	case <-off:
	case <-time.After(30 * time.Second):
		t.Fatal("Run with interval 0 did not return at once")
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	gh := func(string) *github.Client { return github.NewClient(nil) }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := &store.Store{}
	for name, tc := range map[string]struct {
		cfg redeliver.Config
		st  *store.Store
		gh  redeliver.GitHubClient
		log *slog.Logger
	}{
		"no-owner":  {redeliver.Config{}, st, gh, log},
		"no-store":  {redeliver.Config{Owner: "r"}, nil, gh, log},
		"no-github": {redeliver.Config{Owner: "r"}, st, nil, log},
		"no-log":    {redeliver.Config{Owner: "r"}, st, gh, nil},
		"page":      {redeliver.Config{Owner: "r", PageSize: 101}, st, gh, log},
		"negative":  {redeliver.Config{Owner: "r", Window: -time.Hour}, st, gh, log},
	} {
		if _, err := redeliver.New(tc.cfg, tc.st, tc.gh, tc.log); err == nil {
			t.Errorf("%s: New succeeded, want an error", name)
		}
	}
}
