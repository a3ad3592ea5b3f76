package pipeline

import (
	"strings"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
)

// TestJobLogCap: a job whose units print more than maxJobLog records one
// marker line and nothing more, and its other events still go through.
func TestJobLogCap(t *testing.T) {
	var rec recorder
	f := event.NewFactory(event.Job{ID: "j", Repository: "o/n", Iteration: 1}, event.Plan{}, time.Now)
	e := newEmitter(f, &rec, event.Triggers{})
	line := strings.Repeat("x", 8<<10)
	n := maxJobLog/len(line) + 100
	for range n {
		e.log(event.TaskBuild, "img", line)
	}
	e.emit(f.V1DevLoop(event.Succeeded, nil), f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil))
	var logs, markers int
	for _, ev := range rec.v2 {
		if l := ev.GetSkaffoldLogEvent(); l != nil {
			logs++
			if strings.Contains(l.GetMessage(), "job log truncated") {
				markers++
			}
		}
	}
	if markers != 1 || logs > maxJobLog/len(line)+2 {
		t.Errorf("%d log events with %d markers for %d lines, want at most %d and exactly one marker", logs, markers, n, maxJobLog/len(line)+2)
	}
	if last := rec.v1[len(rec.v1)-1].GetEvent().GetDevLoopEvent(); last.GetStatus() != event.Succeeded {
		t.Errorf("the final event after the cap = %v, want DevLoop Succeeded", rec.v1[len(rec.v1)-1])
	}
}
