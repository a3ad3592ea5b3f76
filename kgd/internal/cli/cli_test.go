package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/client"
	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
)

// run runs kgd with args against api (the API service and PrivateAPI)
// and returns its exit code, stdout and stderr.
func run(t *testing.T, api string, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if env == nil {
		env = map[string]string{}
	}
	if api != "" {
		env[EnvAPIURL], env[EnvPrivateAPIURL] = api, api
	}
	code := Main(t.Context(), args, Env{
		Getenv: func(k string) string { return env[k] }, Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Now:      func() time.Time { return time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC) },
		LookPath: func(string) (string, error) { return "", fmt.Errorf("no gcloud in tests") }, PollEvery: 10 * time.Millisecond,
	})
	return code, stdout.String(), stderr.String()
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantStderr string
	}{
		{"unknown-command", []string{"frobnicate"}, nil, `kgd: unknown command "frobnicate" for "kgd" (see kgd --help)`},
		{"unknown-flag", []string{"jobs", "--frob"}, nil, "kgd: unknown flag: --frob (see kgd jobs --help)"},
		{"bad-flag-value", []string{"jobs", "--limit", "x"}, nil,
			`kgd: invalid argument "x" for "-n, --limit" flag: strconv.ParseInt: parsing "x": invalid syntax (see kgd jobs --help)`},
		{"no-repository", []string{"jobs"}, nil, "kgd: no repository: pass -r OWNER/NAME or set KGD_REPOSITORY"},
		{"bad-repository-env", []string{"jobs"}, map[string]string{EnvRepository: "nope"},
			`kgd: "nope" is not a repository: want OWNER/NAME, e.g. demo/hello`},
		{"too-many-arguments", []string{"job", "a", "b", "-r", "demo/hello"}, nil,
			"kgd: kgd job takes one job id (got 2 arguments; see kgd job --help)"},
		{"bad-output", []string{"repos", "-o", "yaml"}, nil, `kgd: --output must be text or json, not "yaml"`},
		{"limit-out-of-range", []string{"jobs", "-r", "demo/hello", "--limit", "500"}, nil,
			"kgd: --limit must be between 1 and 100 (0: the server's default, 20)"},
		{"auto-bad-word", []string{"auto", "build", "maybe", "-r", "demo/hello"}, nil, `kgd: kgd auto build takes on or off, not "maybe"`},
		{"deploy-without-commit", []string{"deploy", "-r", "demo/hello", "--branch", "main"}, nil, "kgd: kgd deploy needs --branch and --commit"},
		{"policy-set-and-fields", []string{"policy", "demo/hello", "--set", "p.json", "--adopt"}, nil,
			"kgd: --set replaces the whole policy: give it or field flags (--namespace, --create-namespaces, --cluster-scoped, --allow-kind, --adopt, --service-account, --operator), not both"},
		{"plain-http-remote", []string{"repos", "--api", "http://kgd.example.com"}, nil,
			"kgd: refusing to send an identity token to http://kgd.example.com/ over plain http: use an https URL (only localhost may be plain http)"},
		{"not-a-url", []string{"repos", "--api", "localhost:50052"}, nil, `kgd: API URL "localhost:50052" is not an http(s) URL like http://localhost:50052`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, "", tt.env, tt.args...)
			if code != client.ExitUsage || stdout != "" || stderr != tt.wantStderr+"\n" {
				t.Errorf("kgd %s = exit %d\nstdout %q\nstderr %q\nwant exit 2, stderr %q", strings.Join(tt.args, " "), code, stdout, stderr, tt.wantStderr)
			}
		})
	}
}

func TestHelpAndCompletion(t *testing.T) {
	code, stdout, _ := run(t, "", nil, "--help")
	for _, want := range []string{"Exit codes:", "  3  not found", "KGD_API_URL", "NO_COLOR", "events", "completion"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("kgd --help (exit %d) lacks %q", code, want)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		code, stdout, stderr := run(t, "", nil, "completion", shell)
		if code != 0 || !strings.Contains(stdout, "kgd") || stderr != "" {
			t.Errorf("kgd completion %s: exit %d, %d bytes, stderr %q", shell, code, len(stdout), stderr)
		}
	}
}

// fakeAPI serves canned answers of the API service's gateway: jobs,
// their logs and a repository's v2 event stream, which stays open after
// its events as the real one does.
type fakeAPI struct {
	jobs   map[string]*jobspb.Job
	list   []*jobspb.Job
	events []*v2pb.Event // numbered by kgd_sequence

	mu     sync.Mutex
	sinces []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	write := func(m proto.Message) {
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		w.Write(b)
	}
	const prefix = "/kgd/v1/repositories/demo/hello/jobs"
	switch p := r.URL.Path; {
	case p == prefix:
		write(&jobspb.ListJobsResponse{Jobs: f.list})
	case strings.HasPrefix(p, prefix+"/") && strings.HasSuffix(p, "/log"):
		j := f.jobs[strings.TrimSuffix(strings.TrimPrefix(p, prefix+"/"), "/log")]
		for _, e := range f.events {
			if belongs(e, j.GetId(), j.GetIteration()) {
				fmt.Fprintf(w, `{"result":{"text":"x","sequence":"%d"}}`+"\n", e.GetKgdSequence())
			}
		}
	case strings.HasPrefix(p, prefix+"/"):
		j, ok := f.jobs[strings.TrimPrefix(p, prefix+"/")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":5,"message":"job nope of demo/hello not found","details":[]}`)
			return
		}
		write(j)
	case p == "/v2/events":
		f.mu.Lock()
		f.sinces = append(f.sinces, r.URL.Query().Get("since"))
		f.mu.Unlock()
		var since int64 = -1
		fmt.Sscan(r.URL.Query().Get("since"), &since)
		for _, e := range f.events {
			if e.GetKgdSequence() > since {
				io.WriteString(w, `{"result":`)
				write(e)
				io.WriteString(w, "}\n")
			}
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"code":5,"message":"Not Found","details":[]}`)
	}
}

// history builds two jobs' events with the runner's constructors: job
// p-ok (iteration 1) succeeds, p-bad (iteration 2) fails to build.
func history() []*v2pb.Event {
	clock := time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)
	now := func() time.Time { clock = clock.Add(time.Second); return clock }
	plan := event.Plan{Artifacts: []event.Artifact{{Name: "localhost:5005/demo/hello"}}, Releases: 1}
	ok := event.NewFactory(event.Job{ID: "p-ok", Repository: "demo/hello", Commit: "aaaaaaa1", Branch: "main", Trigger: "push", Iteration: 1}, plan, now)
	bad := event.NewFactory(event.Job{ID: "p-bad", Repository: "demo/hello", Commit: "bbbbbbb2", Branch: "main", Trigger: "push", Iteration: 2}, plan, now)
	err := &event.ErrorInfo{Code: enumspb.StatusCode_BUILD_USER_ERROR, Message: "RUN false: exit code 1"}
	const img = "localhost:5005/demo/hello"
	events := []*v2pb.Event{
		ok.V2Meta(), ok.V2Task(event.TaskDevLoop, event.V2InProgress, nil),
		ok.V2Task(event.TaskBuild, event.V2InProgress, nil), ok.V2Build(img, event.StepBuild, event.V2InProgress, nil),
		ok.V2Build(img, event.StepBuild, event.V2Succeeded, nil), ok.V2Task(event.TaskBuild, event.V2Succeeded, nil),
		ok.V2Task(event.TaskDevLoop, event.V2Succeeded, nil),
		bad.V2Meta(), bad.V2Task(event.TaskDevLoop, event.V2InProgress, nil),
		bad.V2Task(event.TaskBuild, event.V2InProgress, nil), bad.V2Build(img, event.StepBuild, event.V2InProgress, nil),
		bad.V2Log(event.TaskBuild, img, enumspb.LogLevel_STANDARD, "Step 1/1 : RUN false"),
		bad.V2Build(img, event.StepBuild, event.V2Failed, err), bad.V2Task(event.TaskBuild, event.V2Failed, err),
		bad.V2Task(event.TaskDevLoop, event.V2Failed, err),
	}
	for i, e := range events {
		e.KgdSequence = proto.Int64(int64(100 + i))
	}
	return events
}

func TestEvents(t *testing.T) {
	okJob := &jobspb.Job{Id: "p-ok", Repository: "demo/hello", Iteration: 1, Status: "succeeded"}
	badJob := &jobspb.Job{Id: "p-bad", Repository: "demo/hello", Iteration: 2, Status: "failed", Error: "RUN false: exit code 1"}
	queued := &jobspb.Job{Id: "p-q", Repository: "demo/hello", Status: "queued"}
	superseded := &jobspb.Job{Id: "p-old", Repository: "demo/hello", Status: "canceled", Error: "superseded by a newer push"}
	api := &fakeAPI{jobs: map[string]*jobspb.Job{"p-ok": okJob, "p-bad": badJob, "p-q": queued, "p-old": superseded},
		list: []*jobspb.Job{badJob, okJob}, events: history()}
	srv := httptest.NewServer(api)
	defer srv.Close()

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
		wantSince  string
	}{
		{"succeeded", []string{"events", "-r", "demo/hello", "--job", "p-ok"}, 0,
			"Job p-ok of demo/hello, iteration 1: aaaaaaa on main (push)\nStarting build...\nBuilding [localhost:5005/demo/hello]...\n" +
				"Build [localhost:5005/demo/hello] succeeded\nJob p-ok of demo/hello succeeded in 6.0s\n", "", "99"},
		{"latest-failed", []string{"events", "-r", "demo/hello"}, 1,
			"Job p-bad of demo/hello, iteration 2: bbbbbbb on main (push)\nStarting build...\nBuilding [localhost:5005/demo/hello]...\n" +
				"Step 1/1 : RUN false\nBuild [localhost:5005/demo/hello] failed: RUN false: exit code 1\n" +
				"Job p-bad of demo/hello failed in 7.0s: RUN false: exit code 1\n", "", "106"},
		{"failed-json", []string{"events", "-r", "demo/hello", "--job", "p-bad", "-o", "json"}, 1, "",
			"kgd: Job p-bad of demo/hello failed in 7.0s: RUN false: exit code 1\n", "106"},
		{"follow-finished", []string{"events", "-f", "-r", "demo/hello", "--job", "p-ok"}, 0,
			"Job p-ok of demo/hello, iteration 1: aaaaaaa on main (push)\nStarting build...\nBuilding [localhost:5005/demo/hello]...\n" +
				"Build [localhost:5005/demo/hello] succeeded\nJob p-ok of demo/hello succeeded in 6.0s\n", "", "99"},
		{"queued-without-follow", []string{"events", "-r", "demo/hello", "--job", "p-q"}, 0,
			"Job p-q of demo/hello is queued: it has not started yet (follow it with: kgd events -f -r demo/hello --job p-q)\n", "", ""},
		{"superseded-before-start", []string{"events", "-f", "-r", "demo/hello", "--job", "p-old"}, 1,
			"Job p-old of demo/hello was canceled: superseded by a newer push\n", "", ""},
		{"job-not-found", []string{"events", "-r", "demo/hello", "--job", "nope"}, 3, "", "kgd: job nope of demo/hello not found\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api.mu.Lock()
			api.sinces = nil
			api.mu.Unlock()
			code, stdout, stderr := run(t, srv.URL, nil, tt.args...)
			if code != tt.wantCode || stderr != tt.wantStderr {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, stderr, tt.wantCode, tt.wantStderr)
			}
			if tt.wantStdout != "" || !strings.Contains(strings.Join(tt.args, " "), "json") {
				if diff := cmp.Diff(tt.wantStdout, stdout); diff != "" {
					t.Errorf("stdout (-want +got):\n%s", diff)
				}
			}
			api.mu.Lock()
			defer api.mu.Unlock()
			if tt.wantSince != "" && (len(api.sinces) != 1 || api.sinces[0] != tt.wantSince) {
				t.Errorf("event streams read since %q, want one since %s", api.sinces, tt.wantSince)
			}
		})
	}
	t.Run("json-lines", func(t *testing.T) {
		code, stdout, _ := run(t, srv.URL, nil, "events", "-r", "demo/hello", "--job", "p-ok", "-o", "json")
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if code != 0 || len(lines) != 7 {
			t.Fatalf("exit %d, %d lines:\n%s", code, len(lines), stdout)
		}
		for _, l := range lines {
			var e v2pb.Event
			if err := protojson.Unmarshal([]byte(l), &e); err != nil || !strings.Contains(l, `"kgd_sequence"`) {
				t.Errorf("line %s: %v", l, err)
			}
		}
	})
}

func TestPickJob(t *testing.T) {
	j := func(id, status string, it int32) *jobspb.Job {
		return &jobspb.Job{Id: id, Status: status, Iteration: it}
	}
	tests := []struct {
		name      string
		jobs      []*jobspb.Job
		follow    bool
		wantID    string
		wantAfter int32
	}{
		{"latest", []*jobspb.Job{j("c", "queued", 0), j("b", "running", 2)}, false, "c", 0},
		{"none", nil, false, "", 0},
		{"follow-running", []*jobspb.Job{j("c", "queued", 0), j("b", "running", 2), j("a", "succeeded", 1)}, true, "b", 0},
		{"follow-next", []*jobspb.Job{j("c", "pending", 0), j("b", "failed", 2), j("a", "succeeded", 1)}, true, "", 2},
		{"follow-first", nil, true, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, after := pickJob(tt.jobs, tt.follow)
			if got.GetId() != tt.wantID || after != tt.wantAfter {
				t.Errorf("pickJob = %q, %d; want %q, %d", got.GetId(), after, tt.wantID, tt.wantAfter)
			}
		})
	}
}

func TestBelongs(t *testing.T) {
	f := event.NewFactory(event.Job{ID: "p-3", Iteration: 3}, event.Plan{}, nil)
	f13 := event.NewFactory(event.Job{ID: "p-13", Iteration: 13}, event.Plan{}, nil)
	tests := []struct {
		name string
		e    *v2pb.Event
		want bool
	}{
		{"meta", f.V2Meta(), true},
		{"other-meta", f13.V2Meta(), false},
		{"task", f.V2Task(event.TaskBuild, event.V2InProgress, nil), true},
		{"task-of-iteration-13", f13.V2Task(event.TaskBuild, event.V2InProgress, nil), false},
		{"build", f.V2Build("img", event.StepBuild, event.V2InProgress, nil), true},
		{"log", f.V2Log(event.TaskBuild, "img", enumspb.LogLevel_STANDARD, "x"), true},
		{"log-of-13", f13.V2Log(event.TaskDeploy, "-1", enumspb.LogLevel_STANDARD, "x"), false},
		{"resource", f.V2ResourceStatus("deployment/x", event.V2Succeeded, "", 0, nil), true},
		{"application-log", &v2pb.Event{EventType: &v2pb.Event_ApplicationLogEvent{ApplicationLogEvent: &v2pb.ApplicationLogEvent{}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := belongs(tt.e, "p-3", 3); got != tt.want {
				t.Errorf("belongs = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	const loginURL = "https://github.com/login/oauth/authorize?client_id=c&state=s"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v0/github/login_url" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, `{"ok":true,"login_url":"`+loginURL+`","expires_at":"2999-01-01T00:00:00Z"}`)
	}))
	defer srv.Close()
	for _, tt := range []struct {
		name        string
		terminal    bool
		args        []string
		wantBrowser bool
		wantOut     []string
	}{
		{"terminal", true, []string{"login"}, true, []string{"  " + loginURL + "\n", "Opened it in your browser.", "Press Enter", "Next: kgd track OWNER/NAME"}},
		{"terminal-no-browser", true, []string{"login", "--no-browser"}, false, []string{"  " + loginURL + "\n", "Press Enter"}},
		{"pipe", false, []string{"login"}, false, []string{"  " + loginURL + "\n", "Never complete a login URL for someone else."}},
		{"json", false, []string{"login", "-o", "json"}, false, []string{`"login_url": "` + loginURL + `"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			var opened []string
			code := Main(t.Context(), tt.args, Env{
				Getenv: func(k string) string { return map[string]string{EnvPrivateAPIURL: srv.URL}[k] },
				Stdin:  strings.NewReader("\n"), Stdout: &stdout, Stderr: &stderr,
				StdinTerminal: tt.terminal, StdoutTerminal: tt.terminal,
				OpenBrowser: func(_ context.Context, u string) error { opened = append(opened, u); return nil },
			})
			if code != 0 || stderr.Len() > 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr.String())
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			if tt.wantBrowser != (len(opened) == 1 && opened[0] == loginURL) || len(opened) > 1 {
				t.Errorf("browser opened %v, want it opened: %v", opened, tt.wantBrowser)
			}
		})
	}
}
