package worker

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/pipeline"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// buildingRunner emits a build phase and reports an image per run, and
// remembers the jobs it was given.
type buildingRunner struct {
	mu   sync.Mutex
	jobs []pipeline.Job
}

func (r *buildingRunner) Run(ctx context.Context, j pipeline.Job, sink pipeline.Sink) (pipeline.Outcome, error) {
	r.mu.Lock()
	r.jobs = append(r.jobs, j)
	r.mu.Unlock()
	f := event.NewFactory(j.Job, event.Plan{}, nil)
	if err := sink.Emit(f.V1Meta(), f.V2Meta()); err != nil {
		return pipeline.Outcome{}, err
	}
	if err := sink.Emit(nil, f.V2Task(event.TaskBuild, event.V2InProgress, nil)); err != nil {
		return pipeline.Outcome{}, err
	}
	if err := sink.Emit(nil, f.V2Task(event.TaskBuild, event.V2Succeeded, nil)); err != nil {
		return pipeline.Outcome{}, err
	}
	out := pipeline.Outcome{Images: map[string]string{"web": "r/web:" + j.Commit[:7] + "@sha256:" + strings.Repeat("c", 64)}, Units: []string{"web"}}
	return out, sink.Emit(f.V1DevLoop(event.Succeeded, nil), f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil))
}

// TestRequestedJobsRunAsAsked: a job someone asked for (a rerun) is not
// superseded by a newer push and supersedes no older push; it runs
// without the paths filters; and every job records its images and phases.
func TestRequestedJobsRunAsAsked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := &buildingRunner{}
	w := e.worker(t, "runner-a", r, &recordingPublisher{}, e.now)
	older, olderMsg := e.newJob(t, "d-old")
	rerun, err := e.store.CreateRequestedJob(e.ctx, store.Job{Owner: "octo", Name: "app", Ref: older.Ref, SHA: older.SHA,
		Trigger: store.JobRerun, SourceJob: older.ID, Actor: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	// Published, so that each could supersede (an unpublished job cannot).
	if err := e.store.MarkJobPublished(e.ctx, rerun.ID, "m-rerun", e.now); err != nil {
		t.Fatal(err)
	}
	rerunMsg := job.Message{Version: 1, JobID: rerun.ID, Repository: "octo/app", Ref: rerun.Ref, SHA: rerun.SHA, Trigger: job.TriggerExecute, PublishedAt: e.now}
	// The older push runs after the rerun was recorded: not superseded.
	if err := w.Handle(e.ctx, olderMsg, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	// A newer push arrives before the rerun runs: the rerun still runs.
	newer, _ := e.newJob(t, "d-new")
	if err := e.store.MarkJobPublished(e.ctx, newer.ID, "m-new", e.now); err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(e.ctx, rerunMsg, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{older.ID, rerun.ID} {
		got, err := e.store.Job(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != store.StatusSucceeded {
			t.Errorf("job %s = %s %q, want succeeded", id, got.Status, got.Error)
		}
		if img := got.Images["web"]; !strings.HasPrefix(img, "r/web:"+got.SHA[:7]+"@sha256:") {
			t.Errorf("job %s recorded images %v", id, got.Images)
		}
		if len(got.Phases) != 1 || got.Phases[0].Name != event.JobPhaseBuild || got.Phases[0].Status != event.V2Succeeded || got.Phases[0].FinishedAt.IsZero() {
			t.Errorf("job %s recorded phases %+v", id, got.Phases)
		}
	}
	if len(r.jobs) != 2 {
		t.Fatalf("pipeline ran %d jobs, want 2", len(r.jobs))
	}
	if r.jobs[0].Everything || !r.jobs[1].Everything {
		t.Errorf("paths filters skipped: push %v, rerun %v; want only for the rerun", r.jobs[0].Everything, r.jobs[1].Everything)
	}
	if !slices.Equal(r.jobs[1].Units, nil) {
		t.Errorf("rerun limited to units %v", r.jobs[1].Units)
	}
}
