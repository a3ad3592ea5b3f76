package event

import (
	"slices"

	"google.golang.org/protobuf/proto"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// Triggers are a repository's auto-trigger switches (the Skaffold control
// API's AutoBuild, AutoSync and AutoDeploy).
type Triggers struct {
	Build, Sync, Deploy bool
}

// NewV1State returns the v1 state of a job before any event: every artifact
// and phase "Not Started", every status code OK, autoTrigger from triggers
// and metadata from the factory.
func (f *Factory) NewV1State(t Triggers) *v1pb.State {
	s := &v1pb.State{
		BuildState:       &v1pb.BuildState{Artifacts: map[string]string{}, AutoTrigger: t.Build},
		DeployState:      &v1pb.DeployState{Status: NotStarted, AutoTrigger: t.Deploy},
		ForwardedPorts:   map[int32]*v1pb.PortEvent{},
		StatusCheckState: &v1pb.StatusCheckState{Status: NotStarted, Resources: map[string]string{}},
		FileSyncState:    &v1pb.FileSyncState{Status: NotStarted, AutoTrigger: t.Sync},
		Metadata:         f.V1Metadata(),
		TestState:        &v1pb.TestState{Status: NotStarted},
	}
	for _, a := range f.plan.Artifacts {
		s.BuildState.Artifacts[a.Name] = NotStarted
	}
	return s
}

// NewV2State is NewV1State for the v2 API ("NotStarted", plus render,
// verify and exec states).
func (f *Factory) NewV2State(t Triggers) *v2pb.State {
	s := &v2pb.State{
		BuildState:       &v2pb.BuildState{Artifacts: map[string]string{}, AutoTrigger: t.Build},
		DeployState:      &v2pb.DeployState{Status: V2NotStarted, AutoTrigger: t.Deploy},
		ForwardedPorts:   map[int32]*v2pb.PortForwardEvent{},
		StatusCheckState: &v2pb.StatusCheckState{Status: V2NotStarted, Resources: map[string]string{}},
		FileSyncState:    &v2pb.FileSyncState{Status: V2NotStarted, AutoTrigger: t.Sync},
		Metadata:         f.V2Metadata(),
		TestState:        &v2pb.TestState{Status: V2NotStarted},
		RenderState:      &v2pb.RenderState{Status: V2NotStarted},
		VerifyState:      &v2pb.VerifyState{Status: V2NotStarted},
		ExecState:        &v2pb.ExecState{Status: V2NotStarted},
	}
	for _, a := range f.plan.Artifacts {
		s.BuildState.Artifacts[a.Name] = V2NotStarted
	}
	return s
}

// ApplyV1 updates s with one v1 event, following Skaffold's rules: build,
// test, deploy, status-check, file-sync, port and debugging-container events
// set their part of the state; deploy and status-check success set
// DEPLOY_SUCCESS and STATUSCHECK_SUCCESS; failures set their error code;
// meta, dev-loop and termination events change nothing. Missing parts of s
// are created as needed, so ApplyV1 never panics on a partial state.
func ApplyV1(s *v1pb.State, e *v1pb.LogEntry) {
	switch ev := e.GetEvent().GetEventType().(type) {
	case *v1pb.Event_BuildEvent:
		b := ev.BuildEvent
		bs := ensure(&s.BuildState)
		if bs.Artifacts == nil {
			bs.Artifacts = map[string]string{}
		}
		bs.Artifacts[b.GetArtifact()] = b.GetStatus()
		if b.GetStatus() == Failed {
			bs.StatusCode = v1Code(b.GetErrCode(), b.GetActionableErr())
		}
	case *v1pb.Event_TestEvent:
		ts := ensure(&s.TestState)
		ts.Status = ev.TestEvent.GetStatus()
		if ts.Status == Failed {
			ts.StatusCode = v1Code(0, ev.TestEvent.GetActionableErr())
		}
	case *v1pb.Event_DeployEvent:
		d := ev.DeployEvent
		ds := ensure(&s.DeployState)
		ds.Status = d.GetStatus()
		switch d.GetStatus() {
		case Complete:
			ds.StatusCode = enumspb.StatusCode_DEPLOY_SUCCESS
		case Failed:
			ds.StatusCode = v1Code(d.GetErrCode(), d.GetActionableErr())
		}
	case *v1pb.Event_StatusCheckEvent:
		c := ev.StatusCheckEvent
		sc := ensure(&s.StatusCheckState)
		sc.Status = c.GetStatus()
		switch c.GetStatus() {
		case Succeeded:
			sc.StatusCode = enumspb.StatusCode_STATUSCHECK_SUCCESS
		case Failed:
			sc.StatusCode = v1Code(c.GetErrCode(), c.GetActionableErr())
		}
	case *v1pb.Event_ResourceStatusCheckEvent:
		sc := ensure(&s.StatusCheckState)
		if sc.Resources == nil {
			sc.Resources = map[string]string{}
		}
		sc.Resources[ev.ResourceStatusCheckEvent.GetResource()] = ev.ResourceStatusCheckEvent.GetStatus()
	case *v1pb.Event_FileSyncEvent:
		ensure(&s.FileSyncState).Status = ev.FileSyncEvent.GetStatus()
	case *v1pb.Event_PortEvent:
		if s.ForwardedPorts == nil {
			s.ForwardedPorts = map[int32]*v1pb.PortEvent{}
		}
		s.ForwardedPorts[ev.PortEvent.GetLocalPort()] = proto.Clone(ev.PortEvent).(*v1pb.PortEvent)
	case *v1pb.Event_DebuggingContainerEvent:
		d := ev.DebuggingContainerEvent
		switch d.GetStatus() {
		case Started:
			s.DebuggingContainers = append(s.DebuggingContainers, proto.Clone(d).(*v1pb.DebuggingContainerEvent))
		case Terminated:
			s.DebuggingContainers = slices.DeleteFunc(s.DebuggingContainers, func(c *v1pb.DebuggingContainerEvent) bool {
				return c.GetNamespace() == d.GetNamespace() && c.GetPodName() == d.GetPodName() && c.GetContainerName() == d.GetContainerName()
			})
		}
	}
}

// ApplyV2 updates s with one v2 event, following Skaffold's v2 rules: only
// the "Build" step of a build subtask sets an artifact's status; subtask
// events set their phase's status; status-check subtasks set per-resource
// status only (the overall status-check status stays as it was, as in
// Skaffold); status codes stay OK; task, meta and log events change nothing.
func ApplyV2(s *v2pb.State, e *v2pb.Event) {
	switch ev := e.GetEventType().(type) {
	case *v2pb.Event_BuildSubtaskEvent:
		b := ev.BuildSubtaskEvent
		if b.GetStep() != StepBuild {
			return
		}
		bs := ensure(&s.BuildState)
		if bs.Artifacts == nil {
			bs.Artifacts = map[string]string{}
		}
		bs.Artifacts[b.GetArtifact()] = b.GetStatus()
	case *v2pb.Event_TestEvent:
		ensure(&s.TestState).Status = ev.TestEvent.GetStatus()
	case *v2pb.Event_RenderEvent:
		ensure(&s.RenderState).Status = ev.RenderEvent.GetStatus()
	case *v2pb.Event_VerifyEvent:
		ensure(&s.VerifyState).Status = ev.VerifyEvent.GetStatus()
	case *v2pb.Event_ExecEvent:
		ensure(&s.ExecState).Status = ev.ExecEvent.GetStatus()
	case *v2pb.Event_DeploySubtaskEvent:
		ensure(&s.DeployState).Status = ev.DeploySubtaskEvent.GetStatus()
	case *v2pb.Event_StatusCheckSubtaskEvent:
		sc := ensure(&s.StatusCheckState)
		if sc.Resources == nil {
			sc.Resources = map[string]string{}
		}
		sc.Resources[ev.StatusCheckSubtaskEvent.GetResource()] = ev.StatusCheckSubtaskEvent.GetStatus()
	case *v2pb.Event_FileSyncEvent:
		ensure(&s.FileSyncState).Status = ev.FileSyncEvent.GetStatus()
	case *v2pb.Event_PortEvent:
		if s.ForwardedPorts == nil {
			s.ForwardedPorts = map[int32]*v2pb.PortForwardEvent{}
		}
		s.ForwardedPorts[ev.PortEvent.GetLocalPort()] = proto.Clone(ev.PortEvent).(*v2pb.PortForwardEvent)
	case *v2pb.Event_DebuggingContainerEvent:
		d := ev.DebuggingContainerEvent
		switch d.GetStatus() {
		case V2Started:
			s.DebuggingContainers = append(s.DebuggingContainers, proto.Clone(d).(*v2pb.DebuggingContainerEvent))
		case V2Terminated:
			s.DebuggingContainers = slices.DeleteFunc(s.DebuggingContainers, func(c *v2pb.DebuggingContainerEvent) bool {
				return c.GetNamespace() == d.GetNamespace() && c.GetPodName() == d.GetPodName() && c.GetContainerName() == d.GetContainerName()
			})
		}
	}
}

// v1Code is the error code of a failure: the event's own code, else its
// actionable error's, else UNKNOWN_ERROR (a failure never reports OK).
func v1Code(code enumspb.StatusCode, ae *v1pb.ActionableErr) enumspb.StatusCode {
	if code != enumspb.StatusCode_OK {
		return code
	}
	if c := ae.GetErrCode(); c != enumspb.StatusCode_OK {
		return c
	}
	return enumspb.StatusCode_UNKNOWN_ERROR
}

// ensure returns *p, allocating it first if it is nil.
func ensure[T any](p **T) *T {
	if *p == nil {
		*p = new(T)
	}
	return *p
}

// SetAutoTrigger flips one phase's autoTrigger in both states, as the
// control API's Auto* methods do. When enabling, the phase's state is reset
// as Skaffold does (build → ResetV1OnBuild, deploy → ResetV1OnDeploy).
func SetAutoTrigger(s1 *v1pb.State, s2 *v2pb.State, phase Phase, enabled bool) {
	switch phase {
	case PhaseBuild:
		ensure(&s1.BuildState).AutoTrigger = enabled
		ensure(&s2.BuildState).AutoTrigger = enabled
		if enabled {
			ResetOnBuild(s1, s2)
		}
	case PhaseDeploy:
		ensure(&s1.DeployState).AutoTrigger = enabled
		ensure(&s2.DeployState).AutoTrigger = enabled
		if enabled {
			ResetOnDeploy(s1, s2)
		}
	case PhaseSync:
		ensure(&s1.FileSyncState).AutoTrigger = enabled
		ensure(&s2.FileSyncState).AutoTrigger = enabled
	}
}

// ShowTriggersV1 sets the autoTrigger flags of a v1 state to t, changing
// nothing else (unlike SetAutoTrigger, which also resets the phase).
func ShowTriggersV1(s *v1pb.State, t Triggers) {
	ensure(&s.BuildState).AutoTrigger = t.Build
	ensure(&s.DeployState).AutoTrigger = t.Deploy
	ensure(&s.FileSyncState).AutoTrigger = t.Sync
}

// ShowTriggersV2 is ShowTriggersV1 for a v2 state.
func ShowTriggersV2(s *v2pb.State, t Triggers) {
	ensure(&s.BuildState).AutoTrigger = t.Build
	ensure(&s.DeployState).AutoTrigger = t.Deploy
	ensure(&s.FileSyncState).AutoTrigger = t.Sync
}

// Phase names a phase of the control API.
type Phase string

// The phases of the control API.
const (
	PhaseBuild  Phase = "build"
	PhaseSync   Phase = "sync"
	PhaseDeploy Phase = "deploy"
)

// ResetOnBuild sets every artifact back to not started and the build status
// code to OK, keeping auto-triggers and metadata (Skaffold's
// ResetStateOnBuild).
func ResetOnBuild(s1 *v1pb.State, s2 *v2pb.State) {
	b1 := ensure(&s1.BuildState)
	for a := range b1.Artifacts {
		b1.Artifacts[a] = NotStarted
	}
	b1.StatusCode = enumspb.StatusCode_OK
	b2 := ensure(&s2.BuildState)
	for a := range b2.Artifacts {
		b2.Artifacts[a] = V2NotStarted
	}
	b2.StatusCode = enumspb.StatusCode_OK
}

// ResetOnDeploy clears the deploy status and code, the status check,
// forwarded ports and debugging containers (Skaffold's ResetStateOnDeploy).
func ResetOnDeploy(s1 *v1pb.State, s2 *v2pb.State) {
	d1 := ensure(&s1.DeployState)
	d1.Status, d1.StatusCode = NotStarted, enumspb.StatusCode_OK
	s1.StatusCheckState = &v1pb.StatusCheckState{Status: NotStarted, Resources: map[string]string{}}
	s1.ForwardedPorts = map[int32]*v1pb.PortEvent{}
	s1.DebuggingContainers = nil
	d2 := ensure(&s2.DeployState)
	d2.Status, d2.StatusCode = V2NotStarted, enumspb.StatusCode_OK
	s2.StatusCheckState = &v2pb.StatusCheckState{Status: V2NotStarted, Resources: map[string]string{}}
	s2.ForwardedPorts = map[int32]*v2pb.PortForwardEvent{}
	s2.DebuggingContainers = nil
}
