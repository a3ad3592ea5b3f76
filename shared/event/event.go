// Package event builds the Skaffold-schema events kube-git-deploy emits for
// a job and reduces them to Skaffold-schema state, for both API versions.
//
// A tracked repository is one long-running dev loop and each job (one push)
// is one iteration n ≥ 1 of it. Following Skaffold, v1 numbers iterations
// from 0 (DevLoopEvent.iteration = n-1) while v2 numbers them from 1 (task
// ids DevLoop-n, Build-n, Render-n, Deploy-n, StatusCheck-n).
//
// Everything here is pure: constructors take the time from an injected
// clock, and the reducers (ApplyV1, ApplyV2) only change the State given to
// them. Writing and streaming events is the job of other packages.
package event

import (
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
)

// Status strings of the v1 API, as Skaffold emits them.
const (
	NotStarted  = "Not Started"
	InProgress  = "In Progress"
	Complete    = "Complete"
	Failed      = "Failed"
	Information = "Information"
	Started     = "Started"
	Succeeded   = "Succeeded"
	Terminated  = "Terminated"
	Canceled    = "Canceled"
)

// Status strings of the v2 API, as Skaffold emits them. They are plain
// strings in the schema, not enums.
const (
	V2NotStarted = "NotStarted"
	V2InProgress = "InProgress"
	V2Succeeded  = "Succeeded"
	V2Failed     = "Failed"
	V2Canceled   = "Canceled"
	V2Started    = "Started"
	V2Terminated = "Terminated"
)

// Task names of v2 TaskEvents.
const (
	TaskDevLoop     = "DevLoop"
	TaskBuild       = "Build"
	TaskRender      = "Render"
	TaskDeploy      = "Deploy"
	TaskStatusCheck = "StatusCheck"
)

// Build steps of v2 BuildSubtaskEvents.
const (
	StepCache = "Cache"
	StepBuild = "Build"
)

// Keys of the metadata "additional" map (and v1 MetaEvent metadata) that
// carry the job's facts, so clients can tell which push an iteration is.
const (
	KeyRepository = "repository"
	KeyCommit     = "commit"
	KeyBranch     = "branch"
	KeyTag        = "tag"
	KeyRef        = "ref"
	KeyJobID      = "job_id"
	KeyDeliveryID = "delivery_id"
	KeyIteration  = "iteration"
	KeyTrigger    = "trigger"
)

// Job is what the events of one iteration describe.
type Job struct {
	ID         string
	Repository string // "owner/name"
	Commit     string // full SHA
	Ref        string // "refs/heads/main" or "refs/tags/v1"
	Branch     string // empty for tags
	Tag        string // empty for branches
	DeliveryID string // GitHub's X-GitHub-Delivery; empty when triggered by Execute
	Trigger    string // "push" or "execute"
	Iteration  int    // 1 for a repository's first job
}

// Additional returns the job's facts as a metadata map.
func (j Job) Additional() map[string]string {
	m := map[string]string{
		KeyRepository: j.Repository,
		KeyCommit:     j.Commit,
		KeyRef:        j.Ref,
		KeyJobID:      j.ID,
		KeyIteration:  strconv.Itoa(j.Iteration),
	}
	for k, v := range map[string]string{KeyBranch: j.Branch, KeyTag: j.Tag, KeyDeliveryID: j.DeliveryID, KeyTrigger: j.Trigger} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// Plan describes what a job will do, for the metadata of its MetaEvent and
// its initial state.
type Plan struct {
	// Artifacts are the image names built, in order.
	Artifacts []Artifact
	// Releases is the number of Helm releases deployed.
	Releases int
}

// Artifact is one image a job builds.
type Artifact struct {
	Name       string // the image reference without tag, as shown in events
	Context    string // build context directory in the repository
	Dockerfile string
}

// Factory builds the events of one job, stamping each with the clock's time.
type Factory struct {
	job  Job
	plan Plan
	now  func() time.Time
}

// NewFactory returns a Factory for job. now may be nil for time.Now.
func NewFactory(job Job, plan Plan, now func() time.Time) *Factory {
	if now == nil {
		now = time.Now
	}
	return &Factory{job: job, plan: plan, now: now}
}

// Job returns the job the factory builds events for.
func (f *Factory) Job() Job { return f.job }

// Plan returns the plan the factory describes.
func (f *Factory) Plan() Plan { return f.plan }

func (f *Factory) timestamp() *timestamppb.Timestamp { return timestamppb.New(f.now()) }

// TaskID returns the v2 id of a task of this job's iteration, e.g. "Build-3".
func (f *Factory) TaskID(task string) string {
	return task + "-" + strconv.Itoa(f.job.Iteration)
}

// ErrorInfo is the cause of a failure, turned into each version's
// ActionableErr.
type ErrorInfo struct {
	Code        enumspb.StatusCode
	Message     string
	Suggestions []Suggestion
}

// Suggestion is one way to fix an error.
type Suggestion struct {
	Code   enumspb.SuggestionCode
	Action string
}
