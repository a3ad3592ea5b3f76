package pipeline

import (
	"fmt"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
)

// Sink receives a job's events and its state; store.JobWriter is one.
type Sink interface {
	Emit(v1 *v1pb.LogEntry, v2 *v2pb.Event) error
	SetState(v1 *v1pb.State, v2 *v2pb.State) error
}

// emitter pairs the factory that builds a job's events with the states
// they reduce to, and hands both to the sink.
type emitter struct {
	f    *event.Factory
	sink Sink
	s1   *v1pb.State
	s2   *v2pb.State
	err  error // the first sink error; later emits are dropped
	// logged counts the bytes of log lines recorded; past maxJobLog the
	// rest of the job's output is dropped after one marker line.
	logged int64
}

// maxJobLog bounds the output (build and deploy log lines) one job
// records: a build's own output is capped by the build package, this caps
// a job with many units. The job itself goes on.
const maxJobLog = 16 << 20

func newEmitter(f *event.Factory, sink Sink, t event.Triggers) *emitter {
	return &emitter{f: f, sink: sink, s1: f.NewV1State(t), s2: f.NewV2State(t)}
}

// emit records one v1 event and any number of v2 events.
func (e *emitter) emit(v1 *v1pb.LogEntry, v2 ...*v2pb.Event) {
	if e.err != nil {
		return
	}
	if v1 != nil {
		event.ApplyV1(e.s1, v1)
		if e.err = e.sink.Emit(v1, nil); e.err != nil {
			return
		}
	}
	for _, ev := range v2 {
		event.ApplyV2(e.s2, ev)
		if e.err = e.sink.Emit(nil, ev); e.err != nil {
			return
		}
	}
	e.err = e.sink.SetState(e.s1, e.s2)
}

// log records one line of output of a task as a v2 SkaffoldLogEvent.
func (e *emitter) log(task, subtask, line string) {
	if e.logged > maxJobLog {
		return
	}
	e.logged += int64(len(line))
	if e.logged > maxJobLog {
		line = fmt.Sprintf("… [job log truncated after %d bytes; the job goes on]", maxJobLog)
	}
	e.emit(nil, e.f.V2Log(task, subtask, enumspb.LogLevel_STANDARD, line))
}

// setArtifact records an artifact's pushed reference (tag@digest) in both
// states' build metadata, where GetState shows it.
func (e *emitter) setArtifact(name, ref string) {
	b1 := e.s1.GetMetadata().GetBuild()
	if b1 != nil {
		if b1.Additional == nil {
			b1.Additional = map[string]string{}
		}
		b1.Additional[name] = ref
	}
	b2 := e.s2.GetMetadata().GetBuild()
	if b2 != nil {
		if b2.Additional == nil {
			b2.Additional = map[string]string{}
		}
		b2.Additional[name] = ref
	}
}

// setBuilt shows an artifact built by an earlier job as complete in both
// states, with its reference (see setArtifact), as a deploy-only job's
// states would read in Skaffold, whose state outlives the build.
func (e *emitter) setBuilt(name, ref string) {
	if b1 := e.s1.GetBuildState(); b1.GetArtifacts() != nil {
		b1.Artifacts[name] = event.Complete
	}
	if b2 := e.s2.GetBuildState(); b2.GetArtifacts() != nil {
		b2.Artifacts[name] = event.V2Succeeded
	}
	e.setArtifact(name, ref)
}
