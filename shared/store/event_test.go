package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestAppendEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	job := e.claimedJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	ref := job.JobRef()
	ts := timestamppb.New(t0)

	meta1 := &v1pb.LogEntry{Timestamp: ts, Entry: "Starting job", Event: &v1pb.Event{EventType: &v1pb.Event_MetaEvent{MetaEvent: &v1pb.MetaEvent{
		Entry: "kube-git-deploy", Metadata: &v1pb.Metadata{Additional: map[string]string{"repository": "alice/app", "job_id": job.ID}},
	}}}}
	build1 := &v1pb.LogEntry{Timestamp: ts, Entry: "Build started for artifact app", Event: &v1pb.Event{EventType: &v1pb.Event_BuildEvent{BuildEvent: &v1pb.BuildEvent{
		Artifact: "app", Status: "In Progress",
	}}}}
	meta2 := &v2pb.Event{Timestamp: ts, EventType: &v2pb.Event_MetaEvent{MetaEvent: &v2pb.MetaEvent{
		Entry: "kube-git-deploy", Metadata: &v2pb.Metadata{RunID: job.ID, Additional: map[string]string{"repository": "alice/app"}},
	}}}
	_, log2 := logLine(7)
	empty2 := &v2pb.Event{}

	batches := []store.EventBatch{
		{Job: ref, Chunk: 0, V1: []*v1pb.LogEntry{meta1, build1}, V2: []*v2pb.Event{meta2}},
		{Job: ref, Chunk: 1, V2: []*v2pb.Event{log2, empty2}},
		{Job: ref, Chunk: 2, V1: []*v1pb.LogEntry{build1}},
	}
	// Written out of order on purpose: chunks are read back by number.
	for _, i := range []int{1, 0, 2} {
		if err := s.AppendEvents(e.ctx, batches[i]); err != nil {
			t.Fatalf("AppendEvents(chunk %d): %v", i, err)
		}
	}
	got, err := s.JobEvents(e.ctx, job.ID)
	if err != nil {
		t.Fatalf("JobEvents: %v", err)
	}
	want := &store.JobHistory{
		V1:        []*v1pb.LogEntry{meta1, build1, build1},
		V2:        []*v2pb.Event{meta2, log2, empty2},
		NextChunk: 3,
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("JobEvents() (-want +got):\n%s", diff)
	}

	t.Run("raw-document", func(t *testing.T) {
		snap, err := e.client.Collection(store.EventsCollection).Doc(job.ID + "-00000001").Get(e.ctx)
		if err != nil {
			t.Fatalf("raw events document: %v", err)
		}
		d := snap.Data()
		created, _ := d["created"].(time.Time)
		if d["repo"] != "alice~app" || d["job_id"] != job.ID || d["iteration"] != int64(1) || d["chunk"] != int64(1) || created.IsZero() {
			t.Errorf("raw events document fields = repo %v job_id %v iteration %v chunk %v created %v",
				d["repo"], d["job_id"], d["iteration"], d["chunk"], d["created"])
		}
		if v2, _ := d["v2"].([]any); len(v2) != 2 {
			t.Errorf("raw v2 = %T of %d, want 2 byte values", d["v2"], len(v2))
		}
	})

	huge := &v2pb.Event{EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{Message: strings.Repeat("x", store.MaxEventBatchBytes)}}}
	errTests := []struct {
		name  string
		batch store.EventBatch
		want  error
	}{
		{name: "chunk-taken", batch: store.EventBatch{Job: ref, Chunk: 1, V2: []*v2pb.Event{log2}}, want: store.ErrAlreadyExists},
		{name: "too-large", batch: store.EventBatch{Job: ref, Chunk: 3, V2: []*v2pb.Event{huge}}, want: store.ErrTooLarge},
		{name: "empty", batch: store.EventBatch{Job: ref, Chunk: 3}, want: store.ErrInvalid},
		{name: "negative-chunk", batch: store.EventBatch{Job: ref, Chunk: -1, V2: []*v2pb.Event{log2}}, want: store.ErrInvalid},
		{name: "no-job", batch: store.EventBatch{Job: store.JobRef{Owner: "alice", Name: "app"}, V2: []*v2pb.Event{log2}}, want: store.ErrInvalid},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.AppendEvents(e.ctx, tt.batch); !errors.Is(err, tt.want) {
				t.Fatalf("AppendEvents() = %v, want %v", err, tt.want)
			}
		})
	}
	// Nothing was written by the failures.
	if again, err := s.JobEvents(e.ctx, job.ID); err != nil || again.NextChunk != 3 || len(again.V2) != 3 {
		t.Errorf("JobEvents after failed appends = %d v2 events, next chunk %d, %v; want 3, 3", len(again.V2), again.NextChunk, err)
	}

	t.Run("unknown-job", func(t *testing.T) {
		h, err := s.JobEvents(e.ctx, "nobody")
		if err != nil {
			t.Fatalf("JobEvents: %v", err)
		}
		if diff := cmp.Diff(&store.JobHistory{}, h, protocmp.Transform()); diff != "" {
			t.Errorf("JobEvents(unknown) (-want +got):\n%s", diff)
		}
	})
}

func TestState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	if _, err := s.State(e.ctx, "alice", "app"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("State before any job = %v, want ErrNotFound", err)
	}
	state := func(status string) (*v1pb.State, *v2pb.State) {
		return &v1pb.State{BuildState: &v1pb.BuildState{Artifacts: map[string]string{"app": status}}},
			&v2pb.State{BuildState: &v2pb.BuildState{Artifacts: map[string]string{"app": status}, StatusCode: v2pb.StatusCode_BUILD_SUCCESS}}
	}
	steps := []struct {
		name      string
		job       string
		iteration int
		status    string
		want      store.RepoState // V1/V2 from wantStatus
		wantState string
	}{
		{name: "first", job: "j2", iteration: 2, status: "In Progress", want: store.RepoState{JobID: "j2", Iteration: 2, Version: 1}, wantState: "In Progress"},
		{name: "same-job-later", job: "j2", iteration: 2, status: "Complete", want: store.RepoState{JobID: "j2", Iteration: 2, Version: 2}, wantState: "Complete"},
		{name: "older-job-ignored", job: "j1", iteration: 1, status: "Failed", want: store.RepoState{JobID: "j2", Iteration: 2, Version: 2}, wantState: "Complete"},
		{name: "newer-job", job: "j3", iteration: 3, status: "In Progress", want: store.RepoState{JobID: "j3", Iteration: 3, Version: 3}, wantState: "In Progress"},
	}
	for _, st := range steps {
		v1, v2 := state(st.status)
		if err := s.PutState(e.ctx, "Alice", "App", st.job, st.iteration, v1, v2); err != nil {
			t.Fatalf("step %s: PutState: %v", st.name, err)
		}
		got, err := s.State(e.ctx, "alice", "app")
		if err != nil {
			t.Fatalf("step %s: State: %v", st.name, err)
		}
		want := st.want
		want.V1, want.V2 = state(st.wantState)
		if got.Updated.IsZero() {
			t.Errorf("step %s: Updated not set", st.name)
		}
		want.Updated = got.Updated
		if diff := cmp.Diff(&want, got, protocmp.Transform()); diff != "" {
			t.Errorf("step %s: State() (-want +got):\n%s", st.name, diff)
		}
	}
	t.Run("nil-states-read-empty", func(t *testing.T) {
		if err := s.PutState(e.ctx, "bob", "app", "j9", 1, nil, nil); err != nil {
			t.Fatalf("PutState: %v", err)
		}
		got, err := s.State(e.ctx, "bob", "app")
		if err != nil {
			t.Fatalf("State: %v", err)
		}
		if diff := cmp.Diff(&v2pb.State{}, got.V2, protocmp.Transform()); diff != "" || got.V1 == nil {
			t.Errorf("State() of nil states: v1 %v, v2 diff %s", got.V1, diff)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		if err := s.PutState(e.ctx, "alice", "app", "", 1, nil, nil); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("PutState(no job) = %v, want ErrInvalid", err)
		}
	})
}
