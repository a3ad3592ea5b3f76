// Package githubstatus reports jobs on GitHub, where people look: a commit
// status for every job and a GitHub Deployment for every unit a job
// deploys.
//
// # What is posted
//
//   - A commit status on the job's commit, context Config.Context
//     ("kube-git-deploy"): pending when a runner starts the job, then
//     success, failure (the build, deploy or rollout failed: the commit's
//     fault) or error (the job was superseded by a newer push, or ended by
//     something that is not the commit's fault), each with a one-line
//     reason and a link to the job's events. One context for all units: a
//     job builds and deploys its units together and succeeds or fails as a
//     whole, and a later job on the same commit (a rerun) replaces the
//     earlier one's status instead of adding a line per run.
//   - A Deployment per unit and environment (the unit's namespace), task
//     "deploy:<unit>", when the unit's deploy starts: in_progress, then
//     success or failure with the job. On success, the unit's previous
//     successful deployment in that environment is marked inactive (the
//     one it replaces). GitHub's own auto_inactive is off: it would
//     deactivate the other units deployed to the same namespace.
//   - A job handed back at a runner's shutdown (Interrupted) ends the
//     Deployments it had started as errors ("the job runs again"); the
//     run that continues it makes new ones.
//   - A job taken over from a runner that died (Abandoned) ends with an
//     error status, and the Deployments the dead runner had started,
//     which GitHub would otherwise show in progress for ever, end as
//     errors too: they are found by the job id in their payload.
//
// # GitHub is never on the critical path
//
// The Reporter's methods only record what should be on GitHub and return;
// one goroutine (Run) sends it, one request at a time as GitHub asks of
// integrations, at most one content-creating request per MinGap (GitHub's
// secondary limit is 80 a minute). Updates are coalesced: a job's status
// is sent as it is when its turn comes, so a pending that was never sent
// is skipped once the final state is known, and a final state is never
// followed by an older one. Failures are retried with exponential backoff
// (5xx, network errors); 403/429 rate limits wait for Retry-After, or for
// the rate limit's reset, or a minute for a secondary limit without one,
// and pause every request meanwhile. A request GitHub refuses for good
// (401, 404, 422) is dropped and logged. Updates older than MaxAge are
// given up. Close sends what is left until its context ends; what is
// still unsent when a runner is killed is lost (it is in memory only).
package githubstatus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
)

// States of commit statuses and deployment statuses.
const (
	Pending    = "pending"
	Success    = "success"
	Failure    = "failure"
	Error      = "error"
	InProgress = "in_progress"
	Inactive   = "inactive"
)

// DefaultContext is the commit status context.
const DefaultContext = "kube-git-deploy"

// Defaults of Config.
const (
	DefaultMinGap        = time.Second
	DefaultMaxAge        = time.Hour
	DefaultSecondaryWait = time.Minute
	DefaultMaxJobs       = 10000
	maxBackoff           = 5 * time.Minute
	// maxDescription is GitHub's limit on a description (longer is a 422).
	maxDescription = 140
)

// Config configures a Reporter.
type Config struct {
	// Context is the commit status context; default DefaultContext.
	Context string
	// JobURL returns the link of a job (the statuses' target_url), or ""
	// for none.
	JobURL func(Job) string
	// MinGap is the least time between two content-creating requests;
	// default DefaultMinGap.
	MinGap time.Duration
	// MaxAge gives up a job's updates that could not be sent for this long;
	// default DefaultMaxAge.
	MaxAge time.Duration
	// SecondaryWait is how long a secondary rate limit without Retry-After
	// pauses the requests; default DefaultSecondaryWait.
	SecondaryWait time.Duration
	// MaxJobs bounds the jobs with updates waiting; the oldest is given up
	// beyond it. Default DefaultMaxJobs.
	MaxJobs int
}

// Job identifies a job on GitHub.
type Job struct {
	// ID is the job's id.
	ID string
	// Owner, Name and SHA are the repository and the commit.
	Owner, Name, SHA string
	// Token is the GitHub token to post with (the repository's).
	Token string
}

// Reporter reports jobs on GitHub. Its methods are safe for concurrent use
// and never wait for GitHub.
type Reporter struct {
	cfg    Config
	client func(token string) *github.Client
	log    *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	jobs  map[string]*report // by job id
	order []string           // job ids with something to send, oldest first
	wake  chan struct{}
	// pauseUntil holds every request back (a rate limit).
	pauseUntil time.Time
	lastWrite  time.Time
	dropped    int
}

// report is what should be on GitHub for one job, and what was sent.
type report struct {
	job                 Job
	state, desc         string // the commit status wanted
	sentState, sentDesc string
	final               bool
	deployments         []*deployment
	since               time.Time // the first update not yet sent
	attempts            int
	notBefore           time.Time
	queued              bool
	statusGiveUp        bool
	// orphans: the job was taken over from a runner that died; the
	// deployments it had started (in_progress on GitHub, unknown here)
	// are looked up and ended once.
	orphans bool
}

// deployment is one unit's GitHub Deployment of a job.
type deployment struct {
	unit, environment string
	desc              string // of its statuses; the job's when empty
	id                int64  // 0 until created
	state, sentState  string
	inactivated       bool // the previous one was marked inactive
	givenUp           bool
}

// New returns a Reporter posting with client(token); log receives what
// could not be posted. Run it with Run.
func New(cfg Config, client func(token string) *github.Client, log *slog.Logger) *Reporter {
	if cfg.Context == "" {
		cfg.Context = DefaultContext
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = DefaultMinGap
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.SecondaryWait <= 0 {
		cfg.SecondaryWait = DefaultSecondaryWait
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = DefaultMaxJobs
	}
	if cfg.JobURL == nil {
		cfg.JobURL = func(Job) string { return "" }
	}
	return &Reporter{cfg: cfg, client: client, log: log, now: time.Now,
		jobs: map[string]*report{}, wake: make(chan struct{}, 1)}
}

// Pending reports that j runs (a pending commit status), unless j's final
// state is known already.
func (r *Reporter) Pending(j Job, description string) {
	r.update(j, func(rp *report) {
		if !rp.final {
			rp.state, rp.desc = Pending, description
		}
	})
}

// Deploying reports that j deploys unit to namespace: a Deployment, in
// progress.
func (r *Reporter) Deploying(j Job, unit, namespace string) {
	r.update(j, func(rp *report) {
		if rp.final {
			return
		}
		for _, d := range rp.deployments {
			if d.unit == unit && d.environment == namespace {
				return
			}
		}
		rp.deployments = append(rp.deployments, &deployment{unit: unit, environment: namespace, state: InProgress})
	})
}

// Finished reports j's outcome: state Success, Failure or Error with a
// one-line reason. Its deployments end success (Success) or failure.
func (r *Reporter) Finished(j Job, state, description string) {
	r.update(j, func(rp *report) {
		rp.state, rp.desc, rp.final = state, description, true
		for _, d := range rp.deployments {
			d.state = Failure
			if state == Success {
				d.state = Success
			}
		}
	})
}

// Interrupted reports that j was handed back (its runner stops; another
// runs the job again from the start): the Deployments it started end as
// errors, so that none stays in progress, and the commit status stays
// pending.
func (r *Reporter) Interrupted(j Job, description string) {
	r.update(j, func(rp *report) {
		if rp.final {
			return
		}
		for _, d := range rp.deployments {
			d.state, d.desc = Error, description
		}
	})
}

// Abandoned reports that j ended because the runner running it died (a
// takeover): an error status with the reason, and the Deployments that
// runner had started, which GitHub still shows in progress, ended as
// errors too (found by the job id in their payload).
func (r *Reporter) Abandoned(j Job, description string) {
	r.update(j, func(rp *report) {
		rp.state, rp.desc, rp.final, rp.orphans = Error, description, true, true
	})
}

func (r *Reporter) update(j Job, change func(*report)) {
	if j.Token == "" || j.SHA == "" {
		return // nothing to post with, or about
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.jobs[j.ID]
	if rp == nil {
		rp = &report{job: j}
		r.jobs[j.ID] = rp
	}
	rp.job.Token = j.Token
	change(rp)
	if !rp.queued && rp.dirty() {
		rp.queued, rp.since, rp.attempts, rp.notBefore = true, r.now(), 0, time.Time{}
		r.order = append(r.order, j.ID)
		if len(r.order) > r.cfg.MaxJobs {
			r.giveUp(r.jobs[r.order[0]], "too many jobs waiting to be reported")
			r.order = r.order[1:]
		}
	}
	if !rp.dirty() && rp.final {
		delete(r.jobs, j.ID)
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// dirty reports whether something of rp is not on GitHub yet.
func (rp *report) dirty() bool {
	if !rp.statusGiveUp && (rp.state != rp.sentState || rp.desc != rp.sentDesc) {
		return true
	}
	if rp.orphans {
		return true
	}
	for _, d := range rp.deployments {
		if !d.givenUp && (d.id == 0 || d.state != d.sentState || (d.sentState == Success && !d.inactivated)) {
			return true
		}
	}
	return false
}

// giveUp drops rp's unsent updates; the caller holds mu.
func (r *Reporter) giveUp(rp *report, why string) {
	if rp == nil {
		return
	}
	r.dropped++
	r.log.Warn("gave up reporting a job on GitHub", logging.KeyJobID, rp.job.ID,
		logging.KeyRepo, rp.job.Owner+"/"+rp.job.Name, "reason", why)
	rp.queued = false
	delete(r.jobs, rp.job.ID)
}

// Dropped counts the jobs whose updates were given up.
func (r *Reporter) Dropped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Idle reports whether nothing waits to be sent.
func (r *Reporter) Idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order) == 0
}

// Run sends updates until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	for {
		wait, ok := r.step(ctx)
		if !ok && ctx.Err() != nil {
			return
		}
		if wait == 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Close sends what is waiting until ctx ends; it returns the number of
// jobs whose updates were left unsent. Run must have returned.
func (r *Reporter) Close(ctx context.Context) int {
	for {
		wait, _ := r.step(ctx)
		if r.Idle() {
			return 0
		}
		if wait == 0 {
			continue
		}
		select {
		case <-ctx.Done():
			r.mu.Lock()
			defer r.mu.Unlock()
			n := len(r.order)
			for _, id := range r.order {
				r.log.Warn("runner stopping: a job's GitHub updates were not sent", logging.KeyJobID, id)
			}
			return n
		case <-time.After(wait):
		}
	}
}

// step sends the next request due, if any, and returns how long to wait
// before the next one (an hour when nothing waits: a wake-up comes first).
func (r *Reporter) step(ctx context.Context) (time.Duration, bool) {
	r.mu.Lock()
	now := r.now()
	if w := r.pauseUntil.Sub(now); w > 0 {
		r.mu.Unlock()
		return w, false
	}
	if w := r.lastWrite.Add(r.cfg.MinGap).Sub(now); w > 0 {
		r.mu.Unlock()
		return w, false
	}
	var rp *report
	next := time.Hour
	r.order = slices.DeleteFunc(r.order, func(id string) bool { c := r.jobs[id]; return c == nil || !c.queued })
	for i, id := range r.order {
		c := r.jobs[id]
		if now.Sub(c.since) > r.cfg.MaxAge {
			r.giveUp(c, "GitHub could not be reached for "+r.cfg.MaxAge.String())
			r.order = append(r.order[:i:i], r.order[i+1:]...)
			r.mu.Unlock()
			return 0, true
		}
		if w := c.notBefore.Sub(now); w > 0 {
			next = min(next, w)
			continue
		}
		rp = c
		break
	}
	if rp == nil {
		r.mu.Unlock()
		return next, false
	}
	req := rp.nextRequest(r.cfg)
	r.mu.Unlock()

	err := r.send(ctx, req)

	r.mu.Lock()
	defer r.mu.Unlock()
	if req.write {
		r.lastWrite = r.now()
	}
	switch {
	case err == nil:
		req.done()
		rp.attempts = 0
	case ctx.Err() != nil:
		return 0, false
	default:
		r.failed(rp, req, err)
	}
	if !rp.dirty() {
		rp.queued = false
		for i, id := range r.order {
			if id == rp.job.ID {
				r.order = append(r.order[:i:i], r.order[i+1:]...)
				break
			}
		}
		if rp.final {
			delete(r.jobs, rp.job.ID)
		}
	}
	return 0, true
}

// request is one call to GitHub and what its success changes.
type request struct {
	job   Job
	what  string
	write bool
	call  func(ctx context.Context, c *github.Client) error
	done  func()
	// drop gives up the request's part of the report for good.
	drop func()
}

// nextRequest returns the next call for rp; the caller holds mu.
func (rp *report) nextRequest(cfg Config) request {
	j := rp.job
	// The commit status first: it is what people look at.
	if !rp.statusGiveUp && (rp.state != rp.sentState || rp.desc != rp.sentDesc) {
		state, desc := rp.state, oneLine(rp.desc)
		link := cfg.JobURL(j)
		return request{job: j, what: "commit status " + state, write: true,
			call: func(ctx context.Context, c *github.Client) error {
				st := &github.RepoStatus{State: &state, Description: &desc, Context: &cfg.Context}
				if link != "" {
					st.TargetURL = &link
				}
				_, _, err := c.Repositories.CreateStatus(ctx, j.Owner, j.Name, j.SHA, st)
				return err
			},
			done: func() { rp.sentState, rp.sentDesc = state, rp.desc },
			drop: func() { rp.statusGiveUp = true },
		}
	}
	if rp.orphans {
		desc := oneLine(rp.desc)
		return request{job: j, what: "end the deployments of a dead runner", write: true,
			call: func(ctx context.Context, c *github.Client) error { return endOrphans(ctx, c, j, desc) },
			done: func() { rp.orphans = false },
			drop: func() { rp.orphans = false },
		}
	}
	for _, d := range rp.deployments {
		if d.givenUp {
			continue
		}
		d := d
		drop := func() { d.givenUp = true }
		switch {
		case d.id == 0:
			var created int64
			return request{job: j, what: "deployment of " + d.unit, write: true, drop: drop,
				call: func(ctx context.Context, c *github.Client) error {
					dep, _, err := c.Repositories.CreateDeployment(ctx, j.Owner, j.Name, &github.DeploymentRequest{
						Ref: &j.SHA, Task: github.String("deploy:" + d.unit), AutoMerge: github.Bool(false),
						RequiredContexts: &[]string{}, Environment: &d.environment,
						Description:           github.String(oneLine("kube-git-deploy job " + j.ID + ": unit " + d.unit)),
						Payload:               map[string]string{"job": j.ID, "unit": d.unit},
						TransientEnvironment:  github.Bool(false),
						ProductionEnvironment: github.Bool(false),
					})
					created = dep.GetID()
					return err
				},
				done: func() { d.id = created },
			}
		case d.state != d.sentState:
			state, desc, id := d.state, oneLine(cmp.Or(d.desc, rp.desc)), d.id
			link := cfg.JobURL(j)
			return request{job: j, what: "deployment status " + state + " of " + d.unit, write: true, drop: drop,
				call: func(ctx context.Context, c *github.Client) error {
					req := &github.DeploymentStatusRequest{State: &state, Environment: &d.environment,
						Description:  &desc,
						AutoInactive: github.Bool(false)}
					if link != "" {
						req.LogURL = &link
					}
					_, _, err := c.Repositories.CreateDeploymentStatus(ctx, j.Owner, j.Name, id, req)
					return err
				},
				done: func() { d.sentState = state },
			}
		case d.sentState == Success && !d.inactivated:
			unit, env, id := d.unit, d.environment, d.id
			return request{job: j, what: "inactive previous deployment of " + d.unit, write: true, drop: drop,
				call: func(ctx context.Context, c *github.Client) error {
					return inactivatePrevious(ctx, c, j, unit, env, id)
				},
				done: func() { d.inactivated = true },
			}
		}
	}
	// Nothing due (dirty said otherwise only for given-up parts).
	return request{job: j, what: "nothing", call: func(context.Context, *github.Client) error { return nil }, done: func() {}}
}

// inactivatePrevious marks the newest deployment of unit in environment
// env before deployment id that is still successful inactive: the one id
// replaced.
// Older ones were marked when that one succeeded.
func inactivatePrevious(ctx context.Context, c *github.Client, j Job, unit, env string, id int64) error {
	list, _, err := c.Repositories.ListDeployments(ctx, j.Owner, j.Name, &github.DeploymentsListOptions{
		Task: "deploy:" + unit, Environment: env, ListOptions: github.ListOptions{PerPage: 10}})
	if err != nil {
		return err
	}
	for _, dep := range list {
		if dep.GetID() >= id {
			continue // this one, or a newer one
		}
		sts, _, err := c.Repositories.ListDeploymentStatuses(ctx, j.Owner, j.Name, dep.GetID(), &github.ListOptions{PerPage: 1})
		if err != nil {
			return err
		}
		if len(sts) == 0 || sts[0].GetState() != Success {
			continue
		}
		_, _, err = c.Repositories.CreateDeploymentStatus(ctx, j.Owner, j.Name, dep.GetID(), &github.DeploymentStatusRequest{
			State: github.String(Inactive), Environment: &env, AutoInactive: github.Bool(false),
			Description: github.String(oneLine("replaced by kube-git-deploy job " + j.ID))})
		return err
	}
	return nil
}

// endOrphans ends, as errors, the deployments of job j that are still
// in progress on GitHub: a runner that died started them.
func endOrphans(ctx context.Context, c *github.Client, j Job, desc string) error {
	list, _, err := c.Repositories.ListDeployments(ctx, j.Owner, j.Name, &github.DeploymentsListOptions{
		SHA: j.SHA, ListOptions: github.ListOptions{PerPage: 100}})
	if err != nil {
		return err
	}
	for _, dep := range list {
		var payload struct {
			Job string `json:"job"`
		}
		if json.Unmarshal(dep.Payload, &payload) != nil || payload.Job != j.ID {
			continue
		}
		sts, _, err := c.Repositories.ListDeploymentStatuses(ctx, j.Owner, j.Name, dep.GetID(), &github.ListOptions{PerPage: 1})
		if err != nil {
			return err
		}
		if len(sts) > 0 && sts[0].GetState() != InProgress && sts[0].GetState() != "queued" && sts[0].GetState() != Pending {
			continue // ended already
		}
		_, _, err = c.Repositories.CreateDeploymentStatus(ctx, j.Owner, j.Name, dep.GetID(), &github.DeploymentStatusRequest{
			State: github.String(Error), Description: &desc, Environment: dep.Environment, AutoInactive: github.Bool(false)})
		if err != nil {
			return err
		}
	}
	return nil
}

// send makes one request, with a bounded time.
func (r *Reporter) send(ctx context.Context, req request) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return req.call(ctx, r.client(req.job.Token))
}

// failed decides what a failed request means; the caller holds mu.
func (r *Reporter) failed(rp *report, req request, err error) {
	now := r.now()
	log := r.log.With(logging.KeyJobID, rp.job.ID, logging.KeyRepo, rp.job.Owner+"/"+rp.job.Name, "request", req.what)
	var (
		abuse *github.AbuseRateLimitError
		limit *github.RateLimitError
		resp  *github.ErrorResponse
	)
	switch {
	case errors.As(err, &abuse):
		wait := r.cfg.SecondaryWait
		if abuse.RetryAfter != nil {
			wait = *abuse.RetryAfter
		}
		r.pauseUntil = now.Add(wait)
		log.Warn("GitHub secondary rate limit; pausing reports", "wait", wait)
	case errors.As(err, &limit):
		r.pauseUntil = limit.Rate.Reset.Time
		if !r.pauseUntil.After(now) {
			r.pauseUntil = now.Add(r.cfg.SecondaryWait)
		}
		log.Warn("GitHub rate limit exhausted; pausing reports", "until", r.pauseUntil)
	case errors.As(err, &resp) && resp.Response != nil && (resp.Response.StatusCode == http.StatusTooManyRequests || resp.Response.StatusCode == http.StatusForbidden):
		wait := retryAfter(resp.Response, r.cfg.SecondaryWait)
		r.pauseUntil = now.Add(wait)
		log.Warn("GitHub refused with "+strconv.Itoa(resp.Response.StatusCode)+"; pausing reports", "wait", wait, logging.KeyErr, err.Error())
	case errors.As(err, &resp) && resp.Response != nil && resp.Response.StatusCode < 500:
		// Refused for good (401, 404, 409, 422): retrying cannot help.
		log.Warn("GitHub refused a report; not retried", logging.KeyErr, err.Error())
		req.drop()
	default:
		// 5xx or no answer: back off, this job only.
		rp.attempts++
		wait := backoff(rp.attempts)
		rp.notBefore = now.Add(wait)
		log.Warn("could not report to GitHub; retrying", "attempt", rp.attempts, "wait", wait, logging.KeyErr, err.Error())
	}
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), or def.
func retryAfter(resp *http.Response, def time.Duration) time.Duration {
	v := resp.Header.Get("Retry-After")
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	if resp.Header.Get("X-RateLimit-Remaining") == "0" {
		if s, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			return max(time.Until(time.Unix(s, 0)), time.Second)
		}
	}
	return def
}

// backoff is the pause after the n-th failure in a row: 1 s doubling to
// 5 min, with ±20 % jitter.
func backoff(n int) time.Duration {
	d := time.Second << min(n-1, 9)
	d = min(d, maxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// oneLine makes s a valid description: its first line, at most 140
// characters.
func oneLine(s string) string {
	for i, c := range s {
		if c == '\n' || c == '\r' {
			s = s[:i]
			break
		}
	}
	if utf8.RuneCountInString(s) <= maxDescription {
		return s
	}
	rs := []rune(s)
	return string(rs[:maxDescription-1]) + "…"
}

// JobLink returns the link of a job's events on the API service at base:
// its seed-002 export.
func JobLink(base *url.URL, j Job) string {
	if base == nil {
		return ""
	}
	u := base.JoinPath("kgd/v1/export")
	u.RawQuery = url.Values{"repository": {j.Owner + "/" + j.Name}, "job": {j.ID}}.Encode()
	return u.String()
}

// String describes the reporter's settings for logs.
func (r *Reporter) String() string {
	return fmt.Sprintf("githubstatus (context %q, min gap %s)", r.cfg.Context, r.cfg.MinGap)
}
