package githubstandin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
)

// mustRepo creates owner/name, administered by owner, with one commit on
// main, and returns the commit.
func mustRepo(t *testing.T, s *githubstandin.Server, owner, name string, private bool) string {
	t.Helper()
	if _, _, err := s.CreateRepo(owner, name, owner, private); err != nil {
		t.Fatal(err)
	}
	res, err := s.Push(context.Background(), owner, name, githubstandin.Commit{Files: map[string][]byte{"a.txt": []byte(name)}})
	if err != nil {
		t.Fatal(err)
	}
	return res.After
}

// anonClient is a go-github client without a token.
func anonClient(t *testing.T, s *githubstandin.Server) *github.Client {
	t.Helper()
	u, err := url.Parse(s.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	c := github.NewClient(nil)
	c.BaseURL = u
	return c
}

// rawRequest sends a request to the API path (after APIURL) with token,
// if any, and returns the answer and its decoded JSON body.
func rawRequest(t *testing.T, s *githubstandin.Server, method, path, token, body string) (*http.Response, any) {
	t.Helper()
	req, err := http.NewRequest(method, s.APIURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: body %q is not JSON: %v", method, path, b, err)
	}
	return resp, v
}

func errorMessage(err error) string {
	var e *github.ErrorResponse
	if errors.As(err, &e) {
		return e.Message
	}
	return ""
}

var rfc3339UTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// stateList is "context=state" of statuses, in their order.
func stateList(sts []*github.RepoStatus) []string {
	var out []string
	for _, st := range sts {
		out = append(out, st.GetContext()+"="+st.GetState())
	}
	return out
}

func TestCommitStatuses(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	ctx := context.Background()
	head := mustRepo(t, s, "octo", "app", false)
	token := s.Token("octo")
	admin := apiClient(t, s, token)

	t.Run("create", func(t *testing.T) {
		for _, tc := range []struct {
			name        string
			in          github.RepoStatus
			wantContext string
		}{
			{"pending", github.RepoStatus{State: github.String("pending"), Context: github.String("ci")}, "ci"},
			{"success-140-chars", github.RepoStatus{State: github.String("success"), Context: github.String("ci"),
				TargetURL: github.String("http://ci.invalid/1"), Description: github.String(strings.Repeat("é", 140))}, "ci"},
			{"failure", github.RepoStatus{State: github.String("failure"), Context: github.String("lint")}, "lint"},
			{"default-context", github.RepoStatus{State: github.String("error")}, "default"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, resp, err := admin.Repositories.CreateStatus(ctx, "octo", "app", head, &tc.in)
				if err != nil {
					t.Fatalf("CreateStatus: %v", err)
				}
				if resp.StatusCode != http.StatusCreated {
					t.Errorf("status %d, want 201", resp.StatusCode)
				}
				if got.GetID() == 0 || got.GetState() != tc.in.GetState() || got.GetContext() != tc.wantContext ||
					got.GetDescription() != tc.in.GetDescription() || got.GetTargetURL() != tc.in.GetTargetURL() ||
					got.GetCreator().GetLogin() != "octo" || got.GetCreator().GetType() != "User" || got.GetCreatedAt().IsZero() ||
					got.GetURL() != s.APIURL+"repos/octo/app/statuses/"+head {
					t.Errorf("CreateStatus = %v, want state %s, context %s by octo", got, tc.in.GetState(), tc.wantContext)
				}
			})
		}
	})
	recorded := len(s.Statuses("octo", "app", head))
	if recorded != 4 {
		t.Fatalf("Statuses = %d, want 4", recorded)
	}

	t.Run("refused", func(t *testing.T) {
		valid := github.RepoStatus{State: github.String("success"), Context: github.String("ci")}
		for _, tc := range []struct {
			name   string
			c      *github.Client
			repo   string
			sha    string
			in     github.RepoStatus
			status int
		}{
			{"bad-state", admin, "app", head, github.RepoStatus{State: github.String("ok")}, 422},
			{"141-char-description", admin, "app", head,
				github.RepoStatus{State: github.String("success"), Description: github.String(strings.Repeat("x", 141))}, 422},
			{"short-sha", admin, "app", head[:12], valid, 422},
			{"branch-for-sha", admin, "app", "main", valid, 422},
			{"no-token", anonClient(t, s), "app", head, valid, 401},
			{"unknown-token", apiClient(t, s, "gho_unknown"), "app", head, valid, 401},
			{"not-admin", apiClient(t, s, s.Token("mallory")), "app", head, valid, 404},
			{"unknown-repo", admin, "missing", head, valid, 404},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := tc.c.Repositories.CreateStatus(ctx, "octo", tc.repo, tc.sha, &tc.in)
				if statusCode(err) != tc.status {
					t.Errorf("CreateStatus = %v, want %d", err, tc.status)
				}
				if tc.status == 422 && !strings.HasPrefix(errorMessage(err), "Validation Failed") && !strings.HasPrefix(errorMessage(err), "No commit found") {
					t.Errorf("message %q, want GitHub's", errorMessage(err))
				}
				if n := len(s.Statuses("octo", "app", head)); n != recorded {
					t.Errorf("%d statuses recorded, want still %d", n, recorded)
				}
			})
		}
	})

	t.Run("list", func(t *testing.T) {
		want := []string{"default=error", "lint=failure", "ci=success", "ci=pending"} // newest first
		for _, ref := range []string{head, strings.ToUpper(head), "main", "refs/heads/main"} {
			got, _, err := admin.Repositories.ListStatuses(ctx, "octo", "app", ref, nil)
			if err != nil {
				t.Fatalf("ListStatuses(%s): %v", ref, err)
			}
			if diff := cmp.Diff(want, stateList(got)); diff != "" {
				t.Errorf("ListStatuses(%s) (-want +got):\n%s", ref, diff)
			}
		}
		if _, _, err := admin.Repositories.ListStatuses(ctx, "octo", "app", "no-such-branch", nil); statusCode(err) != 404 {
			t.Errorf("ListStatuses(unknown ref) = %v, want 404", err)
		}
	})

	t.Run("combined", func(t *testing.T) {
		got, _, err := admin.Repositories.GetCombinedStatus(ctx, "octo", "app", "main", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.GetState() != "failure" || got.GetSHA() != head || got.GetTotalCount() != 3 {
			t.Errorf("combined = %s %s %d, want failure %s 3", got.GetState(), got.GetSHA(), got.GetTotalCount(), head)
		}
		if diff := cmp.Diff([]string{"default=error", "lint=failure", "ci=success"}, stateList(got.Statuses)); diff != "" {
			t.Errorf("combined statuses, the latest per context (-want +got):\n%s", diff)
		}
	})

	t.Run("combined-state", func(t *testing.T) {
		type st struct{ context, state string }
		for i, tc := range []struct {
			name     string
			statuses []st
			want     string
		}{
			{"none", nil, "pending"},
			{"success", []st{{"a", "success"}}, "success"},
			{"pending-and-success", []st{{"a", "success"}, {"b", "pending"}}, "pending"},
			{"error-is-failure", []st{{"a", "pending"}, {"b", "error"}}, "failure"},
			{"latest-counts", []st{{"a", "failure"}, {"a", "success"}}, "success"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				sha := strings.Repeat(strconv.Itoa(i+1), 40) // any 40-hex sha is a commit
				for _, x := range tc.statuses {
					if _, _, err := admin.Repositories.CreateStatus(ctx, "octo", "app", sha,
						&github.RepoStatus{State: github.String(x.state), Context: github.String(x.context)}); err != nil {
						t.Fatal(err)
					}
				}
				got, _, err := admin.Repositories.GetCombinedStatus(ctx, "octo", "app", sha, nil)
				if err != nil {
					t.Fatal(err)
				}
				if got.GetState() != tc.want {
					t.Errorf("combined state = %q, want %q", got.GetState(), tc.want)
				}
			})
		}
	})

	t.Run("anonymous-read", func(t *testing.T) {
		secretHead := mustRepo(t, s, "octo", "secret", true)
		if _, _, err := admin.Repositories.CreateStatus(ctx, "octo", "secret", secretHead,
			&github.RepoStatus{State: github.String("success")}); err != nil {
			t.Fatal(err)
		}
		anon, stranger := anonClient(t, s), apiClient(t, s, s.Token("mallory"))
		for _, tc := range []struct {
			name      string
			c         *github.Client
			repo, ref string
			status    int // 0: success
		}{
			{"public-anonymous", anon, "app", head, 0},
			{"public-stranger", stranger, "app", head, 0},
			{"public-bad-token", apiClient(t, s, "gho_unknown"), "app", head, 401},
			{"private-anonymous", anon, "secret", secretHead, 404},
			{"private-stranger", stranger, "secret", secretHead, 404},
			{"private-admin", admin, "secret", secretHead, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := tc.c.Repositories.ListStatuses(ctx, "octo", tc.repo, tc.ref, nil)
				_, _, err2 := tc.c.Repositories.GetCombinedStatus(ctx, "octo", tc.repo, tc.ref, nil)
				if statusCode(err) != tc.status || statusCode(err2) != tc.status {
					t.Errorf("ListStatuses = %v, GetCombinedStatus = %v; want status %d (0: success)", err, err2, tc.status)
				}
			})
		}
	})

	t.Run("json", func(t *testing.T) {
		resp, v := rawRequest(t, s, "GET", "repos/octo/app/commits/"+head+"/status", "", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s", resp.Status)
		}
		if resp.Header.Get("X-RateLimit-Limit") != "5000" {
			t.Errorf("X-RateLimit-Limit = %q, want 5000", resp.Header.Get("X-RateLimit-Limit"))
		}
		if n, err := strconv.Atoi(resp.Header.Get("X-RateLimit-Remaining")); err != nil || n < 0 || n >= 5000 {
			t.Errorf("X-RateLimit-Remaining = %q", resp.Header.Get("X-RateLimit-Remaining"))
		}
		if n, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err != nil || n <= time.Now().Unix() {
			t.Errorf("X-RateLimit-Reset = %q, want epoch seconds in the future", resp.Header.Get("X-RateLimit-Reset"))
		}
		combined := v.(map[string]any)
		if repo, _ := combined["repository"].(map[string]any); repo["full_name"] != "octo/app" {
			t.Errorf("repository = %v, want full_name octo/app", combined["repository"])
		}
		st := combined["statuses"].([]any)[0].(map[string]any)
		for _, k := range []string{"id", "node_id", "url", "state", "description", "target_url", "context", "created_at", "updated_at", "creator"} {
			if _, ok := st[k]; !ok {
				t.Errorf("status lacks %q: %v", k, st)
			}
		}
		for _, k := range []string{"created_at", "updated_at"} {
			if at, _ := st[k].(string); !rfc3339UTC.MatchString(at) {
				t.Errorf("%s = %v, want RFC 3339 UTC", k, st[k])
			}
		}
		if c, _ := st["creator"].(map[string]any); c["login"] != "octo" || c["type"] != "User" || c["id"] == nil {
			t.Errorf("creator = %v", st["creator"])
		}
	})
}

func TestPaging(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	ctx := context.Background()
	head := mustRepo(t, s, "octo", "app", false)
	c := apiClient(t, s, s.Token("octo"))
	var depID int64
	for i := range 5 {
		if _, _, err := c.Repositories.CreateStatus(ctx, "octo", "app", head,
			&github.RepoStatus{State: github.String("pending"), Context: github.String("c" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
		d, _, err := c.Repositories.CreateDeployment(ctx, "octo", "app", &github.DeploymentRequest{
			Ref: github.String(head), RequiredContexts: &[]string{}, Environment: github.String("staging")})
		if err != nil {
			t.Fatal(err)
		}
		depID = d.GetID()
	}
	for range 5 {
		if _, _, err := c.Repositories.CreateDeploymentStatus(ctx, "octo", "app", depID,
			&github.DeploymentStatusRequest{State: github.String("in_progress")}); err != nil {
			t.Fatal(err)
		}
	}

	// Each lists a page and returns the ids on it.
	for _, tc := range []struct {
		name string
		path string // of the first page, after APIURL
		list func(github.ListOptions) ([]int64, *github.Response, error)
	}{
		{"statuses", "repos/octo/app/commits/" + head + "/statuses", func(o github.ListOptions) ([]int64, *github.Response, error) {
			l, resp, err := c.Repositories.ListStatuses(ctx, "octo", "app", head, &o)
			var ids []int64
			for _, x := range l {
				ids = append(ids, x.GetID())
			}
			return ids, resp, err
		}},
		{"combined", "repos/octo/app/commits/" + head + "/status", func(o github.ListOptions) ([]int64, *github.Response, error) {
			cs, resp, err := c.Repositories.GetCombinedStatus(ctx, "octo", "app", head, &o)
			var ids []int64
			for _, x := range cs.Statuses {
				ids = append(ids, x.GetID())
			}
			return ids, resp, err
		}},
		{"deployments", "repos/octo/app/deployments?environment=staging", func(o github.ListOptions) ([]int64, *github.Response, error) {
			l, resp, err := c.Repositories.ListDeployments(ctx, "octo", "app", &github.DeploymentsListOptions{Environment: "staging", ListOptions: o})
			var ids []int64
			for _, x := range l {
				ids = append(ids, x.GetID())
			}
			return ids, resp, err
		}},
		{"deployment-statuses", "repos/octo/app/deployments/" + strconv.FormatInt(depID, 10) + "/statuses", func(o github.ListOptions) ([]int64, *github.Response, error) {
			l, resp, err := c.Repositories.ListDeploymentStatuses(ctx, "octo", "app", depID, &o)
			var ids []int64
			for _, x := range l {
				ids = append(ids, x.GetID())
			}
			return ids, resp, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var all []int64
			var nexts []int
			opts := github.ListOptions{PerPage: 2}
			for {
				ids, resp, err := tc.list(opts)
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, ids...)
				nexts = append(nexts, resp.NextPage)
				if resp.NextPage == 0 {
					break
				}
				opts.Page = resp.NextPage
			}
			if diff := cmp.Diff([]int{2, 3, 0}, nexts); diff != "" {
				t.Errorf("NextPage of each page (-want +got):\n%s", diff)
			}
			if len(all) != 5 {
				t.Fatalf("%d items in all pages, want 5", len(all))
			}
			for i := 1; i < len(all); i++ {
				if all[i] >= all[i-1] {
					t.Errorf("ids %v: not newest first", all)
				}
			}
			if ids, _, err := tc.list(github.ListOptions{Page: 4, PerPage: 2}); err != nil || len(ids) != 0 {
				t.Errorf("page after the last = %v, %v; want none", ids, err)
			}

			sep := "?"
			if strings.Contains(tc.path, "?") {
				sep = "&"
			}
			resp, _ := rawRequest(t, s, "GET", tc.path+sep+"per_page=2", "", "")
			u, q, _ := strings.Cut(tc.path, "?")
			if q != "" {
				q += "&"
			}
			link := func(page int, rel string) string {
				return "<" + s.APIURL + u + "?" + q + "page=" + strconv.Itoa(page) + "&per_page=2>; rel=\"" + rel + "\""
			}
			if got, want := resp.Header.Get("Link"), link(2, "next")+", "+link(3, "last"); got != want {
				t.Errorf("Link = %s\nwant   %s", got, want)
			}
			resp, _ = rawRequest(t, s, "GET", tc.path+sep+"per_page=2&page=3", "", "")
			if got, want := resp.Header.Get("Link"), link(2, "prev")+", "+link(1, "first"); got != want {
				t.Errorf("Link of the last page = %s\nwant   %s", got, want)
			}
		})
	}
}

func TestDeployments(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	ctx := context.Background()
	head := mustRepo(t, s, "octo", "app", false)
	admin := apiClient(t, s, s.Token("octo"))
	if _, _, err := admin.Repositories.CreateStatus(ctx, "octo", "app", head,
		&github.RepoStatus{State: github.String("failure"), Context: github.String("ci")}); err != nil {
		t.Fatal(err)
	}

	t.Run("create", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			c       *github.Client
			req     github.DeploymentRequest
			status  int
			message string
		}{
			{"required-omitted-while-failing", admin, github.DeploymentRequest{Ref: github.String("main")}, 409,
				"Conflict: Commit status checks failed for main."},
			{"required-ci-failing", admin, github.DeploymentRequest{Ref: github.String("main"), RequiredContexts: &[]string{"ci"}}, 409,
				"Conflict: Commit status checks failed for main."},
			{"required-context-missing", admin, github.DeploymentRequest{Ref: github.String(head), RequiredContexts: &[]string{"e2e"}}, 409,
				"Conflict: Commit status checks failed for " + head + "."},
			{"unknown-ref", admin, github.DeploymentRequest{Ref: github.String("nope"), RequiredContexts: &[]string{}}, 422,
				"No ref found for: nope"},
			{"no-ref", admin, github.DeploymentRequest{RequiredContexts: &[]string{}}, 422, ""},
			{"no-token", anonClient(t, s), github.DeploymentRequest{Ref: github.String("main"), RequiredContexts: &[]string{}}, 401, ""},
			{"not-admin", apiClient(t, s, s.Token("mallory")), github.DeploymentRequest{Ref: github.String("main"), RequiredContexts: &[]string{}}, 404, ""},
			{"required-empty", admin, github.DeploymentRequest{Ref: github.String("main"), RequiredContexts: &[]string{}}, 201, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := len(s.Deployments("octo", "app"))
				_, resp, err := tc.c.Repositories.CreateDeployment(ctx, "octo", "app", &tc.req)
				got := statusCode(err)
				if err == nil {
					got = resp.StatusCode
				}
				if got != tc.status {
					t.Fatalf("CreateDeployment = %d, %v; want %d", got, err, tc.status)
				}
				if tc.message != "" && errorMessage(err) != tc.message {
					t.Errorf("message %q, want %q", errorMessage(err), tc.message)
				}
				want := before
				if tc.status == 201 {
					want++
				}
				if n := len(s.Deployments("octo", "app")); n != want {
					t.Errorf("%d deployments recorded, want %d", n, want)
				}
			})
		}
	})

	t.Run("defaults", func(t *testing.T) {
		list := s.Deployments("octo", "app")
		if len(list) != 1 {
			t.Fatalf("%d deployments, want 1", len(list))
		}
		d := list[0]
		if d.SHA != head || d.Ref != "main" || d.Task != "deploy" || d.Environment != "production" || !d.ProductionEnvironment ||
			d.TransientEnvironment || !d.AutoMerge || d.RequiredContexts == nil || len(d.RequiredContexts) != 0 ||
			string(d.Payload) != "{}" || d.Creator != "octo" {
			t.Errorf("Deployments()[0] = %+v, want GitHub's defaults", d)
		}
		got, _, err := admin.Repositories.GetDeployment(ctx, "octo", "app", d.ID)
		if err != nil {
			t.Fatal(err)
		}
		u := s.APIURL + "repos/octo/app/deployments/" + strconv.FormatInt(d.ID, 10)
		if got.GetSHA() != head || got.GetRef() != "main" || got.GetTask() != "deploy" || got.GetEnvironment() != "production" ||
			string(got.Payload) != "{}" || got.GetCreator().GetLogin() != "octo" || got.GetURL() != u ||
			got.GetStatusesURL() != u+"/statuses" || got.GetRepositoryURL() != s.APIURL+"repos/octo/app" || got.GetCreatedAt().IsZero() {
			t.Errorf("GetDeployment = %v", got)
		}
		if _, _, err := admin.Repositories.GetDeployment(ctx, "octo", "app", d.ID+1000); statusCode(err) != 404 {
			t.Errorf("GetDeployment(unknown) = %v, want 404", err)
		}
	})

	var staging *github.Deployment
	t.Run("after-green", func(t *testing.T) {
		if _, _, err := admin.Repositories.CreateStatus(ctx, "octo", "app", head,
			&github.RepoStatus{State: github.String("success"), Context: github.String("ci")}); err != nil {
			t.Fatal(err)
		}
		var err error
		staging, _, err = admin.Repositories.CreateDeployment(ctx, "octo", "app", &github.DeploymentRequest{
			Ref: github.String(head), Task: github.String("deploy:web"), Environment: github.String("staging"),
			Payload: map[string]string{"unit": "web"}, Description: github.String("web to staging"),
			AutoMerge: github.Bool(false), TransientEnvironment: github.Bool(true)})
		if err != nil {
			t.Fatalf("CreateDeployment without required_contexts, all green: %v", err)
		}
		var payload map[string]string
		if err := json.Unmarshal(staging.Payload, &payload); err != nil || payload["unit"] != "web" {
			t.Errorf("payload = %s, want {\"unit\":\"web\"}", staging.Payload)
		}
		if staging.GetEnvironment() != "staging" || staging.GetTask() != "deploy:web" || staging.GetDescription() != "web to staging" {
			t.Errorf("deployment = %v", staging)
		}
		list := s.Deployments("octo", "app")
		if d := list[len(list)-1]; d.ProductionEnvironment || !d.TransientEnvironment || d.AutoMerge || d.RequiredContexts != nil {
			t.Errorf("recorded %+v, want not production, transient, auto_merge false, required_contexts nil", d)
		}
		resp, v := rawRequest(t, s, "GET", "repos/octo/app/deployments/"+strconv.FormatInt(staging.GetID(), 10), "", "")
		if resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
		m := v.(map[string]any)
		if m["transient_environment"] != true || m["production_environment"] != false || !rfc3339UTC.MatchString(m["created_at"].(string)) {
			t.Errorf("deployment JSON = %v", m)
		}
	})

	t.Run("list", func(t *testing.T) {
		all := s.Deployments("octo", "app")
		prod, stag := all[0].ID, all[1].ID
		for _, tc := range []struct {
			name string
			opts github.DeploymentsListOptions
			want []int64
		}{
			{"all", github.DeploymentsListOptions{}, []int64{stag, prod}},
			{"sha", github.DeploymentsListOptions{SHA: head}, []int64{stag, prod}},
			{"ref", github.DeploymentsListOptions{Ref: "main"}, []int64{prod}},
			{"task", github.DeploymentsListOptions{Task: "deploy:web"}, []int64{stag}},
			{"environment", github.DeploymentsListOptions{Environment: "production"}, []int64{prod}},
			{"nothing", github.DeploymentsListOptions{Environment: "qa"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				list, _, err := anonClient(t, s).Repositories.ListDeployments(ctx, "octo", "app", &tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				var got []int64
				for _, d := range list {
					got = append(got, d.GetID())
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("ListDeployments (-want +got):\n%s", diff)
				}
			})
		}
	})
}

func TestDeploymentStatuses(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	ctx := context.Background()
	head := mustRepo(t, s, "octo", "app", false)
	admin := apiClient(t, s, s.Token("octo"))
	deploy := func(t *testing.T, env string, transient, production bool) int64 {
		t.Helper()
		d, _, err := admin.Repositories.CreateDeployment(ctx, "octo", "app", &github.DeploymentRequest{Ref: github.String(head),
			RequiredContexts: &[]string{}, Environment: github.String(env), TransientEnvironment: github.Bool(transient),
			ProductionEnvironment: github.Bool(production || env == "production")})
		if err != nil {
			t.Fatal(err)
		}
		return d.GetID()
	}
	post := func(t *testing.T, id int64, state string, autoInactive *bool) *github.DeploymentStatus {
		t.Helper()
		st, _, err := admin.Repositories.CreateDeploymentStatus(ctx, "octo", "app", id,
			&github.DeploymentStatusRequest{State: github.String(state), AutoInactive: autoInactive})
		if err != nil {
			t.Fatalf("CreateDeploymentStatus(%d, %s): %v", id, state, err)
		}
		return st
	}
	latest := func(t *testing.T, id int64) string {
		t.Helper()
		list, _, err := admin.Repositories.ListDeploymentStatuses(ctx, "octo", "app", id, &github.ListOptions{PerPage: 1})
		if err != nil || len(list) != 1 {
			t.Fatalf("ListDeploymentStatuses(%d) = %v, %v", id, list, err)
		}
		return list[0].GetState()
	}

	t.Run("create", func(t *testing.T) {
		id := deploy(t, "review", false, false)
		st, resp, err := admin.Repositories.CreateDeploymentStatus(ctx, "octo", "app", id, &github.DeploymentStatusRequest{
			State: github.String("in_progress"), LogURL: github.String("http://logs.invalid/1"),
			Description: github.String(strings.Repeat("d", 140)), EnvironmentURL: github.String("http://app.invalid/")})
		if err != nil {
			t.Fatal(err)
		}
		du := s.APIURL + "repos/octo/app/deployments/" + strconv.FormatInt(id, 10)
		if resp.StatusCode != 201 || st.GetID() == 0 || st.GetState() != "in_progress" || st.GetEnvironment() != "review" ||
			st.GetLogURL() != "http://logs.invalid/1" || st.GetTargetURL() != "http://logs.invalid/1" ||
			st.GetEnvironmentURL() != "http://app.invalid/" || st.GetCreator().GetLogin() != "octo" || st.GetCreatedAt().IsZero() ||
			st.GetDeploymentURL() != du || st.GetRepositoryURL() != s.APIURL+"repos/octo/app" ||
			st.GetURL() != du+"/statuses/"+strconv.FormatInt(st.GetID(), 10) {
			t.Errorf("CreateDeploymentStatus = %d %v", resp.StatusCode, st)
		}

		for _, tc := range []struct {
			name   string
			c      *github.Client
			id     int64
			req    github.DeploymentStatusRequest
			status int
		}{
			{"bad-state", admin, id, github.DeploymentStatusRequest{State: github.String("done")}, 422},
			{"141-char-description", admin, id,
				github.DeploymentStatusRequest{State: github.String("success"), Description: github.String(strings.Repeat("d", 141))}, 422},
			{"unknown-deployment", admin, id + 1000, github.DeploymentStatusRequest{State: github.String("success")}, 404},
			{"no-token", anonClient(t, s), id, github.DeploymentStatusRequest{State: github.String("success")}, 401},
			{"not-admin", apiClient(t, s, s.Token("mallory")), id, github.DeploymentStatusRequest{State: github.String("success")}, 404},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := tc.c.Repositories.CreateDeploymentStatus(ctx, "octo", "app", tc.id, &tc.req)
				if statusCode(err) != tc.status {
					t.Errorf("CreateDeploymentStatus = %v, want %d", err, tc.status)
				}
				if got := latest(t, id); got != "in_progress" {
					t.Errorf("latest status %q, want still in_progress", got)
				}
			})
		}
		if _, _, err := admin.Repositories.ListDeploymentStatuses(ctx, "octo", "app", id+1000, nil); statusCode(err) != 404 {
			t.Errorf("ListDeploymentStatuses(unknown) = %v, want 404", err)
		}
	})

	t.Run("auto-inactive", func(t *testing.T) {
		for _, tc := range []struct {
			name             string
			env              string
			transient        bool
			firstState       string
			autoInactive     *bool
			secondProduction bool // production_environment of the new deployment only
			wantFirst        string
		}{
			{"staging", "staging", false, "success", nil, false, "inactive"},
			{"explicit-true", "qa", false, "success", github.Bool(true), false, "inactive"},
			{"off", "dev", false, "success", github.Bool(false), false, "success"},
			{"production", "production", false, "success", nil, false, "success"},
			{"transient", "pr-7", true, "success", nil, false, "success"},
			{"new-one-production", "eu", false, "success", nil, true, "success"},
			{"earlier-failure", "canary", false, "failure", nil, false, "failure"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				other := deploy(t, tc.env+"-other", false, false) // another environment
				post(t, other, "success", nil)
				first := deploy(t, tc.env, tc.transient, false)
				post(t, first, tc.firstState, nil)
				second := deploy(t, tc.env, tc.transient, tc.secondProduction)
				post(t, second, "in_progress", nil)
				post(t, second, "success", tc.autoInactive)
				if got := latest(t, first); got != tc.wantFirst {
					t.Errorf("earlier deployment's latest status %q, want %q", got, tc.wantFirst)
				}
				if got := latest(t, second); got != "success" {
					t.Errorf("new deployment's latest status %q, want success", got)
				}
				if got := latest(t, other); got != "success" {
					t.Errorf("other environment's deployment %q, want success", got)
				}
			})
		}
	})

	t.Run("recorded", func(t *testing.T) {
		for _, d := range s.Deployments("octo", "app") {
			if d.Environment != "staging" {
				continue
			}
			var states []string
			for _, st := range d.Statuses {
				states = append(states, st.State)
			}
			want := []string{"in_progress", "success"} // the second
			if len(d.Statuses) == 2 && d.Statuses[1].State == "inactive" {
				want = []string{"success", "inactive"} // the first, oldest first
			}
			if diff := cmp.Diff(want, states); diff != "" {
				t.Errorf("deployment %d statuses (-want +got):\n%s", d.ID, diff)
			}
		}
	})
}

func TestAPIOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const secondary = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."

	t.Run("codes", func(t *testing.T) {
		s := newStandin(t)
		head := mustRepo(t, s, "octo", "app", false)
		token := s.Token("octo")
		for _, tc := range []struct {
			code       int
			retryAfter int
			message    string
		}{
			{403, 30, secondary}, {429, 0, secondary}, {429, 5, secondary},
			{500, 0, "Server Error"}, {502, 0, "Server Error"}, {503, 0, "Server Error"},
		} {
			t.Run(strconv.Itoa(tc.code)+"-retry-"+strconv.Itoa(tc.retryAfter), func(t *testing.T) {
				if err := s.SetAPIOutage(&githubstandin.APIOutage{StatusCode: tc.code, RetryAfter: tc.retryAfter, Requests: 1}); err != nil {
					t.Fatal(err)
				}
				before := len(s.Statuses("octo", "app", head))
				resp, v := rawRequest(t, s, "POST", "repos/octo/app/statuses/"+head, token, `{"state":"success"}`)
				m := v.(map[string]any)
				if resp.StatusCode != tc.code || m["message"] != tc.message {
					t.Errorf("answer %d %v, want %d %q", resp.StatusCode, m, tc.code, tc.message)
				}
				wantRetry := ""
				if tc.retryAfter > 0 {
					wantRetry = strconv.Itoa(tc.retryAfter)
				}
				if got := resp.Header.Get("Retry-After"); got != wantRetry {
					t.Errorf("Retry-After = %q, want %q", got, wantRetry)
				}
				if resp.Header.Get("X-RateLimit-Limit") != "5000" || resp.Header.Get("X-RateLimit-Remaining") == "0" {
					t.Errorf("X-RateLimit-Limit %q, Remaining %q", resp.Header.Get("X-RateLimit-Limit"), resp.Header.Get("X-RateLimit-Remaining"))
				}
				if n := len(s.Statuses("octo", "app", head)); n != before {
					t.Errorf("a status was recorded during the outage")
				}
				if resp, _ := rawRequest(t, s, "POST", "repos/octo/app/statuses/"+head, token, `{"state":"success"}`); resp.StatusCode != 201 {
					t.Errorf("after a one-request outage: %s, want 201", resp.Status)
				}
			})
		}
	})

	t.Run("retried-through", func(t *testing.T) {
		s := newStandin(t)
		head := mustRepo(t, s, "octo", "app", false)
		token := s.Token("octo")
		admin := func(body string) {
			t.Helper()
			req, _ := http.NewRequest("PUT", s.URL+"_standin/api-outage", strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT /_standin/api-outage %s = %s", body, resp.Status)
			}
		}
		st := &github.RepoStatus{State: github.String("success"), Context: github.String("ci")}

		admin(`{"status_code":403,"retry_after":60}`)
		_, _, err := apiClient(t, s, token).Repositories.CreateStatus(ctx, "octo", "app", head, st)
		var limited *github.AbuseRateLimitError
		if !errors.As(err, &limited) || limited.RetryAfter == nil || *limited.RetryAfter != 60*time.Second {
			t.Errorf("CreateStatus during a 403 outage = %v, want a secondary rate limit with Retry-After 60s", err)
		}
		if resp, _ := rawRequest(t, s, "GET", "repos/octo/app/commits/"+head+"/statuses", "", ""); resp.StatusCode != 403 {
			t.Errorf("GET during the outage = %s, want 403", resp.Status)
		}
		resp, err := http.Get(s.URL + "_standin/")
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			APIOutage *githubstandin.APIOutage `json:"api_outage"`
		}
		err = json.NewDecoder(resp.Body).Decode(&info)
		resp.Body.Close()
		if err != nil || info.APIOutage == nil || *info.APIOutage != (githubstandin.APIOutage{StatusCode: 403, RetryAfter: 60}) {
			t.Errorf("GET /_standin/ api_outage = %+v, %v; want the 403 outage", info.APIOutage, err)
		}
		admin(`{"status_code":0}`)

		// A new client: go-github holds back requests until Retry-After.
		c := apiClient(t, s, token)
		if _, _, err := c.Repositories.CreateStatus(ctx, "octo", "app", head, st); err != nil {
			t.Errorf("CreateStatus after the outage: %v", err)
		}
		admin(`{"status_code":502,"requests":2}`)
		for i := range 2 {
			_, _, err := c.Repositories.CreateStatus(ctx, "octo", "app", head, st)
			if statusCode(err) != 502 || errorMessage(err) != "Server Error" {
				t.Errorf("request %d of a 2-request 502 outage = %v, want 502 Server Error", i+1, err)
			}
		}
		if _, _, err := c.Repositories.CreateStatus(ctx, "octo", "app", head, st); err != nil {
			t.Errorf("CreateStatus after 2 failed requests: %v", err)
		}
		if n := len(s.Statuses("octo", "app", head)); n != 2 {
			t.Errorf("%d statuses recorded, want 2 (none during the outages)", n)
		}

		type req struct {
			Method string
			Path   string
			Code   int
		}
		var got []req
		for _, r := range s.APIRequests() {
			if r.At.IsZero() {
				t.Errorf("request %+v without a time", r)
			}
			got = append(got, req{r.Method, r.Path, r.StatusCode})
		}
		post, list := "/api/v3/repos/octo/app/statuses/"+head, "/api/v3/repos/octo/app/commits/"+head+"/statuses"
		want := []req{{"POST", post, 403}, {"GET", list, 403}, {"POST", post, 201}, {"POST", post, 502}, {"POST", post, 502}, {"POST", post, 201}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("APIRequests (-want +got):\n%s", diff)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		s := newStandin(t)
		for _, o := range []githubstandin.APIOutage{{StatusCode: 404}, {StatusCode: 418}, {StatusCode: 503, Requests: -1}, {StatusCode: 429, RetryAfter: -5}} {
			if err := s.SetAPIOutage(&o); err == nil {
				t.Errorf("SetAPIOutage(%+v) = nil, want an error", o)
			}
		}
		req, _ := http.NewRequest("PUT", s.URL+"_standin/api-outage", strings.NewReader(`{"status_code":418}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT /_standin/api-outage 418 = %s, want 400", resp.Status)
		}
	})
}

// TestConditionalRequests answers a GET that names the current ETag 304,
// free of rate limit, as GitHub does; a change gives a new ETag.
func TestConditionalRequests(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	head := mustRepo(t, s, "octo", "app", false)
	token := s.Token("octo")
	get := func(etag string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.APIURL+"repos/octo/app/commits/"+head+"/statuses", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	first := get("")
	etag := first.Header.Get("ETag")
	if first.StatusCode != http.StatusOK || etag == "" {
		t.Fatalf("GET = %d with ETag %q; want 200 with one", first.StatusCode, etag)
	}
	again := get(etag)
	if again.StatusCode != http.StatusNotModified || again.Header.Get("X-RateLimit-Remaining") != first.Header.Get("X-RateLimit-Remaining") {
		t.Errorf("GET If-None-Match the ETag = %d, remaining %s (was %s); want 304, not counted",
			again.StatusCode, again.Header.Get("X-RateLimit-Remaining"), first.Header.Get("X-RateLimit-Remaining"))
	}
	if s.NotModified() != 1 {
		t.Errorf("NotModified = %d, want 1", s.NotModified())
	}
	if _, _, err := apiClient(t, s, token).Repositories.CreateStatus(context.Background(), "octo", "app", head,
		&github.RepoStatus{State: github.String("success"), Context: github.String("ci")}); err != nil {
		t.Fatal(err)
	}
	changed := get(etag)
	if changed.StatusCode != http.StatusOK || changed.Header.Get("ETag") == etag {
		t.Errorf("GET after a change = %d with ETag %q; want 200 with a new ETag", changed.StatusCode, changed.Header.Get("ETag"))
	}
}
