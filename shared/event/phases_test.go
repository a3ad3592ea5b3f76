package event

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

func TestJobPhases(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at := func(s int) *timestamppb.Timestamp { return timestamppb.New(t0.Add(time.Duration(s) * time.Second)) }
	task := func(s int, name, status string) *v2pb.Event {
		return &v2pb.Event{Timestamp: at(s), EventType: &v2pb.Event_TaskEvent{TaskEvent: &v2pb.TaskEvent{Task: name, Status: status}}}
	}
	log := &v2pb.Event{Timestamp: at(3), EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{Message: "x"}}}
	tests := []struct {
		name   string
		events []*v2pb.Event
		want   []JobPhase
	}{
		{"none", nil, nil},
		{"succeeded", []*v2pb.Event{
			task(0, TaskDevLoop, V2InProgress), task(1, TaskBuild, V2InProgress), log, task(5, TaskBuild, V2Succeeded),
			task(6, TaskRender, V2InProgress), task(6, TaskRender, V2Succeeded),
			task(6, TaskDeploy, V2InProgress), task(8, TaskDeploy, V2Succeeded),
			task(8, TaskStatusCheck, V2InProgress), task(12, TaskStatusCheck, V2Succeeded), task(12, TaskDevLoop, V2Succeeded),
		}, []JobPhase{
			{JobPhaseBuild, V2Succeeded, t0.Add(time.Second), t0.Add(5 * time.Second)},
			{JobPhaseDeploy, V2Succeeded, t0.Add(6 * time.Second), t0.Add(8 * time.Second)},
			{JobPhaseStatusCheck, V2Succeeded, t0.Add(8 * time.Second), t0.Add(12 * time.Second)},
		}},
		{"running", []*v2pb.Event{task(1, TaskBuild, V2InProgress)}, []JobPhase{{JobPhaseBuild, V2InProgress, t0.Add(time.Second), time.Time{}}}},
		{"failed build", []*v2pb.Event{task(1, TaskBuild, V2InProgress), task(2, TaskBuild, V2Failed)},
			[]JobPhase{{JobPhaseBuild, V2Failed, t0.Add(time.Second), t0.Add(2 * time.Second)}}},
		{"phase again", []*v2pb.Event{task(1, TaskDeploy, V2InProgress), task(2, TaskDeploy, V2Failed), task(3, TaskDeploy, V2InProgress)},
			[]JobPhase{{JobPhaseDeploy, V2Failed, t0.Add(time.Second), t0.Add(2 * time.Second)}, {JobPhaseDeploy, V2InProgress, t0.Add(3 * time.Second), time.Time{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p JobPhases
			for _, e := range tt.events {
				p.Observe(e)
			}
			if diff := cmp.Diff(tt.want, p.List()); diff != "" {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
		})
	}
}
