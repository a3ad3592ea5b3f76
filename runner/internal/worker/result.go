package worker

import (
	"context"
	"log/slog"
	"time"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/pipeline"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// phaseSink passes a job's events on to its sink and follows its phases
// (build, deploy, status check) on the way, for the job's record.
type phaseSink struct {
	pipeline.Sink
	phases event.JobPhases
}

// Emit implements pipeline.Sink. The pipeline emits from one goroutine.
func (p *phaseSink) Emit(v1 *v1pb.LogEntry, v2 *v2pb.Event) error {
	if v2 != nil {
		p.phases.Observe(v2)
	}
	return p.Sink.Emit(v1, v2)
}

// recordResult records what job j built or deployed and its phases on the
// job, for the job history (rollbacks deploy the recorded images again).
// Not recording them only makes the history poorer: it is logged.
func (w *Worker) recordResult(ctx context.Context, j *store.Job, out pipeline.Outcome, ps *phaseSink, log *slog.Logger) {
	phases := store.PhasesOf(ps.phases.List())
	images := out.Images
	if out.Err != nil || out.DeployPending {
		images = nil // a pending deploy's images are recorded already; a failed job's are not a rollback target
	}
	if len(images) == 0 && len(phases) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := w.store.RecordJobResult(rctx, j.ID, w.cfg.Owner, images, phases); err != nil {
		log.WarnContext(ctx, "could not record the job's images and phases", logging.KeyErr, err.Error())
	}
}
