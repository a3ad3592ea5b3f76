package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/client"
	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/render"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// follower prints the v2 events of one job of a repository, read from
// GET /v2/events?repository=…&sequence=true.
type follower struct {
	c    *client.Client
	repo client.Repo
	// out receives the printed events (io.Discard in JSON mode).
	out io.Writer
	// ndjson, when not nil, receives each of the job's events as a JSON
	// line.
	ndjson io.Writer
	p      render.Palette
	// pollEvery is how often a followed job's status is checked.
	pollEvery time.Duration
}

// finished reports whether a job status is final.
func finished(status string) bool {
	switch strings.ToLower(status) {
	case "succeeded", "failed", "canceled":
		return true
	}
	return false
}

// outcomeOf is a finished job's outcome as its record tells it.
func outcomeOf(j *jobspb.Job) render.Outcome {
	o := render.Outcome{Message: j.GetError()}
	switch strings.ToLower(j.GetStatus()) {
	case "succeeded":
		o.Status = render.Succeeded
	case "canceled":
		o.Status = render.Canceled
	default:
		o.Status = render.Failed
	}
	if s, f := j.GetStartedAt(), j.GetFinishedAt(); s != nil && f != nil && s.IsValid() && f.IsValid() && s.GetSeconds() > 0 {
		o.Duration = f.AsTime().Sub(s.AsTime())
	}
	return o
}

// jobEnded ends a follow when the job's record says it ended and its
// events cannot tell (it never started, or its last event was lost).
type jobEnded struct{ job *jobspb.Job }

func (e *jobEnded) Error() string { return "job " + e.job.GetId() + " ended" }

// show prints the events of job, or, when job is nil, of the next job of
// the repository to start after iteration after. Without follow it prints
// the events stored so far and returns; with follow it goes on until the
// iteration ends. It returns the job's id and outcome (an empty Status if
// it has not ended).
func (f *follower) show(ctx context.Context, job *jobspb.Job, after int32, follow bool) (string, render.Outcome, error) {
	var jobID string
	var iter int32
	if job != nil {
		jobID, iter = job.GetId(), job.GetIteration()
	}
	repo := f.repo.String()
	if job != nil && iter == 0 && !follow {
		if finished(job.GetStatus()) {
			return f.ended(job)
		}
		fmt.Fprintln(f.out, f.p.Faint(fmt.Sprintf("Job %s of %s is %s: it has not started yet (follow it with: kgd events -f -r %s --job %s)",
			jobID, repo, job.GetStatus(), repo, jobID)))
		return jobID, render.Outcome{}, nil
	}
	since, bound := int64(-1), int64(-1)
	if job != nil && iter > 0 {
		lo, hi, err := f.logRange(ctx, job)
		if err != nil {
			return jobID, render.Outcome{}, err
		}
		if lo > 0 {
			// A job's log opens with its MetaEvent, numbered as on the
			// event stream: read from right before it.
			since = lo - 1
		}
		if !follow && hi > 0 {
			bound = hi
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if follow && job != nil {
		go f.poll(ctx, cancel, job)
	}
	var pr *render.EventPrinter
	if jobID != "" {
		pr = render.NewEventPrinter(f.out, f.p, jobID, repo)
	}
	restarted := false
read:
	for {
		seen := false
		for e, err := range f.c.Events(ctx, f.repo, since) {
			if err != nil {
				var ended *jobEnded
				if errors.As(err, &ended) {
					return f.ended(ended.job)
				}
				return jobID, render.Outcome{}, err
			}
			if m := e.GetMetaEvent(); m != nil {
				md := m.GetMetadata()
				n, _ := strconv.Atoi(md.GetAdditional()["iteration"])
				switch {
				case jobID == "" && int32(n) > after:
					jobID, iter = md.GetRunID(), int32(n)
					pr = render.NewEventPrinter(f.out, f.p, jobID, repo)
				case jobID != "" && md.GetRunID() == jobID:
					iter = int32(n)
				case iter > 0 && int32(n) > iter && !seen && since < 0 && !restarted:
					// The job is older than the stream's replay window:
					// read the repository's events from its first kept.
					since, restarted = 0, true
					continue read
				}
			}
			if pr != nil && iter > 0 && belongs(e, jobID, iter) {
				seen = true
				if f.ndjson != nil {
					if err := writeProto(f.ndjson, e, true); err != nil {
						return jobID, render.Outcome{}, err
					}
				}
				if err := pr.Print(e); err != nil {
					return jobID, render.Outcome{}, err
				}
				if pr.Done() {
					return jobID, pr.Outcome(), nil
				}
			}
			if bound >= 0 && e.GetKgdSequence() >= bound {
				if finished(job.GetStatus()) {
					// Its last event was not among those stored: its
					// record tells the end.
					return f.ended(job)
				}
				fmt.Fprintln(f.out, f.p.Faint(fmt.Sprintf("Job %s of %s is still running (follow it with: kgd events -f -r %s --job %s)",
					jobID, repo, repo, jobID)))
				return jobID, render.Outcome{}, nil
			}
		}
		if err := context.Cause(ctx); err != nil {
			return jobID, render.Outcome{}, err
		}
		return jobID, render.Outcome{}, fmt.Errorf("the event stream of %s ended before job %s did", repo, orUnknown(jobID))
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(not started yet)"
	}
	return s
}

// ended prints the final line of a job from its record.
func (f *follower) ended(job *jobspb.Job) (string, render.Outcome, error) {
	o := outcomeOf(job)
	if job.GetIteration() == 0 && o.Message == "" {
		o.Message = "it never started"
	}
	fmt.Fprintln(f.out, render.FinalLine(f.p, job.GetId(), f.repo.String(), o))
	return job.GetId(), o, nil
}

// logRange returns the lowest and highest sequence numbers of job's
// stored log lines (0 when there are none).
func (f *follower) logRange(ctx context.Context, job *jobspb.Job) (lo, hi int64, err error) {
	for line, err := range f.c.JobLog(ctx, f.repo, job.GetId(), false) {
		if err != nil {
			return 0, 0, err
		}
		if s := line.GetSequence(); s > 0 {
			if lo == 0 || s < lo {
				lo = s
			}
			hi = max(hi, s)
		}
	}
	return lo, hi, nil
}

// poll checks the followed job's record every pollEvery and ends the
// follow (cancel with a *jobEnded cause) when the job ended without
// starting, or ended and its last event did not arrive within two more
// checks.
func (f *follower) poll(ctx context.Context, cancel context.CancelCauseFunc, job *jobspb.Job) {
	t := time.NewTicker(f.pollEvery)
	defer t.Stop()
	endedChecks := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		j, err := f.c.GetJob(ctx, f.repo, job.GetId())
		if err != nil || !finished(j.GetStatus()) {
			continue
		}
		endedChecks++
		if j.GetIteration() == 0 || endedChecks > 2 {
			cancel(&jobEnded{job: j})
			return
		}
	}
}

// belongs reports whether e is an event of iteration iter, job jobID:
// its MetaEvent, or an event of one of its tasks (ids "<Task>-<iter>").
func belongs(e *v2pb.Event, jobID string, iter int32) bool {
	suffix := "-" + strconv.Itoa(int(iter))
	var task string
	switch ev := e.GetEventType().(type) {
	case *v2pb.Event_MetaEvent:
		return ev.MetaEvent.GetMetadata().GetRunID() == jobID
	case *v2pb.Event_TaskEvent:
		task = ev.TaskEvent.GetId()
	case *v2pb.Event_BuildSubtaskEvent:
		task = ev.BuildSubtaskEvent.GetTaskId()
	case *v2pb.Event_RenderEvent:
		task = ev.RenderEvent.GetTaskId()
	case *v2pb.Event_DeploySubtaskEvent:
		task = ev.DeploySubtaskEvent.GetTaskId()
	case *v2pb.Event_StatusCheckSubtaskEvent:
		task = ev.StatusCheckSubtaskEvent.GetTaskId()
	case *v2pb.Event_SkaffoldLogEvent:
		task = ev.SkaffoldLogEvent.GetTaskId()
	default:
		return false
	}
	name, ok := strings.CutSuffix(task, suffix)
	return ok && name != "" && !strings.Contains(name, "-")
}
