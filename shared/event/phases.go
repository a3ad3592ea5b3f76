package event

import (
	"time"

	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// Phase names of a job, as the job API and its clients show them.
const (
	JobPhaseBuild       = "build"
	JobPhaseDeploy      = "deploy"
	JobPhaseStatusCheck = "status-check"
)

// phaseOfTask maps the v2 tasks that make a job's phases to the phases;
// DevLoop spans the job and Render opens and closes with Deploy.
var phaseOfTask = map[string]string{TaskBuild: JobPhaseBuild, TaskDeploy: JobPhaseDeploy, TaskStatusCheck: JobPhaseStatusCheck}

// JobPhaseOf returns the phase of a v2 task ("Build" → "build"), or "".
func JobPhaseOf(task string) string { return phaseOfTask[task] }

// JobPhase is one phase of a job: its last status (V2InProgress, V2Succeeded,
// V2Failed) and when it started and ended (zero while it runs).
type JobPhase struct {
	Name       string
	Status     string
	StartedAt  time.Time
	FinishedAt time.Time
}

// JobPhases follows a job's v2 events and records its phases in the order
// they started. The zero value is ready to use; it is not safe for
// concurrent use.
type JobPhases struct {
	list []JobPhase
}

// Observe takes one v2 event into account; events other than the tasks of
// a phase change nothing.
func (p *JobPhases) Observe(e *v2pb.Event) {
	te := e.GetTaskEvent()
	if te == nil {
		return
	}
	name := phaseOfTask[te.GetTask()]
	if name == "" {
		return
	}
	at := e.GetTimestamp().AsTime()
	i := len(p.list) - 1
	for ; i >= 0 && p.list[i].Name != name; i-- {
	}
	if i < 0 || te.GetStatus() == V2InProgress && !p.list[i].FinishedAt.IsZero() {
		p.list = append(p.list, JobPhase{Name: name, StartedAt: at})
		i = len(p.list) - 1
	}
	p.list[i].Status = te.GetStatus()
	if te.GetStatus() != V2InProgress {
		p.list[i].FinishedAt = at
	}
}

// List returns the phases so far, oldest first.
func (p *JobPhases) List() []JobPhase { return append([]JobPhase(nil), p.list...) }
