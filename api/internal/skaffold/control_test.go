package skaffold_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

var (
	allOn  = store.Triggers{AutoBuild: true, AutoDeploy: true, AutoSync: true}
	sha1st = strings.Repeat("1", 40)
	sha2nd = strings.Repeat("2", 40)
)

// do sends an HTTP request with a JSON body and returns status and body.
func (a *api) do(t *testing.T, method, path, body string) (int, string, http.Header) {
	t.Helper()
	return a.doWith(t, method, path, body, nil)
}

// doWith is do with more request headers (added, not set: a key may
// repeat).
func (a *api) doWith(t *testing.T, method, path, body string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, a.httpURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(b)), resp.Header
}

func TestGetState(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	ctx := b.ctx

	// Nothing at all: the initial state, every trigger on.
	st, err := a.v1.GetState(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetBuildState().GetAutoTrigger() != true || st.GetDeployState().GetStatus() != event.NotStarted ||
		st.GetFileSyncState().GetStatus() != skaffold.SyncNotApplicable {
		t.Errorf("initial v1 state = %v", st)
	}
	// An unknown repository with no history.
	if _, err := a.v1.GetState(scoped(ctx, "octo/nothing"), &emptypb.Empty{}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown repository: %v, want NotFound", err)
	}
	code, body, _ := a.do(t, http.MethodGet, "/v2/state?repository=octo/nothing", "")
	if code != http.StatusNotFound || !strings.Contains(body, `"code":5`) {
		t.Errorf("HTTP unknown repository: %d %s", code, body)
	}

	// A tracked repository without jobs: initial state with its triggers.
	b.track("octo", "app", store.Triggers{AutoBuild: false, AutoDeploy: true, AutoSync: true})
	st, err = a.v1.GetState(scoped(ctx, "octo/app"), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetBuildState().GetAutoTrigger() || !st.GetDeployState().GetAutoTrigger() {
		t.Errorf("tracked, no jobs: %v", st)
	}

	// Stored states: the repository's, and the latest one for all.
	f := event.NewFactory(event.Job{ID: "job-a", Repository: "octo/app", Iteration: 1}, event.Plan{Artifacts: []event.Artifact{{Name: "img"}}}, time.Now)
	s1, s2 := f.NewV1State(event.Triggers{Build: true, Deploy: true}), f.NewV2State(event.Triggers{Build: true, Deploy: true})
	s1.BuildState.Artifacts["img"] = event.Complete
	s2.BuildState.Artifacts["img"] = event.V2Succeeded
	s1.DeployState.Status, s2.DeployState.Status = event.Complete, event.V2Succeeded
	if err := b.store.PutState(ctx, "octo", "app", "job-a", 1, s1, s2); err != nil {
		t.Fatal(err)
	}
	b.track("octo", "other", allOn)
	time.Sleep(5 * time.Millisecond)
	o1 := event.NewFactory(event.Job{ID: "job-b", Repository: "octo/other", Iteration: 1}, event.Plan{}, time.Now)
	if err := b.store.PutState(ctx, "octo", "other", "job-b", 1, o1.NewV1State(event.Triggers{}), o1.NewV2State(event.Triggers{})); err != nil {
		t.Fatal(err)
	}
	st, err = a.v1.GetState(scoped(ctx, "octo/app"), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	// autoTrigger comes from the repository's settings, not the stored state.
	// (Reading the state does not reset it: deploy's trigger is on.)
	if st.GetBuildState().GetArtifacts()["img"] != event.Complete || st.GetBuildState().GetAutoTrigger() ||
		st.GetDeployState().GetStatus() != event.Complete || !st.GetDeployState().GetAutoTrigger() {
		t.Errorf("octo/app v1 state = %v", st)
	}
	v2, err := a.v2.GetState(scoped(ctx, "octo/app"), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if v2.GetBuildState().GetArtifacts()["img"] != event.V2Succeeded || v2.GetDeployState().GetStatus() != event.V2Succeeded ||
		v2.GetFileSyncState().GetStatus() != skaffold.SyncNotApplicableV2 {
		t.Errorf("octo/app v2 state = %v", v2)
	}
	// All repositories: the latest job's (octo/other's), with its triggers.
	code, body, _ = a.do(t, http.MethodGet, "/v1/state", "")
	if code != 200 {
		t.Fatalf("GET /v1/state: %d %s", code, body)
	}
	if object(t, body, "buildState")["autoTrigger"] != true || object(t, body, "metadata", "additional")["job_id"] != "job-b" {
		t.Errorf("GET /v1/state (all) = %s", body)
	}
	if _, ok := object(t, body)["testState"]; !ok {
		t.Errorf("GET /v1/state does not emit unpopulated fields: %s", body)
	}
}

func TestAutoTriggers(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)

	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		contains                 string
	}{
		{"missing", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", `{}`, 400, "missing required boolean parameter 'enabled'"},
		{"unchanged", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", `{"enabled":true}`, 409, "auto build is already set to true"},
		{"off", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", `{"enabled":false}`, 200, "{}"},
		{"off-again", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", `{"enabled":false}`, 409, "already set to false"},
		{"v2-deploy-off", http.MethodPut, "/v2/deploy/auto_execute?repository=octo/app", `{"enabled":false,"unknown":1}`, 200, "{}"},
		{"sync-off-all", http.MethodPut, "/v1/sync/auto_execute", `{"enabled":false}`, 200, "{}"},
		{"untracked", http.MethodPut, "/v1/deploy/auto_execute?repository=octo/none", `{"enabled":false}`, 404, "not tracked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := a.do(t, tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(body, tc.contains) {
				t.Errorf("%s %s %s = %d %s; want %d containing %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.contains)
			}
		})
	}
	r, err := b.store.Repository(b.ctx, "octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	if r.Triggers != (store.Triggers{}) {
		t.Errorf("stored triggers = %+v, want all off", r.Triggers)
	}
	st, err := a.v2.GetState(scoped(b.ctx, "octo/app"), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetBuildState().GetAutoTrigger() || st.GetDeployState().GetAutoTrigger() || st.GetFileSyncState().GetAutoTrigger() {
		t.Errorf("state triggers after switching off: %v", st)
	}
	// gRPC, the same rules.
	_, err = a.v1.AutoDeploy(scoped(b.ctx, "octo/app"), &v1pb.TriggerRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC AutoDeploy without state: %v", err)
	}
}

// TestExecute: a push recorded while auto-build was off waits; Execute
// build queues and publishes it. A build whose deploy waited (auto-deploy
// off) is deployed by Execute deploy, as a deploy-only job.
func TestExecute(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", store.Triggers{AutoBuild: false, AutoDeploy: false, AutoSync: true})
	ctx := b.ctx

	// Nothing pending: accepted, nothing published.
	code, body, hdr := a.do(t, http.MethodPost, "/v1/execute?repository=octo/app", `{"build":true}`)
	if code != 200 || body != "{}" || hdr.Get("Grpc-Metadata-X-Kgd-Jobs") != "" {
		t.Errorf("execute with nothing pending: %d %s %v", code, body, hdr)
	}
	if m, ok := b.received(2 * time.Second); ok {
		t.Errorf("published %+v with nothing pending", m)
	}

	pending, err := b.store.CreateJob(ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha1st, DeliveryID: "d-1", Trigger: "push", Status: store.StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	code, body, hdr = a.do(t, http.MethodPost, "/v1/execute?repository=octo/app", `{"build":true}`)
	if code != 200 || body != "{}" {
		t.Fatalf("execute build: %d %s", code, body)
	}
	if got, want := hdr.Get("Grpc-Metadata-X-Kgd-Jobs"), "octo/app="+pending.ID; got != want {
		t.Errorf("jobs header = %q, want %q", got, want)
	}
	m, ok := b.received(10 * time.Second)
	if !ok || m.JobID != pending.ID || m.SHA != sha1st || m.DeliveryID != "d-1" {
		t.Fatalf("published %+v (ok %t), want job %s", m, ok, pending.ID)
	}
	j, err := b.store.Job(ctx, pending.ID)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != store.StatusQueued || j.PublishedAt.IsZero() {
		t.Errorf("released job: status %s, published %v", j.Status, j.PublishedAt)
	}

	// The runner built it and left the deploy pending.
	if err := b.store.MarkDeployPending(ctx, pending.ID, map[string]string{"api": "localhost:5000/api:1@sha256:" + strings.Repeat("a", 64)}); err != nil {
		t.Fatal(err)
	}
	var header metadata.MD
	if _, err := a.v2.Execute(scoped(ctx, "octo/app"), &v2pb.UserIntentRequest{Intent: &v2pb.Intent{Deploy: true}}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	m, ok = b.received(10 * time.Second)
	if !ok || m.JobID == pending.ID || m.SHA != sha1st || m.Trigger != "execute" {
		t.Fatalf("deploy published %+v (ok %t)", m, ok)
	}
	if got := header.Get(skaffold.JobsHeader); len(got) != 1 || got[0] != "octo/app="+m.JobID {
		t.Errorf("gRPC jobs header = %v", got)
	}
	dj, err := b.store.Job(ctx, m.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if dj.DeployOf != pending.ID || len(dj.Images) != 1 || dj.Iteration != pending.Iteration+1 {
		t.Errorf("deploy job = %+v", dj)
	}
	// Sync: accepted, nothing to do.
	if code, body, _ := a.do(t, http.MethodPost, "/v1/execute?repository=octo/app", `{"sync":true}`); code != 200 || body != "{}" {
		t.Errorf("execute sync: %d %s", code, body)
	}
	// Switching auto-build back on runs the push that waited meanwhile.
	second, err := b.store.CreateJob(ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha2nd, DeliveryID: "d-2", Trigger: "push", Status: store.StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	if code, body, _ := a.do(t, http.MethodPut, "/v1/build/auto_execute?repository=octo/app", `{"enabled":true}`); code != 200 {
		t.Fatalf("auto build on: %d %s", code, body)
	}
	if m, ok := b.received(10 * time.Second); !ok || m.JobID != second.ID {
		t.Errorf("auto build on published %+v (ok %t), want %s", m, ok, second.ID)
	}
	// Scoped to an untracked repository.
	if code, body, _ := a.do(t, http.MethodPost, "/v1/execute?repository=octo/none", `{"build":true}`); code != 404 {
		t.Errorf("execute untracked: %d %s", code, body)
	}
}

func TestHandle(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{handle: true})
	b.track("octo", "app", allOn)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()

	for _, tc := range []struct {
		name, path, body string
		code             int
		contains         string
	}{
		{"no-scope", "/v1/events/handle", `{"devLoopEvent":{"status":"Custom"}}`, 400, "belongs to one repository"},
		{"empty", "/v1/events/handle?repository=octo/app", `{}`, 400, "no event type"},
		{"malformed", "/v1/events/handle?repository=octo/app", `{"devLoopEvent":`, 400, ""},
		{"wrong-type", "/v1/events/handle?repository=octo/app", `{"devLoopEvent":{"iteration":"x"}}`, 400, ""},
		{"too-large", "/v1/events/handle?repository=octo/app", `{"metaEvent":{"entry":"` + strings.Repeat("x", 70<<10) + `"}}`, 400, "limit"},
		{"untracked", "/v1/events/handle?repository=octo/none", `{"devLoopEvent":{"status":"Custom"}}`, 404, ""},
		{"v1", "/v1/events/handle?repository=octo/app", `{"devLoopEvent":{"iteration":7,"status":"Custom"}}`, 200, "{}"},
		{"v2", "/v2/events/handle?repository=octo/app", `{"taskEvent":{"id":"Custom-1","status":"Custom"}}`, 200, "{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := a.do(t, http.MethodPost, tc.path, tc.body)
			if code != tc.code || !strings.Contains(body, tc.contains) {
				t.Errorf("POST %s = %d %s; want %d containing %q", tc.path, code, body, tc.code, tc.contains)
			}
		})
	}
	// Exactly the two accepted events were recorded, each in its version
	// and marked as handled (v2: by a log line right before it).
	s := a.openStream(t, ctx, "/v1/events?repository=octo/app")
	f, line := s.next(t)
	if !strings.Contains(string(f.Result), `"status":"Custom"`) || !strings.Contains(string(f.Result), `"iteration":7`) || !strings.Contains(string(f.Result), `"timestamp":"20`) ||
		!strings.Contains(string(f.Result), `"entry":"[handle by local] event injected through Handle`) {
		t.Errorf("handled v1 event = %s", line)
	}
	s2 := a.openStream(t, ctx, "/v2/events?repository=octo/app")
	if _, line := s2.next(t); !strings.Contains(line, `"message":"[handle by local] event injected through Handle`) || !strings.Contains(line, `"task_id":"Custom-1"`) {
		t.Errorf("mark of the handled v2 event = %s", line)
	}
	f, line = s2.next(t)
	if !strings.Contains(string(f.Result), `"id":"Custom-1"`) {
		t.Errorf("handled v2 event = %s", line)
	}
	// With a recorded state, a handled event updates it, as in Skaffold.
	f0 := event.NewFactory(event.Job{ID: "job-a", Repository: "octo/app", Iteration: 1}, event.Plan{}, time.Now)
	if err := b.store.PutState(b.ctx, "octo", "app", "job-a", 1, f0.NewV1State(event.Triggers{}), f0.NewV2State(event.Triggers{})); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := a.do(t, http.MethodPost, "/v1/events/handle?repository=octo/app", `{"deployEvent":{"status":"Custom"}}`); code != 200 {
		t.Fatalf("handle deploy event: %d %s", code, body)
	}
	if code, body, _ := a.do(t, http.MethodPost, "/v2/events/handle?repository=octo/app", `{"deploySubtaskEvent":{"id":"0","status":"Custom2"}}`); code != 200 {
		t.Fatalf("handle v2 deploy event: %d %s", code, body)
	}
	st, err := a.v1.GetState(scoped(ctx, "octo/app"), &emptypb.Empty{})
	if err != nil || st.GetDeployState().GetStatus() != "Custom" {
		t.Errorf("v1 state after a handled deploy event: %v %v", st.GetDeployState(), err)
	}
	st2, err := a.v2.GetState(scoped(ctx, "octo/app"), &emptypb.Empty{})
	if err != nil || st2.GetDeployState().GetStatus() != "Custom2" {
		t.Errorf("v2 state after a handled deploy event: %v %v", st2.GetDeployState(), err)
	}
	// The handled deploy events are streamed too, each in its version.
	if _, line := s.next(t); !strings.Contains(line, `"deployEvent":{"status":"Custom"`) {
		t.Errorf("v1 stream after the handled deploy event: %s", line)
	}
	if _, line := s2.next(t); !strings.Contains(line, `"message":"[handle by local]`) {
		t.Errorf("v2 stream before the handled deploy event: %s", line)
	}
	if _, line := s2.next(t); !strings.Contains(line, `"status":"Custom2"`) {
		t.Errorf("v2 stream after the handled deploy event: %s", line)
	}
	b.append(jobA, 0, "after")
	if got := s.entries(t, 1); got[0] != "after" {
		t.Errorf("after the handled v1 event came %q, want only the appended one", got[0])
	}
	if f, line := s2.next(t); !strings.Contains(string(f.Result), `"message":"after"`) {
		t.Errorf("after the handled v2 event came %s", line)
	}
}

// TestApplicationLogs: the stream is open and empty until the client
// leaves.
func TestApplicationLogs(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	ctx, cancel := context.WithTimeout(b.ctx, 500*time.Millisecond)
	defer cancel()
	s, err := a.v2.ApplicationLogs(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := s.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("application logs: %v %v, want nothing until the deadline", e, err)
	}
}
