package pipeline

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/build"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/source"
	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane/controlplanetest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
)

// recorder is a Sink that keeps everything in memory.
type recorder struct {
	mu sync.Mutex
	v1 []*v1pb.LogEntry
	v2 []*v2pb.Event
	s1 *v1pb.State
	s2 *v2pb.State
}

func (r *recorder) Emit(v1 *v1pb.LogEntry, v2 *v2pb.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v1 != nil {
		r.v1 = append(r.v1, v1)
	}
	if v2 != nil {
		r.v2 = append(r.v2, v2)
	}
	return nil
}

func (r *recorder) SetState(s1 *v1pb.State, s2 *v2pb.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s1, r.s2 = s1, s2
	return nil
}

// v1Seq describes the v1 events as "Kind:status" words, with log lines
// left out.
func (r *recorder) v1Seq() string {
	var w []string
	for _, e := range r.v1 {
		switch ev := e.GetEvent().GetEventType().(type) {
		case *v1pb.Event_MetaEvent:
			w = append(w, "Meta")
		case *v1pb.Event_DevLoopEvent:
			w = append(w, "DevLoop:"+ev.DevLoopEvent.GetStatus())
		case *v1pb.Event_BuildEvent:
			w = append(w, "Build:"+ev.BuildEvent.GetStatus())
		case *v1pb.Event_DeployEvent:
			w = append(w, "Deploy:"+ev.DeployEvent.GetStatus())
		case *v1pb.Event_StatusCheckEvent:
			w = append(w, "StatusCheck:"+ev.StatusCheckEvent.GetStatus())
		case *v1pb.Event_ResourceStatusCheckEvent:
			s := "Resource:" + ev.ResourceStatusCheckEvent.GetStatus()
			if len(w) == 0 || w[len(w)-1] != s { // progress updates vary in number
				w = append(w, s)
			}
		}
	}
	return strings.Join(w, " ")
}

func (r *recorder) v2Seq() string {
	var w []string
	for _, e := range r.v2 {
		switch ev := e.GetEventType().(type) {
		case *v2pb.Event_MetaEvent:
			w = append(w, "Meta")
		case *v2pb.Event_TaskEvent:
			w = append(w, ev.TaskEvent.GetId()+":"+ev.TaskEvent.GetStatus())
		case *v2pb.Event_BuildSubtaskEvent:
			w = append(w, "Build/"+ev.BuildSubtaskEvent.GetStep()+":"+ev.BuildSubtaskEvent.GetStatus())
		case *v2pb.Event_RenderEvent:
			w = append(w, "Render/0:"+ev.RenderEvent.GetStatus())
		case *v2pb.Event_DeploySubtaskEvent:
			w = append(w, "Deploy/0:"+ev.DeploySubtaskEvent.GetStatus())
		case *v2pb.Event_StatusCheckSubtaskEvent:
			s := "Resource:" + ev.StatusCheckSubtaskEvent.GetStatus()
			if len(w) == 0 || w[len(w)-1] != s {
				w = append(w, s)
			}
		}
	}
	return strings.Join(w, " ")
}

func (r *recorder) logs() string {
	var b strings.Builder
	for _, e := range r.v2 {
		if l := e.GetSkaffoldLogEvent(); l != nil {
			b.WriteString(l.GetTaskId() + " " + l.GetMessage() + "\n")
		}
	}
	return b.String()
}

// env is a pipeline on real parts: a git server on loopback, the Docker
// Engine, a registry on loopback and a local Kubernetes control plane.
type env struct {
	p        *Pipeline
	git      *gitserve.Server
	registry string
	kube     kubernetes.Interface
	docker   *client.Client
}

func newEnv(t testing.TB, deadline time.Duration) *env {
	t.Helper()
	cp := controlplanetest.Start(t)
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.Close() })
	if err := build.Ping(context.Background(), docker); err != nil {
		t.Fatalf("no Docker daemon: start dockerd or set DOCKER_HOST: %v", err)
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	git, err := gitserve.New(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(git.Close)
	src, err := source.New(git.URL)
	if err != nil {
		t.Fatal(err)
	}
	dep, err := deploy.New(cp.Config, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{WorkDir: t.TempDir(), StatusCheckDeadline: deadline}, src, build.New(docker), dep, rollout.New(kube), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{p: p, git: git, registry: strings.TrimPrefix(reg.URL, "http://"), kube: kube, docker: docker}
}

const chartYAML = "apiVersion: v2\nname: web\nversion: 0.1.0\n"

const deploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 2
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      {{- with .Values.nodeSelector }}
      nodeSelector: {{ toJson . }}
      {{- end }}
      containers:
        - name: web
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
`

// repoFiles is a repository in the original's configuration style.
func (e *env) repoFiles(dockerfile, extraHelm string) map[string]string {
	return map[string]string{
		"kube-git-deploy.toml": fmt.Sprintf(`[web]
[[docker]]
directory = "./app"
tag = "%s/octo/web:{{ .git.shortSha }}"
[[helm]]
chart = "./deploy"
%s`, e.registry, extraHelm),
		"app/Dockerfile":                   dockerfile,
		"app/hello.txt":                    "hello\n",
		"deploy/Chart.yaml":                chartYAML,
		"deploy/values.yaml":               "image:\n  repository: none\n  tag: none\n",
		"deploy/templates/deployment.yaml": deploymentYAML,
	}
}

func (e *env) push(t testing.TB, repo string, files map[string]string) Job {
	t.Helper()
	r, err := e.git.Create("octo", repo)
	if err != nil {
		t.Fatal(err)
	}
	sha, err := r.Commit("main", "deploy", files)
	if err != nil {
		t.Fatal(err)
	}
	return Job{
		Job: event.Job{ID: "job-" + repo, Repository: "octo/" + repo, Commit: sha, Ref: "refs/heads/main", Branch: "main",
			DeliveryID: "d-" + repo, Trigger: "push", Iteration: 1},
		Owner: "octo", Name: repo, Triggers: event.Triggers{Build: true, Deploy: true, Sync: true},
		Policy: deploy.Policy{Namespaces: []string{"default"}, CreateNamespaces: true},
	}
}

func TestPipeline(t *testing.T) {
	e := newEnv(t, 20*time.Second)
	ctx := t.Context() // bounded by -timeout: a busy machine may need long

	t.Run("success", func(t *testing.T) {
		j := e.push(t, "web", e.repoFiles("FROM scratch\nCOPY hello.txt /\n", ""))
		var rec recorder
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if out.Err != nil {
			t.Fatalf("job failed: %+v\nlogs:\n%s", out.Err, rec.logs())
		}
		wantV1 := "Meta DevLoop:In Progress Build:In Progress Build:Complete Deploy:In Progress StatusCheck:Started " +
			"Resource:In Progress Resource:Succeeded StatusCheck:Succeeded Deploy:Complete DevLoop:Succeeded"
		if got := rec.v1Seq(); got != wantV1 && got != strings.Replace(wantV1, "Resource:In Progress ", "", 1) {
			t.Errorf("v1 events:\n got %s\nwant %s", got, wantV1)
		}
		wantV2 := "Meta DevLoop-1:InProgress Build-1:InProgress Build/Build:InProgress Build/Build:Succeeded Build-1:Succeeded " +
			"Render-1:InProgress Render/0:InProgress Render/0:Succeeded Render-1:Succeeded Deploy-1:InProgress Deploy/0:InProgress " +
			"Deploy/0:Succeeded StatusCheck-1:InProgress Resource:InProgress Resource:Succeeded StatusCheck-1:Succeeded Deploy-1:Succeeded DevLoop-1:Succeeded"
		if got := rec.v2Seq(); got != wantV2 && got != strings.Replace(wantV2, "Resource:InProgress ", "", 1) {
			t.Errorf("v2 events:\n got %s\nwant %s", got, wantV2)
		}
		// The legacy builder's steps, or BuildKit's (the default).
		if logs := rec.logs(); !strings.Contains(logs, "Build-1 Step 2/2 : COPY hello.txt /") && !regexp.MustCompile(`Build-1 #\d+ \[1/1\] COPY hello.txt /`).MatchString(logs) {
			t.Errorf("build output missing from the log events:\n%s", rec.logs())
		}

		// The image is in the registry with the recorded digest.
		image := e.registry + "/octo/web"
		ref := out.Artifacts[image]
		tag, digest, ok := strings.Cut(ref, "@")
		if !ok || tag != image+":"+j.Commit[:7] {
			t.Fatalf("artifact %q = %q, want %s:%s@sha256:…", image, ref, image, j.Commit[:7])
		}
		nref, err := name.ParseReference(tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Head(nref)
		if err != nil || desc.Digest.String() != digest {
			t.Errorf("registry has %s at %v (%v), recorded %s", tag, desc, err, digest)
		}
		if got := rec.s1.GetMetadata().GetBuild().GetAdditional()[image]; got != ref {
			t.Errorf("state metadata records %q, want %q", got, ref)
		}
		if got := rec.s1.GetDeployState().GetStatusCode(); got != enumspb.StatusCode_DEPLOY_SUCCESS {
			t.Errorf("v1 deploy state code = %v", got)
		}
		// The release's Deployment runs the built image and is available.
		d, err := e.kube.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != tag {
			t.Errorf("deployment image = %q, want %q", img, tag)
		}
		if d.Status.AvailableReplicas != 2 {
			t.Errorf("available replicas = %d, want 2", d.Status.AvailableReplicas)
		}
	})

	t.Run("auto-deploy-off", func(t *testing.T) {
		j := e.push(t, "gated", e.repoFiles("FROM scratch\nCOPY hello.txt /\n", "release = \"gated\"\n"))
		j.Triggers.Deploy = false
		var rec recorder
		var recorded map[string]string
		var eventsBefore int
		j.RecordPending = func(_ context.Context, images map[string]string) error {
			recorded, eventsBefore = images, len(rec.v1)
			return nil
		}
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil || out.Err != nil || !out.DeployPending {
			t.Fatalf("Run = %+v, %v; want built with the deploy pending", out, err)
		}
		if len(recorded) != 1 || !maps.Equal(recorded, out.Images) || eventsBefore != len(rec.v1)-1 {
			t.Errorf("RecordPending got %v before event %d of %d; want %v before the last event", recorded, eventsBefore, len(rec.v1), out.Images)
		}
		if got, want := rec.v1Seq(), "Meta DevLoop:In Progress Build:In Progress Build:Complete DevLoop:Succeeded"; got != want {
			t.Errorf("v1 events:\n got %s\nwant %s", got, want)
		}
		if _, err := e.kube.AppsV1().Deployments("default").Get(ctx, "gated", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Deployment gated: %v; want NotFound: nothing is deployed while auto-deploy is off", err)
		}
		if rec.s1.GetDeployState().GetAutoTrigger() {
			t.Errorf("v1 state shows autoTrigger on for deploy")
		}
	})

	t.Run("deploy-only", func(t *testing.T) {
		// A build while auto-deploy is off, then an Execute deploy intent:
		// a deploy-only job deploys the recorded images without building.
		files := e.repoFiles("FROM scratch\nCOPY hello.txt /\n", "release = \"later\"\n")
		files["deploy/templates/deployment.yaml"] = strings.Replace(deploymentYAML, "{{ .Values.image.tag }}",
			"{{ .Values.image.tag }}{{ with .Values.image.digest }}@{{ . }}{{ end }}", 1)
		built := e.push(t, "later", files)
		built.Triggers.Deploy = false
		var rec recorder
		out, err := e.p.Run(ctx, built, &rec)
		if err != nil || out.Err != nil || !out.DeployPending {
			t.Fatalf("build: Run = %+v, %v; want built with the deploy pending", out, err)
		}
		image := e.registry + "/octo/web"
		ref := out.Artifacts[image]
		if !strings.HasPrefix(ref, image+":"+built.Commit[:7]+"@sha256:") {
			t.Fatalf("artifact %s = %q, want %s:%s@sha256:…", image, ref, image, built.Commit[:7])
		}
		if diff := cmp.Diff(map[string]string{"web": ref}, out.Images); diff != "" {
			t.Fatalf("Outcome.Images (-want +got):\n%s", diff)
		}
		if _, err := e.kube.AppsV1().Deployments("default").Get(ctx, "later", metav1.GetOptions{}); err == nil {
			t.Fatalf("deployed although auto-deploy is off")
		}

		deployJob := built
		deployJob.ID, deployJob.Iteration, deployJob.Trigger, deployJob.DeliveryID = "job-later-deploy", 2, "execute", ""
		deployJob.Images = out.Images
		rec = recorder{}
		out2, err := e.p.Run(ctx, deployJob, &rec)
		if err != nil {
			t.Fatalf("deploy: Run: %v", err)
		}
		if out2.Err != nil {
			t.Fatalf("deploy-only job failed: %+v\nlogs:\n%s", out2.Err, rec.logs())
		}
		if out2.DeployPending {
			t.Errorf("deploy-only job reports its deploy pending although it deployed")
		}
		wantV1 := "Meta DevLoop:In Progress Deploy:In Progress StatusCheck:Started " +
			"Resource:In Progress Resource:Succeeded StatusCheck:Succeeded Deploy:Complete DevLoop:Succeeded"
		if got := rec.v1Seq(); got != wantV1 && got != strings.Replace(wantV1, "Resource:In Progress ", "", 1) {
			t.Errorf("v1 events:\n got %s\nwant %s", got, wantV1)
		}
		wantV2 := "Meta DevLoop-2:InProgress Render-2:InProgress Render/0:InProgress Render/0:Succeeded Render-2:Succeeded " +
			"Deploy-2:InProgress Deploy/0:InProgress Deploy/0:Succeeded StatusCheck-2:InProgress Resource:InProgress Resource:Succeeded " +
			"StatusCheck-2:Succeeded Deploy-2:Succeeded DevLoop-2:Succeeded"
		if got := rec.v2Seq(); got != wantV2 && got != strings.Replace(wantV2, "Resource:InProgress ", "", 1) {
			t.Errorf("v2 events:\n got %s\nwant %s", got, wantV2)
		}
		if strings.Contains(rec.logs(), "Build-2") {
			t.Errorf("a deploy-only job logged build output:\n%s", rec.logs())
		}
		if got := rec.v1[0].GetEvent().GetMetaEvent().GetMetadata().GetBuild().GetNumberOfArtifacts(); got != 1 {
			t.Errorf("MetaEvent names %d artifacts, want 1", got)
		}
		// The states show the deployed image as built, with its reference.
		if got := rec.s1.GetMetadata().GetBuild().GetAdditional()[image]; got != ref {
			t.Errorf("v1 state metadata records %q, want %q", got, ref)
		}
		if got := rec.s2.GetMetadata().GetBuild().GetAdditional()[image]; got != ref {
			t.Errorf("v2 state metadata records %q, want %q", got, ref)
		}
		if got1, got2 := rec.s1.GetBuildState().GetArtifacts()[image], rec.s2.GetBuildState().GetArtifacts()[image]; got1 != event.Complete || got2 != event.V2Succeeded {
			t.Errorf("artifact state = %q (v1), %q (v2); want %q, %q", got1, got2, event.Complete, event.V2Succeeded)
		}
		if got := rec.s1.GetDeployState(); got.GetStatusCode() != enumspb.StatusCode_DEPLOY_SUCCESS || got.GetAutoTrigger() {
			t.Errorf("v1 deploy state = %v, want DEPLOY_SUCCESS with autoTrigger still off", got)
		}
		if diff := cmp.Diff(map[string]string{"web": ref}, out2.Images); diff != "" {
			t.Errorf("deploy-only Outcome.Images (-want +got):\n%s", diff)
		}
		// The release runs exactly the image the first job pushed.
		d, err := e.kube.AppsV1().Deployments("default").Get(ctx, "later", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != ref {
			t.Errorf("deployment image = %q, want %q", img, ref)
		}
		if d.Status.AvailableReplicas != 2 {
			t.Errorf("available replicas = %d, want 2", d.Status.AvailableReplicas)
		}
	})

	t.Run("deploy-only-without-image", func(t *testing.T) {
		j := e.push(t, "unbuilt", e.repoFiles("FROM scratch\nCOPY hello.txt /\n", "release = \"unbuilt\"\n"))
		j.Images = map[string]string{"other": "x/y:1@sha256:" + strings.Repeat("0", 64)}
		var rec recorder
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil {
			t.Fatal(err)
		}
		if out.Err == nil || out.Err.Code != enumspb.StatusCode_DEPLOY_NO_MATCHING_BUILD || !strings.Contains(out.Err.Message, "unit web") {
			t.Fatalf("outcome = %+v, want DEPLOY_NO_MATCHING_BUILD naming unit web", out.Err)
		}
		if got, want := rec.v1Seq(), "Meta DevLoop:In Progress Deploy:In Progress Deploy:Failed DevLoop:Failed"; got != want {
			t.Errorf("v1 events:\n got %s\nwant %s", got, want)
		}
		if got := rec.s1.GetDeployState().GetStatusCode(); got != enumspb.StatusCode_DEPLOY_NO_MATCHING_BUILD {
			t.Errorf("v1 deploy state code = %v, want DEPLOY_NO_MATCHING_BUILD", got)
		}
		if _, err := e.kube.AppsV1().Deployments("default").Get(ctx, "unbuilt", metav1.GetOptions{}); err == nil {
			t.Errorf("deployed without an image")
		}
	})

	t.Run("force-deploy", func(t *testing.T) {
		// Execute {build, deploy} while auto-deploy is off; a helm-only
		// unit, so nothing is built.
		j := e.push(t, "forced", map[string]string{
			"kube-git-deploy.toml":            "[forced]\n[[helm]]\nchart = \"./deploy\"\n",
			"deploy/Chart.yaml":               chartYAML,
			"deploy/templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata: {a: b}\n",
		})
		j.Triggers.Deploy, j.ForceDeploy = false, true
		var rec recorder
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil || out.Err != nil || out.DeployPending {
			t.Fatalf("Run = %+v, %v; want deployed", out, err)
		}
		if got := rec.v1Seq(); !strings.HasSuffix(got, "Deploy:Complete DevLoop:Succeeded") || strings.Contains(got, "Build:") {
			t.Errorf("v1 events = %s; want a deploy and no build", got)
		}
		if _, err := e.kube.CoreV1().ConfigMaps("default").Get(ctx, "forced", metav1.GetOptions{}); err != nil {
			t.Errorf("forced deploy did not apply the chart: %v", err)
		}
		if rec.s1.GetDeployState().GetAutoTrigger() {
			t.Errorf("v1 state shows autoTrigger on for deploy; a forced deploy does not turn it on")
		}
	})

	t.Run("no-wait", func(t *testing.T) {
		// wait = false: the release is deployed, its rollout not awaited,
		// so even a Deployment that can never be ready does not fail the job.
		j := e.push(t, "nowait", e.repoFiles("FROM scratch\nCOPY hello.txt /\n", "release = \"nowait\"\nwait = false\nset = { \"nodeSelector.pool\" = \"none\" }\n"))
		var rec recorder
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil || out.Err != nil {
			t.Fatalf("Run = %+v, %v", out.Err, err)
		}
		if got := rec.v1Seq(); strings.Contains(got, "Resource:") || !strings.HasSuffix(got, "StatusCheck:Succeeded Deploy:Complete DevLoop:Succeeded") {
			t.Errorf("v1 events = %s; want no resource checks and success", got)
		}
	})

	t.Run("failing-dockerfile", func(t *testing.T) {
		j := e.push(t, "broken-build", e.repoFiles("FROM scratch\nRUN make\n", ""))
		var rec recorder
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil {
			t.Fatal(err)
		}
		if out.Err == nil || out.Err.Code != enumspb.StatusCode_BUILD_USER_ERROR {
			t.Fatalf("outcome = %+v, want BUILD_USER_ERROR", out.Err)
		}
		if got, want := rec.v1Seq(), "Meta DevLoop:In Progress Build:In Progress Build:Failed DevLoop:Failed"; got != want {
			t.Errorf("v1 events:\n got %s\nwant %s", got, want)
		}
		if _, err := e.kube.AppsV1().Deployments("default").Get(ctx, "broken-build", metav1.GetOptions{}); err == nil {
			t.Errorf("a failed build deployed anyway")
		}
	})

	t.Run("broken-config", func(t *testing.T) {
		files := e.repoFiles("FROM scratch\n", "")
		files["kube-git-deploy.toml"] = "[web]\n[[docker]]\ndirectory = \"../../etc\"\ntag = \"x/y:1\"\n"
		j := e.push(t, "broken-config", files)
		var rec recorder
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil {
			t.Fatal(err)
		}
		if out.Err == nil || out.Err.Code != enumspb.StatusCode_CONFIG_FILE_PARSING_ERR || !strings.Contains(out.Err.Message, "kube-git-deploy.toml:3") {
			t.Fatalf("outcome = %+v, want CONFIG_FILE_PARSING_ERR naming line 3", out.Err)
		}
		if got, want := rec.v1Seq(), "Meta DevLoop:In Progress DevLoop:Failed"; got != want {
			t.Errorf("v1 events:\n got %s\nwant %s", got, want)
		}
	})

	t.Run("prune-after-the-job", func(t *testing.T) {
		// Run returns while the image prune still runs; Wait waits for it;
		// a repository is pruned at most once per pruneEvery.
		j := e.push(t, "pruned", e.repoFiles("FROM scratch\nCOPY hello.txt /\n", "release = \"pruned\"\n"))
		started, release := make(chan string, 1), make(chan struct{})
		clock := time.Now()
		p, err := New(Config{WorkDir: t.TempDir(), StatusCheckDeadline: 20 * time.Second, Prune: func(_ context.Context, repository string) error {
			started <- repository
			<-release
			return nil
		}}, e.p.src, e.p.builder, e.p.deployer, e.p.checker, func() time.Time { return clock })
		if err != nil {
			t.Fatal(err)
		}
		run := func() {
			t.Helper()
			var rec recorder
			if out, err := p.Run(ctx, j, &rec); err != nil || out.Err != nil {
				t.Fatalf("Run = %+v, %v", out.Err, err)
			}
		}
		run()
		select {
		case repo := <-started:
			if want := e.registry + "/octo/web"; repo != want {
				t.Errorf("pruned %s, want %s", repo, want)
			}
		case <-ctx.Done():
			t.Fatal("no prune started after the job")
		}
		// Run returned with the prune blocked: it no longer waits for it.
		waited := make(chan struct{})
		go func() { p.Wait(); close(waited) }()
		select {
		case <-waited:
			t.Fatal("Wait returned while the prune runs")
		default:
		}
		close(release)
		<-waited

		// The same repository again at once: not pruned; after
		// pruneEvery: pruned.
		run()
		p.Wait()
		select {
		case repo := <-started:
			t.Errorf("pruned %s again within a minute", repo)
		default:
		}
		clock = clock.Add(pruneEvery)
		run()
		p.Wait()
		select {
		case <-started:
		default:
			t.Error("not pruned again after pruneEvery")
		}
	})

	t.Run("never-ready", func(t *testing.T) {
		j := e.push(t, "stuck", e.repoFiles("FROM scratch\nCOPY hello.txt /\n", "release = \"stuck\"\nset = { \"nodeSelector.pool\" = \"none\" }\n"))
		short, err := New(Config{WorkDir: t.TempDir(), StatusCheckDeadline: 3 * time.Second}, e.p.src, e.p.builder, e.p.deployer, e.p.checker, nil)
		if err != nil {
			t.Fatal(err)
		}
		var rec recorder
		out, err := short.Run(ctx, j, &rec)
		if err != nil {
			t.Fatal(err)
		}
		if out.Err == nil || out.Err.Code != enumspb.StatusCode_STATUSCHECK_DEADLINE_EXCEEDED {
			t.Fatalf("outcome = %+v, want STATUSCHECK_DEADLINE_EXCEEDED", out.Err)
		}
		if got := rec.v1Seq(); !strings.HasSuffix(got, "StatusCheck:Failed Deploy:Failed DevLoop:Failed") {
			t.Errorf("v1 events end %s", got)
		}
	})
}

// TestPathsCompareWithLastDeploy: a unit's paths filter compares the
// pushed commit with the commit the unit was last deployed at, not with
// the push's before: a change left behind by a superseded (or failed)
// push is still built.
func TestPathsCompareWithLastDeploy(t *testing.T) {
	e := newEnv(t, 20*time.Second)
	ctx := t.Context() // bounded by -timeout: a busy machine may need long
	r, err := e.git.Create("octo", "paths")
	if err != nil {
		t.Fatal(err)
	}
	unit := func(name string) string {
		return fmt.Sprintf("[%s]\npaths = [\"%s/**\"]\n[%s.docker]\ndirectory = \"%s\"\ntag = \"%s/octo/paths-%s:{{ .git.shortSha }}\"\n",
			name, name, name, name, e.registry, name)
	}
	c0, err := r.Commit("main", "both", map[string]string{
		"kube-git-deploy.toml": unit("api") + unit("web"),
		"api/Dockerfile":       "FROM scratch\nCOPY x /\n", "api/x": "0",
		"web/Dockerfile": "FROM scratch\nCOPY y /\n", "web/y": "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	c1, err := r.Commit("main", "api changes (this push gets superseded)", map[string]string{"api/x": "1"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := r.Commit("main", "web changes", map[string]string{"web/y": "2"})
	if err != nil {
		t.Fatal(err)
	}
	var logs string // of the last run
	run := func(before string, deployed map[string]string) []string {
		t.Helper()
		j := Job{Job: event.Job{ID: "paths-" + before[:4], Repository: "octo/paths", Commit: c2, Ref: "refs/heads/main", Branch: "main", Trigger: "push", Iteration: 1},
			Owner: "octo", Name: "paths", Before: before, Deployed: deployed, Triggers: event.Triggers{Build: true, Deploy: true},
			Policy: deploy.Policy{Namespaces: []string{"default"}}}
		var rec recorder
		out, err := e.p.Run(ctx, j, &rec)
		if err != nil || out.Err != nil {
			t.Fatalf("Run: %v %+v", err, out.Err)
		}
		logs = rec.logs()
		return out.Units
	}
	// Only the push's before: api's change in the superseded push is lost.
	if got := run(c1, nil); !slices.Equal(got, []string{"web"}) {
		t.Errorf("units compared with before = %v, want [web] (the old behaviour this test guards against)", got)
	}
	// Compared with what each unit last deployed: both changed since c0.
	if got := run(c1, map[string]string{"api": c0, "web": c0}); !slices.Equal(got, []string{"api", "web"}) {
		t.Errorf("units compared with the last deploy = %v, want [api web]", got)
	}
	// Each build starts from the image of the unit's last deploy
	// (Request.CacheFrom), which BuildKit looks up in the registry.
	for _, want := range []string{"importing cache manifest from " + e.registry + "/octo/paths-api:" + c0[:7], "importing cache manifest from " + e.registry + "/octo/paths-web:" + c0[:7]} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q in the job's log:\n%s", want, logs)
		}
	}
	// A unit already deployed at this very commit is left alone.
	if got := run(c1, map[string]string{"api": c2, "web": c0}); !slices.Equal(got, []string{"web"}) {
		t.Errorf("units with api already at the commit = %v, want [web]", got)
	}
}
