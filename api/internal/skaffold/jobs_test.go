package skaffold_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// finishedJob records a push job of owner/name at sha that a runner ran
// and finished with st, recording images when given.
func (b *backend) finishedJob(owner, name, delivery, sha string, st store.JobStatus, images map[string]string) *store.Job {
	b.t.Helper()
	j, err := b.store.CreateJob(b.ctx, store.Job{Owner: owner, Name: name, Ref: "refs/heads/main", SHA: sha, DeliveryID: delivery, Trigger: "push", Actor: "octocat"})
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.store.ClaimJob(b.ctx, j.ID, "test-runner", time.Hour, time.Now()); err != nil {
		b.t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Minute)
	phases := []store.Phase{{Name: event.JobPhaseBuild, Status: event.V2Succeeded, StartedAt: t0, FinishedAt: t0.Add(5 * time.Second)}}
	if err := b.store.RecordJobResult(b.ctx, j.ID, "test-runner", images, phases); err != nil {
		b.t.Fatal(err)
	}
	msg := ""
	if st != store.StatusSucceeded {
		msg = "build failed"
	}
	if err := b.store.FinishJob(b.ctx, j.ID, "test-runner", st, msg, time.Now()); err != nil {
		b.t.Fatal(err)
	}
	got, err := b.store.Job(b.ctx, j.ID)
	if err != nil {
		b.t.Fatal(err)
	}
	return got
}

// protoGet GETs path and decodes a protobuf JSON answer of 200 into m.
func (a *api) protoGet(t *testing.T, path string, h http.Header, m proto.Message) (int, string) {
	t.Helper()
	code, body, _ := a.doWith(t, http.MethodGet, path, "", h)
	if code == http.StatusOK {
		if err := protojson.Unmarshal([]byte(body), m); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return code, body
}

func TestJobHistory(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", store.Triggers{AutoBuild: true, AutoDeploy: true})
	b.track("octo", "other", store.Triggers{AutoBuild: true, AutoDeploy: true})
	var ids []string
	for i := range 23 {
		j, err := b.store.CreateJob(b.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: fmt.Sprintf("%040x", i+1),
			DeliveryID: fmt.Sprintf("d-%d", i), Trigger: "push", Actor: "octocat", CreatedAt: time.Now().Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append([]string{j.ID}, ids...) // newest first
	}
	other := b.finishedJob("octo", "other", "d-other", sha1st, store.StatusSucceeded, nil)

	t.Run("pages", func(t *testing.T) {
		var got []string
		token := ""
		for page := 0; ; page++ {
			var resp jobspb.ListJobsResponse
			code, body := a.protoGet(t, "/kgd/v1/repositories/octo/app/jobs?page_size=10&page_token="+token, nil, &resp)
			if code != 200 {
				t.Fatalf("page %d: %d %s", page, code, body)
			}
			for _, j := range resp.GetJobs() {
				got = append(got, j.GetId())
				if j.GetRepository() != "octo/app" || j.GetBranch() != "main" || j.GetActor() != "octocat" || j.GetStatus() != "queued" {
					t.Errorf("job %+v", j)
				}
			}
			if token = resp.GetNextPageToken(); token == "" {
				if page != 2 {
					t.Errorf("%d pages, want 3", page+1)
				}
				break
			}
		}
		if !slices.Equal(got, ids) {
			t.Errorf("jobs over the pages = %v,\nwant %v", got, ids)
		}
	})
	for _, c := range []struct {
		name, path string
		code       int
		want       string
	}{
		{"bad page token", "/kgd/v1/repositories/octo/app/jobs?page_token=nope", 400, "page_token"},
		{"page too large", "/kgd/v1/repositories/octo/app/jobs?page_size=101", 400, "page_size"},
		{"untracked", "/kgd/v1/repositories/octo/gone/jobs", 404, "not tracked"},
		{"bad name", "/kgd/v1/repositories/octo/a%20b/jobs", 400, "not owner/name"},
		{"unknown job", "/kgd/v1/repositories/octo/app/jobs/nope", 404, "has no job"},
		{"another repository's job", "/kgd/v1/repositories/octo/app/jobs/" + other.ID, 404, "has no job"},
		{"log of another repository's job", "/kgd/v1/repositories/octo/app/jobs/" + other.ID + "/log", 404, "has no job"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body, _ := a.doWith(t, http.MethodGet, c.path, "", nil)
			if code != c.code || !strings.Contains(body, c.want) {
				t.Errorf("GET %s = %d %s, want %d with %q", c.path, code, body, c.code, c.want)
			}
		})
	}
	t.Run("one job", func(t *testing.T) {
		var j jobspb.Job
		if code, body := a.protoGet(t, "/kgd/v1/repositories/octo/other/jobs/"+other.ID, nil, &j); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		if j.GetStatus() != "succeeded" || j.GetCommit() != sha1st || len(j.GetPhases()) != 1 || j.GetPhases()[0].GetName() != "build" || j.GetFinishedAt() == nil {
			t.Errorf("job = %v", &j)
		}
	})
	t.Run("repositories", func(t *testing.T) {
		var resp jobspb.ListRepositoriesResponse
		if code, body := a.protoGet(t, "/kgd/v1/repositories", nil, &resp); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		var names []string
		for _, r := range resp.GetRepositories() {
			names = append(names, r.GetRepository()+"="+r.GetLatestJob().GetId())
			if !r.GetCanOperate() {
				t.Errorf("local caller cannot operate %s", r.GetRepository())
			}
		}
		if want := []string{"octo/app=" + ids[0], "octo/other=" + other.ID}; !slices.Equal(names, want) {
			t.Errorf("repositories = %v, want %v", names, want)
		}
	})
}

func TestJobStarts(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", store.Triggers{AutoBuild: true, AutoDeploy: false})
	images := map[string]string{"web": "r/web:1@sha256:" + strings.Repeat("a", 64), "api": "r/api:1@sha256:" + strings.Repeat("b", 64)}
	good := b.finishedJob("octo", "app", "d-1", sha1st, store.StatusSucceeded, images)
	bad := b.finishedJob("octo", "app", "d-2", sha2nd, store.StatusFailed, nil)

	start := func(t *testing.T, path, body string) *jobspb.Job {
		t.Helper()
		code, resp, _ := a.doWith(t, http.MethodPost, path, body, nil)
		if code != 200 {
			t.Fatalf("POST %s: %d %s", path, code, resp)
		}
		var j jobspb.Job
		if err := protojson.Unmarshal([]byte(resp), &j); err != nil {
			t.Fatal(err)
		}
		stored, err := b.store.Job(b.ctx, j.GetId())
		if err != nil || stored.Status != store.StatusQueued || stored.PublishedAt.IsZero() || stored.Actor != "local" {
			t.Fatalf("stored job %+v, %v: want queued, published, by local", stored, err)
		}
		m, ok := b.received(30 * time.Second)
		if !ok || m.JobID != j.GetId() || m.Trigger != job.TriggerExecute || m.SHA != stored.SHA {
			t.Fatalf("published %+v (%v), want the job %s", m, ok, j.GetId())
		}
		return &j
	}
	t.Run("rerun", func(t *testing.T) {
		j := start(t, "/kgd/v1/repositories/octo/app/jobs/"+bad.ID+":rerun", "{}")
		if j.GetTrigger() != "rerun" || j.GetCommit() != sha2nd || j.GetSourceJob() != bad.ID || j.GetRef() != "refs/heads/main" {
			t.Errorf("rerun = %v", j)
		}
		stored, _ := b.store.Job(b.ctx, j.GetId())
		if stored.ForceDeploy || stored.DeployOf != "" {
			t.Errorf("rerun of a failed push with auto-deploy off: force %v, deploy of %q; want neither", stored.ForceDeploy, stored.DeployOf)
		}
	})
	t.Run("deploy a commit by prefix", func(t *testing.T) {
		j := start(t, "/kgd/v1/repositories/octo/app/deploys", `{"branch":"main","commit":"`+sha1st[:8]+`"}`)
		if j.GetTrigger() != "deploy" || j.GetCommit() != sha1st || j.GetBranch() != "main" {
			t.Errorf("deploy = %v", j)
		}
	})
	t.Run("rollback one unit", func(t *testing.T) {
		j := start(t, "/kgd/v1/repositories/octo/app/jobs/"+good.ID+":rollback", `{"units":["web"]}`)
		if j.GetTrigger() != "rollback" || j.GetSourceJob() != good.ID || !slices.Equal(j.GetUnits(), []string{"web"}) || len(j.GetImages()) != 1 || j.GetImages()["web"] != images["web"] {
			t.Errorf("rollback = %v", j)
		}
		stored, _ := b.store.Job(b.ctx, j.GetId())
		if stored.DeployOf != good.ID || !stored.ForceDeploy {
			t.Errorf("stored rollback deploys %q, force %v", stored.DeployOf, stored.ForceDeploy)
		}
	})
	for _, c := range []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"rollback of a failed job", "/jobs/" + bad.ID + ":rollback", "{}", 400, "did not deploy images"},
		{"rollback of an unknown unit", "/jobs/" + good.ID + ":rollback", `{"units":["db"]}`, 400, "deployed no image of unit"},
		{"rerun of an unknown job", "/jobs/nope:rerun", "{}", 404, "has no job"},
		{"deploy without a branch", "/deploys", `{"commit":"` + sha1st + `"}`, 400, "name the branch"},
		{"deploy of an unknown commit", "/deploys", `{"branch":"main","commit":"abcdef0"}`, 404, "no job of octo/app built a commit"},
		{"deploy of a short commit", "/deploys", `{"branch":"main","commit":"abc"}`, 400, "not 7–40 hex digits"},
		{"deploy to a bad branch", "/deploys", `{"branch":"a..b","commit":"` + sha1st + `"}`, 400, "branch"},
		{"deploy of a commit not pushed to the branch", "/deploys", `{"branch":"dev","commit":"` + sha1st + `"}`, 404, "on refs/heads/dev"},
		{"deploy of a commit never pushed", "/deploys", `{"branch":"main","commit":"` + strings.Repeat("9", 40) + `"}`, 404, "no job of octo/app"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, _ := b.store.Jobs(b.ctx, "octo", "app", 100)
			code, body, _ := a.doWith(t, http.MethodPost, "/kgd/v1/repositories/octo/app"+c.path, c.body, nil)
			if code != c.code || !strings.Contains(body, c.want) {
				t.Errorf("POST %s = %d %s, want %d with %q", c.path, code, body, c.code, c.want)
			}
			if after, _ := b.store.Jobs(b.ctx, "octo", "app", 100); len(after) != len(before) {
				t.Errorf("a refused call recorded a job: %d jobs, were %d", len(after), len(before))
			}
		})
	}
}

func TestJobStartsNeedAnOperator(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{auth: caller.ModeIAM, operators: []string{globalOp}})
	b.trackWithOperators("octo", "app", store.Triggers{AutoBuild: true, AutoDeploy: true}, appOp)
	good := b.finishedJob("octo", "app", "d-1", sha1st, store.StatusSucceeded, map[string]string{"web": "r/web:1@sha256:" + strings.Repeat("a", 64)})
	calls := []struct{ name, path, body string }{
		{"rerun", "/jobs/" + good.ID + ":rerun", "{}"},
		{"deploy", "/deploys", `{"branch":"main","commit":"` + sha1st + `"}`},
		{"rollback", "/jobs/" + good.ID + ":rollback", "{}"},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			code, body, _ := a.doWith(t, http.MethodPost, "/kgd/v1/repositories/octo/app"+c.path, c.body, bearer(viewer))
			if code != http.StatusForbidden || !strings.Contains(body, viewer) {
				t.Errorf("%s by a viewer: %d %s, want 403 naming the viewer", c.name, code, body)
			}
			code, body, _ = a.doWith(t, http.MethodPost, "/kgd/v1/repositories/octo/app"+c.path, c.body, nil)
			if code != http.StatusUnauthorized {
				t.Errorf("%s without a token: %d %s, want 401", c.name, code, body)
			}
		})
	}
	if jobs, _ := b.store.Jobs(b.ctx, "octo", "app", 100); len(jobs) != 1 {
		t.Errorf("refused calls recorded jobs: %d, want 1", len(jobs))
	}
	// Viewers read; the list tells them they cannot operate.
	var resp jobspb.ListRepositoriesResponse
	if code, body := a.protoGet(t, "/kgd/v1/repositories", bearer(viewer), &resp); code != 200 || len(resp.GetRepositories()) != 1 || resp.GetRepositories()[0].GetCanOperate() {
		t.Errorf("viewer's repositories: %d %s", code, body)
	}
	if code, body := a.protoGet(t, "/kgd/v1/repositories", bearer(appOp), &resp); code != 200 || !resp.GetRepositories()[0].GetCanOperate() {
		t.Errorf("operator's repositories: %d %s", code, body)
	}
	// The repository's operator may.
	code, body, _ := a.doWith(t, http.MethodPost, "/kgd/v1/repositories/octo/app/jobs/"+good.ID+":rerun", "{}", bearer(appOp))
	if code != 200 || !strings.Contains(body, `"actor":"`+appOp+`"`) {
		t.Errorf("rerun by the repository's operator: %d %s", code, body)
	}
}

func TestJobLog(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", store.Triggers{AutoBuild: true, AutoDeploy: true})
	j := b.claimedJob("octo", "app", "d-1")
	ref := j.JobRef()
	f := event.NewFactory(event.Job{ID: j.ID, Repository: "octo/app", Iteration: j.Iteration}, event.Plan{}, time.Now)
	appendV2 := func(chunk int, events ...*v2pb.Event) {
		t.Helper()
		if err := b.store.AppendEvents(b.ctx, store.EventBatch{Job: ref, Chunk: chunk, V2: events}); err != nil {
			t.Fatal(err)
		}
	}
	appendV2(0, f.V2Task(event.TaskBuild, event.V2InProgress, nil), f.V2Log(event.TaskBuild, "web", 0, "Step 1/2 : FROM scratch"))

	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.httpURL+"/kgd/v1/repositories/octo/app/jobs/"+j.ID+"/log?follow=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var frame struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(sc.Bytes(), &frame); err != nil || frame.Error != nil {
				lines <- "bad frame: " + sc.Text()
				continue
			}
			var l jobspb.LogLine
			if err := protojson.Unmarshal(frame.Result, &l); err != nil {
				lines <- "bad line: " + err.Error()
				continue
			}
			lines <- fmt.Sprintf("%s|%s|%s|%s|%v", l.GetPhase(), l.GetUnit(), l.GetLevel(), l.GetText(), l.GetLast())
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the log ended early")
			}
			return l
		case <-ctx.Done():
			t.Fatal("no log line")
		}
		return ""
	}
	for _, want := range []string{"build||INFO|Build containers in progress|false", "build|web|INFO|Step 1/2 : FROM scratch|false"} {
		if got := next(); got != want {
			t.Errorf("stored line %q, want %q", got, want)
		}
	}
	// Live: another job's batch is not in this log; this job's end ends it.
	other := b.claimedJob("octo", "app", "d-2")
	if err := b.store.AppendEvents(b.ctx, store.EventBatch{Job: other.JobRef(), Chunk: 0, V2: []*v2pb.Event{f.V2Log(event.TaskBuild, "x", 0, "not mine")}}); err != nil {
		t.Fatal(err)
	}
	info := &event.ErrorInfo{Message: "no space left"}
	appendV2(1, f.V2Task(event.TaskBuild, event.V2Failed, info), f.V2Task(event.TaskDevLoop, event.V2Failed, info))
	for _, want := range []string{"build||ERROR|Build containers failed: no space left|false", "devloop||ERROR|Job failed: no space left|true"} {
		if got := next(); got != want {
			t.Errorf("live line %q, want %q", got, want)
		}
	}
	if l, ok := <-lines; ok {
		t.Errorf("the log went on after the job's end: %q", l)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("log answer %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
