package event

import (
	"fmt"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// SubtaskNone is the subtask id of log lines that belong to no subtask.
const SubtaskNone = "-1"

func v2Err(info *ErrorInfo) *v2pb.ActionableErr {
	if info == nil {
		return nil
	}
	e := &v2pb.ActionableErr{ErrCode: info.Code, Message: info.Message}
	for _, s := range info.Suggestions {
		e.Suggestions = append(e.Suggestions, &v2pb.Suggestion{SuggestionCode: s.Code, Action: s.Action})
	}
	return e
}

// V2Metadata returns the v2 metadata of the job: runID is the job id, one
// Docker artifact per image, a Helm renderer and deployer per release, and
// the job's facts in additional.
func (f *Factory) V2Metadata() *v2pb.Metadata {
	md := &v2pb.Metadata{
		Build:      &v2pb.BuildMetadata{Type: enumspb.BuildType_LOCAL},
		Deploy:     &v2pb.DeployMetadata{Cluster: enumspb.ClusterType_OTHER},
		RunID:      f.job.ID,
		Render:     &v2pb.RenderMetadata{},
		Additional: f.job.Additional(),
	}
	for _, a := range f.plan.Artifacts {
		md.Build.Artifacts = append(md.Build.Artifacts, &v2pb.BuildMetadata_Artifact{
			Type: enumspb.BuilderType_DOCKER, Name: a.Name, Context: a.Context, Dockerfile: a.Dockerfile})
	}
	if n := int32(f.plan.Releases); n > 0 {
		md.Deploy.Deployers = []*v2pb.DeployMetadata_Deployer{{Type: enumspb.DeployerType_HELM, Count: n}}
		md.Render.Renderers = []*v2pb.RenderMetadata_Renderer{{Type: enumspb.RenderType_HELM_CHART, Count: n}}
	}
	return md
}

// V2Meta opens the job's events.
func (f *Factory) V2Meta() *v2pb.Event {
	entry := fmt.Sprintf("Starting kube-git-deploy job %s: %s@%s (%s), iteration %d",
		f.job.ID, f.job.Repository, f.job.Commit, f.job.Ref, f.job.Iteration)
	return &v2pb.Event{Timestamp: f.timestamp(), EventType: &v2pb.Event_MetaEvent{MetaEvent: &v2pb.MetaEvent{Entry: entry, Metadata: f.V2Metadata()}}}
}

var taskDescriptions = map[string]string{
	TaskDevLoop:     "Update initiated",
	TaskBuild:       "Build containers",
	TaskRender:      "Render manifests",
	TaskDeploy:      "Deploy to cluster",
	TaskStatusCheck: "Verify deployments",
}

// V2Task reports a task of the iteration (TaskDevLoop, TaskBuild, ...):
// V2InProgress, V2Succeeded or V2Failed.
func (f *Factory) V2Task(task, status string, info *ErrorInfo) *v2pb.Event {
	desc := taskDescriptions[task]
	if task == TaskDevLoop && status != V2InProgress {
		desc = "Update " + map[string]string{V2Succeeded: "succeeded", V2Failed: "failed", V2Canceled: "canceled"}[status]
	}
	return &v2pb.Event{Timestamp: f.timestamp(), EventType: &v2pb.Event_TaskEvent{TaskEvent: &v2pb.TaskEvent{
		Id: f.TaskID(task), Task: task, Description: desc, Iteration: int32(f.job.Iteration), Status: status, ActionableErr: v2Err(info)}}}
}

// V2Build reports one step (StepBuild) of one artifact's build.
func (f *Factory) V2Build(artifact, step, status string, info *ErrorInfo) *v2pb.Event {
	return &v2pb.Event{Timestamp: f.timestamp(), EventType: &v2pb.Event_BuildSubtaskEvent{BuildSubtaskEvent: &v2pb.BuildSubtaskEvent{
		Id: artifact, TaskId: f.TaskID(TaskBuild), Artifact: artifact, Step: step, Status: status, ActionableErr: v2Err(info),
		HostPlatform: "linux/amd64", TargetPlatforms: "linux/amd64"}}}
}

// V2Render reports the render subtask (id "0") of the Render task.
func (f *Factory) V2Render(status string, info *ErrorInfo) *v2pb.Event {
	return &v2pb.Event{Timestamp: f.timestamp(), EventType: &v2pb.Event_RenderEvent{RenderEvent: &v2pb.RenderSubtaskEvent{
		Id: "0", TaskId: f.TaskID(TaskRender), Status: status, ActionableErr: v2Err(info)}}}
}

// V2Deploy reports the deploy subtask (id "0") of the Deploy task.
func (f *Factory) V2Deploy(status string, info *ErrorInfo) *v2pb.Event {
	return &v2pb.Event{Timestamp: f.timestamp(), EventType: &v2pb.Event_DeploySubtaskEvent{DeploySubtaskEvent: &v2pb.DeploySubtaskEvent{
		Id: "0", TaskId: f.TaskID(TaskDeploy), Status: status, ActionableErr: v2Err(info)}}}
}

// V2ResourceStatus reports the rollout of one resource; as in Skaffold the
// subtask belongs to the Deploy task.
func (f *Factory) V2ResourceStatus(resource, status, message string, code enumspb.StatusCode, info *ErrorInfo) *v2pb.Event {
	return &v2pb.Event{Timestamp: f.timestamp(), EventType: &v2pb.Event_StatusCheckSubtaskEvent{StatusCheckSubtaskEvent: &v2pb.StatusCheckSubtaskEvent{
		Id: resource, TaskId: f.TaskID(TaskDeploy), Resource: resource, Status: status, Message: message, StatusCode: code, ActionableErr: v2Err(info)}}}
}

// V2Log is one line of output of a task (TaskBuild, TaskDeploy, ...);
// subtask is the artifact for build output, SubtaskNone otherwise.
func (f *Factory) V2Log(task, subtask string, level enumspb.LogLevel, message string) *v2pb.Event {
	return &v2pb.Event{Timestamp: f.timestamp(), EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{
		TaskId: f.TaskID(task), SubtaskId: subtask, Level: level, Message: message}}}
}
