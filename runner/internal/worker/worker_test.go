package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/go-cmp/cmp"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/githubstatus"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/pipeline"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/source"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore) }

// countingRunner stands in for the pipeline (tested on real parts in its
// own package): it emits a minimal iteration and counts runs.
type countingRunner struct {
	mu   sync.Mutex
	runs int
	fail bool
}

func (r *countingRunner) Run(ctx context.Context, j pipeline.Job, sink pipeline.Sink) (pipeline.Outcome, error) {
	r.mu.Lock()
	r.runs++
	r.mu.Unlock()
	f := event.NewFactory(j.Job, event.Plan{}, nil)
	if err := sink.Emit(f.V1Meta(), f.V2Meta()); err != nil {
		return pipeline.Outcome{}, err
	}
	if r.fail {
		info := &event.ErrorInfo{Message: "boom"}
		return pipeline.Outcome{Err: info}, sink.Emit(f.V1DevLoop(event.Failed, info), nil)
	}
	return pipeline.Outcome{}, sink.Emit(f.V1DevLoop(event.Succeeded, nil), nil)
}

type recordingPublisher struct {
	mu   sync.Mutex
	msgs []job.Message
}

func (p *recordingPublisher) Publish(_ context.Context, m job.Message) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, m)
	return "id", nil
}

type env struct {
	ctx   context.Context
	store *store.Store
	now   time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	fs, err := firestore.NewClient(ctx, emulatortest.ProjectID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	box, err := secret.NewBox(bytes.Repeat([]byte{3}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(fs, box)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.TrackRepository(ctx, store.Repository{Owner: "octo", Name: "app", HookID: 1, WebhookSecret: []byte("s"), TrackedBy: "octo", Triggers: store.DefaultTriggers()}); err != nil {
		t.Fatal(err)
	}
	return &env{ctx: ctx, store: st, now: time.Now()}
}

func (e *env) worker(t *testing.T, owner string, r Runner, pub Publisher, now time.Time) *Worker {
	t.Helper()
	w, err := New(Config{Owner: owner, Lease: time.Minute}, e.store, r, pub, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (e *env) newJob(t *testing.T, delivery string) (*store.Job, job.Message) {
	t.Helper()
	const sha = "fd489864e7642b48eaad6e3f155c10e46810ec72"
	j, err := e.store.CreateJob(e.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha, DeliveryID: delivery, Trigger: "push"})
	if err != nil {
		t.Fatal(err)
	}
	return j, job.Message{Version: 1, JobID: j.ID, Repository: "octo/app", Ref: j.Ref, SHA: sha, DeliveryID: delivery, Trigger: job.TriggerPush, PublishedAt: e.now}
}

func TestDuplicateMessageRunsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := &countingRunner{}
	w := e.worker(t, "runner-a", r, &recordingPublisher{}, e.now)
	j, m := e.newJob(t, "d-1")
	for i := 1; i <= 3; i++ {
		if err := w.Handle(e.ctx, m, queue.Delivery{Attempt: i}); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if r.runs != 1 {
		t.Errorf("pipeline ran %d times for one job delivered 3 times, want 1", r.runs)
	}
	got, err := e.store.Job(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusSucceeded || got.LeaseOwner != "" {
		t.Errorf("job = %s (lease %q), want succeeded without a lease", got.Status, got.LeaseOwner)
	}
	h, err := e.store.JobEvents(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.V1) != 2 {
		t.Errorf("%d v1 events, want 2 (one run)", len(h.V1))
	}
}

func TestNewerPushSupersedes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := &countingRunner{}
	w := e.worker(t, "runner-a", r, &recordingPublisher{}, e.now)
	old, oldMsg := e.newJob(t, "d-old")
	_, newMsg := e.newJob(t, "d-new")
	// The newer job's message arrives first; the older one's afterwards.
	if err := w.Handle(e.ctx, newMsg, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(e.ctx, oldMsg, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if r.runs != 1 {
		t.Errorf("pipeline ran %d times, want 1 (the older push superseded)", r.runs)
	}
	got, _ := e.store.Job(e.ctx, old.ID)
	if got.Status != store.StatusCanceled || got.Error == "" {
		t.Errorf("older job = %s %q, want canceled as superseded", got.Status, got.Error)
	}
	h, err := e.store.JobEvents(e.ctx, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if last := h.V1[len(h.V1)-1].GetEvent().GetDevLoopEvent(); last.GetStatus() != event.Canceled {
		t.Errorf("older job's last event = %v, want DevLoop Canceled", h.V1[len(h.V1)-1])
	}
}

// blockingRunner starts an iteration and then waits for its context, as a
// long build interrupted by a shutdown would.
type blockingRunner struct{ started chan struct{} }

func (r *blockingRunner) Run(ctx context.Context, j pipeline.Job, sink pipeline.Sink) (pipeline.Outcome, error) {
	f := event.NewFactory(j.Job, event.Plan{}, nil)
	if err := sink.Emit(f.V1Meta(), f.V2Meta()); err != nil {
		return pipeline.Outcome{}, err
	}
	close(r.started)
	<-ctx.Done()
	info := &event.ErrorInfo{Code: enumspb.StatusCode_BUILD_CANCELLED, Message: "canceled"}
	if j.Interrupted != nil && j.Interrupted() {
		// As the pipeline does: no end of the iteration when interrupted.
		return pipeline.Outcome{Err: info, Interrupted: true}, nil
	}
	return pipeline.Outcome{Err: info}, sink.Emit(f.V1DevLoop(event.Failed, info), nil)
}

func TestShutdownHandsTheJobBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j, m := e.newJob(t, "d-sd")
	br := &blockingRunner{started: make(chan struct{})}
	a := e.worker(t, "runner-a", br, &recordingPublisher{}, e.now)
	flushed := 0 // the events topic is flushed before the job goes back
	a.cfg.Flush = func() {
		if got, _ := e.store.Job(e.ctx, j.ID); got.HandedBack {
			t.Error("Flush after the job was handed back; want before")
		}
		flushed++
	}
	shutdown, stop := context.WithCancel(e.ctx)
	errc := make(chan error, 1)
	go func() { errc <- a.Handle(shutdown, m, queue.Delivery{Attempt: 1}) }()
	<-br.started
	stop() // SIGTERM
	if err := <-errc; err == nil {
		t.Fatal("Handle of an interrupted job returned nil; want an error so the message is redelivered")
	}
	got, _ := e.store.Job(e.ctx, j.ID)
	if got.Status != store.StatusQueued || !got.HandedBack || got.LeaseOwner != "" {
		t.Fatalf("job after shutdown = %s handed back %v lease %q; want queued, handed back, no lease", got.Status, got.HandedBack, got.LeaseOwner)
	}
	if flushed != 1 {
		t.Errorf("Flush called %d times before the hand-back, want once", flushed)
	}
	// The redelivered message runs the job again on another runner.
	r := &countingRunner{}
	b := e.worker(t, "runner-b", r, &recordingPublisher{}, e.now)
	if err := b.Handle(e.ctx, m, queue.Delivery{Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	got, _ = e.store.Job(e.ctx, j.ID)
	if r.runs != 1 || got.Status != store.StatusSucceeded {
		t.Errorf("after redelivery: %d runs, job %s; want 1 run, succeeded", r.runs, got.Status)
	}
}

func TestFailedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker(t, "runner-a", &countingRunner{fail: true}, &recordingPublisher{}, e.now)
	j, m := e.newJob(t, "d-f")
	if err := w.Handle(e.ctx, m, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	got, _ := e.store.Job(e.ctx, j.ID)
	if got.Status != store.StatusFailed || got.Error != "boom" {
		t.Errorf("job = %s %q, want failed boom", got.Status, got.Error)
	}
}

// TestRunnerDiedMidJob: a runner claims a job, records events and dies
// (its lease is never renewed). The sweep republishes the job, and the
// next runner ends it Failed with the reason instead of leaving it "In
// Progress" forever.
func TestRunnerDiedMidJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	j, m := e.newJob(t, "d-2")
	// Runner A claims the job and records the start of the iteration.
	if _, err := e.store.ClaimJob(e.ctx, j.ID, "runner-a", time.Minute, e.now); err != nil {
		t.Fatal(err)
	}
	wr, err := store.NewJobWriter(e.store, j.JobRef(), 0, store.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := event.NewFactory(event.Job{ID: j.ID, Repository: "octo/app", Commit: j.SHA, Ref: j.Ref, Iteration: j.Iteration}, event.Plan{}, nil)
	if err := wr.Emit(f.V1Meta(), f.V2Meta()); err != nil {
		t.Fatal(err)
	}
	if err := wr.Emit(f.V1DevLoop(event.InProgress, nil), f.V2Task(event.TaskDevLoop, event.V2InProgress, nil)); err != nil {
		t.Fatal(err)
	}
	if err := wr.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	// ... and dies. While its lease lasts, a redelivery is acknowledged
	// without work.
	r := &countingRunner{}
	pub := &recordingPublisher{}
	b := e.worker(t, "runner-b", r, pub, e.now.Add(10*time.Second))
	if err := b.Handle(e.ctx, m, queue.Delivery{Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.Sweep(e.ctx); err != nil || len(pub.msgs) != 0 {
		t.Fatalf("sweep during a live lease: %v, republished %d", err, len(pub.msgs))
	}
	// Two minutes later the lease has expired: the sweep puts it back.
	later := e.worker(t, "runner-b", r, pub, e.now.Add(2*time.Minute))
	var replayed []store.EventBatch // what the dead runner stored, passed on again
	later.cfg.Replay = func(b store.EventBatch) { replayed = append(replayed, b) }
	if err := later.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if len(pub.msgs) != 1 || pub.msgs[0].JobID != j.ID {
		t.Fatalf("sweep republished %v, want job %s", pub.msgs, j.ID)
	}
	if err := later.Handle(e.ctx, pub.msgs[0], queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if r.runs != 0 {
		t.Errorf("a half-done job was run again %d times", r.runs)
	}
	got, err := e.store.Job(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusFailed || got.Error == "" {
		t.Errorf("job after takeover = %s %q, want failed with a reason", got.Status, got.Error)
	}
	h, err := e.store.JobEvents(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	last := h.V1[len(h.V1)-1].GetEvent().GetDevLoopEvent()
	if last.GetStatus() != event.Failed || last.GetErr().GetMessage() == "" {
		t.Errorf("last v1 event = %v, want DevLoop Failed with a message", h.V1[len(h.V1)-1])
	}
	if n := countDevLoop(h.V1); n != 2 {
		t.Errorf("%d DevLoop events, want 2 (In Progress, Failed)", n)
	}
	// The dead runner's events were passed on again (they may not have
	// reached the events topic), before the takeover's end was stored.
	var v1 []*v1pb.LogEntry
	for _, b := range replayed {
		if len(b.V1Seq) != len(b.V1) {
			t.Errorf("replayed batch %d has %d events and %d sequence numbers", b.Chunk, len(b.V1), len(b.V1Seq))
		}
		v1 = append(v1, b.V1...)
	}
	if len(v1) != 2 || countDevLoop(v1) != 1 || v1[1].GetEvent().GetDevLoopEvent().GetStatus() != event.InProgress {
		t.Errorf("replayed %d v1 events (%v), want the dead runner's Meta and DevLoop In Progress", len(v1), v1)
	}
}

func countDevLoop(es []*v1pb.LogEntry) int {
	n := 0
	for _, e := range es {
		if e.GetEvent().GetDevLoopEvent() != nil {
			n++
		}
	}
	return n
}

func TestUnknownJobIsAcknowledged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker(t, "runner-a", &countingRunner{}, &recordingPublisher{}, e.now)
	m := job.Message{Version: 1, JobID: "nope", Repository: "octo/app", Ref: "refs/heads/main", SHA: "fd489864e7642b48eaad6e3f155c10e46810ec72", DeliveryID: "x", Trigger: job.TriggerPush, PublishedAt: e.now}
	if err := w.Handle(e.ctx, m, queue.Delivery{}); err != nil {
		t.Errorf("Handle(unknown job) = %v, want nil (acknowledged)", err)
	}
}

// controlRunner stands in for the pipeline in the Execute flows: it
// records the jobs it is given and ends them as the pipeline would: with
// the deploy pending (and one image) when a build may not deploy.
type controlRunner struct {
	mu         sync.Mutex
	jobs       []pipeline.Job
	failDeploy bool // deploy-only jobs fail
}

func (r *controlRunner) Run(ctx context.Context, j pipeline.Job, sink pipeline.Sink) (pipeline.Outcome, error) {
	r.mu.Lock()
	r.jobs = append(r.jobs, j)
	r.mu.Unlock()
	f := event.NewFactory(j.Job, event.Plan{}, nil)
	if err := sink.Emit(f.V1Meta(), f.V2Meta()); err != nil {
		return pipeline.Outcome{}, err
	}
	out := pipeline.Outcome{}
	r.mu.Lock()
	fail := r.failDeploy && j.Images != nil
	r.mu.Unlock()
	switch {
	case fail:
		out.Err = &event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Message: "helm said no"}
		return out, sink.Emit(f.V1DevLoop(event.Failed, out.Err), nil)
	case j.Images == nil && !j.Triggers.Deploy && !j.ForceDeploy:
		out.DeployPending = true
		out.Images = map[string]string{"web": "reg/web:" + j.Commit[:7] + "@sha256:" + strings.Repeat("a", 64)}
		if err := j.RecordPending(ctx, out.Images); err != nil {
			return out, err
		}
	default:
		out.Deployed = true
	}
	return out, sink.Emit(f.V1DevLoop(event.Succeeded, nil), nil)
}

func (r *controlRunner) last() pipeline.Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jobs[len(r.jobs)-1]
}

// TestExecuteFlows drives the jobs of the control API's Execute through the
// worker with auto-build and auto-deploy off: a released push with and
// without a forced deploy, and deploy-only jobs for the recorded images.
func TestExecuteFlows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.store.SetTriggers(e.ctx, "octo", "app", store.Triggers{AutoSync: true}); err != nil {
		t.Fatal(err)
	}
	r := &controlRunner{}
	w := e.worker(t, "runner-a", r, &recordingPublisher{}, e.now)
	handle := func(t *testing.T, j *store.Job) *store.Job {
		t.Helper()
		m := job.Message{Version: 1, JobID: j.ID, Repository: "octo/app", Ref: j.Ref, SHA: j.SHA, Before: j.Before,
			DeliveryID: j.DeliveryID, Trigger: job.Trigger(j.Trigger), PublishedAt: e.now}
		if err := w.Handle(e.ctx, m, queue.Delivery{Attempt: 1}); err != nil {
			t.Fatalf("Handle: %v", err)
		}
		got, err := e.store.Job(e.ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	pendingDeploy := func(t *testing.T) string {
		t.Helper()
		repo, err := e.store.Repository(e.ctx, "octo", "app")
		if err != nil {
			t.Fatal(err)
		}
		return repo.PendingDeployJobID
	}
	release := func(t *testing.T, sha string, force bool) *store.Job {
		t.Helper()
		_, err := e.store.CreateJob(e.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha,
			DeliveryID: "d-" + sha[:7], Trigger: "push", Status: store.StatusPending})
		if err != nil {
			t.Fatal(err)
		}
		j, err := e.store.ReleasePendingJob(e.ctx, "octo", "app", force)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	off := event.Triggers{Sync: true}

	t.Run("build-and-deploy", func(t *testing.T) {
		j := release(t, strings.Repeat("1", 40), true)
		got := handle(t, j)
		pj := r.last()
		if !pj.ForceDeploy || pj.Triggers != off || pj.Images != nil {
			t.Errorf("pipeline job: force %t triggers %+v images %v; want forced, the repository's triggers, no images", pj.ForceDeploy, pj.Triggers, pj.Images)
		}
		if got.Status != store.StatusSucceeded || got.DeployPending || got.Error != "" {
			t.Errorf("job = %s %q deploy pending %t; want succeeded and deployed", got.Status, got.Error, got.DeployPending)
		}
		if p := pendingDeploy(t); p != "" {
			t.Errorf("pending deploy = %q after a deploy, want none", p)
		}
	})

	var built *store.Job
	t.Run("build-only", func(t *testing.T) {
		j := release(t, strings.Repeat("2", 40), false)
		built = handle(t, j)
		if pj := r.last(); pj.ForceDeploy || pj.Images != nil {
			t.Errorf("pipeline job: force %t images %v; want a plain build", pj.ForceDeploy, pj.Images)
		}
		want := map[string]string{"web": "reg/web:2222222@sha256:" + strings.Repeat("a", 64)}
		if built.Status != store.StatusSucceeded || !built.DeployPending || !cmp.Equal(want, built.Images) {
			t.Fatalf("job = %s deploy pending %t images %v; want succeeded, pending, %v", built.Status, built.DeployPending, built.Images, want)
		}
		if p := pendingDeploy(t); p != j.ID {
			t.Errorf("pending deploy = %q, want %s", p, j.ID)
		}
	})

	t.Run("deploy", func(t *testing.T) {
		dj, err := e.store.CreateDeployJob(e.ctx, "octo", "app", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got := handle(t, dj)
		pj := r.last()
		if pj.ID != dj.ID || !cmp.Equal(built.Images, pj.Images) || pj.Triggers != off || pj.Commit != built.SHA || pj.Trigger != "execute" {
			t.Errorf("pipeline job = %+v; want deploy-only job %s of commit %s with images %v", pj, dj.ID, built.SHA, built.Images)
		}
		if got.Status != store.StatusSucceeded || got.Error != "" {
			t.Errorf("deploy job = %s %q, want succeeded (not superseded by its source job)", got.Status, got.Error)
		}
		if p := pendingDeploy(t); p != "" {
			t.Errorf("pending deploy = %q after the deploy job, want none", p)
		}
	})

	t.Run("deploy-without-images", func(t *testing.T) {
		// A helm-only build records no images; its deploy-only job is still
		// deploy-only.
		j := release(t, strings.Repeat("3", 40), true)
		handle(t, j)
		if err := e.store.MarkDeployPending(e.ctx, j.ID, nil); err != nil {
			t.Fatal(err)
		}
		dj, err := e.store.CreateDeployJob(e.ctx, "octo", "app", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		handle(t, dj)
		if pj := r.last(); pj.ID != dj.ID || pj.Images == nil || len(pj.Images) != 0 {
			t.Errorf("pipeline job %s images = %#v, want deploy-only job %s with no images", pj.ID, pj.Images, dj.ID)
		}
	})

	t.Run("failed-deploy-stays-pending", func(t *testing.T) {
		if err := e.store.MarkDeployPending(e.ctx, built.ID, built.Images); err != nil {
			t.Fatal(err)
		}
		dj, err := e.store.CreateDeployJob(e.ctx, "octo", "app", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		r.mu.Lock()
		r.failDeploy = true
		r.mu.Unlock()
		got := handle(t, dj)
		r.mu.Lock()
		r.failDeploy = false
		r.mu.Unlock()
		if got.Status != store.StatusFailed {
			t.Fatalf("deploy job = %s, want failed", got.Status)
		}
		if p := pendingDeploy(t); p != dj.ID {
			t.Errorf("pending deploy after a failed deploy = %q, want %s (retryable)", p, dj.ID)
		}
		retry, err := e.store.CreateDeployJob(e.ctx, "octo", "app", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if got := handle(t, retry); got.Status != store.StatusSucceeded || !cmp.Equal(r.last().Images, built.Images) {
			t.Errorf("retried deploy = %s with images %v, want succeeded with %v", got.Status, r.last().Images, built.Images)
		}
		if p := pendingDeploy(t); p != "" {
			t.Errorf("pending deploy after the retry = %q, want none", p)
		}
	})

	t.Run("newer-deploy-clears-older-pending", func(t *testing.T) {
		old := release(t, strings.Repeat("5", 40), false)
		handle(t, old)
		if p := pendingDeploy(t); p != old.ID {
			t.Fatalf("pending deploy = %q, want %s", p, old.ID)
		}
		handle(t, release(t, strings.Repeat("6", 40), true))
		if p := pendingDeploy(t); p != "" {
			t.Errorf("pending deploy after a newer deploy = %q, want none (it would roll back)", p)
		}
	})

	t.Run("deploy-job-supersedes-nothing", func(t *testing.T) {
		// A queued push older than a deploy-only job (in iterations) but of
		// a newer commit still runs: the deploy-only job is not a push.
		push, err := e.store.CreateJob(e.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: strings.Repeat("4", 40),
			DeliveryID: "d-4", Trigger: "push"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.MarkDeployPending(e.ctx, built.ID, built.Images); err != nil {
			t.Fatal(err)
		}
		dj, err := e.store.CreateDeployJob(e.ctx, "octo", "app", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if got := handle(t, dj); got.Status != store.StatusSucceeded {
			t.Fatalf("deploy job = %s %q", got.Status, got.Error)
		}
		if got := handle(t, push); got.Status != store.StatusSucceeded || r.last().ID != push.ID {
			t.Errorf("older queued push = %s %q, want run and succeeded", got.Status, got.Error)
		}
	})
}

// refs answers Head from a map: ref → commit (absent: deleted).
type refs map[string]string

func (r refs) Head(_ context.Context, _, _, ref, _ string) (string, error) {
	if sha, ok := r[ref]; ok {
		return sha, nil
	}
	return "", fmt.Errorf("%s: %w", ref, source.ErrRefNotFound)
}

// TestReplayedOldPushIsNotBuilt: a replay of an old push (a higher
// iteration, an older push time) must neither supersede the newer push
// nor be built: newer means pushed later, and the ref must still point at
// the pushed commit.
func TestReplayedOldPushIsNotBuilt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const oldSHA, newSHA = "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
	t0 := time.Unix(1_800_000_000, 0)
	create := func(sha, delivery string, pushedAt time.Time) (*store.Job, job.Message) {
		j, err := e.store.CreateJob(e.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha,
			DeliveryID: delivery, PushedAt: pushedAt, Trigger: "push"})
		if err != nil {
			t.Fatal(err)
		}
		return j, job.Message{Version: 1, JobID: j.ID, Repository: "octo/app", Ref: j.Ref, SHA: sha, DeliveryID: delivery, Trigger: job.TriggerPush, PublishedAt: e.now}
	}
	newer, newerMsg := create(newSHA, "d-new", t0.Add(time.Minute))
	replay, replayMsg := create(oldSHA, "d-replayed", t0) // recorded later, pushed earlier
	r := &countingRunner{}
	w, err := New(Config{Owner: "runner-a", Lease: time.Minute, Refs: refs{"refs/heads/main": newSHA}}, e.store, r,
		&recordingPublisher{}, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return e.now })
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []job.Message{replayMsg, newerMsg} {
		if err := w.Handle(e.ctx, m, queue.Delivery{Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if r.runs != 1 {
		t.Errorf("pipeline ran %d times, want 1 (only the newer push)", r.runs)
	}
	gotReplay, _ := e.store.Job(e.ctx, replay.ID)
	gotNewer, _ := e.store.Job(e.ctx, newer.ID)
	if gotReplay.Status != store.StatusCanceled || !strings.Contains(gotReplay.Error, "now points at 2222222") {
		// (The newer push is recorded but unpublished here, so it cannot
		// supersede: the ref's head decides.)
		t.Errorf("replayed job = %s %q, want canceled: its ref points at the newer push", gotReplay.Status, gotReplay.Error)
	}
	if gotNewer.Status != store.StatusSucceeded {
		t.Errorf("newer job = %s %q, want succeeded (a replayed older push must not supersede it)", gotNewer.Status, gotNewer.Error)
	}

	// A replay long after (no newer job on record any more, e.g. after the
	// repository was tracked again): the ref's head decides.
	other := newEnv(t)
	e.store = other.store
	late, lateMsg := create(oldSHA, "d-replayed-late", t0)
	w2, _ := New(Config{Owner: "runner-b", Lease: time.Minute, Refs: refs{"refs/heads/main": newSHA}}, other.store, r,
		&recordingPublisher{}, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return e.now })
	if err := w2.Handle(e.ctx, lateMsg, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if got, _ := other.store.Job(e.ctx, late.ID); got.Status != store.StatusCanceled || !strings.Contains(got.Error, "now points at 2222222") {
		t.Errorf("late replay = %s %q, want canceled: the ref points at the newer commit", got.Status, got.Error)
	}

	// A push whose branch was deleted since is not built either.
	w3, _ := New(Config{Owner: "runner-c", Lease: time.Minute, Refs: refs{}}, other.store, r,
		&recordingPublisher{}, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return e.now })
	gone, goneMsg := create(newSHA, "d-gone", t0.Add(2*time.Minute))
	if err := w3.Handle(e.ctx, goneMsg, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if got, _ := other.store.Job(e.ctx, gone.ID); got.Status != store.StatusCanceled || !strings.Contains(got.Error, "no longer exists") {
		t.Errorf("job of a deleted branch = %s %q, want canceled", got.Status, got.Error)
	}
	if r.runs != 1 {
		t.Errorf("pipeline ran %d times, want still 1", r.runs)
	}
}

// unrecordableRunner deploys (as far as the worker can tell) and then
// emits an event Firestore cannot store: a document over its 1 MiB limit.
type unrecordableRunner struct{ runs int }

func (r *unrecordableRunner) Run(ctx context.Context, j pipeline.Job, sink pipeline.Sink) (pipeline.Outcome, error) {
	r.runs++
	f := event.NewFactory(j.Job, event.Plan{}, time.Now)
	err := sink.Emit(f.V1Meta(), f.V2Meta())
	if err == nil {
		err = sink.Emit(nil, f.V2Log(event.TaskDeploy, event.SubtaskNone, enumspb.LogLevel_STANDARD, strings.Repeat("x", 2<<20)))
	}
	return pipeline.Outcome{Deployed: true}, err
}

// TestUnrecordableEventKeepsTheOutcome: an event that cannot be written
// never turns a finished deploy into a failed or repeated one.
func TestUnrecordableEventKeepsTheOutcome(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := &unrecordableRunner{}
	w := e.worker(t, "runner-a", r, &recordingPublisher{}, e.now)
	j, m := e.newJob(t, "d-big")
	for attempt := 1; attempt <= 2; attempt++ {
		if err := w.Handle(e.ctx, m, queue.Delivery{Attempt: attempt}); err != nil {
			t.Fatalf("delivery %d: %v (the message would be redelivered and the deploy repeated)", attempt, err)
		}
	}
	if r.runs != 1 {
		t.Errorf("pipeline ran %d times, want 1", r.runs)
	}
	got, err := e.store.Job(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusSucceeded || !strings.Contains(got.Error, "could not be recorded") {
		t.Errorf("job = %s %q, want succeeded, saying events are missing", got.Status, got.Error)
	}
}

// TestSweepPublishesWhatWasNeverQueued: a job recorded but never published
// (PublicAPI answered 503 when Pub/Sub failed; GitHub does not retry) and a
// job whose message was lost (published long ago, never claimed) are
// published by the runners' sweep; a fresh unpublished job is left to the
// webhook, and an unpublished newer push supersedes nothing meanwhile.
func TestSweepPublishesWhatWasNeverQueued(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pub := &recordingPublisher{}
	w := e.worker(t, "runner-a", &countingRunner{}, pub, e.now)
	mk := func(delivery string, created time.Time) *store.Job {
		j, err := e.store.CreateJob(e.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main",
			SHA: "fd489864e7642b48eaad6e3f155c10e46810ec72", DeliveryID: delivery, Trigger: "push", CreatedAt: created})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	unpublished := mk("never-published", e.now.Add(-time.Minute))
	fresh := mk("just-recorded", e.now)
	lost := mk("message-lost", e.now.Add(-time.Hour))
	if err := e.store.MarkJobPublished(e.ctx, lost.ID, "m-1", e.now.Add(-20*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := w.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range pub.msgs {
		got[m.JobID] = true
	}
	if !got[unpublished.ID] || !got[lost.ID] || got[fresh.ID] || len(pub.msgs) != 2 {
		t.Errorf("sweep published %v; want exactly %s (never published) and %s (lost)", pub.msgs, unpublished.ID, lost.ID)
	}
	for _, id := range []string{unpublished.ID, lost.ID} {
		if j, _ := e.store.Job(e.ctx, id); j.PublishedAt.IsZero() || !j.PublishedAt.After(e.now.Add(-time.Minute)) {
			t.Errorf("job %s published at %v, want now", id, j.PublishedAt)
		}
	}
	pub.msgs = nil
	if err := w.Sweep(e.ctx); err != nil || len(pub.msgs) != 0 {
		t.Errorf("second sweep published %v (%v), want nothing", pub.msgs, err)
	}
}

// recordingReporter records what the worker reports on GitHub (the
// reporter itself is tested against the GitHub stand-in in its package).
type recordingReporter struct {
	mu    sync.Mutex
	calls []string
}

func (r *recordingReporter) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recordingReporter) Pending(j githubstatus.Job, desc string) {
	r.add(j.ID + " pending " + desc + " token=" + j.Token)
}

func (r *recordingReporter) Deploying(j githubstatus.Job, unit, ns string) {
	r.add(j.ID + " deploying " + unit + " " + ns)
}

func (r *recordingReporter) Finished(j githubstatus.Job, state, desc string) {
	r.add(j.ID + " " + state + " " + desc)
}

func (r *recordingReporter) Abandoned(j githubstatus.Job, desc string) {
	r.add(j.ID + " abandoned " + desc)
}

func (r *recordingReporter) Interrupted(j githubstatus.Job, desc string) {
	r.add(j.ID + " interrupted " + desc)
}

// deployingRunner tells the job it deploys unit web to namespace web.
type deployingRunner struct{ countingRunner }

func (r *deployingRunner) Run(ctx context.Context, j pipeline.Job, sink pipeline.Sink) (pipeline.Outcome, error) {
	j.Deploying("web", "web")
	out, err := r.countingRunner.Run(ctx, j, sink)
	if out.Err == nil {
		out.Deployed, out.Units = true, []string{"web"}
	}
	return out, err
}

// TestReports checks what the worker reports for GitHub: a succeeding, a
// failing and a superseded job, and nothing for a repository with reports
// off or without a token.
func TestReports(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.store.TrackRepository(e.ctx, store.Repository{Owner: "acme", Name: "web", HookID: 2, WebhookSecret: []byte("s"),
		TrackedBy: "acme", TrackedByCaller: "local", Triggers: store.DefaultTriggers()}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutToken(e.ctx, store.Token{Caller: "local", Login: "acme", AccessToken: "gho_acme", Scopes: []string{"repo"}}); err != nil {
		t.Fatal(err)
	}
	newJob := func(t *testing.T, delivery string) (*store.Job, job.Message) {
		t.Helper()
		const sha = "ad489864e7642b48eaad6e3f155c10e46810ec72"
		j, err := e.store.CreateJob(e.ctx, store.Job{Owner: "acme", Name: "web", Ref: "refs/heads/main", SHA: sha, DeliveryID: delivery, Trigger: "push"})
		if err != nil {
			t.Fatal(err)
		}
		return j, job.Message{Version: 1, JobID: j.ID, Repository: "acme/web", Ref: j.Ref, SHA: sha, DeliveryID: delivery, Trigger: job.TriggerPush, PublishedAt: e.now}
	}
	run := func(t *testing.T, r Runner, msgs ...job.Message) []string {
		t.Helper()
		rep := &recordingReporter{}
		w, err := New(Config{Owner: "runner-a", Lease: time.Minute, Reporter: rep}, e.store, r, &recordingPublisher{},
			slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return e.now })
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if err := w.Handle(e.ctx, m, queue.Delivery{Attempt: 1}); err != nil {
				t.Fatal(err)
			}
		}
		return rep.calls
	}

	// One after the other: the jobs of one repository.
	t.Run("succeeded", func(t *testing.T) {
		j, m := newJob(t, "r-ok")
		want := []string{
			j.ID + " pending Building and deploying ad48986 (job " + j.ID + ") token=gho_acme",
			j.ID + " deploying web web",
			j.ID + " success Built, deployed and rolled out: web",
		}
		if diff := cmp.Diff(want, run(t, &deployingRunner{}, m)); diff != "" {
			t.Errorf("reports (-want +got):\n%s", diff)
		}
	})
	t.Run("failed", func(t *testing.T) {
		j, m := newJob(t, "r-fail")
		want := []string{
			j.ID + " pending Building and deploying ad48986 (job " + j.ID + ") token=gho_acme",
			j.ID + " failure boom",
		}
		if diff := cmp.Diff(want, run(t, &countingRunner{fail: true}, m)); diff != "" {
			t.Errorf("reports (-want +got):\n%s", diff)
		}
	})
	t.Run("superseded", func(t *testing.T) {
		old, oldMsg := newJob(t, "r-old")
		newer, newMsg := newJob(t, "r-new")
		got := run(t, &countingRunner{}, newMsg, oldMsg)
		want := []string{
			newer.ID + " pending Building and deploying ad48986 (job " + newer.ID + ") token=gho_acme",
			newer.ID + " success Nothing to build or deploy",
			old.ID + " error Not deployed: superseded by job " + newer.ID + ", a newer push to refs/heads/main",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("reports (-want +got):\n%s", diff)
		}
	})
	t.Run("handed-back", func(t *testing.T) {
		j, m := newJob(t, "r-back")
		rep := &recordingReporter{}
		br := &blockingRunner{started: make(chan struct{})}
		w, err := New(Config{Owner: "runner-a", Lease: time.Minute, Reporter: rep}, e.store, br, &recordingPublisher{},
			slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return e.now })
		if err != nil {
			t.Fatal(err)
		}
		shutdown, stop := context.WithCancel(e.ctx)
		errc := make(chan error, 1)
		go func() { errc <- w.Handle(shutdown, m, queue.Delivery{Attempt: 1}) }()
		<-br.started
		stop() // SIGTERM
		if err := <-errc; err == nil {
			t.Fatal("Handle of a handed-back job returned nil")
		}
		want := []string{
			j.ID + " pending Building and deploying ad48986 (job " + j.ID + ") token=gho_acme",
			j.ID + " interrupted Runner shutting down: the job goes back to the queue and runs again",
		}
		if diff := cmp.Diff(want, rep.calls); diff != "" {
			t.Errorf("reports (-want +got):\n%s", diff)
		}
	})
	t.Run("reports-off", func(t *testing.T) {
		if err := e.store.SetGitHubReports(e.ctx, "acme", "web", false); err != nil {
			t.Fatal(err)
		}
		_, m := newJob(t, "r-off")
		if got := run(t, &countingRunner{}, m); len(got) != 0 {
			t.Errorf("reports with GitHub reports off: %q", got)
		}
	})
	t.Run("no-token", func(t *testing.T) {
		// octo/app was tracked without a recorded tracker: no token.
		_, m := e.newJob(t, "r-no-token")
		if got := run(t, &countingRunner{}, m); len(got) != 0 {
			t.Errorf("reports without a token: %q", got)
		}
	})
}
