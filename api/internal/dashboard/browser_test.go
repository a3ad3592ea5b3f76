package dashboard_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
)

// gatewayJSON writes messages as the API's gateway does: proto field
// names, every field.
var gatewayJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// gateway stands in for the API's HTTP gateway beside the dashboard: the
// v2 event stream, whose connections the test receives and feeds, and
// the job routes the script calls.
type gateway struct {
	t     *testing.T
	jobs  *jobsServer
	conns chan *eventConn
	posts chan post
}

// eventConn is one browser connection to GET /v2/events.
type eventConn struct {
	query url.Values
	lines chan []byte
	end   chan struct{} // close to end the response
	gone  chan struct{} // closed when the response ended
}

// post is one request the script made to start a job.
type post struct {
	path, contentType, body string
}

func (g *gateway) events(w http.ResponseWriter, r *http.Request) {
	c := &eventConn{query: r.URL.Query(), lines: make(chan []byte), end: make(chan struct{}), gone: make(chan struct{})}
	defer close(c.gone)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	select {
	case g.conns <- c:
	case <-r.Context().Done():
		return
	}
	for {
		select {
		case l := <-c.lines:
			_, _ = w.Write(append(l, '\n'))
			_ = rc.Flush()
		case <-c.end:
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (g *gateway) getJob(w http.ResponseWriter, r *http.Request) {
	j := g.jobs.job(r.PathValue("owner")+"/"+r.PathValue("name"), r.PathValue("id"))
	if j == nil {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"code":5,"message":"no such job","details":[]}`)
		return
	}
	b, err := gatewayJSON.Marshal(j)
	if err != nil {
		g.t.Error(err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// startJob handles POST …/jobs/{id}:rerun and :rollback: it records the
// request and starts job-7, queued.
func (g *gateway) startJob(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	g.posts <- post{r.URL.Path, r.Header.Get("Content-Type"), string(b)}
	id, verb, _ := strings.Cut(r.PathValue("idverb"), ":")
	src := g.jobs.job("demo/hello", id)
	if src == nil || (verb != "rerun" && verb != "rollback") {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	j := &jobspb.Job{Id: "job-7", Repository: "demo/hello", Status: "queued", Commit: src.GetCommit(), Ref: src.GetRef(),
		Branch: src.GetBranch(), Trigger: verb, Actor: "local", SourceJob: id, CreatedAt: timestamppb.Now()}
	g.jobs.put(j)
	out, _ := gatewayJSON.Marshal(j)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// browser starts headless Chromium for the test, failing when it is not
// installed.
func browser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("install Debian's chromium (apt-get install chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"), chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancel)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Every uncaught exception of the pages fails the test.
	var mu sync.Mutex
	var exceptions []string
	done := make(chan struct{})
	messages := chromedp.Console(bctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				mu.Lock()
				exceptions = append(exceptions, m.String())
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		for _, e := range exceptions {
			t.Errorf("browser console: %s", e)
		}
	})
	return bctx
}

// TestBrowser drives the dashboard's script in headless Chromium against
// a stand-in gateway whose event stream the test feeds: rows appear and
// change on a repository's page, a job's page follows its pipeline and
// log (resuming after the rendered log, skipping what it has), shows the
// error, and Rerun posts JSON and opens the new job.
func TestBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	srv := fixture()
	g := &gateway{t: t, jobs: srv, conns: make(chan *eventConn), posts: make(chan post, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/events", g.events)
	mux.HandleFunc("GET /kgd/v1/repositories/{owner}/{name}/jobs/{id}", g.getJob)
	mux.HandleFunc("POST /kgd/v1/repositories/{owner}/{name}/jobs/{idverb}", g.startJob)
	mux.Handle("/ui/", newHandler(t, srv)) // the dashboard over real gRPC
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close) // after the browser's cleanup, which ends its streams
	bctx := browser(t, ctx)

	accept := func(t *testing.T) *eventConn {
		t.Helper()
		select {
		case c := <-g.conns:
			return c
		case <-ctx.Done():
			t.Fatal("the page opened no event stream")
			return nil
		}
	}
	seq := int64(100)
	send := func(t *testing.T, c *eventConn, e *v2pb.Event, at int64) {
		t.Helper()
		e.KgdSequence = proto.Int64(at)
		b, err := gatewayJSON.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case c.lines <- []byte(`{"result":` + string(b) + `}`):
		case <-ctx.Done():
			t.Fatal("the page stopped reading its event stream")
		}
	}
	next := func() int64 { seq++; return seq }
	rowStatus := func(job string) string {
		return `document.querySelector('#job-rows tr[data-job="` + job + `"] .job-status .badge')?.dataset.status`
	}
	wait := func(t *testing.T, what, expr string) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(0), chromedp.WithPollingMutation())); err != nil {
			t.Fatalf("%s (%s): %v", what, expr, err)
		}
	}
	factory := func(id string, it int) *event.Factory {
		return event.NewFactory(event.Job{ID: id, Repository: "demo/hello", Commit: strings.Repeat("6", 40), Ref: "refs/heads/main",
			Branch: "main", Trigger: "push", Iteration: it}, event.Plan{}, nil)
	}
	const image = "localhost:5000/demo/hello"

	t.Run("repository page", func(t *testing.T) {
		if err := chromedp.Do(bctx, chromedp.Navigate(ts.URL+"/ui/repos/demo/hello")); err != nil {
			t.Fatal(err)
		}
		c := accept(t)
		if got := c.query.Encode(); got != "repository=demo%2Fhello&sequence=true" {
			t.Errorf("first stream query = %s, want the repository's recent window with sequence numbers", got)
		}
		six := &jobspb.Job{Id: "job-6", Repository: "demo/hello", Iteration: 6, Status: "running", Commit: strings.Repeat("6", 40),
			Ref: "refs/heads/main", Branch: "main", Trigger: "push", Actor: hostile, CreatedAt: timestamppb.Now(), StartedAt: timestamppb.Now()}
		srv.put(six)
		f := factory("job-6", 6)
		send(t, c, f.V2Meta(), next())
		wait(t, "the new job's row", `document.querySelector('#job-job-6 .job-status .badge')?.dataset.status === 'running'`)
		wait(t, "its row after the queued job, before job #4",
			`[...document.querySelectorAll('#job-rows tr')].map(r => r.dataset.job).join() === 'job-5,job-6,job-4,job-3'`)
		wait(t, "the actor as text", `document.querySelector('#job-job-6 .job-actor').textContent === `+jsString(hostile)+
			` && !document.querySelector('#job-rows img')`)
		send(t, c, f.V2Task(event.TaskBuild, event.V2InProgress, nil), next())
		done := proto.CloneOf(six)
		done.Status, done.FinishedAt = "succeeded", timestamppb.Now()
		srv.put(done)
		send(t, c, f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil), next())
		wait(t, "the job's outcome", `document.querySelector('#job-job-6 .job-status .badge').dataset.status === 'succeeded'`)
		wait(t, "the announcement", `document.getElementById('announce').textContent.includes('Job #6')`)
		// A job that fails at once: its end comes before its row is read.
		eight := &jobspb.Job{Id: "job-8", Repository: "demo/hello", Iteration: 8, Status: "running", Commit: strings.Repeat("8", 40),
			Ref: "refs/heads/main", Branch: "main", Trigger: "push", CreatedAt: timestamppb.Now(), StartedAt: timestamppb.Now()}
		srv.put(eight)
		f8 := factory("job-8", 8)
		send(t, c, f8.V2Meta(), next())
		send(t, c, f8.V2Task(event.TaskDevLoop, event.V2Failed, &event.ErrorInfo{Message: "kube-git-deploy.toml:3: bad"}), next())
		wait(t, "the fast job's row", rowStatus("job-8")+` !== undefined`)
		ended := proto.CloneOf(eight)
		ended.Status, ended.Error, ended.FinishedAt = "failed", "kube-git-deploy.toml:3: bad", timestamppb.Now()
		srv.put(ended)
		wait(t, "the fast job's failure", rowStatus("job-8")+` === 'failed'`)
		// The stream ends: the page resumes after the last number it applied.
		close(c.end)
		c = accept(t)
		if got, want := c.query.Get("since"), "105"; got != want {
			t.Errorf("resumed with since=%q, want %s", got, want)
		}
	})

	t.Run("job page", func(t *testing.T) {
		if err := chromedp.Do(bctx, chromedp.Navigate(ts.URL+"/ui/repos/demo/hello/jobs/job-4")); err != nil {
			t.Fatal(err)
		}
		c := accept(t)
		if got := c.query.Get("since"); got != "31" {
			t.Errorf("stream since=%q, want 31 (the last rendered log line)", got)
		}
		f := factory("job-4", 4)
		other := factory("job-6", 6)
		// The job's events after the rendered log, each with the line
		// JobLog makes of it (LogLineOf) or none.
		var mine []*v2pb.Event
		send := func(t *testing.T, c *eventConn, e *v2pb.Event, at int64) {
			t.Helper()
			send(t, c, e, at)
			if strings.HasSuffix(e.GetTaskEvent().GetId()+e.GetSkaffoldLogEvent().GetTaskId()+e.GetBuildSubtaskEvent().GetTaskId()+
				e.GetDeploySubtaskEvent().GetTaskId()+e.GetStatusCheckSubtaskEvent().GetTaskId()+e.GetRenderEvent().GetTaskId(), "-4") &&
				!strings.Contains(e.GetSkaffoldLogEvent().GetMessage(), "replayed") {
				mine = append(mine, e)
			}
		}
		send(t, c, f.V2Build(image, event.StepCache, event.V2Succeeded, nil), 31) // at the rendered position: skipped
		send(t, c, f.V2Build(image, event.StepBuild, event.V2Succeeded, nil), 32)
		wait(t, "the built unit", `document.querySelector('.phase[data-phase="build"] .unit[data-unit="`+image+`"] .badge')?.dataset.status === 'Succeeded'`)
		send(t, c, other.V2Log(event.TaskBuild, image, enumspb.LogLevel_INFO, "a line of another job"), 33)
		send(t, c, f.V2Log(event.TaskBuild, image, enumspb.LogLevel_INFO, hostile), 34)
		send(t, c, f.V2Log(event.TaskBuild, image, enumspb.LogLevel_INFO, "replayed, already shown"), 34)
		send(t, c, f.V2Log(event.TaskDeploy, event.SubtaskNone, enumspb.LogLevel_WARN, "helm: upgrading"), 35)
		wait(t, "the log lines", `[...document.querySelectorAll('#log .text')].map(e => e.textContent).join('|') === `+
			jsString("Build containers|  indented output|Build "+image+" succeeded|"+hostile+"|helm: upgrading"))
		wait(t, "no markup from the log", `!document.querySelector('#log img, #log script')`)
		send(t, c, f.V2Task(event.TaskBuild, event.V2Succeeded, nil), 36)
		send(t, c, f.V2Task(event.TaskRender, event.V2InProgress, nil), 37)
		send(t, c, f.V2Render(event.V2Succeeded, nil), 38)
		send(t, c, f.V2Deploy(event.V2Succeeded, nil), 39)
		send(t, c, f.V2Task(event.TaskStatusCheck, event.V2InProgress, nil), 40)
		send(t, c, f.V2ResourceStatus("deployment/hello", event.V2Failed, "0/2 ready", enumspb.StatusCode_STATUSCHECK_CONTAINER_CREATING,
			&event.ErrorInfo{Message: "container creating"}), 41)
		wait(t, "the phase", `document.querySelector('.phase[data-phase="build"] .phase-status .badge').dataset.status === 'Succeeded'`)
		wait(t, "the resource", `document.querySelector('.phase[data-phase="status-check"] .unit[data-unit="deployment/hello"] .unit-message')?.textContent === '0/2 ready: container creating'`)
		// The iteration ends before the job's record says so: the page
		// shows the end at once and never goes back to running.
		if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`window.kgdStatuses = [];
			new MutationObserver(() => kgdStatuses.push(document.querySelector('#job-status .badge').dataset.status)).observe(
				document.getElementById('job-status'), {subtree: true, attributes: true, attributeFilter: ['data-status']})`)); err != nil {
			t.Fatal(err)
		}
		send(t, c, f.V2Task(event.TaskDevLoop, event.V2Failed, &event.ErrorInfo{Message: "deployment/hello failed"}), 42)
		wait(t, "the error of the event", `!document.getElementById('job-error').hidden && `+
			`document.getElementById('job-error-text').textContent === 'deployment/hello failed' && `+
			`document.querySelector('#job-status .badge').dataset.status === 'failed'`)
		failed := proto.CloneOf(srv.job("demo/hello", "job-4"))
		failed.Status, failed.Error, failed.FinishedAt = "failed", "rollout: deployment/hello: "+hostile, timestamppb.Now()
		srv.put(failed)
		wait(t, "the error of the record", `document.getElementById('job-error-text').textContent === `+jsString(failed.Error)+
			` && document.querySelector('#job-finished time') !== null`)
		statuses, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`kgdStatuses`))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(statuses, "running") {
			t.Errorf("the job's badge went %v after the iteration failed", statuses)
		}
		select {
		case <-c.gone:
		case <-ctx.Done():
			t.Fatal("the page kept following the ended job")
		}
		// The live lines read as JobLog writes them, also after a reload.
		var want []logLine
		for _, e := range mine {
			if l := skaffold.LogLineOf(e); l != nil {
				want = append(want, logLine{l.GetPhase(), l.GetUnit(), strings.ToLower(l.GetLevel()), l.GetText()})
			}
		}
		got, err := chromedp.Run(bctx, chromedp.Evaluate[[]logLine](`[...document.querySelectorAll('#log .line')].slice(2).map(l => ({
			phase: l.querySelector('.tag').textContent, unit: l.querySelector('.unit').textContent,
			level: [...l.classList].find(c => c.startsWith('lvl-')).slice(4), text: l.querySelector('.text').textContent}))`))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("live log lines differ from JobLog's (-JobLog +page):\n%s", diff)
		}
	})

	t.Run("rerun", func(t *testing.T) {
		if _, err := chromedp.Run(bctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.ID("rerun")))); err != nil {
			t.Fatal(err)
		}
		p := <-g.posts
		if want := (post{"/kgd/v1/repositories/demo/hello/jobs/job-4:rerun", "application/json", "{}"}); p != want {
			t.Errorf("the button posted %+v, want %+v", p, want)
		}
		loc, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		if want := ts.URL + "/ui/repos/demo/hello/jobs/job-7"; loc != want {
			t.Fatalf("after Rerun the page is %s, want %s", loc, want)
		}
		c := accept(t)
		if c.query.Has("since") {
			t.Errorf("a queued job's page resumes at since=%s; want the recent window", c.query.Get("since"))
		}
		started := proto.CloneOf(srv.job("demo/hello", "job-7"))
		started.Iteration, started.Status, started.StartedAt = 7, "running", timestamppb.Now()
		srv.put(started)
		f := factory("job-7", 7)
		send(t, c, factory("job-6", 6).V2Meta(), 101) // replayed: another job
		send(t, c, f.V2Meta(), next())
		wait(t, "the started job", `document.getElementById('job-name').textContent === '#7' && `+
			`document.querySelector('#job-status .badge').dataset.status === 'running'`)
	})
}

// logLine is a line of a job page's log.
type logLine struct {
	Phase string `json:"phase"`
	Unit  string `json:"unit"`
	Level string `json:"level"`
	Text  string `json:"text"`
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
