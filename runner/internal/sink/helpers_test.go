package sink_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

const image = "registry.example.com/octo/app"

// testLogger logs to the test's output, shown when it fails or with -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// jobBatches returns the four batches of a job of repository
// owner/name, numbered from *seq as the store numbers them (each event's
// v1, then its v2) and advancing *seq. Batches 0, 1 and 3 have envelopes,
// batch 2 (the status check) has none; batch 3 ends the job with the
// DevLoop TaskEvent of status end (event.V2Succeeded, V2Failed...).
func jobBatches(id, owner, name string, seq *int64, end string) []store.EventBatch {
	t := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { t = t.Add(125 * time.Millisecond); return t }
	j := event.Job{ID: id, Repository: owner + "/" + name, Commit: strings.Repeat("0123456789", 4), Ref: "refs/heads/main",
		Branch: "main", Trigger: "push", Iteration: 1}
	f := event.NewFactory(j, event.Plan{Artifacts: []event.Artifact{{Name: image, Context: ".", Dockerfile: "Dockerfile"}}, Releases: 1}, now)
	type pair struct {
		v1 *v1pb.LogEntry
		v2 *v2pb.Event
	}
	v1End := map[string]string{event.V2Succeeded: event.Succeeded, event.V2Failed: event.Failed, event.V2Canceled: event.Canceled}[end]
	phases := [][]pair{{
		{f.V1Meta(), f.V2Meta()},
		{f.V1DevLoop(event.InProgress, nil), f.V2Task(event.TaskDevLoop, event.V2InProgress, nil)},
		{f.V1Build(image, event.InProgress, nil), f.V2Build(image, event.StepBuild, event.V2InProgress, nil)},
		{v2: f.V2Log(event.TaskBuild, image, enumspb.LogLevel_STANDARD, "#1 building "+id+"\n")},
	}, {
		{f.V1Built(image, image+":"+id), f.V2Build(image, event.StepBuild, event.V2Succeeded, nil)},
		{f.V1Deploy(event.InProgress, nil), f.V2Deploy(event.V2InProgress, nil)},
	}, {
		{f.V1StatusCheck(event.Started, nil), f.V2Task(event.TaskStatusCheck, event.V2InProgress, nil)},
		{f.V1ResourceStatus("deployment/app", event.Succeeded, "rolled out", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil),
			f.V2ResourceStatus("deployment/app", event.V2Succeeded, "rolled out", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil)},
	}, {
		{f.V1Deploy(event.Complete, nil), f.V2Task(event.TaskDeploy, event.V2Succeeded, nil)},
		{f.V1DevLoop(v1End, nil), f.V2Task(event.TaskDevLoop, end, nil)},
	}}
	ref := store.JobRef{ID: id, Owner: owner, Name: name, Iteration: 1}
	var out []store.EventBatch
	for chunk, ph := range phases {
		b := store.EventBatch{Job: ref, Chunk: chunk}
		for _, p := range ph {
			if p.v1 != nil {
				b.V1, b.V1Seq = append(b.V1, p.v1), append(b.V1Seq, *seq)
				*seq++
			}
			if p.v2 != nil {
				b.V2, b.V2Seq = append(b.V2, p.v2), append(b.V2Seq, *seq)
				*seq++
			}
		}
		out = append(out, b)
	}
	return out
}

// interleave returns the batches of several jobs taken in turn, as job
// writers running at once hand them over.
func interleave(jobs ...[]store.EventBatch) []store.EventBatch {
	var out []store.EventBatch
	for i := 0; ; i++ {
		n := len(out)
		for _, j := range jobs {
			if i < len(j) {
				out = append(out, j[i])
			}
		}
		if len(out) == n {
			return out
		}
	}
}
