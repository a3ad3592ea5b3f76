package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/dashboard"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
)

// hostile is a string a page must show as text, never as markup.
const hostile = `<script>alert("x")</script><img src=x onerror=alert(1)>`

// jobsServer is a jobspb.JobsServer over fixed data, served on loopback
// gRPC. Its callers' metadata is recorded; some authorization values
// make it fail as the API would.
type jobsServer struct {
	jobspb.UnimplementedJobsServer
	repos []*jobspb.Repository
	jobs  map[string][]*jobspb.Job // by repository, newest first
	logs  map[string][]*jobspb.LogLine

	mu    sync.Mutex
	calls []call
}

type call struct {
	method string
	md     metadata.MD
}

func (s *jobsServer) check(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.calls = append(s.calls, call{method, md})
	s.mu.Unlock()
	switch strings.Join(md.Get("authorization"), ",") {
	case "Bearer expired":
		return status.Error(codes.Unauthenticated, "the identity token expired")
	case "Bearer stranger":
		return status.Error(codes.PermissionDenied, "stranger@example.com may not read demo/hello")
	case "Bearer broken":
		return status.Error(codes.Internal, "firestore: secret internal detail")
	}
	return nil
}

func (s *jobsServer) ListRepositories(ctx context.Context, _ *jobspb.ListRepositoriesRequest) (*jobspb.ListRepositoriesResponse, error) {
	if err := s.check(ctx, "ListRepositories"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &jobspb.ListRepositoriesResponse{Repositories: s.repos}, nil
}

func (s *jobsServer) ListJobs(ctx context.Context, req *jobspb.ListJobsRequest) (*jobspb.ListJobsResponse, error) {
	if err := s.check(ctx, "ListJobs"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	jobs, ok := s.jobs[req.GetOwner()+"/"+req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "repository %s/%s is not tracked", req.GetOwner(), req.GetName())
	}
	from := 0
	if t := req.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(jobs) {
			return nil, status.Errorf(codes.InvalidArgument, "page_token %q is not one this API gave out", t)
		}
		from = n
	}
	to := min(from+int(req.GetPageSize()), len(jobs))
	resp := &jobspb.ListJobsResponse{Jobs: jobs[from:to]}
	if to < len(jobs) {
		resp.NextPageToken = strconv.Itoa(to)
	}
	return resp, nil
}

func (s *jobsServer) GetJob(ctx context.Context, req *jobspb.GetJobRequest) (*jobspb.Job, error) {
	if err := s.check(ctx, "GetJob"); err != nil {
		return nil, err
	}
	if j := s.job(req.GetOwner()+"/"+req.GetName(), req.GetJobId()); j != nil {
		return j, nil
	}
	return nil, status.Errorf(codes.NotFound, "job %s of %s/%s not found", req.GetJobId(), req.GetOwner(), req.GetName())
}

// job returns job id of repository repo, or nil.
func (s *jobsServer) job(repo, id string) *jobspb.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.jobs[repo] {
		if j.GetId() == id {
			return j
		}
	}
	return nil
}

// put adds job j as its repository's newest, or replaces the job with
// its id.
func (s *jobsServer) put(j *jobspb.Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	jobs := s.jobs[j.GetRepository()]
	if i := slices.IndexFunc(jobs, func(o *jobspb.Job) bool { return o.GetId() == j.GetId() }); i >= 0 {
		jobs[i] = j
		return
	}
	s.jobs[j.GetRepository()] = append([]*jobspb.Job{j}, jobs...)
}

func (s *jobsServer) JobLog(req *jobspb.JobLogRequest, stream grpc.ServerStreamingServer[jobspb.LogLine]) error {
	if err := s.check(stream.Context(), "JobLog"); err != nil {
		return err
	}
	s.mu.Lock()
	lines := s.logs[req.GetJobId()]
	s.mu.Unlock()
	for _, l := range lines {
		if err := stream.Send(l); err != nil {
			return err
		}
	}
	return nil
}

// fixture returns the server's data: demo/hello with three jobs (the
// newest failed, with a hostile error), read-only/app with one.
func fixture() *jobsServer {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := func(min int) *timestamppb.Timestamp { return timestamppb.New(t0.Add(time.Duration(min) * time.Minute)) }
	job := func(repo, id string, it int32, st string) *jobspb.Job {
		return &jobspb.Job{Id: id, Repository: repo, Iteration: it, Status: st, Commit: fmt.Sprintf("%07d%033d", it, 0),
			Ref: "refs/heads/main", Branch: "main", Trigger: "push", Actor: "octocat", CreatedAt: ts(int(it) * 10),
			StartedAt: ts(int(it)*10 + 1), FinishedAt: ts(int(it)*10 + 3)}
	}
	ok := job("demo/hello", "job-2", 2, "succeeded")
	ok.Images = map[string]string{"hello": "localhost:5000/demo/hello:0000000@sha256:" + strings.Repeat("a", 64)}
	ok.Phases = []*jobspb.Phase{{Name: "build", Status: "Succeeded"}, {Name: "deploy", Status: "Succeeded"}, {Name: "status-check", Status: "Succeeded"}}
	bad := job("demo/hello", "job-3", 3, "failed")
	bad.Error = "kube-git-deploy.toml:3: " + hostile
	bad.Actor = hostile
	bad.Branch = "feature/" + hostile
	bad.Phases = []*jobspb.Phase{{Name: "build", Status: "Failed"}}
	running := job("demo/hello", "job-4", 4, "running")
	running.FinishedAt = nil
	running.Phases = []*jobspb.Phase{{Name: "build", Status: "InProgress"}}
	queued := job("demo/hello", "job-5", 0, "queued")
	queued.StartedAt, queued.FinishedAt = nil, nil
	ro := job("read-only/app", "job-ro", 1, "succeeded")
	ro.Images = map[string]string{"app": "r/app@sha256:" + strings.Repeat("b", 64)}
	line := func(seq int64, phase, unit, level, text, st string, last bool) *jobspb.LogLine {
		return &jobspb.LogLine{Time: ts(int(seq)), Phase: phase, Unit: unit, Level: level, Text: text, Sequence: seq, Status: st, Last: last}
	}
	return &jobsServer{
		repos: []*jobspb.Repository{
			{Repository: "read-only/app", TrackedBy: "alice", LatestJob: ro},
			{Repository: "demo/hello", TrackedBy: "demo", AutoBuild: true, AutoDeploy: true, LatestJob: queued, CanOperate: true},
		},
		jobs: map[string][]*jobspb.Job{
			"demo/hello":    {queued, running, bad, ok, job("demo/hello", "job-1", 1, "canceled")},
			"read-only/app": {ro},
		},
		logs: map[string][]*jobspb.LogLine{
			"job-2": {
				line(10, "devloop", "", "INFO", "Starting job job-2", "", false),
				line(11, "build", "", "INFO", "Build containers", "InProgress", false),
				line(12, "build", "localhost:5000/demo/hello", "INFO", "Step 1/3 : FROM scratch", "", false),
				line(13, "build", "localhost:5000/demo/hello", "INFO", "built", "Succeeded", false),
				line(14, "status-check", "deployment/hello", "INFO", "deployment/hello: 2/2 replicas available", "Succeeded", false),
				line(15, "devloop", "", "INFO", "Update succeeded", "Succeeded", true),
			},
			"job-3": {line(20, "build", "", "ERROR", "error: "+hostile, "Failed", false)},
			"job-4": {
				line(30, "build", "", "INFO", "Build containers", "InProgress", false),
				line(31, "build", "localhost:5000/demo/hello", "WARN", "  indented output", "", false),
			},
		},
	}
}

// newServer serves the dashboard backed by srv over real gRPC on
// loopback, as the API service wires it.
func newServer(t *testing.T, srv *jobsServer) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(newHandler(t, srv))
	t.Cleanup(ts.Close)
	return ts
}

// newHandler returns the dashboard calling srv over real gRPC on
// loopback.
func newHandler(t *testing.T, srv *jobsServer) http.Handler {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	jobspb.RegisterJobsServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h, err := dashboard.New(jobspb.NewJobsClient(conn), dashboard.Options{PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type response struct {
	code   int
	header http.Header
	body   string
}

func get(t *testing.T, ts *httptest.Server, method, path string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func TestPages(t *testing.T) {
	ts := newServer(t, fixture())
	escaped := `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;`
	tests := []struct {
		name, path string
		header     http.Header
		code       int
		want       []string // substrings of the body
		notWant    []string
		location   string
	}{
		{name: "redirect", path: "/ui", code: http.StatusMovedPermanently, location: "/ui/"},
		{name: "repositories", path: "/ui/", code: http.StatusOK, want: []string{
			`<h1>Repositories</h1>`, `href="/ui/repos/demo/hello">demo/hello</a>`, `href="/ui/repos/read-only/app">read-only/app</a>`,
			`href="/ui/repos/demo/hello/jobs/job-5">Job job-5</a>`, `data-status="queued"`, `<span class="label">queued</span>`,
			`href="/ui/repos/read-only/app/jobs/job-ro">Job #1</a>`, `<code>0000001</code>`,
			`<time datetime="2026-03-01T12:10:00Z">2026-03-01 12:10:00 UTC</time>`,
		}},
		{name: "repository first page", path: "/ui/repos/demo/hello", code: http.StatusOK, want: []string{
			`<h1>demo/hello</h1>`, `data-page="repository"`, `data-repository="demo/hello"`,
			`id="job-job-4" data-job="job-4" data-iteration="4"`, `<span class="label">running</span>`,
			`href="/ui/repos/demo/hello/jobs/job-3">Job #3</a>`, `<span class="label">failed</span>`,
			`href="/ui/repos/demo/hello?page_token=3" rel="next">Older jobs</a>`,
			`<template id="job-row-template">`, `you may rerun, deploy and roll back`,
		}, notWant: []string{`Newest jobs`, `job-2"`, `<script>alert`}},
		{name: "repository older page", path: "/ui/repos/demo/hello?page_token=3", code: http.StatusOK, want: []string{
			`data-page="repository-older"`, `href="/ui/repos/demo/hello">Newest jobs</a>`,
			`href="/ui/repos/demo/hello/jobs/job-2">Job #2</a>`, `<td class="opt job-took">2m 0s</td>`, `<span class="label">canceled</span>`,
		}, notWant: []string{`rel="next"`}},
		{name: "bad page token", path: "/ui/repos/demo/hello?page_token=x", code: http.StatusBadRequest,
			want: []string{`page_token &#34;x&#34; is not one this API gave out`}},
		{name: "unknown repository", path: "/ui/repos/demo/nope", code: http.StatusNotFound,
			want: []string{`<h1>404 Not Found</h1>`, `repository demo/nope is not tracked`}},
		{name: "malformed repository", path: "/ui/repos/demo/..%2e", code: http.StatusNotFound},
		{name: "succeeded job", path: "/ui/repos/demo/hello/jobs/job-2", code: http.StatusOK, want: []string{
			`<h1>Job <span id="job-name">#2</span>`, `data-page="job"`, `data-job="job-2"`, `data-iteration="2"`, `data-ended="true"`,
			`data-since="15"`,
			`<li class="phase" data-phase="build">`, `<li class="unit" data-unit="localhost:5000/demo/hello">`,
			`data-unit="deployment/hello"`, `<span class="unit-message">2/2 replicas available</span>`,
			`<button type="button" id="rerun" data-url="/kgd/v1/repositories/demo/hello/jobs/job-2:rerun"`,
			`<button type="button" id="rollback" data-url="/kgd/v1/repositories/demo/hello/jobs/job-2:rollback" aria-describedby="rollback-help">Roll back to this job</button>`,
			`<div class="line lvl-info" data-seq="12">`, `<span class="text">Step 1/3 : FROM scratch</span>`,
			`id="job-error" class="error-box" role="alert" hidden>`, `<div id="log" class="log" role="log" aria-live="polite"`,
		}},
		{name: "failed job escapes", path: "/ui/repos/demo/hello/jobs/job-3", code: http.StatusOK, want: []string{
			`<pre id="job-error-text">kube-git-deploy.toml:3: ` + escaped + `</pre>`, `Why it failed`,
			`<dd>push by ` + escaped + `</dd>`, `<dd>feature/` + escaped + `</dd>`, `<span class="text">error: ` + escaped + `</span>`,
			`id="rollback" data-url="/kgd/v1/repositories/demo/hello/jobs/job-3:rollback" aria-describedby="rollback-help" hidden>`,
			`<div id="job-error" class="error-box" role="alert">`,
		}, notWant: []string{`<script>alert`, `<img src=x`}},
		{name: "running job is live", path: "/ui/repos/demo/hello/jobs/job-4", code: http.StatusOK, want: []string{
			`data-since="31"`, `data-status="running"`, `<span class="text">  indented output</span>`, `class="line lvl-warn"`,
		}, notWant: []string{`data-ended`}},
		{name: "queued job", path: "/ui/repos/demo/hello/jobs/job-5", code: http.StatusOK, want: []string{
			`<h1>Job <span id="job-name">job-5</span>`, `data-iteration="0"`, `<p id="log-empty" class="hint">No output yet.</p>`,
		}, notWant: []string{`data-since`, `data-ended`}},
		{name: "reader sees no buttons", path: "/ui/repos/read-only/app/jobs/job-ro", code: http.StatusOK,
			notWant: []string{`id="rerun"`, `id="rollback"`}},
		{name: "unknown job", path: "/ui/repos/demo/hello/jobs/job-9", code: http.StatusNotFound,
			want: []string{`job job-9 of demo/hello not found`}},
		{name: "job of unknown repository", path: "/ui/repos/demo/nope/jobs/job-2", code: http.StatusNotFound},
		{name: "unauthenticated", path: "/ui/", header: http.Header{"Authorization": {"Bearer expired"}},
			code: http.StatusUnauthorized, want: []string{`the identity token expired`}},
		{name: "permission denied", path: "/ui/repos/demo/hello", header: http.Header{"Authorization": {"Bearer stranger"}},
			code: http.StatusForbidden, want: []string{`stranger@example.com may not read demo/hello`}},
		{name: "internal error hidden", path: "/ui/repos/demo/hello/jobs/job-2", header: http.Header{"Authorization": {"Bearer broken"}},
			code: http.StatusBadGateway, want: []string{`The API service did not answer as expected`}, notWant: []string{"secret"}},
		{name: "unknown page", path: "/ui/nothing/here", code: http.StatusNotFound, want: []string{`There is no such page.`}},
		{name: "post", path: "/ui/", code: http.StatusMethodNotAllowed},
		{name: "script", path: "/ui/static/dashboard.js", code: http.StatusOK, want: []string{`'use strict';`, `/v2/events?`}},
		{name: "style sheet", path: "/ui/static/dashboard.css", code: http.StatusOK, want: []string{`:focus-visible`}},
		{name: "unknown static", path: "/ui/static/evil.js", code: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodGet
			if tt.name == "post" {
				method = http.MethodPost
			}
			r := get(t, ts, method, tt.path, tt.header)
			if r.code != tt.code {
				t.Fatalf("%s %s = %d, want %d\n%s", method, tt.path, r.code, tt.code, r.body)
			}
			if got := r.header.Get("Location"); got != tt.location {
				t.Errorf("Location = %q, want %q", got, tt.location)
			}
			for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options"} {
				if r.header.Get(h) == "" {
					t.Errorf("no %s header", h)
				}
			}
			if got := r.header.Get("Content-Security-Policy"); !strings.HasPrefix(got, "default-src 'self';") {
				t.Errorf("Content-Security-Policy = %q", got)
			}
			for _, s := range tt.want {
				if !strings.Contains(r.body, s) {
					t.Errorf("body lacks %s\n%s", s, r.body)
				}
			}
			for _, s := range tt.notWant {
				if strings.Contains(r.body, s) {
					t.Errorf("body contains %s\n%s", s, r.body)
				}
			}
			if strings.HasPrefix(r.body, "<!doctype html>") {
				checkMarkup(t, r.body)
			}
		})
	}
}

// checkMarkup checks what every page must be: one h1, the landmarks,
// a labelled button for each, no inline script or style, no other
// origin.
func checkMarkup(t *testing.T, body string) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse the page: %v", err)
	}
	count := map[string]int{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			count[n.Data]++
			attr := map[string]string{}
			for _, a := range n.Attr {
				attr[a.Key] = a.Val
				if a.Key == "style" || strings.HasPrefix(a.Key, "on") {
					t.Errorf("<%s %s=%q>: inline style or script", n.Data, a.Key, a.Val)
				}
				if (a.Key == "src" || a.Key == "href") && (strings.Contains(a.Val, "//") || strings.HasPrefix(a.Val, "javascript:")) {
					t.Errorf("<%s %s=%q>: not this origin", n.Data, a.Key, a.Val)
				}
			}
			switch n.Data {
			case "script":
				if attr["src"] == "" || n.FirstChild != nil {
					t.Errorf("inline script")
				}
			case "style":
				t.Errorf("inline style element")
			case "button":
				if text(n) == "" && attr["aria-label"] == "" {
					t.Errorf("button without a label")
				}
			case "html":
				if attr["lang"] == "" {
					t.Errorf("<html> without lang")
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	for el, want := range map[string]int{"h1": 1, "main": 1, "header": 1, "nav": count["nav"], "footer": 1, "title": 1} {
		if count[el] != want {
			t.Errorf("%d <%s> elements, want %d", count[el], el, want)
		}
	}
	if count["nav"] < 1 {
		t.Errorf("no <nav> (breadcrumbs)")
	}
	if !strings.Contains(body, `<meta name="viewport" content="width=device-width, initial-scale=1">`) {
		t.Errorf("no viewport meta")
	}
}

func text(n *html.Node) string {
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		} else {
			b.WriteString(text(c))
		}
	}
	return strings.TrimSpace(b.String())
}

// TestIdentityForwarded checks each API call of a page carries the
// browser's identity headers as the gateway forwards them, and nothing
// when the browser sent none.
func TestIdentityForwarded(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   map[string][]string
	}{
		{"both", http.Header{"Authorization": {"Bearer user-token"}, "X-Serverless-Authorization": {"Bearer iam-token"}},
			map[string][]string{"authorization": {"Bearer user-token"}, "x-serverless-authorization": {"Bearer iam-token"}}},
		{"authorization only", http.Header{"Authorization": {"Bearer user-token"}},
			map[string][]string{"authorization": {"Bearer user-token"}}},
		{"twice, as sent", http.Header{"Authorization": {"Bearer a", "Bearer b"}},
			map[string][]string{"authorization": {"Bearer a", "Bearer b"}}},
		{"none", nil, map[string][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fixture()
			ts := newServer(t, srv)
			for _, path := range []string{"/ui/", "/ui/repos/demo/hello", "/ui/repos/demo/hello/jobs/job-2"} {
				if r := get(t, ts, http.MethodGet, path, tt.header); r.code != http.StatusOK {
					t.Fatalf("GET %s = %d\n%s", path, r.code, r.body)
				}
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			var methods []string
			for _, c := range srv.calls {
				methods = append(methods, c.method)
				got := map[string][]string{}
				for _, k := range []string{"authorization", "x-serverless-authorization"} {
					if v := c.md.Get(k); len(v) > 0 {
						got[k] = v
					}
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("%s metadata (-want +got):\n%s", c.method, diff)
				}
			}
			for _, m := range []string{"ListRepositories", "ListJobs", "GetJob", "JobLog"} {
				if !slices.Contains(methods, m) {
					t.Errorf("no %s call among %v", m, methods)
				}
			}
		})
	}
}

func TestStaticCaching(t *testing.T) {
	ts := newServer(t, fixture())
	r := get(t, ts, http.MethodGet, "/ui/static/dashboard.js", nil)
	if ct := r.header.Get("Content-Type"); ct != "text/javascript; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	etag := r.header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	page := get(t, ts, http.MethodGet, "/ui/", nil)
	if want := `src="/ui/static/dashboard.js?v=` + strings.Trim(etag, `"`) + `"`; !strings.Contains(page.body, want) {
		t.Errorf("page does not load %s", want)
	}
	if r := get(t, ts, http.MethodGet, "/ui/static/dashboard.js", http.Header{"If-None-Match": {etag}}); r.code != http.StatusNotModified {
		t.Errorf("If-None-Match = %d, want 304", r.code)
	}
}

func TestNewNeedsClient(t *testing.T) {
	if _, err := dashboard.New(nil, dashboard.Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}
