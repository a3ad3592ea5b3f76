package skaffold_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Identities of the access tests.
const (
	viewer   = "viewer@example.com" // an api_invoker, operator of nothing
	globalOp = "ops@example.com"    // in KGD_OPERATORS
	appOp    = "alice@example.com"  // in octo/app's policy only
)

// idToken is the Authorization value of a Google identity token for
// email, as Cloud Run hands a verified one on (the API does not check the
// signature: IAM did).
func idToken(email string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return "Bearer " + enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc([]byte(fmt.Sprintf(`{"email":%q,"email_verified":true,"exp":%d}`, email, time.Now().Add(time.Hour).Unix()))) + "." + enc([]byte("sig"))
}

// as calls over gRPC as email.
func as(ctx context.Context, email string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, skaffold.AuthorizationKey, idToken(email))
}

// bearer is the HTTP header of email's token.
func bearer(email string) http.Header { return http.Header{"Authorization": {idToken(email)}} }

// trackWithOperators tracks owner/name with a policy naming operators.
func (b *backend) trackWithOperators(owner, name string, trig store.Triggers, operators ...string) {
	b.t.Helper()
	p := store.DefaultPolicy(owner, name)
	p.Operators = operators
	err := b.store.TrackRepository(b.ctx, store.Repository{Owner: owner, Name: name, HookID: 1, WebhookSecret: []byte("s"), TrackedBy: "octocat", Triggers: trig, Policy: p})
	if err != nil {
		b.t.Fatal(err)
	}
}

// snapshot describes what a steering call could change: the repositories'
// triggers, their jobs' statuses and the number of stored event batches.
func (b *backend) snapshot(repos ...string) string {
	b.t.Helper()
	var out []string
	for _, full := range repos {
		owner, name, _ := strings.Cut(full, "/")
		r, err := b.store.Repository(b.ctx, owner, name)
		if err != nil {
			b.t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %+v", full, r.Triggers))
		jobs, err := b.store.Jobs(b.ctx, owner, name, 50)
		if err != nil {
			b.t.Fatal(err)
		}
		for _, j := range jobs {
			out = append(out, fmt.Sprintf("  job %s %s published=%t", j.ID, j.Status, !j.PublishedAt.IsZero()))
		}
	}
	docs, err := b.fs.Collection(store.EventsCollection).Documents(b.ctx).GetAll()
	if err != nil {
		b.t.Fatal(err)
	}
	out = append(out, fmt.Sprintf("event batches: %d", len(docs)))
	return strings.Join(out, "\n")
}

// steeringCall is one steering call, over gRPC and over HTTP.
type steeringCall struct {
	name               string
	grpc               func(a *api, ctx context.Context) error
	method, path, body string
}

func steeringCalls(repo string) []steeringCall {
	off := false
	return []steeringCall{
		{"execute-build", func(a *api, ctx context.Context) error {
			_, err := a.v1.Execute(scoped(ctx, repo), &v1pb.UserIntentRequest{Intent: &v1pb.Intent{Build: true}})
			return err
		}, http.MethodPost, "/v1/execute?repository=" + repo, `{"build":true}`},
		{"execute-v2-sync", func(a *api, ctx context.Context) error {
			_, err := a.v2.Execute(scoped(ctx, repo), &v2pb.UserIntentRequest{Intent: &v2pb.Intent{Sync: true}})
			return err
		}, http.MethodPost, "/v2/execute?repository=" + repo, `{"sync":true}`},
		{"auto-build-off", func(a *api, ctx context.Context) error {
			_, err := a.v1.AutoBuild(scoped(ctx, repo), &v1pb.TriggerRequest{State: &v1pb.TriggerState{Val: &v1pb.TriggerState_Enabled{Enabled: off}}})
			return err
		}, http.MethodPut, "/v1/build/auto_execute?repository=" + repo, `{"enabled":false}`},
		{"auto-deploy-off-v2", func(a *api, ctx context.Context) error {
			_, err := a.v2.AutoDeploy(scoped(ctx, repo), &v2pb.TriggerRequest{State: &v2pb.TriggerState{Val: &v2pb.TriggerState_Enabled{Enabled: off}}})
			return err
		}, http.MethodPut, "/v2/deploy/auto_execute?repository=" + repo, `{"enabled":false}`},
		{"handle-v1", func(a *api, ctx context.Context) error {
			_, err := a.v1.Handle(scoped(ctx, repo), &v1pb.Event{EventType: &v1pb.Event_DevLoopEvent{DevLoopEvent: &v1pb.DevLoopEvent{Status: "Custom"}}})
			return err
		}, http.MethodPost, "/v1/events/handle?repository=" + repo, `{"devLoopEvent":{"status":"Custom"}}`},
		{"handle-v2", func(a *api, ctx context.Context) error {
			_, err := a.v2.Handle(scoped(ctx, repo), &v2pb.Event{EventType: &v2pb.Event_TaskEvent{TaskEvent: &v2pb.TaskEvent{Id: "Custom-1", Status: "Custom"}}})
			return err
		}, http.MethodPost, "/v2/events/handle?repository=" + repo, `{"taskEvent":{"id":"Custom-1","status":"Custom"}}`},
	}
}

// TestViewersCannotSteer: an identity IAM let through that operates
// nothing may read but not steer, over gRPC and HTTP; a refused call
// changes nothing.
func TestViewersCannotSteer(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{auth: caller.ModeIAM, operators: []string{"Ops@Example.com"}, handle: true})
	b.trackWithOperators("octo", "app", store.Triggers{AutoBuild: false, AutoDeploy: true, AutoSync: true}, appOp)
	if _, err := b.store.CreateJob(b.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha1st, DeliveryID: "d-1", Trigger: "push", Status: store.StatusPending}); err != nil {
		t.Fatal(err)
	}
	b.append(store.JobRef{ID: "job-a", Owner: "octo", Name: "app", Iteration: 1}, 0, "built")
	before := b.snapshot("octo/app")

	for _, c := range steeringCalls("octo/app") {
		t.Run(c.name, func(t *testing.T) {
			err := c.grpc(a, as(b.ctx, viewer))
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), viewer) || !strings.Contains(err.Error(), "octo/app") {
				t.Errorf("gRPC %s by a viewer: %v, want PermissionDenied naming %s and octo/app", c.name, err, viewer)
			}
			code, body, _ := a.doWith(t, c.method, c.path, c.body, bearer(viewer))
			if code != http.StatusForbidden || !strings.Contains(body, `"code":7`) || !strings.Contains(body, viewer) {
				t.Errorf("HTTP %s %s by a viewer: %d %s, want 403", c.method, c.path, code, body)
			}
		})
	}
	if after := b.snapshot("octo/app"); after != before {
		t.Errorf("refused calls changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Reading is for every caller IAM let through.
	if st, err := a.v1.GetState(as(scoped(b.ctx, "octo/app"), viewer), &emptypb.Empty{}); err != nil || st.GetBuildState().GetAutoTrigger() {
		t.Errorf("viewer GetState: %v %v", st.GetBuildState(), err)
	}
	if code, body, _ := a.doWith(t, http.MethodGet, "/v2/state?repository=octo/app", "", bearer(viewer)); code != 200 {
		t.Errorf("viewer GET /v2/state: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(as(scoped(b.ctx, "octo/app"), viewer), 10*time.Second)
	defer cancel()
	ev, err := a.v1.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := ev.Recv(); err != nil || e.GetEntry() != "built" {
		t.Errorf("viewer Events: %v %v", e, err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.httpURL+"/v1/events?repository=octo/app", nil)
	req.Header.Set("Authorization", idToken(viewer))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &httpStream{resp: resp, r: newReader(resp)}
	defer resp.Body.Close()
	if got := s.entries(t, 1); resp.StatusCode != 200 || got[0] != "built" {
		t.Errorf("viewer GET /v1/events: %d %q", resp.StatusCode, got)
	}
	als, err := a.v2.ApplicationLogs(as(b.ctx, viewer), &emptypb.Empty{})
	if err == nil {
		_, err = als.Header()
	}
	if err != nil {
		t.Errorf("viewer ApplicationLogs: %v", err)
	}
}

// TestNoIdentity: in IAM mode a call without a usable identity token is
// Unauthenticated (401), reading included; a Grpc-Metadata-* header
// cannot supply or replace the token; X-Serverless-Authorization, which
// IAM checks first, wins over Authorization.
func TestNoIdentity(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{auth: caller.ModeIAM, operators: []string{globalOp}})
	b.track("octo", "app", allOn)
	before := b.snapshot("octo/app")

	if _, err := a.v1.GetState(b.ctx, &emptypb.Empty{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC GetState without a token: %v, want Unauthenticated", err)
	}
	if _, err := a.v2.AutoBuild(scoped(b.ctx, "octo/app"), &v2pb.TriggerRequest{State: &v2pb.TriggerState{Val: &v2pb.TriggerState_Enabled{}}}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC AutoBuild without a token: %v, want Unauthenticated", err)
	}
	s, err := a.v2.Events(b.ctx, &emptypb.Empty{})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC Events without a token: %v, want Unauthenticated", err)
	}
	expired := "Bearer " + base64.RawURLEncoding.EncodeToString([]byte(`{}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"email":"ops@example.com","email_verified":true,"exp":1000}`)) + ".s"
	put := `{"enabled":false}`
	for _, tc := range []struct {
		name, method, path, body string
		header                   http.Header
		code                     int
	}{
		{"state", http.MethodGet, "/v1/state", "", nil, 401},
		{"events", http.MethodGet, "/v2/events", "", nil, 401},
		{"auto", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", put, nil, 401},
		{"expired", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", put, http.Header{"Authorization": {expired}}, 401},
		{"basic", http.MethodGet, "/v1/state", "", http.Header{"Authorization": {"Basic b3BzOng="}}, 401},
		{"metadata-header-only", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", put, http.Header{"Grpc-Metadata-Authorization": {idToken(globalOp)}}, 401},
		{"metadata-header-beside-viewer", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", put,
			http.Header{"Authorization": {idToken(viewer)}, "Grpc-Metadata-Authorization": {idToken(globalOp)}, "Grpc-Metadata-X-Serverless-Authorization": {idToken(globalOp)}}, 403},
		{"two-tokens", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", put, http.Header{"Authorization": {idToken(viewer), idToken(globalOp)}}, 401},
		{"serverless-wins", http.MethodPut, "/v1/build/auto_execute?repository=octo/app", put,
			http.Header{"Authorization": {idToken(globalOp)}, "X-Serverless-Authorization": {idToken(viewer)}}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := a.doWith(t, tc.method, tc.path, tc.body, tc.header)
			if code != tc.code {
				t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.code)
			}
		})
	}
	if after := b.snapshot("octo/app"); after != before {
		t.Errorf("refused calls changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The operator's own token, through X-Serverless-Authorization.
	code, body, _ := a.doWith(t, http.MethodPut, "/v1/build/auto_execute?repository=octo/app", put,
		http.Header{"Authorization": {"Bearer app-token"}, "X-Serverless-Authorization": {idToken(globalOp)}})
	if code != 200 {
		t.Errorf("operator through X-Serverless-Authorization: %d %s", code, body)
	}
}

// TestOperatorsSteer: a global operator steers every repository, a
// repository's operator only that one.
func TestOperatorsSteer(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{auth: caller.ModeIAM, operators: []string{"Ops@Example.com"}, handle: true})
	b.trackWithOperators("octo", "app", store.Triggers{AutoBuild: false, AutoDeploy: true, AutoSync: true}, "Alice@Example.com")
	b.track("octo", "other", allOn)
	pending, err := b.store.CreateJob(b.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha1st, DeliveryID: "d-1", Trigger: "push", Status: store.StatusPending})
	if err != nil {
		t.Fatal(err)
	}

	// octo/app's operator: every call on octo/app, over gRPC and HTTP.
	for _, c := range steeringCalls("octo/app") {
		if err := c.grpc(a, as(b.ctx, appOp)); err != nil && status.Code(err) != codes.AlreadyExists {
			t.Errorf("gRPC %s by octo/app's operator: %v", c.name, err)
		}
	}
	j, err := b.store.Job(b.ctx, pending.ID)
	if err != nil || j.Status != store.StatusQueued {
		t.Errorf("after Execute build by octo/app's operator the pending job is %v (%v), want queued", j.Status, err)
	}
	r, err := b.store.Repository(b.ctx, "octo", "app")
	if err != nil || r.Triggers.AutoBuild || r.Triggers.AutoDeploy {
		t.Errorf("octo/app triggers after its operator switched them off: %+v %v", r.Triggers, err)
	}
	if code, body, _ := a.doWith(t, http.MethodPut, "/v1/deploy/auto_execute?repository=octo/app", `{"enabled":true}`, bearer(appOp)); code != 200 {
		t.Errorf("HTTP auto deploy on by octo/app's operator: %d %s", code, body)
	}
	// ... but not octo/other.
	before := b.snapshot("octo/other")
	if code, body, _ := a.doWith(t, http.MethodPut, "/v1/build/auto_execute?repository=octo/other", `{"enabled":false}`, bearer(appOp)); code != 403 || !strings.Contains(body, "octo/other") {
		t.Errorf("HTTP auto build off of octo/other by octo/app's operator: %d %s, want 403", code, body)
	}
	if after := b.snapshot("octo/other"); after != before {
		t.Errorf("refused call changed octo/other:\n%s\n%s", before, after)
	}

	// The global operator: octo/other, over HTTP and gRPC.
	for _, c := range steeringCalls("octo/other") {
		code, body, _ := a.doWith(t, c.method, c.path, c.body, bearer(globalOp))
		if code != 200 && code != 409 {
			t.Errorf("HTTP %s %s by the global operator: %d %s", c.method, c.path, code, body)
		}
	}
	if _, err := a.v1.AutoSync(as(scoped(b.ctx, "octo/other"), globalOp), &v1pb.TriggerRequest{State: &v1pb.TriggerState{Val: &v1pb.TriggerState_Enabled{Enabled: false}}}); err != nil {
		t.Errorf("gRPC AutoSync off by the global operator: %v", err)
	}
	r, err = b.store.Repository(b.ctx, "octo", "other")
	if err != nil || r.Triggers != (store.Triggers{}) {
		t.Errorf("octo/other triggers after the global operator switched them off: %+v %v", r.Triggers, err)
	}
}

// TestUnscopedNeedsEveryRepository: a control call over all repositories
// needs an operator of each; otherwise nothing changes anywhere.
func TestUnscopedNeedsEveryRepository(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{auth: caller.ModeIAM, operators: []string{globalOp}})
	b.trackWithOperators("octo", "app", allOn, appOp)
	b.track("octo", "other", allOn)
	before := b.snapshot("octo/app", "octo/other")

	_, err := a.v1.AutoDeploy(as(b.ctx, appOp), &v1pb.TriggerRequest{State: &v1pb.TriggerState{Val: &v1pb.TriggerState_Enabled{Enabled: false}}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "octo/other") || !strings.Contains(err.Error(), "all repositories") {
		t.Errorf("unscoped AutoDeploy by octo/app's operator: %v, want PermissionDenied naming octo/other", err)
	}
	code, body, _ := a.doWith(t, http.MethodPut, "/v2/deploy/auto_execute", `{"enabled":false}`, bearer(appOp))
	if code != 403 || !strings.Contains(body, "octo/other") {
		t.Errorf("HTTP unscoped auto deploy by octo/app's operator: %d %s", code, body)
	}
	code, body, _ = a.doWith(t, http.MethodPost, "/v1/execute", `{"build":true,"deploy":true}`, bearer(appOp))
	if code != 403 {
		t.Errorf("HTTP unscoped execute by octo/app's operator: %d %s", code, body)
	}
	if after := b.snapshot("octo/app", "octo/other"); after != before {
		t.Errorf("refused unscoped calls changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Operator of both (the global one): both change.
	if _, err := a.v1.AutoDeploy(as(b.ctx, globalOp), &v1pb.TriggerRequest{State: &v1pb.TriggerState{Val: &v1pb.TriggerState_Enabled{Enabled: false}}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app", "other"} {
		if r, err := b.store.Repository(b.ctx, "octo", name); err != nil || r.Triggers.AutoDeploy {
			t.Errorf("octo/%s after the global operator's unscoped AutoDeploy(false): %+v %v", name, r.Triggers, err)
		}
	}
}

// TestHandleDisabled: Handle is off by default, for everyone.
func TestHandleDisabled(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)
	before := b.snapshot("octo/app")
	_, err := a.v2.Handle(scoped(b.ctx, "octo/app"), &v2pb.Event{EventType: &v2pb.Event_TaskEvent{TaskEvent: &v2pb.TaskEvent{Id: "X-1"}}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "Handle is disabled") {
		t.Errorf("gRPC Handle: %v, want FailedPrecondition", err)
	}
	code, body, _ := a.do(t, http.MethodPost, "/v1/events/handle?repository=octo/app", `{"devLoopEvent":{"status":"Custom"}}`)
	if code != 400 || !strings.Contains(body, "Handle is disabled") || !strings.Contains(body, `"code":9`) {
		t.Errorf("HTTP Handle: %d %s, want 400 FAILED_PRECONDITION", code, body)
	}
	if after := b.snapshot("octo/app"); after != before {
		t.Errorf("disabled Handle changed the store:\n%s\n%s", before, after)
	}
}

// TestHandleMarked: an event injected through Handle says so on the
// stream, in a way unmodified Skaffold clients read: v1 in the entry
// text, v2 as a WARN SkaffoldLogEvent of the same task right before it.
func TestHandleMarked(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{auth: caller.ModeIAM, handle: true})
	b.trackWithOperators("octo", "app", allOn, appOp)
	ctx, cancel := context.WithTimeout(as(scoped(b.ctx, "octo/app"), viewer), 20*time.Second)
	defer cancel()

	if _, err := a.v1.Handle(as(scoped(b.ctx, "octo/app"), appOp), &v1pb.Event{EventType: &v1pb.Event_DeployEvent{DeployEvent: &v1pb.DeployEvent{Status: "Complete"}}}); err != nil {
		t.Fatal(err)
	}
	code, body, _ := a.doWith(t, http.MethodPost, "/v2/events/handle?repository=octo/app",
		`{"buildSubtaskEvent":{"id":"img","task_id":"Build-3","artifact":"img","step":"Build","status":"Succeeded"}}`, bearer(appOp))
	if code != 200 {
		t.Fatalf("HTTP v2 Handle: %d %s", code, body)
	}
	mark := "[handle by alice@example.com] event injected through Handle, not emitted by a runner"

	v1s, err := a.v1.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := v1s.Recv()
	if err != nil || e.GetEntry() != mark || e.GetEvent().GetDeployEvent().GetStatus() != "Complete" {
		t.Errorf("v1 handled event: %v %v", e, err)
	}
	v2s, err := a.v2.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := v2s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	l := m.GetSkaffoldLogEvent()
	if l.GetMessage() != mark || l.GetLevel() != enumspb.LogLevel_WARN || l.GetTaskId() != "Build-3" || l.GetSubtaskId() != "-1" {
		t.Errorf("v2 mark: %v", m)
	}
	ev, err := v2s.Recv()
	if err != nil || ev.GetBuildSubtaskEvent().GetStatus() != "Succeeded" || !ev.GetTimestamp().AsTime().Equal(m.GetTimestamp().AsTime()) {
		t.Errorf("v2 handled event after its mark: %v %v", ev, err)
	}
	// Over HTTP, the same.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.httpURL+"/v2/events?repository=octo/app", nil)
	req.Header.Set("Authorization", idToken(viewer))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s := &httpStream{resp: resp, r: newReader(resp)}
	if _, line := s.next(t); !strings.Contains(line, `"message":"`+mark+`"`) || !strings.Contains(line, `"level":"WARN"`) {
		t.Errorf("HTTP v2 mark: %s", line)
	}
	if _, line := s.next(t); !strings.Contains(line, `"buildSubtaskEvent"`) {
		t.Errorf("HTTP v2 handled event: %s", line)
	}
}
