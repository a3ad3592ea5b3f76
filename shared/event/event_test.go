package event

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

var (
	t0      = time.Date(2026, 11, 22, 3, 4, 5, 0, time.UTC)
	testJob = Job{
		ID: "job-1", Repository: "octo/app", Commit: "0123456789abcdef0123456789abcdef01234567",
		Ref: "refs/heads/main", Branch: "main", DeliveryID: "d-1", Trigger: "push", Iteration: 3,
	}
	testPlan = Plan{Artifacts: []Artifact{{Name: "registry.local/app", Context: "app", Dockerfile: "Dockerfile"}}, Releases: 1}
)

func newTestFactory() *Factory {
	return NewFactory(testJob, testPlan, func() time.Time { return t0 })
}

var buildErr = &ErrorInfo{
	Code:        enumspb.StatusCode_BUILD_USER_ERROR,
	Message:     "RUN go build: exit code 1",
	Suggestions: []Suggestion{{Code: enumspb.SuggestionCode_FIX_USER_BUILD_ERR, Action: "Fix the Dockerfile"}},
}

// v1Success is reference §4.6b's observed Helm success sequence.
func v1Success(f *Factory) []*v1pb.LogEntry {
	const img, res = "registry.local/app", "deployment/app"
	return []*v1pb.LogEntry{
		f.V1Meta(),
		f.V1DevLoop(InProgress, nil),
		f.V1Build(img, InProgress, nil),
		f.V1Build(img, Complete, nil),
		f.V1Deploy(InProgress, nil),
		f.V1StatusCheck(Started, nil),
		f.V1ResourceStatus(res, InProgress, "waiting for rollout", enumspb.StatusCode_STATUSCHECK_DEPLOYMENT_ROLLOUT_PENDING, nil),
		f.V1ResourceStatus(res, Succeeded, "Succeeded", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil),
		f.V1StatusCheck(Succeeded, nil),
		f.V1Deploy(Complete, nil),
		f.V1DevLoop(Succeeded, nil),
	}
}

// v2Success is reference §4.6's v2 success sequence for one artifact.
func v2Success(f *Factory) []*v2pb.Event {
	const img, res = "registry.local/app", "deployment/app"
	return []*v2pb.Event{
		f.V2Meta(),
		f.V2Task(TaskDevLoop, V2InProgress, nil),
		f.V2Task(TaskBuild, V2InProgress, nil),
		f.V2Build(img, StepBuild, V2InProgress, nil),
		f.V2Log(TaskBuild, img, enumspb.LogLevel_STANDARD, "Step 1/2 : FROM scratch"),
		f.V2Build(img, StepBuild, V2Succeeded, nil),
		f.V2Task(TaskBuild, V2Succeeded, nil),
		f.V2Task(TaskRender, V2InProgress, nil),
		f.V2Render(V2InProgress, nil),
		f.V2Render(V2Succeeded, nil),
		f.V2Task(TaskRender, V2Succeeded, nil),
		f.V2Task(TaskDeploy, V2InProgress, nil),
		f.V2Deploy(V2InProgress, nil),
		f.V2Deploy(V2Succeeded, nil),
		f.V2Task(TaskStatusCheck, V2InProgress, nil),
		f.V2ResourceStatus(res, V2InProgress, "waiting for rollout", enumspb.StatusCode_STATUSCHECK_DEPLOYMENT_ROLLOUT_PENDING, nil),
		f.V2ResourceStatus(res, V2Succeeded, "Succeeded", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil),
		f.V2Task(TaskStatusCheck, V2Succeeded, nil),
		f.V2Task(TaskDeploy, V2Succeeded, nil),
		f.V2Task(TaskDevLoop, V2Succeeded, nil),
	}
}

func TestReduceV1(t *testing.T) {
	f := newTestFactory()
	const img = "registry.local/app"
	tests := []struct {
		name   string
		events []*v1pb.LogEntry
		want   func(s *v1pb.State)
	}{
		{
			name:   "success",
			events: v1Success(f),
			want: func(s *v1pb.State) {
				s.BuildState.Artifacts[img] = Complete
				s.DeployState.Status = Complete
				s.DeployState.StatusCode = enumspb.StatusCode_DEPLOY_SUCCESS
				s.StatusCheckState.Status = Succeeded
				s.StatusCheckState.StatusCode = enumspb.StatusCode_STATUSCHECK_SUCCESS
				s.StatusCheckState.Resources["deployment/app"] = Succeeded
			},
		},
		{
			name: "failed-build",
			events: []*v1pb.LogEntry{
				f.V1Meta(),
				f.V1DevLoop(InProgress, nil),
				f.V1Build(img, InProgress, nil),
				f.V1Build(img, Failed, buildErr),
				f.V1DevLoop(Failed, buildErr),
			},
			want: func(s *v1pb.State) {
				s.BuildState.Artifacts[img] = Failed
				s.BuildState.StatusCode = enumspb.StatusCode_BUILD_USER_ERROR
			},
		},
		{
			name: "failed-helm",
			events: []*v1pb.LogEntry{
				f.V1Meta(), f.V1DevLoop(InProgress, nil),
				f.V1Build(img, InProgress, nil), f.V1Build(img, Complete, nil),
				f.V1Deploy(InProgress, nil),
				f.V1Deploy(Failed, &ErrorInfo{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Message: "chart invalid"}),
				f.V1DevLoop(Failed, &ErrorInfo{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR}),
			},
			want: func(s *v1pb.State) {
				s.BuildState.Artifacts[img] = Complete
				s.DeployState.Status = Failed
				s.DeployState.StatusCode = enumspb.StatusCode_DEPLOY_HELM_USER_ERR
			},
		},
		{
			name: "status-check-deadline",
			events: []*v1pb.LogEntry{
				f.V1StatusCheck(Started, nil),
				f.V1ResourceStatus("deployment/app", InProgress, "rollout pending", enumspb.StatusCode_STATUSCHECK_DEPLOYMENT_ROLLOUT_PENDING, nil),
				// A failure without a code still must not read as OK.
				f.V1StatusCheck(Failed, &ErrorInfo{Message: "deadline"}),
			},
			want: func(s *v1pb.State) {
				s.StatusCheckState.Status = Failed
				s.StatusCheckState.StatusCode = enumspb.StatusCode_UNKNOWN_ERROR
				s.StatusCheckState.Resources["deployment/app"] = InProgress
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.NewV1State(Triggers{Build: true, Deploy: true, Sync: true})
			for _, e := range tt.events {
				ApplyV1(got, e)
			}
			want := f.NewV1State(Triggers{Build: true, Deploy: true, Sync: true})
			tt.want(want)
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("state after %d events (-want +got):\n%s", len(tt.events), diff)
			}
		})
	}
}

func TestNewV1StateFields(t *testing.T) {
	got := newTestFactory().NewV1State(Triggers{Build: true, Deploy: false, Sync: true})
	want := &v1pb.State{
		BuildState:       &v1pb.BuildState{Artifacts: map[string]string{"registry.local/app": "Not Started"}, AutoTrigger: true},
		DeployState:      &v1pb.DeployState{Status: "Not Started"},
		ForwardedPorts:   map[int32]*v1pb.PortEvent{},
		StatusCheckState: &v1pb.StatusCheckState{Status: "Not Started", Resources: map[string]string{}},
		FileSyncState:    &v1pb.FileSyncState{Status: "Not Started", AutoTrigger: true},
		TestState:        &v1pb.TestState{Status: "Not Started"},
		Metadata: &v1pb.Metadata{
			Build: &v1pb.BuildMetadata{NumberOfArtifacts: 1, Type: enumspb.BuildType_LOCAL,
				Builders: []*v1pb.BuildMetadata_ImageBuilder{{Type: enumspb.BuilderType_DOCKER, Count: 1}}},
			Deploy: &v1pb.DeployMetadata{Cluster: enumspb.ClusterType_OTHER,
				Deployers: []*v1pb.DeployMetadata_Deployer{{Type: enumspb.DeployerType_HELM, Count: 1}}},
			Additional: map[string]string{
				"repository": "octo/app", "commit": testJob.Commit, "ref": "refs/heads/main", "branch": "main",
				"job_id": "job-1", "delivery_id": "d-1", "trigger": "push", "iteration": "3",
			},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("NewV1State (-want +got):\n%s", diff)
	}
}

func TestReduceV2(t *testing.T) {
	f := newTestFactory()
	const img = "registry.local/app"
	tests := []struct {
		name   string
		events []*v2pb.Event
		want   func(s *v2pb.State)
	}{
		{
			name:   "success",
			events: v2Success(f),
			want: func(s *v2pb.State) {
				s.BuildState.Artifacts[img] = V2Succeeded
				s.RenderState.Status = V2Succeeded
				s.DeployState.Status = V2Succeeded
				// As in Skaffold, v2 status checks only set per-resource status.
				s.StatusCheckState.Resources["deployment/app"] = V2Succeeded
			},
		},
		{
			name: "failed-build",
			events: []*v2pb.Event{
				f.V2Meta(),
				f.V2Task(TaskDevLoop, V2InProgress, nil),
				f.V2Task(TaskBuild, V2InProgress, nil),
				f.V2Build(img, StepBuild, V2InProgress, nil),
				f.V2Log(TaskBuild, img, enumspb.LogLevel_ERROR, buildErr.Message),
				f.V2Build(img, StepBuild, V2Failed, buildErr),
				f.V2Task(TaskBuild, V2Failed, buildErr),
				f.V2Task(TaskDevLoop, V2Failed, buildErr),
			},
			want: func(s *v2pb.State) {
				s.BuildState.Artifacts[img] = V2Failed
			},
		},
		{
			name: "cache-step-ignored",
			events: []*v2pb.Event{
				f.V2Build(img, StepCache, V2Failed, nil),
			},
			want: func(s *v2pb.State) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := f.NewV2State(Triggers{Build: true, Deploy: true})
			for _, e := range tt.events {
				ApplyV2(got, e)
			}
			want := f.NewV2State(Triggers{Build: true, Deploy: true})
			tt.want(want)
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("state after %d events (-want +got):\n%s", len(tt.events), diff)
			}
		})
	}
}

func TestEventShapes(t *testing.T) {
	f := newTestFactory()
	ts := timestamppb.New(t0)
	t.Run("v1-devloop-counts-from-zero", func(t *testing.T) {
		got := f.V1DevLoop(Failed, buildErr)
		want := &v1pb.LogEntry{
			Timestamp: ts,
			Entry:     "Update failed with error code BUILD_USER_ERROR",
			Event: &v1pb.Event{EventType: &v1pb.Event_DevLoopEvent{DevLoopEvent: &v1pb.DevLoopEvent{
				Iteration: 2, Status: "Failed",
				Err: &v1pb.ActionableErr{ErrCode: enumspb.StatusCode_BUILD_USER_ERROR, Message: buildErr.Message,
					Suggestions: []*v1pb.Suggestion{{SuggestionCode: enumspb.SuggestionCode_FIX_USER_BUILD_ERR, Action: "Fix the Dockerfile"}}},
			}}},
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("V1DevLoop (-want +got):\n%s", diff)
		}
	})
	t.Run("v1-build-failed", func(t *testing.T) {
		got := f.V1Build("img", Failed, buildErr).GetEvent().GetBuildEvent()
		if got.GetErr() != buildErr.Message || got.GetErrCode() != enumspb.StatusCode_BUILD_USER_ERROR || got.GetActionableErr().GetErrCode() != enumspb.StatusCode_BUILD_USER_ERROR {
			t.Errorf("V1Build failed = %v, want err, errCode and actionableErr set", got)
		}
	})
	t.Run("v1-meta-carries-job", func(t *testing.T) {
		add := f.V1Meta().GetEvent().GetMetaEvent().GetMetadata().GetAdditional()
		for k, v := range map[string]string{KeyRepository: "octo/app", KeyCommit: testJob.Commit, KeyBranch: "main", KeyJobID: "job-1"} {
			if add[k] != v {
				t.Errorf("meta additional[%q] = %q, want %q", k, add[k], v)
			}
		}
	})
	t.Run("v2-ids", func(t *testing.T) {
		tests := []struct {
			e      *v2pb.Event
			wantID string
			task   string
		}{
			{f.V2Task(TaskDevLoop, V2InProgress, nil), "DevLoop-3", ""},
			{f.V2Task(TaskStatusCheck, V2InProgress, nil), "StatusCheck-3", ""},
			{f.V2Build("img", StepBuild, V2InProgress, nil), "img", "Build-3"},
			{f.V2Render(V2InProgress, nil), "0", "Render-3"},
			{f.V2Deploy(V2InProgress, nil), "0", "Deploy-3"},
			{f.V2ResourceStatus("deployment/x", V2InProgress, "", 0, nil), "deployment/x", "Deploy-3"},
		}
		for _, tt := range tests {
			var id, task string
			switch ev := tt.e.GetEventType().(type) {
			case *v2pb.Event_TaskEvent:
				id = ev.TaskEvent.GetId()
				if ev.TaskEvent.GetIteration() != 3 {
					t.Errorf("task %s iteration = %d, want 3", id, ev.TaskEvent.GetIteration())
				}
			case *v2pb.Event_BuildSubtaskEvent:
				id, task = ev.BuildSubtaskEvent.GetId(), ev.BuildSubtaskEvent.GetTaskId()
			case *v2pb.Event_RenderEvent:
				id, task = ev.RenderEvent.GetId(), ev.RenderEvent.GetTaskId()
			case *v2pb.Event_DeploySubtaskEvent:
				id, task = ev.DeploySubtaskEvent.GetId(), ev.DeploySubtaskEvent.GetTaskId()
			case *v2pb.Event_StatusCheckSubtaskEvent:
				id, task = ev.StatusCheckSubtaskEvent.GetId(), ev.StatusCheckSubtaskEvent.GetTaskId()
			}
			if id != tt.wantID || task != tt.task {
				t.Errorf("event %v: id, task_id = %q, %q; want %q, %q", tt.e, id, task, tt.wantID, tt.task)
			}
		}
	})
	t.Run("v2-meta-runid", func(t *testing.T) {
		md := f.V2Meta().GetMetaEvent().GetMetadata()
		if md.GetRunID() != "job-1" || md.GetAdditional()[KeyCommit] != testJob.Commit {
			t.Errorf("v2 meta metadata = %v, want runID job-1 and commit", md)
		}
	})
}

func TestAutoTrigger(t *testing.T) {
	f := newTestFactory()
	s1, s2 := f.NewV1State(Triggers{Build: true, Deploy: true}), f.NewV2State(Triggers{Build: true, Deploy: true})
	for _, e := range v1Success(f) {
		ApplyV1(s1, e)
	}
	for _, e := range v2Success(f) {
		ApplyV2(s2, e)
	}
	SetAutoTrigger(s1, s2, PhaseDeploy, false)
	if s1.DeployState.AutoTrigger || s2.DeployState.AutoTrigger || s1.DeployState.Status != Complete {
		t.Fatalf("disable deploy: v1 %v v2 %v; want autoTrigger false and status kept", s1.DeployState, s2.DeployState)
	}
	SetAutoTrigger(s1, s2, PhaseDeploy, true)
	if !s1.DeployState.AutoTrigger || s1.DeployState.Status != NotStarted || s1.DeployState.StatusCode != enumspb.StatusCode_OK ||
		len(s1.StatusCheckState.Resources) != 0 || s2.DeployState.Status != V2NotStarted {
		t.Errorf("enable deploy: v1 %v %v v2 %v; want reset deploy state", s1.DeployState, s1.StatusCheckState, s2.DeployState)
	}
	SetAutoTrigger(s1, s2, PhaseBuild, true)
	if s1.BuildState.Artifacts["registry.local/app"] != NotStarted || s2.BuildState.Artifacts["registry.local/app"] != V2NotStarted {
		t.Errorf("enable build: artifacts v1 %v v2 %v; want reset", s1.BuildState.Artifacts, s2.BuildState.Artifacts)
	}
	SetAutoTrigger(s1, s2, PhaseSync, false)
	if s1.FileSyncState.AutoTrigger || s2.FileSyncState.AutoTrigger {
		t.Errorf("disable sync: autoTrigger still on")
	}
}

func TestApplyPartialState(t *testing.T) {
	f := newTestFactory()
	// Reducers must tolerate an empty state (e.g. GetState before a job ran).
	s1, s2 := &v1pb.State{}, &v2pb.State{}
	for _, e := range v1Success(f) {
		ApplyV1(s1, e)
	}
	for _, e := range v2Success(f) {
		ApplyV2(s2, e)
	}
	if s1.DeployState.GetStatus() != Complete || s2.DeployState.GetStatus() != V2Succeeded {
		t.Errorf("deploy status v1 %q v2 %q, want Complete and Succeeded", s1.DeployState.GetStatus(), s2.DeployState.GetStatus())
	}
}
