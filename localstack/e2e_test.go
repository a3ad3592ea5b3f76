package localstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

// buildBinaries builds the functions, runner and api binaries into a
// directory of the test's own, as make run does.
func buildBinaries(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	const mod = "github.com/kube-git-deploy/kube-git-deploy/"
	args := []string{"build", "-o", dir + "/"}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, mod+"functions/cmd/functions", mod+"runner", mod+"api")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the binaries: %v\n%s", err, out)
	}
	return dir
}

// startStack starts the whole system as make run does — the real
// functions, runner and API binaries, the local control plane, a
// registry, the GitHub stand-in, the Docker Engine — on free ports, with
// demo/hello created, signed in and tracked as make demo does.
func startStack(t testing.TB, ctx context.Context, logs io.Writer, env ...string) (*localstack.Stack, *demo.Demo) {
	t.Helper()
	cfg, err := localstack.LoadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ports = localstack.Ports{}
	cfg.Project = emulatortest.ProjectID(t)
	cfg.FirestoreHost, cfg.PubSubHost = emulatortest.FirestoreHost(t), emulatortest.PubSubHost(t)
	cfg.BinDir = buildBinaries(t)
	cfg.LogDir = t.TempDir()
	// A data race in a real binary stops it, and with it the test (in the
	// binaries' environment, not the test's: the stack tests run in
	// parallel).
	cfg.Env = append(cfg.Env, "GORACE=halt_on_error=1")
	cfg.Env = append(cfg.Env, env...)
	st, err := localstack.Start(ctx, cfg, logs)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { st.Stop() })
	if st.DockerWarning != "" {
		t.Fatalf("no Docker Engine: %s", st.DockerWarning)
	}
	d := demo.New(st.URLs)
	if _, err := d.CreateRepo(ctx, "demo", "hello", "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SignIn(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Track(ctx, "demo", "hello"); err != nil {
		t.Fatal(err)
	}
	return st, d
}

// TestEndToEnd drives the whole system (startStack) as a user would.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The operator's event sinks, on loopback.
	hooks, sinkStreams := newHookReceiver(t), newGRPCReceiver(t)
	st, d := startStack(t, ctx, t.Output(),
		"KGD_SINK_WEBHOOK_URL="+hooks.URL+"/kgd-events", "KGD_SINK_WEBHOOK_KEY="+hookKey,
		"KGD_SINK_GRPC_TARGET="+sinkStreams.addr, "KGD_SINK_GRPC_INSECURE=true")
	cfg := st.Config
	ps, err := pubsub.NewClient(ctx, cfg.Project)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if err := localstack.SubscribeEvents(ctx, ps, cfg.Project, "e2e-events"); err != nil {
		t.Fatal(err)
	}
	rest, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(rest)
	if err != nil {
		t.Fatal(err)
	}

	const owner, repo, full = "demo", "hello", "demo/hello"
	push := func(t *testing.T, message string, edit func(map[string][]byte)) *demo.Pushed {
		t.Helper()
		files, err := demo.Files(ctx, st.URLs.Registry, owner, repo, message)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(files)
		}
		p, err := d.Push(ctx, owner, repo, "main", message, files)
		if err != nil {
			t.Fatal(err)
		}
		if p.JobID == "" {
			t.Fatalf("push %s: no job; deliveries %+v", p.After, p.Deliveries)
		}
		return p
	}
	wait := func(t *testing.T, p *demo.Pushed) *demo.Iteration {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		it, err := d.WaitForCommit(wctx, full, p.After, nil)
		if err != nil {
			t.Fatalf("events of %s: %v", p.After, err)
		}
		if it.JobID != p.JobID {
			t.Errorf("iteration of %s is job %s, PublicAPI answered %s", p.After, it.JobID, p.JobID)
		}
		return it
	}
	// builtRef returns the tag@digest the iteration's build event reports
	// for the demo image.
	image := st.URLs.Registry + "/demo/hello"
	builtRef := func(t *testing.T, p *demo.Pushed, it *demo.Iteration) string {
		t.Helper()
		var ref string
		built := regexp.MustCompile(`\((` + regexp.QuoteMeta(image) + `:[0-9a-f]{7}@sha256:[0-9a-f]{64})\)`)
		for _, e := range it.Events {
			if b := e.GetEvent().GetBuildEvent(); b != nil && b.GetStatus() == "Complete" {
				if m := built.FindStringSubmatch(e.GetEntry()); m != nil {
					ref = m[1]
				}
			}
		}
		if tag, _, ok := strings.Cut(ref, "@"); !ok || tag != image+":"+p.After[:7] {
			t.Fatalf("build event reports %q, want %s:%s@sha256:…", ref, image, p.After[:7])
		}
		return ref
	}
	// checkDeployed checks the image is in the registry with the digest
	// the build event reported, and that the release's Deployment runs
	// exactly that image.
	checkDeployed := func(t *testing.T, ref string) {
		t.Helper()
		tag, digest, _ := strings.Cut(ref, "@")
		nref, err := name.ParseReference(tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Head(nref, remote.WithContext(ctx))
		if err != nil || desc.Digest.String() != digest {
			t.Errorf("registry has %s at %v (%v), the build event says %s", tag, desc, err, digest)
		}
		var dep *appsv1.Deployment
		dep, err = kube.AppsV1().Deployments(store.DefaultNamespace(owner, repo)).Get(ctx, "hello", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img := dep.Spec.Template.Spec.Containers[0].Image; img != ref {
			t.Errorf("deployment runs %q, want %q", img, ref)
		}
		if dep.Status.AvailableReplicas != 2 {
			t.Errorf("available replicas = %d, want 2", dep.Status.AvailableReplicas)
		}
	}
	// api calls the API's HTTP gateway.
	api := func(t *testing.T, method, path, body string) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, st.URLs.APIHTTP+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json") // the local guard refuses other bodies
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header
	}
	mustAPI := func(t *testing.T, method, path, body string) http.Header {
		t.Helper()
		code, out, h := api(t, method, path, body)
		if code != http.StatusOK {
			t.Fatalf("%s %s %s: %d %s", method, path, body, code, out)
		}
		return h
	}
	fs, err := firestore.NewClient(ctx, cfg.Project)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()

	var first *demo.Iteration
	var firstPush, brokenPush *demo.Pushed
	var lastRef string
	t.Run("push", func(t *testing.T) {
		p := push(t, "first", nil)
		firstPush = p
		first = wait(t, p)
		if first.Status != "Succeeded" {
			t.Fatalf("%s; want Succeeded", first)
		}
		lastRef = builtRef(t, p, first)
		checkDeployed(t, lastRef)
		// The exact Skaffold event sequences, as the gateway streams them.
		if got := v1Seq(first.Events); got != wantV1 && got != strings.Replace(wantV1, "Resource:In Progress ", "", 1) {
			t.Errorf("v1 events:\n got %s\nwant %s", got, wantV1)
		}
		v2, err := d.JobEventsV2(ctx, full, first.JobID)
		if err != nil {
			t.Fatal(err)
		}
		n := strconv.Itoa(first.Number)
		want := strings.ReplaceAll(wantV2, "-N:", "-"+n+":")
		if got := v2Seq(v2); got != want && got != strings.Replace(want, "Resource:InProgress ", "", 1) {
			t.Errorf("v2 events:\n got %s\nwant %s", got, want)
		}
		if !slices.ContainsFunc(v2, func(e *v2pb.Event) bool {
			// Either builder's line for the Dockerfile's COPY step.
			return strings.Contains(e.GetSkaffoldLogEvent().GetMessage(), "COPY hello /hello")
		}) {
			t.Errorf("no build output among the v2 log events")
		}
		// The final state, v1 and v2.
		_, s1, _ := api(t, http.MethodGet, "v1/state?repository="+full, "")
		_, s2, _ := api(t, http.MethodGet, "v2/state?repository="+full, "")
		var v1s, v2s struct {
			BuildState struct {
				Artifacts   map[string]string `json:"artifacts"`
				AutoTrigger bool              `json:"autoTrigger"`
			} `json:"buildState"`
			DeployState struct {
				Status     string `json:"status"`
				StatusCode string `json:"statusCode"`
			} `json:"deployState"`
			StatusCheckState struct {
				Status string `json:"status"`
			} `json:"statusCheckState"`
			Metadata struct {
				RunID      string            `json:"runID"`
				Additional map[string]string `json:"additional"`
				Build      struct {
					Additional map[string]string `json:"additional"`
				} `json:"build"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal([]byte(s1), &v1s); err != nil {
			t.Fatalf("v1 state %s: %v", s1, err)
		}
		if err := json.Unmarshal([]byte(s2), &v2s); err != nil {
			t.Fatalf("v2 state %s: %v", s2, err)
		}
		if v1s.BuildState.Artifacts[image] != "Complete" || !v1s.BuildState.AutoTrigger || v1s.DeployState.Status != "Complete" ||
			v1s.DeployState.StatusCode != "DEPLOY_SUCCESS" || v1s.StatusCheckState.Status != "Succeeded" ||
			v1s.Metadata.Additional["job_id"] != first.JobID || v1s.Metadata.Build.Additional[image] != lastRef {
			t.Errorf("v1 state = %s", s1)
		}
		if v2s.BuildState.Artifacts[image] != "Succeeded" || v2s.DeployState.Status != "Succeeded" || v2s.Metadata.RunID != first.JobID {
			t.Errorf("v2 state = %s", s2)
		}
	})
	t.Run("export", func(t *testing.T) {
		// The first push's events in seed 002's envelope, as a user
		// exports them: its build with what it pushed, its deploy with the
		// resources it checked.
		if first == nil {
			t.Fatal("the first push failed")
		}
		code, out, h := api(t, http.MethodGet, "kgd/v1/export?repository="+full+"&job="+first.JobID, "")
		if code != http.StatusOK || h.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("export: %d %s: %s", code, h.Get("Content-Type"), out)
		}
		var built, deployed bool
		tag, digest, _ := strings.Cut(lastRef, "@")
		for _, line := range strings.Split(out, "\n") {
			var e struct {
				EventID string `json:"event_id"`
				Event   struct {
					BuildEvent *struct {
						Status   string `json:"status"`
						Artifact *struct{ Tag, Digest string }
					} `json:"buildEvent"`
					DeployEvent *struct {
						Status    string   `json:"status"`
						Manifests []string `json:"manifests"`
					} `json:"deployEvent"`
				} `json:"event"`
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil || e.EventID != first.JobID {
				t.Fatalf("export line %q: %v", line, err)
			}
			if b := e.Event.BuildEvent; b != nil && b.Status == "SUCCEEDED" {
				built = b.Artifact != nil && b.Artifact.Tag == tag && b.Artifact.Digest == digest
			}
			if d := e.Event.DeployEvent; d != nil && d.Status == "SUCCEEDED" {
				deployed = slices.Contains(d.Manifests, "deployment/hello")
			}
		}
		if !built || !deployed {
			t.Errorf("export of the first push (built %s: %v, deployed: %v):\n%s", lastRef, built, deployed, out)
		}
	})
	t.Run("next-push", func(t *testing.T) {
		if first == nil {
			t.Fatal("the first push failed")
		}
		p := push(t, "second", nil)
		it := wait(t, p)
		if it.Status != "Succeeded" || it.Number != first.Number+1 {
			t.Fatalf("%s; want iteration %d Succeeded", it, first.Number+1)
		}
		lastRef = builtRef(t, p, it)
		checkDeployed(t, lastRef)
	})
	t.Run("supersede", func(t *testing.T) {
		// With auto-build off pushes wait, the newest winning; Execute
		// builds it.
		mustAPI(t, http.MethodPut, "v1/build/auto_execute?repository="+full, `{"enabled":false}`)
		older := push(t, "waits", nil)
		newer := push(t, "wins", nil)
		h := mustAPI(t, http.MethodPost, "v1/execute?repository="+full, `{"build":true}`)
		snap, err := fs.Collection(store.JobsCollection).Doc(older.JobID).Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := snap.DataAt("status"); st != string(store.StatusCanceled) {
			t.Errorf("older waiting push is %v after Execute, want canceled (superseded)", st)
		}
		if got := h.Get("Grpc-Metadata-X-Kgd-Jobs"); got != full+"="+newer.JobID {
			t.Errorf("Execute started %q, want %s=%s", got, full, newer.JobID)
		}
		it := wait(t, newer)
		if it.Status != "Succeeded" {
			t.Fatalf("%s; want Succeeded", it)
		}
		lastRef = builtRef(t, newer, it)
		checkDeployed(t, lastRef)
		mustAPI(t, http.MethodPut, "v1/build/auto_execute?repository="+full, `{"enabled":true}`)
	})
	t.Run("execute-deploy", func(t *testing.T) {
		// With auto-deploy off a push is built but not deployed; Execute
		// deploys exactly the images it built.
		mustAPI(t, http.MethodPut, "v2/deploy/auto_execute?repository="+full, `{"enabled":false}`)
		p := push(t, "built only", nil)
		it := wait(t, p)
		if got, want := v1Seq(it.Events), "Meta DevLoop:In Progress Build:In Progress Build:Complete DevLoop:Succeeded"; got != want {
			t.Errorf("v1 events with auto-deploy off:\n got %s\nwant %s", got, want)
		}
		ref := builtRef(t, p, it)
		checkDeployed(t, lastRef) // still the previous image
		h := mustAPI(t, http.MethodPost, "v1/execute?repository="+full, `{"deploy":true}`)
		job, ok := strings.CutPrefix(h.Get("Grpc-Metadata-X-Kgd-Jobs"), full+"=")
		if !ok {
			t.Fatalf("Execute deploy started %q", h.Get("Grpc-Metadata-X-Kgd-Jobs"))
		}
		wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		dit, err := d.WaitForJob(wctx, full, job, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := "Meta DevLoop:In Progress Deploy:In Progress StatusCheck:Started Resource:In Progress Resource:Succeeded " +
			"StatusCheck:Succeeded Deploy:Complete DevLoop:Succeeded"
		if got := v1Seq(dit.Events); dit.Status != "Succeeded" || got != want && got != strings.Replace(want, "Resource:In Progress ", "", 1) {
			t.Errorf("deploy-only iteration %s:\n got %s\nwant %s", dit, got, want)
		}
		checkDeployed(t, ref)
		lastRef = ref
		mustAPI(t, http.MethodPut, "v2/deploy/auto_execute?repository="+full, `{"enabled":true}`)
	})
	t.Run("broken-config", func(t *testing.T) {
		p := push(t, "broken", func(files map[string][]byte) {
			files["kube-git-deploy.toml"] = []byte("[hello]\n[[docker]]\ndirectory = \"./app\n")
		})
		brokenPush = p
		it := wait(t, p)
		if it.Status != "Failed" || it.Err.GetErrCode() != enumspb.StatusCode_CONFIG_FILE_PARSING_ERR ||
			!strings.Contains(it.Err.GetMessage(), "kube-git-deploy.toml:3") {
			t.Fatalf("%s; want Failed with CONFIG_FILE_PARSING_ERR naming kube-git-deploy.toml:3", it)
		}
		for _, e := range it.Events {
			if e.GetEvent().GetBuildEvent() != nil || e.GetEvent().GetDeployEvent() != nil {
				t.Errorf("a broken configuration built or deployed: %s", e.GetEntry())
			}
		}
	})
	t.Run("outputs", func(t *testing.T) {
		if firstPush == nil || brokenPush == nil || first == nil {
			t.Fatal("the first or the broken push failed")
		}
		checkOutputs(t, ctx, outputs{st: st, fs: fs, ps: ps, hooks: hooks, streams: sinkStreams, api: api,
			ok: firstPush, failed: brokenPush, namespace: store.DefaultNamespace(owner, repo)})
	})
	t.Run("github-outage", func(t *testing.T) {
		// GitHub refuses every report (a secondary rate limit): the push
		// deploys all the same, and its statuses come once GitHub answers.
		if err := st.GitHub.SetAPIOutage(&githubstandin.APIOutage{StatusCode: http.StatusForbidden, RetryAfter: 2}); err != nil {
			t.Fatal(err)
		}
		p := push(t, "during a GitHub outage", nil)
		it := wait(t, p)
		if it.Status != "Succeeded" {
			t.Fatalf("%s during a GitHub outage; want Succeeded", it)
		}
		// The runner tried (and was refused) at least once; nothing was
		// recorded meanwhile.
		for deadline := time.Now().Add(2 * time.Minute); !slices.ContainsFunc(st.GitHub.APIRequests(), func(r githubstandin.APIRequest) bool {
			return r.StatusCode == http.StatusForbidden
		}); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the runner made no request to GitHub during the outage")
			}
		}
		if got := st.GitHub.Statuses(owner, repo, p.After); len(got) != 0 {
			t.Fatalf("during the outage %d statuses were recorded: %+v", len(got), got)
		}
		if err := st.GitHub.SetAPIOutage(nil); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			got := st.GitHub.Statuses(owner, repo, p.After)
			if n := len(got); n > 0 && got[n-1].State == "success" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("statuses of %s two minutes after the outage: %+v; want a final success", p.After, got)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("untrack", func(t *testing.T) {
		hooks := st.GitHub.Hooks(owner, repo)
		if len(hooks) != 1 {
			t.Fatalf("hooks = %+v", hooks)
		}
		if err := d.Untrack(ctx, owner, repo); err != nil {
			t.Fatal(err)
		}
		res, err := st.GitHub.Push(ctx, owner, repo, githubstandin.Commit{Message: "after untrack", Files: map[string][]byte{"README.md": []byte("x")}})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Deliveries) != 0 {
			t.Errorf("deliveries after untrack: %+v", res.Deliveries)
		}
		// Delivered anyway, as a stale hook would: not tracked, no job.
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hooks[0].URL, bytes.NewReader(res.Payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(webhook.EventHeader, "push")
		req.Header.Set(webhook.DeliveryHeader, "e2e-after-untrack")
		req.Header.Set(webhook.SignatureHeader, webhook.SignatureValue([]byte(hooks[0].Secret), res.Payload))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("webhook after untrack = %s, want 404", resp.Status)
		}
	})
}

// TestCommandRejectsBadSettings runs the command make run starts (the
// end-to-end test drives the library it wires to the environment): a bad
// setting stops it at once with a message naming the variable.
func TestCommandRejectsBadSettings(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "localstack"), "github.com/kube-git-deploy/kube-git-deploy/localstack/cmd/localstack")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	bad := exec.Command(filepath.Join(dir, "localstack"))
	bad.Env = append(os.Environ(), "KGD_REGISTRY_PORT=70000")
	out, err := bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `KGD_REGISTRY_PORT: "70000" is not a port number`) {
		t.Errorf("localstack with a bad port: %v, %s", err, out)
	}
}

const (
	wantV1 = "Meta DevLoop:In Progress Build:In Progress Build:Complete Deploy:In Progress StatusCheck:Started " +
		"Resource:In Progress Resource:Succeeded StatusCheck:Succeeded Deploy:Complete DevLoop:Succeeded"
	wantV2 = "Meta DevLoop-N:InProgress Build-N:InProgress Build/Build:InProgress Build/Build:Succeeded Build-N:Succeeded " +
		"Render-N:InProgress Render/0:InProgress Render/0:Succeeded Render-N:Succeeded Deploy-N:InProgress Deploy/0:InProgress " +
		"Deploy/0:Succeeded StatusCheck-N:InProgress Resource:InProgress Resource:Succeeded StatusCheck-N:Succeeded Deploy-N:Succeeded DevLoop-N:Succeeded"
)

// v1Seq sums v1 events up as "Type:status" words; repeated resource
// progress updates count once (their number varies).
func v1Seq(events []*v1pb.LogEntry) string {
	var w []string
	for _, e := range events {
		var s string
		switch ev := e.GetEvent().GetEventType().(type) {
		case *v1pb.Event_MetaEvent:
			s = "Meta"
		case *v1pb.Event_DevLoopEvent:
			s = "DevLoop:" + ev.DevLoopEvent.GetStatus()
		case *v1pb.Event_BuildEvent:
			s = "Build:" + ev.BuildEvent.GetStatus()
		case *v1pb.Event_DeployEvent:
			s = "Deploy:" + ev.DeployEvent.GetStatus()
		case *v1pb.Event_StatusCheckEvent:
			s = "StatusCheck:" + ev.StatusCheckEvent.GetStatus()
		case *v1pb.Event_ResourceStatusCheckEvent:
			s = "Resource:" + ev.ResourceStatusCheckEvent.GetStatus()
		default:
			continue
		}
		if strings.HasPrefix(s, "Resource:") && len(w) > 0 && w[len(w)-1] == s {
			continue
		}
		w = append(w, s)
	}
	return strings.Join(w, " ")
}

// v2Seq is v1Seq for v2 events; log events are left out.
func v2Seq(events []*v2pb.Event) string {
	var w []string
	for _, e := range events {
		var s string
		switch ev := e.GetEventType().(type) {
		case *v2pb.Event_MetaEvent:
			s = "Meta"
		case *v2pb.Event_TaskEvent:
			s = ev.TaskEvent.GetId() + ":" + ev.TaskEvent.GetStatus()
		case *v2pb.Event_BuildSubtaskEvent:
			s = "Build/" + ev.BuildSubtaskEvent.GetStep() + ":" + ev.BuildSubtaskEvent.GetStatus()
		case *v2pb.Event_RenderEvent:
			s = "Render/0:" + ev.RenderEvent.GetStatus()
		case *v2pb.Event_DeploySubtaskEvent:
			s = "Deploy/0:" + ev.DeploySubtaskEvent.GetStatus()
		case *v2pb.Event_StatusCheckSubtaskEvent:
			s = "Resource:" + ev.StatusCheckSubtaskEvent.GetStatus()
		default:
			continue
		}
		if strings.HasPrefix(s, "Resource:") && len(w) > 0 && w[len(w)-1] == s {
			continue
		}
		w = append(w, s)
	}
	return strings.Join(w, " ")
}
