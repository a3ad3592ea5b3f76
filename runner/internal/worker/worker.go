// Package worker turns job messages into pipeline runs, at least once and
// at most one run at a time per job: it claims each job in Firestore with a
// lease it renews while the job runs, acknowledges duplicates of running or
// finished jobs without work, and sweeps jobs whose runner died (expired
// leases) back onto the queue so another runner takes them over.
//
// A job taken over after its first runner had already recorded events is
// ended Failed with the reason (its half-done iteration cannot be resumed
// safely); one whose runner died before recording anything is simply run.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/githubstatus"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/pipeline"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/source"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// handBack is the pseudo-status of a job interrupted by shutdown.
const handBack store.JobStatus = "hand-back"

// errHandedBack nacks the message of a job handed back at shutdown, so
// Pub/Sub delivers it again.
var errHandedBack = errors.New("job handed back: the runner is shutting down")

// Runner runs one job's pipeline.
type Runner interface {
	Run(ctx context.Context, j pipeline.Job, sink pipeline.Sink) (pipeline.Outcome, error)
}

// Publisher puts jobs back on the queue.
type Publisher interface {
	Publish(ctx context.Context, m job.Message) (string, error)
}

// RefChecker tells which commit a ref of a repository points at now
// (source.Fetcher.Head).
type RefChecker interface {
	Head(ctx context.Context, owner, name, ref, token string) (string, error)
}

// Reporter reports jobs on GitHub (githubstatus.Reporter); its methods
// must not block.
type Reporter interface {
	Pending(j githubstatus.Job, description string)
	Deploying(j githubstatus.Job, unit, namespace string)
	Finished(j githubstatus.Job, state, description string)
	Abandoned(j githubstatus.Job, description string)
	Interrupted(j githubstatus.Job, description string)
}

// Config configures a Worker.
type Config struct {
	// Reporter, when set, is told of each job's progress and end for
	// repositories with GitHub reports on (commit statuses, Deployments).
	Reporter Reporter
	// Flush, when set, is called before a job is handed back at shutdown:
	// whatever Writer.Written sent events to must have them before
	// another runner continues the job (the events topic).
	Flush func()
	// Replay, when set, is given every stored batch of a job taken over
	// from a runner that died, before its end is recorded: the dead runner
	// may not have passed its last batches on (the events topic, the
	// sinks), so they are passed on again, at least once.
	Replay func(store.EventBatch)
	// Refs, when set, is asked before a push is built whether its ref still
	// points at its commit; if not, the job ends superseded and deploys
	// nothing (a newer push, or a replay of an old one).
	Refs RefChecker
	// Owner identifies this runner in leases (e.g. host name + pid).
	Owner string
	// Lease is how long a claim lasts without renewal; 0 means 2 minutes.
	// It is renewed every Lease/3.
	Lease time.Duration
	// JobTimeout bounds one job; 0 means 30 minutes.
	JobTimeout time.Duration
	// Writer tunes event batching.
	Writer store.WriterOptions
	// Receiving, when set, is told whether the worker receives jobs (false
	// while it waits to retry a failed Receive).
	Receiving func(bool)
	// UnclaimedAfter is how long a published job may wait unclaimed before
	// a sweep publishes it again (its message was lost); 0 means 10
	// minutes.
	UnclaimedAfter time.Duration
}

// Worker handles job messages.
type Worker struct {
	cfg    Config
	store  *store.Store
	runner Runner
	pub    Publisher
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Worker; now may be nil.
func New(cfg Config, st *store.Store, r Runner, pub Publisher, log *slog.Logger, now func() time.Time) (*Worker, error) {
	if st == nil || r == nil || pub == nil || log == nil || cfg.Owner == "" {
		return nil, errors.New("worker: owner, store, runner, publisher and logger are required")
	}
	if cfg.Lease == 0 {
		cfg.Lease = 2 * time.Minute
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = 30 * time.Minute
	}
	if cfg.UnclaimedAfter == 0 {
		cfg.UnclaimedAfter = 10 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &Worker{cfg: cfg, store: st, runner: r, pub: pub, log: log, now: now}, nil
}

// Handle processes one job message; it is a queue.Handler. It returns an
// error (so the message is redelivered) only when the job could not be
// claimed or its end could not be recorded.
func (w *Worker) Handle(ctx context.Context, m job.Message, d queue.Delivery) error {
	log := w.log.With(logging.KeyJobID, m.JobID, logging.KeyRepo, m.Repository, "attempt", d.Attempt)
	j, err := w.store.ClaimJob(ctx, m.JobID, w.cfg.Owner, w.cfg.Lease, w.now())
	switch {
	case errors.Is(err, store.ErrJobFinished):
		log.InfoContext(ctx, "duplicate message for a finished job: acknowledged")
		return nil
	case errors.Is(err, store.ErrLeased):
		log.InfoContext(ctx, "job is running on another runner: acknowledged")
		return nil
	case errors.Is(err, store.ErrNotFound):
		log.ErrorContext(ctx, "message for an unknown job: acknowledged")
		return nil
	case err != nil:
		return fmt.Errorf("claim job %s: %w", m.JobID, err)
	}

	shutdown := ctx // done when the runner stops receiving
	ctx, cancel := context.WithTimeout(ctx, w.cfg.JobTimeout)
	defer cancel()
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		w.renew(ctx, cancel, j.ID, log)
	}()
	defer func() { cancel(); <-renewDone }()

	status, msg, err := w.run(ctx, shutdown, j, log)
	if err != nil {
		return err
	}
	if status == handBack {
		if w.cfg.Flush != nil {
			w.cfg.Flush()
		}
		hctx, hcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer hcancel()
		if err := w.store.HandBackJob(hctx, j.ID, w.cfg.Owner); err != nil {
			return fmt.Errorf("hand back job %s: %w", j.ID, err)
		}
		log.InfoContext(ctx, "runner shutting down: job handed back to the queue")
		return errHandedBack
	}
	// Record the end even if the job's context ended (timeout, shutdown).
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer fcancel()
	if err := w.store.FinishJob(fctx, j.ID, w.cfg.Owner, status, msg, w.now()); err != nil {
		return fmt.Errorf("finish job %s: %w", j.ID, err)
	}
	log.InfoContext(ctx, "job finished", "status", status, logging.KeyErr, msg)
	return nil
}

// renew extends the lease every Lease/3 until ctx ends; a lost lease
// cancels the job.
func (w *Worker) renew(ctx context.Context, cancel context.CancelFunc, id string, log *slog.Logger) {
	every := w.cfg.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	held := w.now().Add(w.cfg.Lease) // the lease the claim gave
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := w.now()
			err := w.store.RenewLease(ctx, id, w.cfg.Owner, w.cfg.Lease, now)
			switch {
			case err == nil:
				held = now.Add(w.cfg.Lease)
			case errors.Is(err, store.ErrLeaseLost):
				log.ErrorContext(ctx, "lease lost; stopping the job")
				cancel()
				return
			case ctx.Err() != nil:
				return
			case !now.Add(every).Before(held):
				// The next renewal would come too late: stop the work now,
				// while the lease still holds, so that a runner taking the
				// job over never runs it at the same time as this one.
				log.ErrorContext(ctx, "cannot renew the lease before it lapses; stopping the job",
					logging.KeyErr, err.Error(), "lease_until", held)
				cancel()
				return
			default:
				log.WarnContext(ctx, "lease renewal failed; retrying", logging.KeyErr, err.Error(), "lease_until", held)
			}
		}
	}
}

// run runs the claimed job and returns its final status; shutdown is done
// when the runner stops receiving jobs.
func (w *Worker) run(ctx, shutdown context.Context, j *store.Job, log *slog.Logger) (store.JobStatus, string, error) {
	lk := w.lookUp(ctx, j)
	history, err := lk.history, lk.historyErr
	if err != nil {
		return "", "", fmt.Errorf("read job %s events: %w", j.ID, err)
	}
	writer, err := store.NewJobWriter(w.store, j.JobRef(), history.NextChunk, w.cfg.Writer)
	if err != nil {
		return "", "", err
	}
	closeWriter := func() error {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer ccancel()
		return writer.Close(cctx)
	}
	ej := eventJob(j)
	if history.NextChunk > 0 && !j.HandedBack {
		// Taken over mid-run: end the iteration honestly.
		w.replay(ctx, j.ID, log)
		msg := fmt.Sprintf("the runner working on this job stopped (attempt %d); the job was not finished", j.Attempts-1)
		info := &event.ErrorInfo{Code: enumspb.StatusCode_UNKNOWN_ERROR, Message: msg,
			Suggestions: []event.Suggestion{{Code: enumspb.SuggestionCode_OPEN_ISSUE, Action: "Push again to retry"}}}
		f := event.NewFactory(ej, event.Plan{}, w.now)
		err := writer.Emit(f.V1DevLoop(event.Failed, info), f.V2Task(event.TaskDevLoop, event.V2Failed, info))
		if cerr := closeWriter(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", "", fmt.Errorf("record the end of job %s: %w", j.ID, err)
		}
		log.WarnContext(ctx, "took over a job whose runner died", "attempts", j.Attempts)
		w.report(j, lk).abandoned(msg)
		return store.StatusFailed, msg, nil
	}

	// A newer push to the same ref supersedes this one: building it
	// would only deploy an older commit over a newer one.
	if lk.newerErr != nil {
		closeWriter()
		return "", "", lk.newerErr
	} else if lk.newer != "" {
		return w.supersede(ctx, j, lk, writer, closeWriter, "superseded by job "+lk.newer+", a newer push to "+j.Ref, log)
	}
	if errors.Is(lk.repoErr, store.ErrNotFound) {
		closeWriter()
		return store.StatusCanceled, "repository is no longer tracked", nil
	} else if lk.repoErr != nil {
		closeWriter()
		return "", "", lk.repoErr
	} else if lk.stale != "" {
		return w.supersede(ctx, j, lk, writer, closeWriter, lk.stale, log)
	}
	repo, token := lk.repo, lk.token
	rep := w.report(j, lk)
	if j.DeployOf != "" {
		rep.pending("Deploying the images of job " + j.DeployOf)
	} else {
		rep.pending(fmt.Sprintf("Building and deploying %.7s (job %s)", j.SHA, j.ID))
	}

	pj := pipeline.Job{
		Job: ej, Owner: j.Owner, Name: j.Name, Before: j.Before, Token: token,
		// The repository's switches, as the state shows them; an Execute
		// request overrides auto-deploy with ForceDeploy or a deploy-only
		// job instead.
		Triggers:    event.Triggers{Build: repo.Triggers.AutoBuild, Deploy: repo.Triggers.AutoDeploy, Sync: repo.Triggers.AutoSync},
		ForceDeploy: j.ForceDeploy,
		Policy:      deployPolicy(repo.Policy),
		Deployed:    repo.Deployed,
		RecordPending: func(ctx context.Context, images map[string]string) error {
			return w.store.MarkDeployPending(ctx, j.ID, images)
		},
		Interrupted: func() bool { return shutdown.Err() != nil },
		Deploying:   rep.deploying,
		Everything:  store.Requested(j.Trigger),
		Units:       j.Units,
	}
	if j.DeployOf != "" {
		// Deploy-only: non-nil even without images, so that nothing is
		// built and a unit that needs an image fails.
		pj.Images = map[string]string{}
		maps.Copy(pj.Images, j.Images)
	}
	phases := &phaseSink{Sink: writer}
	out, runErr := w.runner.Run(ctx, pj, phases)
	if runErr == nil && out.Interrupted {
		// Interrupted by the runner's shutdown, not by the job itself:
		// the job goes back to the queue and runs again elsewhere.
		f := event.NewFactory(ej, event.Plan{}, w.now)
		const why = "Runner shutting down: the job goes back to the queue and runs again"
		runErr = writer.Emit(nil, f.V2Log(event.TaskDevLoop, event.SubtaskNone, enumspb.LogLevel_WARN, why))
		rep.interrupted(why)
		if err := closeWriter(); runErr == nil {
			runErr = err
		}
		if runErr != nil {
			return "", "", fmt.Errorf("record events of job %s: %w", j.ID, runErr)
		}
		return handBack, "", nil
	}
	if err := closeWriter(); runErr == nil {
		runErr = err
	}
	// From here on the job has done its work (a release may be deployed):
	// it ends with its outcome even if some of its events could not be
	// recorded, and is never run again for that — a retry could deploy
	// twice, or a takeover end a finished deploy as failed.
	note := ""
	if runErr != nil {
		log.ErrorContext(ctx, "job finished, but some of its events could not be recorded", logging.KeyErr, runErr.Error())
		note = "some of the job's events could not be recorded: " + runErr.Error()
	}
	status, msg, err := w.settle(ctx, j, out)
	if err != nil {
		return "", "", err
	}
	w.recordResult(ctx, j, out, phases, log)
	if status == store.StatusSucceeded && !out.DeployPending {
		// Each unit now runs this commit: its next paths filter compares
		// with it. Not recording it only makes a later push build more.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if err := w.store.RecordDeployed(rctx, j.Owner, j.Name, out.Units, j.SHA); err != nil {
			log.WarnContext(ctx, "could not record the deployed commit", logging.KeyErr, err.Error())
		}
		rcancel()
	}
	if note != "" {
		msg = strings.TrimPrefix(msg+"; "+note, "; ")
	}
	if status == store.StatusSucceeded {
		rep.finished(githubstatus.Success, cmp.Or(msg, successMessage(out)))
	} else {
		rep.finished(githubstatus.Failure, msg)
	}
	return status, msg, nil
}

// replay passes the stored batches of job id to Replay.
func (w *Worker) replay(ctx context.Context, id string, log *slog.Logger) {
	if w.cfg.Replay == nil {
		return
	}
	batches, err := w.store.JobBatches(ctx, id)
	if err != nil {
		log.WarnContext(ctx, "could not read a taken-over job's events to pass them on again", logging.KeyErr, err.Error())
		return
	}
	for _, b := range batches {
		w.cfg.Replay(b)
	}
}

// successMessage describes a successful job in a line.
func successMessage(out pipeline.Outcome) string {
	switch {
	case out.Deployed:
		return "Built, deployed and rolled out: " + strings.Join(out.Units, ", ")
	case len(out.Units) > 0:
		return "Built: " + strings.Join(out.Units, ", ")
	}
	return "Nothing to build or deploy"
}

// reporting is one job's reporter; its zero value reports nothing.
type reporting struct {
	r Reporter
	j githubstatus.Job
}

// report returns the reporting of j: nothing without a Reporter, for a
// repository not tracked or with GitHub reports off, or without a token.
func (w *Worker) report(j *store.Job, lk *lookup) reporting {
	if w.cfg.Reporter == nil || lk.repo == nil || lk.repo.GitHubReportsOff || lk.token == "" {
		return reporting{}
	}
	return reporting{r: w.cfg.Reporter, j: githubstatus.Job{ID: j.ID, Owner: j.Owner, Name: j.Name, SHA: j.SHA, Token: lk.token}}
}

func (r reporting) pending(desc string) {
	if r.r != nil {
		r.r.Pending(r.j, desc)
	}
}

func (r reporting) deploying(unit, namespace string) {
	if r.r != nil {
		r.r.Deploying(r.j, unit, namespace)
	}
}

func (r reporting) interrupted(desc string) {
	if r.r != nil {
		r.r.Interrupted(r.j, desc)
	}
}

func (r reporting) abandoned(desc string) {
	if r.r != nil {
		r.r.Abandoned(r.j, desc)
	}
}

func (r reporting) finished(state, desc string) {
	if r.r != nil {
		r.r.Finished(r.j, state, desc)
	}
}

// settle does a finished job's pending-deploy bookkeeping and returns its
// final status and message.
func (w *Worker) settle(ctx context.Context, j *store.Job, out pipeline.Outcome) (store.JobStatus, string, error) {
	// Pending-deploy bookkeeping happens before the job ends, even if the
	// job's context ended.
	mctx, mcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer mcancel()
	if out.Err != nil {
		if j.DeployOf != "" && len(j.Images) > 0 && !store.Requested(j.Trigger) {
			// A failed Execute deploy stays pending, so that it can be
			// retried once the cause is fixed (a failed rollback is
			// rerun instead).
			if err := w.store.MarkDeployPending(mctx, j.ID, j.Images); err != nil {
				return "", "", fmt.Errorf("keep the failed deploy of job %s pending: %w", j.ID, err)
			}
		}
		return store.StatusFailed, out.Err.Message, nil
	}
	if out.Deployed {
		// This job deployed: an older build waiting for a deploy must not
		// roll the release back later.
		if err := w.store.ClearDeployPending(mctx, j.Owner, j.Name, j.Iteration); err != nil {
			return "", "", fmt.Errorf("clear older pending deploys of %s/%s: %w", j.Owner, j.Name, err)
		}
	}
	if out.DeployPending {
		// The pipeline recorded the images (RecordPending) before the
		// iteration's last event.
		return store.StatusSucceeded, "built; deploy pending: auto-deploy is off", nil
	}
	return store.StatusSucceeded, "", nil
}

// supersede ends job j without running it: a Meta event and a canceled
// DevLoop saying why.
func (w *Worker) supersede(ctx context.Context, j *store.Job, lk *lookup, writer *store.JobWriter, closeWriter func() error, msg string, log *slog.Logger) (store.JobStatus, string, error) {
	f := event.NewFactory(eventJob(j), event.Plan{}, w.now)
	info := &event.ErrorInfo{Code: enumspb.StatusCode_OK, Message: msg}
	err := writer.Emit(f.V1Meta(), f.V2Meta())
	if err == nil {
		err = writer.Emit(f.V1DevLoop(event.Canceled, info), f.V2Task(event.TaskDevLoop, event.V2Canceled, info))
	}
	if cerr := closeWriter(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fmt.Errorf("record the end of job %s: %w", j.ID, err)
	}
	log.InfoContext(ctx, "job superseded", "reason", msg)
	w.report(j, lk).finished(githubstatus.Error, "Not deployed: "+msg)
	return store.StatusCanceled, msg, nil
}

// stale returns why push job j must not be built because its ref no longer
// points at its commit (a newer push, a replayed old delivery, a deleted
// ref), or "". Jobs that are not pushes, and runners without Refs, are
// never stale. A failure to ask is an error: the job is retried.
func (w *Worker) stale(ctx context.Context, j *store.Job, token string) (string, error) {
	if w.cfg.Refs == nil || j.Trigger != string(job.TriggerPush) || j.DeployOf != "" {
		return "", nil
	}
	head, err := w.cfg.Refs.Head(ctx, j.Owner, j.Name, j.Ref, token)
	switch {
	case errors.Is(err, source.ErrRefNotFound):
		return fmt.Sprintf("%s no longer exists; this push of %.7s is not built", j.Ref, j.SHA), nil
	case err != nil:
		return "", fmt.Errorf("check the head of %s/%s %s: %w", j.Owner, j.Name, j.Ref, err)
	case head != j.SHA:
		return fmt.Sprintf("%s now points at %.7s, not at this push's %.7s (a newer push, or a replay of an old one); nothing is deployed", j.Ref, head, j.SHA), nil
	}
	return "", nil
}

// lookup is what a job needs looked up before it runs, each with its
// error.
type lookup struct {
	history    *store.JobHistory
	historyErr error
	newer      string // a newer push's job (see newerJob)
	newerErr   error
	repo       *store.Repository
	token      string
	stale      string // why the push is stale (see stale), or ""
	repoErr    error  // of the repository, its token or the stale check
}

// lookUp does a job's lookups at the same time: its events so far, a
// newer push, and the repository, its token and the ref's head (one after
// the other: each needs the one before). They are independent reads, so
// the job starts after the slowest of them, not after their sum. Which
// error wins is run's business.
func (w *Worker) lookUp(ctx context.Context, j *store.Job) *lookup {
	lk := &lookup{}
	var wg sync.WaitGroup
	wg.Go(func() { lk.history, lk.historyErr = w.store.JobEvents(ctx, j.ID) })
	wg.Go(func() { lk.newer, lk.newerErr = w.newerJob(ctx, j) })
	wg.Go(func() {
		repo, err := w.store.Repository(ctx, j.Owner, j.Name)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				err = fmt.Errorf("read repository of job %s: %w", j.ID, err)
			}
			lk.repoErr = err
			return
		}
		lk.repo = repo
		if t, err := w.store.RepositoryToken(ctx, repo); err == nil {
			lk.token = t.AccessToken
		} else if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalid) {
			lk.repoErr = fmt.Errorf("read token of %s: %w", repo.TrackedBy, err)
			return
		}
		lk.stale, lk.repoErr = w.stale(ctx, j, lk.token)
	})
	wg.Wait()
	return lk
}

// newerJob returns the id of a newer push for the same ref that is queued,
// running or done, or "". Newer means pushed later (GitHub's push time),
// not a higher iteration: a replayed old push gets a higher iteration but
// is older. Jobs without a push time (made by Execute) compare by
// iteration. Deploy-only jobs are not pushes: one deploys the images of an
// older job, so it supersedes nothing, and its own source job does not
// supersede it. Jobs a person asked for (store.Requested: a rerun, a
// deploy of a chosen commit, a rollback) run as asked: nothing supersedes
// them and they supersede no push.
func (w *Worker) newerJob(ctx context.Context, j *store.Job) (string, error) {
	recent, err := w.store.Jobs(ctx, j.Owner, j.Name, 20)
	if err != nil {
		return "", fmt.Errorf("list jobs of %s/%s: %w", j.Owner, j.Name, err)
	}
	if store.Requested(j.Trigger) {
		return "", nil // a person asked for this very job: it runs
	}
	for _, o := range recent {
		if store.Requested(o.Trigger) {
			continue // not a push: it supersedes none
		}
		if o.ID == j.ID || o.ID == j.DeployOf || o.Ref != j.Ref || o.DeployOf != "" || o.Status == store.StatusPending || o.Status == store.StatusCanceled {
			continue
		}
		if o.Status == store.StatusQueued && o.PublishedAt.IsZero() {
			// Recorded but not (yet) published: it cannot run until a
			// sweep publishes it, so it supersedes nothing.
			continue
		}
		newer := o.CreatedAt.After(j.CreatedAt)
		if !o.PushedAt.IsZero() && !j.PushedAt.IsZero() && !o.PushedAt.Equal(j.PushedAt) {
			// Push times have a resolution of one second: within the
			// same second the order they were recorded in decides.
			newer = o.PushedAt.After(j.PushedAt)
		}
		if newer {
			return o.ID, nil
		}
	}
	return "", nil
}

// deployPolicy is the runner's view of a repository's deploy policy.
func deployPolicy(p store.Policy) deploy.Policy {
	return deploy.Policy{Namespaces: p.Namespaces, CreateNamespaces: p.CreateNamespaces, ClusterScoped: p.ClusterScoped,
		AllowKinds: p.AllowKinds, Adopt: p.Adopt, ServiceAccount: p.ServiceAccount}
}

func eventJob(j *store.Job) event.Job {
	m := job.Message{Ref: j.Ref}
	return event.Job{
		ID: j.ID, Repository: j.Owner + "/" + j.Name, Commit: j.SHA, Ref: j.Ref,
		Branch: m.Branch(), Tag: m.Tag(), DeliveryID: j.DeliveryID, Trigger: j.Trigger, Iteration: j.Iteration,
	}
}

// Sweep republishes running jobs whose lease expired, so that a runner
// takes them over; call it periodically (Run does).
func (w *Worker) Sweep(ctx context.Context) error {
	now := w.now()
	var errs []error
	for _, sw := range []struct {
		what string
		list func() ([]store.Job, error)
	}{
		// A runner stopped renewing its lease: another one takes over.
		{"a job whose runner stopped renewing its lease", func() ([]store.Job, error) { return w.store.ExpiredJobs(ctx, now, 20) }},
		// Recorded but never published (PublicAPI answered 503, or died
		// in between): GitHub will not retry, so nobody else would.
		{"a job recorded but never published", func() ([]store.Job, error) {
			return w.store.UnpublishedJobs(ctx, now.Add(-unpublishedGrace), 20)
		}},
		// Published long ago and never claimed: its message was lost.
		{"a job published but never claimed", func() ([]store.Job, error) {
			return w.store.UnclaimedJobs(ctx, now.Add(-w.cfg.UnclaimedAfter), 20)
		}},
	} {
		jobs, err := sw.list()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, j := range jobs {
			if err := w.republish(ctx, j); err != nil {
				errs = append(errs, err)
				continue
			}
			w.log.WarnContext(ctx, "republished "+sw.what, logging.KeyJobID, j.ID)
		}
	}
	return errors.Join(errs...)
}

// unpublishedGrace is how long a recorded job may wait for the webhook's
// own publish before a sweep publishes it.
const unpublishedGrace = 30 * time.Second

// republish publishes job j's message again and records it.
func (w *Worker) republish(ctx context.Context, j store.Job) error {
	m := job.Message{
		Version: job.Version, JobID: j.ID, Repository: j.Owner + "/" + j.Name, Ref: j.Ref, SHA: j.SHA,
		Before: j.Before, DeliveryID: j.DeliveryID, Trigger: job.TriggerOf(j.Trigger), PublishedAt: w.now(),
	}
	id, err := w.pub.Publish(ctx, m)
	if err != nil {
		return fmt.Errorf("republish job %s: %w", j.ID, err)
	}
	if err := w.store.MarkJobPublished(ctx, j.ID, id, w.now()); err != nil {
		return fmt.Errorf("mark job %s published: %w", j.ID, err)
	}
	return nil
}

// Run receives jobs from sub until ctx ends, sweeping expired leases every
// Lease. It returns when both have stopped.
func (w *Worker) Run(ctx context.Context, sub *queue.Subscriber) error {
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		t := time.NewTicker(w.cfg.Lease)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
					w.log.WarnContext(ctx, "sweep failed", logging.KeyErr, err.Error())
				}
			}
		}
	}()
	err := w.receive(ctx, sub)
	<-sweepDone
	return err
}

// receive receives jobs until ctx ends. A failed Receive (the Pub/Sub
// service unreachable, the subscription briefly gone) is retried with a
// growing pause rather than ending the runner; Receiving, when set, says
// whether jobs are being received, for the health check.
func (w *Worker) receive(ctx context.Context, sub *queue.Subscriber) error {
	const minPause, maxPause = time.Second, 30 * time.Second
	pause := minPause
	for {
		if w.cfg.Receiving != nil {
			w.cfg.Receiving(true)
		}
		started := time.Now()
		err := sub.Receive(ctx, w.Handle)
		if w.cfg.Receiving != nil {
			w.cfg.Receiving(false)
		}
		if ctx.Err() != nil || err == nil || errors.Is(err, queue.ErrShutdownTimeout) {
			return err
		}
		if time.Since(started) > maxPause {
			pause = minPause // it worked for a while: start over
		}
		w.log.ErrorContext(ctx, "receiving jobs failed; retrying", logging.KeyErr, err.Error(), "pause", pause)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, maxPause)
	}
}
