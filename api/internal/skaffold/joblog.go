package skaffold

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// jobCheckInterval is how often a followed job log reads its job, to end
// when the job finished without an iteration end of its own (canceled
// while it waited, or superseded before it ran).
const jobCheckInterval = 2 * time.Second

// errJobFinished ends a followed log whose job finished.
var errJobFinished = errors.New("the job finished")

// JobLog implements jobspb.JobsServer: the job's stored log, then, with
// follow, what its runner records next, until its iteration ends. Every
// batch is sent once: stored batches first, then live ones by chunk
// number, and when the job's record says it finished, whatever is stored
// and was not sent yet.
func (s *jobsServer) JobLog(req *jobspb.JobLogRequest, stream grpc.ServerStreamingServer[jobspb.LogLine]) error {
	ctx := stream.Context()
	_, sc, _, err := s.tracked(ctx, req.GetOwner(), req.GetName())
	if err != nil {
		return err
	}
	j, err := s.jobOf(ctx, sc, req.GetJobId())
	if err != nil {
		return err
	}
	done, err := s.svc.admit()
	if err != nil {
		return err
	}
	defer done()
	// The position before the stored batches are read: whatever the feed
	// delivers after it is either among them (sent once, by chunk) or new.
	var after int64
	if req.GetFollow() && !j.Status.Finished() {
		if after, err = s.svc.store.LastSequence(ctx, sc.owner, sc.name); err != nil {
			return grpcError(err, "log of job "+j.ID)
		}
	}
	batches, err := s.svc.store.JobBatches(ctx, j.ID)
	if err != nil {
		return grpcError(err, "log of job "+j.ID)
	}
	if err := grpc.SendHeader(ctx, metadata.Pairs(streamHeader, "open")); err != nil {
		return err
	}
	w := &logWriter{stream: stream, next: 0}
	for _, b := range batches {
		if err := w.batch(b); err != nil || w.ended {
			return err
		}
	}
	if !req.GetFollow() || j.Status.Finished() {
		return nil
	}
	return s.follow(ctx, sc, j.ID, after, w)
}

// follow sends job id's batches as the feed delivers them after sequence
// number after, until its iteration ends or its record says it finished.
func (s *jobsServer) follow(ctx context.Context, sc scope, id string, after int64, w *logWriter) error {
	window := store.From{AfterSeq: after}
	sub, err := s.svc.feed.Subscribe(sc.key(), window, window)
	if err != nil {
		return grpcError(err, "log of job "+id)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(s.svc.stopping, func() { cancel(nil) })
	defer stop()
	go s.watchJob(ctx, cancel, id)
	for {
		b, err := sub.Next(ctx)
		if err != nil {
			switch {
			case errors.Is(context.Cause(ctx), errJobFinished):
				// Everything the job recorded is stored: send the rest.
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer rcancel()
				batches, err := s.svc.store.JobBatches(rctx, id)
				if err != nil {
					return grpcError(err, "log of job "+id)
				}
				for _, b := range batches {
					if err := w.batch(b); err != nil || w.ended {
						return err
					}
				}
				return nil
			case s.svc.stopping.Err() != nil:
				return status.Error(codes.Unavailable, "log: the server is shutting down; ask again")
			}
			return grpcError(err, "log of job "+id)
		}
		if b.Job.ID != id {
			continue
		}
		if err := w.batch(b); err != nil || w.ended {
			return err
		}
	}
}

// watchJob cancels ctx with errJobFinished once job id's record says it
// finished; it returns when ctx ends.
func (s *jobsServer) watchJob(ctx context.Context, cancel context.CancelCauseFunc, id string) {
	t := time.NewTicker(jobCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		j, err := s.svc.store.Job(ctx, id)
		if err == nil && j.Status.Finished() {
			cancel(errJobFinished)
			return
		}
	}
}

// logWriter sends a job's batches as log lines, each batch once, in chunk
// order.
type logWriter struct {
	stream grpc.ServerStreamingServer[jobspb.LogLine]
	next   int  // the next chunk to send
	ended  bool // the iteration's end was sent
}

func (w *logWriter) batch(b store.EventBatch) error {
	if b.Chunk < w.next {
		return nil
	}
	w.next = b.Chunk + 1
	for i, e := range b.V2 {
		var seq int64
		if i < len(b.V2Seq) {
			seq = b.V2Seq[i]
		}
		line := LogLineOf(e)
		if line == nil {
			continue
		}
		line.Sequence = seq
		if err := w.stream.Send(line); err != nil {
			return err
		}
		if line.Last {
			w.ended = true
			return nil
		}
	}
	return nil
}

// phaseOfTaskID maps a v2 task id ("Build-3") to its job phase.
func phaseOfTaskID(id string) string {
	task, _, _ := strings.Cut(id, "-")
	if task == event.TaskDevLoop {
		return "devloop"
	}
	return event.JobPhaseOf(task)
}

// LogLineOf is the log line of one v2 event, or nil for an event that is
// not one (application logs, tests, port forwards).
func LogLineOf(e *v2pb.Event) *jobspb.LogLine {
	l := &jobspb.LogLine{Time: e.GetTimestamp(), Level: "INFO"}
	errText := func(a *v2pb.ActionableErr) string {
		if a.GetMessage() == "" {
			return ""
		}
		return ": " + a.GetMessage()
	}
	switch ev := e.GetEventType().(type) {
	case *v2pb.Event_MetaEvent:
		md := ev.MetaEvent.GetMetadata().GetAdditional()
		l.Phase = "devloop"
		ref := md["branch"]
		if ref == "" {
			ref = md["tag"]
		}
		l.Text = fmt.Sprintf("Job %s of %s: commit %.12s (%s), iteration %s, %s", md["job_id"], md["repository"], md["commit"], ref, md["iteration"], md["trigger"])
	case *v2pb.Event_SkaffoldLogEvent:
		le := ev.SkaffoldLogEvent
		l.Phase, l.Unit, l.Text = phaseOfTaskID(le.GetTaskId()), unitOf(le.GetSubtaskId()), strings.TrimRight(le.GetMessage(), "\n")
		switch le.GetLevel().String() {
		case "WARN":
			l.Level = "WARN"
		case "ERROR", "FATAL", "PANIC":
			l.Level = "ERROR"
		}
	case *v2pb.Event_TaskEvent:
		te := ev.TaskEvent
		l.Phase, l.Status = phaseOfTaskID(te.GetId()), te.GetStatus()
		if te.GetTask() == event.TaskRender {
			return nil // opens and closes with the deploy
		}
		if te.GetTask() == event.TaskDevLoop {
			if te.GetStatus() == event.V2InProgress {
				return nil
			}
			l.Last = true
			l.Text = "Job " + strings.ToLower(te.GetStatus()) + errText(te.GetActionableErr())
		} else {
			l.Text = fmt.Sprintf("%s %s%s", te.GetDescription(), statusWord(te.GetStatus()), errText(te.GetActionableErr()))
		}
		if te.GetStatus() == event.V2Failed {
			l.Level = "ERROR"
		}
	case *v2pb.Event_BuildSubtaskEvent:
		be := ev.BuildSubtaskEvent
		if be.GetStep() != event.StepBuild {
			return nil
		}
		l.Phase, l.Unit, l.Status = event.JobPhaseBuild, be.GetArtifact(), be.GetStatus()
		l.Text = fmt.Sprintf("Build %s %s%s", be.GetArtifact(), statusWord(be.GetStatus()), errText(be.GetActionableErr()))
		if be.GetStatus() == event.V2Failed {
			l.Level = "ERROR"
		}
	case *v2pb.Event_DeploySubtaskEvent:
		de := ev.DeploySubtaskEvent
		l.Phase, l.Status = event.JobPhaseDeploy, de.GetStatus()
		l.Text = "Helm deploy " + statusWord(de.GetStatus()) + errText(de.GetActionableErr())
		if de.GetStatus() == event.V2Failed {
			l.Level = "ERROR"
		}
	case *v2pb.Event_StatusCheckSubtaskEvent:
		se := ev.StatusCheckSubtaskEvent
		l.Phase, l.Unit, l.Status = event.JobPhaseStatusCheck, se.GetResource(), se.GetStatus()
		l.Text = strings.TrimSpace(se.GetResource() + ": " + se.GetMessage() + errText(se.GetActionableErr()))
		if se.GetStatus() == event.V2Failed {
			l.Level = "ERROR"
		}
	default:
		return nil
	}
	return l
}

// unitOf is the unit or artifact a log event's subtask names ("" for
// none: Skaffold's subtask id "-1").
func unitOf(subtask string) string {
	if subtask == "-1" || subtask == "0" {
		return ""
	}
	return subtask
}

func statusWord(s string) string {
	switch s {
	case event.V2InProgress:
		return "in progress"
	case event.V2Succeeded:
		return "succeeded"
	case event.V2Failed:
		return "failed"
	}
	return strings.ToLower(s)
}
