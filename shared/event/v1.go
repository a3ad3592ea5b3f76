package event

import (
	"fmt"
	"strings"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
)

func (f *Factory) v1(entry string, e *v1pb.Event) *v1pb.LogEntry {
	return &v1pb.LogEntry{Timestamp: f.timestamp(), Event: e, Entry: entry}
}

func v1Err(info *ErrorInfo) *v1pb.ActionableErr {
	if info == nil {
		return nil
	}
	e := &v1pb.ActionableErr{ErrCode: info.Code, Message: info.Message}
	for _, s := range info.Suggestions {
		e.Suggestions = append(e.Suggestions, &v1pb.Suggestion{SuggestionCode: s.Code, Action: s.Action})
	}
	return e
}

// V1Metadata returns the v1 metadata of the job: one Docker builder per
// artifact, local builds, one Helm deployer per release, and the job's facts
// in additional.
func (f *Factory) V1Metadata() *v1pb.Metadata {
	md := &v1pb.Metadata{
		Build: &v1pb.BuildMetadata{
			NumberOfArtifacts: int32(len(f.plan.Artifacts)),
			Type:              enumspb.BuildType_LOCAL,
		},
		Deploy:     &v1pb.DeployMetadata{Cluster: enumspb.ClusterType_OTHER},
		Additional: f.job.Additional(),
	}
	if n := len(f.plan.Artifacts); n > 0 {
		md.Build.Builders = []*v1pb.BuildMetadata_ImageBuilder{{Type: enumspb.BuilderType_DOCKER, Count: int32(n)}}
	}
	if f.plan.Releases > 0 {
		md.Deploy.Deployers = []*v1pb.DeployMetadata_Deployer{{Type: enumspb.DeployerType_HELM, Count: int32(f.plan.Releases)}}
	}
	return md
}

// V1Meta opens the job's events.
func (f *Factory) V1Meta() *v1pb.LogEntry {
	entry := fmt.Sprintf("Starting kube-git-deploy job %s: %s@%s (%s), iteration %d",
		f.job.ID, f.job.Repository, f.job.Commit, f.job.Ref, f.job.Iteration)
	return f.v1(entry, &v1pb.Event{EventType: &v1pb.Event_MetaEvent{MetaEvent: &v1pb.MetaEvent{Entry: entry, Metadata: f.V1Metadata()}}})
}

// V1DevLoop reports the iteration's status: InProgress, Succeeded or Failed.
func (f *Factory) V1DevLoop(status string, info *ErrorInfo) *v1pb.LogEntry {
	var entry string
	switch status {
	case InProgress:
		entry = "Update initiated"
	case Succeeded:
		entry = "Update succeeded"
	case Canceled:
		entry = "Update canceled"
	case Failed:
		code := enumspb.StatusCode_UNKNOWN_ERROR
		if info != nil {
			code = info.Code
		}
		entry = "Update failed with error code " + code.String()
	}
	return f.v1(entry, &v1pb.Event{EventType: &v1pb.Event_DevLoopEvent{DevLoopEvent: &v1pb.DevLoopEvent{
		Iteration: int32(f.job.Iteration - 1), Status: status, Err: v1Err(info)}}})
}

// V1Build reports the build of one artifact: InProgress, Complete, Failed
// or Canceled.
func (f *Factory) V1Build(artifact, status string, info *ErrorInfo) *v1pb.LogEntry {
	e := &v1pb.BuildEvent{Artifact: artifact, Status: status, HostPlatform: "linux/amd64", TargetPlatforms: "linux/amd64"}
	var entry string
	switch status {
	case InProgress:
		entry = "Build started for artifact " + artifact
	case Complete:
		entry = "Build completed for artifact " + artifact
	case Failed:
		entry = "Build failed for artifact " + artifact
	case Canceled:
		entry = "Build canceled for artifact " + artifact
	}
	if info != nil {
		e.Err, e.ErrCode, e.ActionableErr = info.Message, info.Code, v1Err(info)
	}
	return f.v1(entry, &v1pb.Event{EventType: &v1pb.Event_BuildEvent{BuildEvent: e}})
}

// V1Built reports the build of artifact Complete, pushed as ref
// ("tag@digest", or the tag of an image that is not pushed): the entry
// names the reference, which BuiltRef reads back.
func (f *Factory) V1Built(artifact, ref string) *v1pb.LogEntry {
	e := f.V1Build(artifact, Complete, nil)
	e.Entry += " (" + ref + ")"
	return e
}

// BuiltRef returns the reference a V1Built entry names, or "" for any
// other entry.
func BuiltRef(e *v1pb.LogEntry) string {
	b := e.GetEvent().GetBuildEvent()
	if b == nil || b.GetStatus() != Complete {
		return ""
	}
	prefix := "Build completed for artifact " + b.GetArtifact() + " ("
	entry := e.GetEntry()
	if !strings.HasPrefix(entry, prefix) || !strings.HasSuffix(entry, ")") {
		return ""
	}
	return entry[len(prefix) : len(entry)-1]
}

// V1Deploy reports the deploy phase: InProgress, Complete or Failed.
func (f *Factory) V1Deploy(status string, info *ErrorInfo) *v1pb.LogEntry {
	e := &v1pb.DeployEvent{Status: status}
	var entry string
	switch status {
	case InProgress:
		entry = "Deploy started"
	case Complete:
		entry = "Deploy completed"
	case Failed:
		entry = "Deploy failed"
	}
	if info != nil {
		e.Err, e.ErrCode, e.ActionableErr = info.Message, info.Code, v1Err(info)
	}
	return f.v1(entry, &v1pb.Event{EventType: &v1pb.Event_DeployEvent{DeployEvent: e}})
}

// V1StatusCheck reports the rollout check as a whole: Started, Succeeded or
// Failed.
func (f *Factory) V1StatusCheck(status string, info *ErrorInfo) *v1pb.LogEntry {
	e := &v1pb.StatusCheckEvent{Status: status}
	var entry string
	switch status {
	case Started:
		entry = "Status check started"
	case InProgress:
		entry = "Status check in progress"
	case Succeeded:
		entry, e.Message = "Status check succeeded", "Succeeded"
	case Failed:
		entry = "Status check failed"
	}
	if info != nil {
		e.Err, e.ErrCode, e.ActionableErr, e.Message = info.Message, info.Code, v1Err(info), info.Message
	}
	return f.v1(entry, &v1pb.Event{EventType: &v1pb.Event_StatusCheckEvent{StatusCheckEvent: e}})
}

// V1ResourceStatus reports the rollout of one resource ("deployment/web"):
// InProgress with a progress code such as STATUSCHECK_DEPLOYMENT_ROLLOUT_PENDING,
// Succeeded (STATUSCHECK_SUCCESS) or Failed with info.
func (f *Factory) V1ResourceStatus(resource, status, message string, code enumspb.StatusCode, info *ErrorInfo) *v1pb.LogEntry {
	e := &v1pb.ResourceStatusCheckEvent{Resource: resource, Status: status, Message: message, StatusCode: code}
	var entry string
	switch status {
	case InProgress:
		entry = fmt.Sprintf("Resource %s status updated to In Progress", resource)
	case Succeeded:
		entry = fmt.Sprintf("Resource %s status completed successfully", resource)
	case Failed:
		entry = fmt.Sprintf("Resource %s status failed with %s", resource, message)
	}
	if info != nil {
		e.Err, e.ActionableErr = info.Message, v1Err(info)
		if info.Message != "" {
			entry = fmt.Sprintf("Resource %s status failed with %s", resource, info.Message)
		}
	}
	return f.v1(entry, &v1pb.Event{EventType: &v1pb.Event_ResourceStatusCheckEvent{ResourceStatusCheckEvent: e}})
}
