package githubstatus_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/githubstatus"
)

// env is a GitHub stand-in with one public repository and a token of its
// admin.
type env struct {
	gh    *githubstandin.Server
	token string
	owner string
	name  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	gh, err := githubstandin.New(githubstandin.Config{ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := gh.Start(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	if _, _, err := gh.CreateRepo("acme", "web", "acme", false); err != nil {
		t.Fatal(err)
	}
	return &env{gh: gh, token: gh.Token("acme"), owner: "acme", name: "web"}
}

// client is a go-github client of the stand-in; token "" reads
// anonymously, as anyone may read a public repository's statuses.
func (e *env) client(token string) *github.Client {
	c := github.NewClient(nil)
	if token != "" {
		c = c.WithAuthToken(token)
	}
	u, _ := url.Parse(e.gh.APIURL)
	c.BaseURL = u
	return c
}

// reporter returns a Reporter of the stand-in with short pauses, and
// starts it; the test ends it.
func (e *env) reporter(t *testing.T, start bool) *githubstatus.Reporter {
	t.Helper()
	r := githubstatus.New(githubstatus.Config{
		MinGap: time.Millisecond, SecondaryWait: 50 * time.Millisecond,
		JobURL: func(j githubstatus.Job) string {
			return githubstatus.JobLink(&url.URL{Scheme: "http", Host: "api.example"}, j)
		},
	}, e.client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if start {
		e.run(t, r)
	}
	return r
}

func (e *env) run(t *testing.T, r *githubstatus.Reporter) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// idle waits until r has sent everything (or given it up).
func idle(t *testing.T, r *githubstatus.Reporter) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !r.Idle() {
		if time.Now().After(deadline) {
			t.Fatal("the reporter still has updates to send after a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) job(id, sha string) githubstatus.Job {
	return githubstatus.Job{ID: id, Owner: e.owner, Name: e.name, SHA: sha, Token: e.token}
}

// status is a commit status as GitHub lists it.
type status struct{ State, Description, Context, Link string }

// statuses reads sha's statuses through GitHub's route, oldest first.
func (e *env) statuses(t *testing.T, sha string) []status {
	t.Helper()
	list, _, err := e.client("").Repositories.ListStatuses(context.Background(), e.owner, e.name, sha, &github.ListOptions{PerPage: 100})
	if err != nil {
		t.Fatalf("list statuses: %v", err)
	}
	var out []status
	for _, s := range slices.Backward(list) {
		out = append(out, status{s.GetState(), s.GetDescription(), s.GetContext(), s.GetTargetURL()})
	}
	return out
}

// deployment is a Deployment as GitHub lists it, with its statuses'
// states oldest first.
type deployment struct {
	ID             int64
	SHA, Task, Env string
	States         []string
}

func (e *env) deployments(t *testing.T) []deployment {
	t.Helper()
	ctx := context.Background()
	c := e.client("")
	list, _, err := c.Repositories.ListDeployments(ctx, e.owner, e.name, &github.DeploymentsListOptions{ListOptions: github.ListOptions{PerPage: 100}})
	if err != nil {
		t.Fatalf("list deployments: %v", err)
	}
	var out []deployment
	for _, d := range slices.Backward(list) {
		sts, _, err := c.Repositories.ListDeploymentStatuses(ctx, e.owner, e.name, d.GetID(), &github.ListOptions{PerPage: 100})
		if err != nil {
			t.Fatalf("list statuses of deployment %d: %v", d.GetID(), err)
		}
		dep := deployment{ID: d.GetID(), SHA: d.GetSHA(), Task: d.GetTask(), Env: d.GetEnvironment()}
		for _, s := range slices.Backward(sts) {
			dep.States = append(dep.States, s.GetState())
		}
		out = append(out, dep)
	}
	return out
}

// outage starts (code != 0) or ends an outage of GitHub's API through the
// stand-in's admin route.
func (e *env) outage(t *testing.T, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, e.gh.URL+"_standin/api-outage", bytes.NewReader([]byte(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /_standin/api-outage %s = %d %s", body, resp.StatusCode, b)
	}
}

const (
	sha1 = "1111111111111111111111111111111111111111"
	sha2 = "2222222222222222222222222222222222222222"
	sha3 = "3333333333333333333333333333333333333333"
)

func link(job string) string {
	return "http://api.example/kgd/v1/export?job=" + job + "&repository=acme%2Fweb"
}

// TestReport follows jobs from start to end: a success, the next push's
// success (which makes the first deployment inactive), a failed build, a
// superseded push.
func TestReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.reporter(t, true)

	// A push that deploys two units. Each step is sent before the next
	// (idle): otherwise the later one replaces it (TestFinalWins).
	j1 := e.job("job-1", sha1)
	r.Pending(j1, "Building and deploying 1111111 (job job-1)")
	idle(t, r)
	r.Deploying(j1, "web", "acme-web")
	r.Deploying(j1, "worker", "acme-web")
	r.Deploying(j1, "web", "acme-web") // told twice: one deployment
	idle(t, r)
	r.Finished(j1, githubstatus.Success, "Built, deployed and rolled out: web, worker")
	idle(t, r)
	want1 := []status{
		{"pending", "Building and deploying 1111111 (job job-1)", "kube-git-deploy", link("job-1")},
		{"success", "Built, deployed and rolled out: web, worker", "kube-git-deploy", link("job-1")},
	}
	if diff := cmp.Diff(want1, e.statuses(t, sha1)); diff != "" {
		t.Errorf("statuses of the first push (-want +got):\n%s", diff)
	}

	// The next push of web succeeds: the first web deployment is replaced.
	j2 := e.job("job-2", sha2)
	r.Pending(j2, "Building and deploying 2222222 (job job-2)")
	r.Deploying(j2, "web", "acme-web")
	idle(t, r)
	r.Finished(j2, githubstatus.Success, "Built, deployed and rolled out: web")
	idle(t, r)

	// A failed build: no deployment, a failure with the reason.
	j3 := e.job("job-3", sha3)
	r.Pending(j3, "Building and deploying 3333333 (job job-3)")
	idle(t, r)
	r.Finished(j3, githubstatus.Failure, "unit web: docker build failed: RUN make: exit code 2\nmore output")
	idle(t, r)
	if diff := cmp.Diff([]status{
		{"pending", "Building and deploying 3333333 (job job-3)", "kube-git-deploy", link("job-3")},
		{"failure", "unit web: docker build failed: RUN make: exit code 2", "kube-git-deploy", link("job-3")},
	}, e.statuses(t, sha3)); diff != "" {
		t.Errorf("statuses of the failed build (-want +got):\n%s", diff)
	}

	got := e.deployments(t)
	want := []deployment{
		{SHA: sha1, Task: "deploy:web", Env: "acme-web", States: []string{"in_progress", "success", "inactive"}},
		{SHA: sha1, Task: "deploy:worker", Env: "acme-web", States: []string{"in_progress", "success"}},
		{SHA: sha2, Task: "deploy:web", Env: "acme-web", States: []string{"in_progress", "success"}},
	}
	if diff := cmp.Diff(want, got, cmpIgnoreID); diff != "" {
		t.Errorf("deployments (-want +got):\n%s", diff)
	}

	// A superseded push: its final state comes without a pending.
	t.Run("superseded", func(t *testing.T) {
		sha := strings.Repeat("4", 40)
		r.Finished(e.job("job-4", sha), githubstatus.Error, "Not deployed: superseded by job job-5, a newer push to refs/heads/main")
		idle(t, r)
		if diff := cmp.Diff([]status{
			{"error", "Not deployed: superseded by job job-5, a newer push to refs/heads/main", "kube-git-deploy", link("job-4")},
		}, e.statuses(t, sha)); diff != "" {
			t.Errorf("statuses (-want +got):\n%s", diff)
		}
	})
}

var cmpIgnoreID = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".ID" }, cmp.Ignore())

// TestFinalWins gives the reporter a job's whole life before it sends
// anything: only the final state is posted, and the deployment goes
// straight to its end.
func TestFinalWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.reporter(t, false)
	j := e.job("job-1", sha1)
	r.Pending(j, "Building")
	r.Deploying(j, "web", "acme-web")
	r.Finished(j, githubstatus.Failure, "rollout of deployment/web failed")
	r.Pending(j, "Building") // late: ignored
	e.run(t, r)
	idle(t, r)
	if diff := cmp.Diff([]status{{"failure", "rollout of deployment/web failed", "kube-git-deploy", link("job-1")}}, e.statuses(t, sha1)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]deployment{{SHA: sha1, Task: "deploy:web", Env: "acme-web", States: []string{"failure"}}}, e.deployments(t), cmpIgnoreID); diff != "" {
		t.Errorf("deployments (-want +got):\n%s", diff)
	}
}

// TestInterrupted: a runner stopping hands a job back mid-deploy; the
// deployment it started ends as an error, the commit status stays
// pending for the run that continues the job.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.reporter(t, true)
	j := e.job("job-1", sha1)
	r.Pending(j, "Building")
	r.Deploying(j, "web", "acme-web")
	idle(t, r)
	r.Interrupted(j, "Runner shutting down: the job goes back to the queue and runs again")
	idle(t, r)
	if got := e.statuses(t, sha1); len(got) != 1 || got[0].State != "pending" {
		t.Errorf("statuses = %v, want the pending one only", got)
	}
	if diff := cmp.Diff([]deployment{{SHA: sha1, Task: "deploy:web", Env: "acme-web", States: []string{"in_progress", "error"}}}, e.deployments(t), cmpIgnoreID); diff != "" {
		t.Errorf("deployments (-want +got):\n%s", diff)
	}
}

// TestAbandoned: a runner posts a job's pending status and starts its
// deployment, and dies; the runner that takes the job over ends both as
// errors, though it never knew the deployment, and leaves another job's
// deployment of the same commit alone.
func TestAbandoned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dead := e.reporter(t, true)
	j := e.job("job-1", sha1)
	dead.Pending(j, "Building")
	dead.Deploying(j, "web", "acme-web")
	dead.Deploying(j, "worker", "acme-web")
	other := e.job("job-2", sha1) // a rerun of the same commit, still running
	dead.Deploying(other, "web", "acme-web")
	idle(t, dead)

	next := e.reporter(t, true)
	next.Abandoned(j, "the runner working on this job stopped (attempt 1); the job was not finished")
	idle(t, next)
	if got := e.statuses(t, sha1); len(got) == 0 || got[len(got)-1].State != "error" ||
		got[len(got)-1].Description != "the runner working on this job stopped (attempt 1); the job was not finished" {
		t.Errorf("statuses = %v, want the last an error naming the takeover", got)
	}
	want := []deployment{
		{SHA: sha1, Task: "deploy:web", Env: "acme-web", States: []string{"in_progress", "error"}},
		{SHA: sha1, Task: "deploy:worker", Env: "acme-web", States: []string{"in_progress", "error"}},
		{SHA: sha1, Task: "deploy:web", Env: "acme-web", States: []string{"in_progress"}},
	}
	if diff := cmp.Diff(want, e.deployments(t), cmpIgnoreID); diff != "" {
		t.Errorf("deployments (-want +got):\n%s", diff)
	}
}

// TestOutage has GitHub refuse requests for a while: the reporter's
// methods still return at once, and everything arrives once GitHub
// answers again, in order.
func TestOutage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, outage string }{
		{"secondary-limit-403", `{"status_code":403,"retry_after":1,"requests":3}`},
		{"rate-limit-429", `{"status_code":429,"retry_after":1,"requests":2}`},
		{"bad-gateway-502", `{"status_code":502,"requests":2}`},
		{"unavailable-503", `{"status_code":503,"requests":1}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.outage(t, tt.outage)
			r := e.reporter(t, true)
			j := e.job("job-1", sha1)
			r.Pending(j, "Building")
			r.Deploying(j, "web", "acme-web")
			r.Finished(j, githubstatus.Success, "Deployed")
			idle(t, r)
			got := e.statuses(t, sha1)
			if n := len(got); n == 0 || got[n-1].State != "success" {
				t.Errorf("statuses after the outage = %v, want the last success", got)
			}
			if diff := cmp.Diff([]deployment{{SHA: sha1, Task: "deploy:web", Env: "acme-web", States: []string{"success"}}},
				e.deployments(t), cmpIgnoreID, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".States" }, cmp.Comparer(endsSuccess))); diff != "" {
				t.Errorf("deployments (-want +got):\n%s", diff)
			}
			refused := 0
			for _, req := range e.gh.APIRequests() {
				if req.StatusCode >= 400 {
					refused++
				}
			}
			if refused == 0 {
				t.Errorf("the stand-in refused no request; the outage %s did not happen", tt.outage)
			}
		})
	}
}

func endsSuccess(a, b []string) bool {
	last := func(s []string) string {
		if len(s) == 0 {
			return ""
		}
		return s[len(s)-1]
	}
	return last(a) == last(b)
}

// TestRefused drops what GitHub refuses for good (a repository the token
// cannot see) instead of retrying it forever.
func TestRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.reporter(t, true)
	j := githubstatus.Job{ID: "job-1", Owner: "acme", Name: "gone", SHA: sha1, Token: e.token}
	r.Pending(j, "Building")
	r.Finished(j, githubstatus.Success, "Deployed")
	idle(t, r)
	ok := e.job("job-2", sha2)
	r.Finished(ok, githubstatus.Success, "Deployed")
	idle(t, r)
	if got := e.statuses(t, sha2); len(got) != 1 {
		t.Errorf("statuses of the next job = %v, want its success", got)
	}
}

// TestClose sends what is left at shutdown, and gives up when GitHub does
// not answer before the deadline.
func TestClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.reporter(t, false)
	r.Finished(e.job("job-1", sha1), githubstatus.Success, "Deployed")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if n := r.Close(ctx); n != 0 {
		t.Errorf("Close left %d jobs unsent, want 0", n)
	}
	if got := e.statuses(t, sha1); len(got) != 1 || got[0].State != "success" {
		t.Errorf("statuses after Close = %v, want one success", got)
	}

	e.outage(t, `{"status_code":502}`)
	r2 := e.reporter(t, false)
	r2.Finished(e.job("job-2", sha2), githubstatus.Success, "Deployed")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if n := r2.Close(ctx2); n != 1 {
		t.Errorf("Close during an outage left %d jobs unsent, want 1", n)
	}
}
