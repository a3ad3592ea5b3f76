package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// now is the fixed "now" of every view.
var now = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }

// checkGolden compares got with testdata/name, or rewrites it with
// -update. Colour escapes are shown as ␛ so the files stay readable.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	got = strings.ReplaceAll(got, "\x1b", "␛")
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}

func job(id string, iteration int32, status string, created, started, finished time.Duration) *jobspb.Job {
	j := &jobspb.Job{Id: id, Repository: "demo/hello", Iteration: iteration, Status: status,
		Commit: "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", Ref: "refs/heads/main", Branch: "main", Trigger: "push", Actor: "octocat",
		CreatedAt: ts(created)}
	if started != 0 {
		j.StartedAt = ts(started)
	}
	if finished != 0 {
		j.FinishedAt = ts(finished)
	}
	return j
}

func TestViews(t *testing.T) {
	succeeded := job("p-5e1f", 3, "succeeded", -5*time.Minute, -299*time.Second, -287*time.Second)
	succeeded.Phases = []*jobspb.Phase{
		{Name: "build", Status: "Succeeded", StartedAt: ts(-298 * time.Second), FinishedAt: ts(-294 * time.Second)},
		{Name: "deploy", Status: "Succeeded", StartedAt: ts(-294 * time.Second), FinishedAt: ts(-288 * time.Second)},
		{Name: "status-check", Status: "Succeeded", StartedAt: ts(-292 * time.Second), FinishedAt: ts(-288 * time.Second)},
	}
	succeeded.Images = map[string]string{"web": "localhost:5005/demo/web:1a2b3c4@sha256:aaaa", "api": "localhost:5005/demo/api:1a2b3c4@sha256:bbbb"}
	running := job("p-9c0d", 5, "running", -45*time.Second, -42*time.Second, 0)
	running.Phases = []*jobspb.Phase{{Name: "build", Status: "InProgress", StartedAt: ts(-41 * time.Second)}}
	failed := job("p-77aa", 4, "failed", -3*time.Hour, -3*time.Hour+time.Second, -3*time.Hour+75*time.Second)
	failed.Error = "build: the Dockerfile's RUN step failed: exit code 2"
	failed.Attempts = 2
	queued := job("p-0001", 0, "queued", -2*time.Second, 0, 0)
	queued.Actor = ""
	tagged := job("p-tag1", 2, "succeeded", -50*time.Hour, -50*time.Hour+time.Second, -50*time.Hour+3*time.Second)
	tagged.Branch, tagged.Tag, tagged.Ref = "", "v1.2.0", "refs/tags/v1.2.0"
	pending := job("p-pend", 6, "succeeded", -10*time.Second, -9*time.Second, -2*time.Second)
	pending.DeployPending = true
	rollback := job("r-0b1e", 7, "succeeded", -time.Minute, -59*time.Second, -55*time.Second)
	rollback.Trigger, rollback.SourceJob, rollback.Units, rollback.Actor = "rollback", "p-5e1f", []string{"web"}, "alice@example.com"

	tests := []struct {
		name   string
		colour bool
		write  func(v View) error
	}{
		{"repos", false, func(v View) error {
			return v.Repositories(&jobspb.ListRepositoriesResponse{Repositories: []*jobspb.Repository{
				{Repository: "demo/hello", AutoBuild: true, AutoDeploy: true, LatestJob: running},
				{Repository: "acme/web-frontend", AutoBuild: true, LatestJob: succeeded},
				{Repository: "acme/empty"},
			}})
		}},
		{"repos-none", false, func(v View) error { return v.Repositories(&jobspb.ListRepositoriesResponse{}) }},
		{"jobs", false, func(v View) error {
			return v.Jobs("demo/hello", &jobspb.ListJobsResponse{Jobs: []*jobspb.Job{rollback, queued, pending, running, failed, succeeded, tagged},
				NextPageToken: "CgRwLTAx"})
		}},
		{"jobs-colour", true, func(v View) error {
			return v.Jobs("demo/hello", &jobspb.ListJobsResponse{Jobs: []*jobspb.Job{running, failed, succeeded, queued}})
		}},
		{"jobs-none", false, func(v View) error { return v.Jobs("demo/hello", &jobspb.ListJobsResponse{}) }},
		{"job-succeeded", false, func(v View) error { return v.Job(succeeded) }},
		{"job-failed", false, func(v View) error { return v.Job(failed) }},
		{"job-running", false, func(v View) error { return v.Job(running) }},
		{"job-rollback-pending", false, func(v View) error {
			r := job("r-0b1e", 0, "queued", -time.Second, 0, 0)
			r.Trigger, r.SourceJob, r.Units = "rollback", "p-5e1f", []string{"web", "worker"}
			return v.Job(r)
		}},
		{"state", false, func(v View) error {
			return v.State("demo/hello", &v2pb.State{
				BuildState:  &v2pb.BuildState{Artifacts: map[string]string{"localhost:5005/demo/hello": "Succeeded"}, AutoTrigger: true},
				DeployState: &v2pb.DeployState{Status: "Succeeded"},
				StatusCheckState: &v2pb.StatusCheckState{Status: "Succeeded", Resources: map[string]string{
					"kgd-demo-hello/deployment/hello": "Succeeded"}},
				Metadata: &v2pb.Metadata{RunID: "p-5e1f",
					Additional: map[string]string{"iteration": "3", "commit": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "branch": "main"},
					Build:      &v2pb.BuildMetadata{Additional: map[string]string{"localhost:5005/demo/hello": "localhost:5005/demo/hello:1a2b3c4@sha256:cccc"}}},
			})
		}},
		{"state-initial", false, func(v View) error {
			return v.State("demo/hello", &v2pb.State{BuildState: &v2pb.BuildState{}, DeployState: &v2pb.DeployState{Status: "NotStarted"},
				StatusCheckState: &v2pb.StatusCheckState{Status: "NotStarted"}})
		}},
		{"log", false, writeLog},
		{"log-colour", true, writeLog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.write(View{W: &b, P: NewPalette(tt.colour), Now: now, Loc: time.UTC}); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tt.name+".golden", b.String())
		})
	}
}

func writeLog(v View) error {
	lines := []*jobspb.LogLine{
		{Time: ts(0), Phase: "devloop", Level: "INFO", Text: "Job p-5e1f of demo/hello: commit 1a2b3c4d5e6f (main), iteration 3, push", Sequence: 41},
		{Time: ts(time.Second), Phase: "build", Level: "INFO", Status: "InProgress", Text: "Build containers in progress", Sequence: 43},
		{Time: ts(2 * time.Second), Phase: "build", Unit: "localhost:5005/demo/hello", Level: "INFO", Text: "Step 1/3 : FROM scratch", Sequence: 45},
		{Time: ts(3 * time.Second), Phase: "deploy", Level: "WARN", Text: "release hello has no owner label; adopting it", Sequence: 50},
		{Time: ts(4 * time.Second), Phase: "status-check", Unit: "deployment/hello", Level: "ERROR", Status: "Failed",
			Text: "deployment/hello: 0 of 2 replicas available: deadline exceeded", Sequence: 60},
		{Time: ts(5 * time.Second), Phase: "devloop", Level: "ERROR", Status: "Failed", Last: true, Text: "Job failed: deployment/hello did not stabilize", Sequence: 62},
		{Phase: "devloop", Text: "a line without a time"},
	}
	for _, l := range lines {
		if err := v.LogLine(l); err != nil {
			return err
		}
	}
	return nil
}

// factory builds a job's events with the runner's own constructors, each
// 100ms after the last.
func factory() *event.Factory {
	t := now
	return event.NewFactory(event.Job{ID: "p-5e1f", Repository: "demo/hello", Commit: "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
		Ref: "refs/heads/main", Branch: "main", Trigger: "push", Iteration: 3},
		event.Plan{Artifacts: []event.Artifact{{Name: "localhost:5005/demo/hello", Context: "app", Dockerfile: "Dockerfile"}}, Releases: 1},
		func() time.Time { t = t.Add(100 * time.Millisecond); return t })
}

const image = "localhost:5005/demo/hello"

func build(f *event.Factory) []*v2pb.Event {
	return []*v2pb.Event{
		f.V2Meta(),
		f.V2Task(event.TaskDevLoop, event.V2InProgress, nil),
		f.V2Task(event.TaskBuild, event.V2InProgress, nil),
		f.V2Build(image, event.StepBuild, event.V2InProgress, nil),
		f.V2Log(event.TaskBuild, image, enumspb.LogLevel_STANDARD, "Step 1/3 : FROM scratch"),
		f.V2Log(event.TaskBuild, image, enumspb.LogLevel_STANDARD, "Step 2/3 : COPY hello /hello\n"),
	}
}

func succeededEvents() []*v2pb.Event {
	f := factory()
	return append(build(f),
		f.V2Log(event.TaskBuild, image, enumspb.LogLevel_STANDARD, "Built "+image+":1a2b3c4@sha256:cccc"),
		f.V2Build(image, event.StepBuild, event.V2Succeeded, nil),
		f.V2Task(event.TaskBuild, event.V2Succeeded, nil),
		f.V2Task(event.TaskRender, event.V2InProgress, nil), f.V2Render(event.V2InProgress, nil),
		f.V2Render(event.V2Succeeded, nil), f.V2Task(event.TaskRender, event.V2Succeeded, nil),
		f.V2Task(event.TaskDeploy, event.V2InProgress, nil), f.V2Deploy(event.V2InProgress, nil),
		f.V2Log(event.TaskDeploy, event.SubtaskNone, enumspb.LogLevel_STANDARD, "Release hello revision 3 applied deployment/hello"),
		f.V2Deploy(event.V2Succeeded, nil),
		f.V2Task(event.TaskStatusCheck, event.V2InProgress, nil),
		f.V2ResourceStatus("deployment/hello", event.V2InProgress, "waiting for rollout to finish: 0 of 2 updated replicas are available...", 0, nil),
		f.V2ResourceStatus("deployment/hello", event.V2InProgress, "waiting for rollout to finish: 0 of 2 updated replicas are available...", 0, nil),
		f.V2ResourceStatus("deployment/hello", event.V2InProgress, "waiting for rollout to finish: 1 of 2 updated replicas are available...", 0, nil),
		f.V2ResourceStatus("deployment/hello", event.V2Succeeded, "", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil),
		f.V2Task(event.TaskStatusCheck, event.V2Succeeded, nil),
		f.V2Task(event.TaskDeploy, event.V2Succeeded, nil),
		f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil),
	)
}

func TestEventPrinter(t *testing.T) {
	buildErr := &event.ErrorInfo{Code: enumspb.StatusCode_BUILD_USER_ERROR, Message: "the Dockerfile's RUN step failed: exit code 2"}
	rollErr := &event.ErrorInfo{Code: enumspb.StatusCode_STATUSCHECK_DEADLINE_EXCEEDED, Message: "deployment/hello did not stabilize in 2m0s"}
	tests := []struct {
		name        string
		colour      bool
		events      func() []*v2pb.Event
		wantOutcome Outcome
	}{
		{"events-succeeded", false, succeededEvents, Outcome{Status: Succeeded, Duration: 2400 * time.Millisecond}},
		{"events-succeeded-colour", true, succeededEvents, Outcome{Status: Succeeded, Duration: 2400 * time.Millisecond}},
		{"events-build-failed", false, func() []*v2pb.Event {
			f := factory()
			return append(build(f),
				f.V2Log(event.TaskBuild, image, enumspb.LogLevel_STANDARD, "Step 3/3 : RUN false"),
				f.V2Build(image, event.StepBuild, event.V2Failed, buildErr),
				f.V2Task(event.TaskBuild, event.V2Failed, buildErr),
				f.V2Task(event.TaskDevLoop, event.V2Failed, buildErr))
		}, Outcome{Status: Failed, Message: buildErr.Message, Duration: 900 * time.Millisecond}},
		{"events-rollout-failed", true, func() []*v2pb.Event {
			f := factory()
			return []*v2pb.Event{
				f.V2Meta(), f.V2Task(event.TaskDevLoop, event.V2InProgress, nil),
				f.V2Log(event.TaskDeploy, event.SubtaskNone, enumspb.LogLevel_STANDARD, "Deploying "+image+":1a2b3c4@sha256:cccc of unit hello, built by an earlier job"),
				f.V2Task(event.TaskDeploy, event.V2InProgress, nil), f.V2Deploy(event.V2InProgress, nil), f.V2Deploy(event.V2Succeeded, nil),
				f.V2Task(event.TaskStatusCheck, event.V2InProgress, nil),
				f.V2ResourceStatus("deployment/hello", event.V2Failed, "0 of 2 replicas available", enumspb.StatusCode_STATUSCHECK_DEADLINE_EXCEEDED, rollErr),
				f.V2Task(event.TaskStatusCheck, event.V2Failed, rollErr),
				f.V2Task(event.TaskDeploy, event.V2Failed, rollErr),
				f.V2Task(event.TaskDevLoop, event.V2Failed, rollErr),
			}
		}, Outcome{Status: Failed, Message: rollErr.Message, Duration: 1000 * time.Millisecond}},
		{"events-canceled", false, func() []*v2pb.Event {
			f := factory()
			why := &event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_CANCELLED, Message: "superseded by job p-6a6a"}
			return append(build(f),
				f.V2Log(event.TaskDevLoop, event.SubtaskNone, enumspb.LogLevel_WARN, "the runner stops: SIGTERM"),
				f.V2Task(event.TaskDevLoop, event.V2Canceled, why))
		}, Outcome{Status: Canceled, Message: "superseded by job p-6a6a", Duration: 700 * time.Millisecond}},
		{"events-without-meta", false, func() []*v2pb.Event {
			// A stream read from the middle of the job: the header comes
			// from the DevLoop task; no duration without its start.
			all := succeededEvents()
			return all[len(all)-4:]
		}, Outcome{Status: Succeeded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			p := NewEventPrinter(&b, NewPalette(tt.colour), "p-5e1f", "demo/hello")
			events := tt.events()
			for i, e := range events {
				if p.Done() {
					t.Fatalf("done before event %d of %d", i, len(events))
				}
				if err := p.Print(e); err != nil {
					t.Fatal(err)
				}
			}
			if !p.Done() {
				t.Errorf("not done after the DevLoop's end")
			}
			if diff := cmp.Diff(tt.wantOutcome, p.Outcome()); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			checkGolden(t, tt.name+".golden", b.String())
		})
	}
}

func TestColorEnabled(t *testing.T) {
	tests := []struct {
		name       string
		terminal   bool
		flag       bool
		noColor    string
		term       string
		wantColour bool
	}{
		{"terminal", true, false, "", "xterm-256color", true},
		{"pipe", false, false, "", "xterm", false},
		{"no-color-flag", true, true, "", "xterm", false},
		{"NO_COLOR", true, false, "1", "xterm", false},
		{"NO_COLOR-any-value", true, false, "false", "xterm", false},
		{"dumb-terminal", true, false, "", "dumb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"NO_COLOR": tt.noColor, "TERM": tt.term}
			if got := ColorEnabled(tt.terminal, tt.flag, func(k string) string { return env[k] }); got != tt.wantColour {
				t.Errorf("ColorEnabled = %v, want %v", got, tt.wantColour)
			}
		})
	}
	if got := NewPalette(false).Red("x"); got != "x" {
		t.Errorf("disabled palette coloured: %q", got)
	}
}

func TestDurationAndAge(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"}, {0, "0.0s"}, {850 * time.Millisecond, "0.8s"}, {3240 * time.Millisecond, "3.2s"}, {42 * time.Second, "42s"},
		{125 * time.Second, "2m05s"}, {62 * time.Minute, "1h02m"},
	} {
		if got := Duration(tt.d); got != tt.want {
			t.Errorf("Duration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	for _, tt := range []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"}, {-time.Second, "0s"}, {59 * time.Second, "59s"}, {61 * time.Second, "1m"}, {5 * time.Hour, "5h"}, {47 * time.Hour, "47h"}, {72 * time.Hour, "3d"},
	} {
		if got := Age(now, now.Add(-tt.ago)); got != tt.want {
			t.Errorf("Age(%v ago) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	if got := Age(now, time.Time{}); got != "-" {
		t.Errorf("Age(zero) = %q", got)
	}
}

func TestVisibleLen(t *testing.T) {
	p := NewPalette(true)
	for _, tt := range []struct {
		s    string
		want int
	}{
		{"plain", 5}, {p.Green("ok"), 2}, {p.Bold("a") + "b" + p.Red("c"), 3}, {"né", 2},
	} {
		if got := visibleLen(tt.s); got != tt.want {
			t.Errorf("visibleLen(%q) = %d, want %d", tt.s, got, tt.want)
		}
	}
}
