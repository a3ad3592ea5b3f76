package worker

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/registry"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/build"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/pipeline"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/source"
	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane/controlplanetest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// TestJobEndToEnd runs jobs through the worker and the real pipeline —
// git on loopback, the Docker Engine, a loopback registry, the local
// control plane — and reads the events and state back from Firestore.
func TestJobEndToEnd(t *testing.T) {
	x := newE2E(t)
	t.Run("push", x.testPush)
	t.Run("deploy-pending-then-execute", x.testDeployPending)
}

// e2e is a worker on real parts, sharing one control plane.
type e2e struct {
	*env
	w        *Worker
	git      *gitserve.Server
	registry string
	kube     kubernetes.Interface
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	e := newEnv(t)
	cp := controlplanetest.Start(t)
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.Close() })
	if err := build.Ping(e.ctx, docker); err != nil {
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
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dep, err := deploy.New(cp.Config, quiet)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := pipeline.New(pipeline.Config{WorkDir: t.TempDir(), StatusCheckDeadline: time.Minute,
		LockRelease: func(ctx context.Context, key string, hold time.Duration) (func(), error) {
			return e.store.LockRelease(ctx, key, "runner-e2e", hold, 100*time.Millisecond)
		}}, src, build.New(docker), dep, rollout.New(kube), nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Owner: "runner-e2e"}, e.store, pl, &recordingPublisher{}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &e2e{env: e, w: w, git: git, registry: strings.TrimPrefix(reg.URL, "http://"), kube: kube}
}

// files is a repository with one unit, named after the repository, whose
// chart runs the built image (by digest when it is known).
func (x *e2e) files(name string) map[string]string {
	return map[string]string{
		"kube-git-deploy.toml": "[" + name + "]\n[[docker]]\ndirectory = \"./app\"\ntag = \"" + x.registry + "/octo/" + name + ":{{ .git.shortSha }}\"\n[[helm]]\nchart = \"./deploy\"\n",
		"app/Dockerfile":       "FROM scratch\nCOPY hello.txt /\n",
		"app/hello.txt":        "hello\n",
		"deploy/Chart.yaml":    "apiVersion: v2\nname: app\nversion: 0.1.0\n",
		"deploy/templates/d.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: 1\n" +
			"  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n" +
			"      containers:\n        - name: c\n          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}{{ with .Values.image.digest }}@{{ . }}{{ end }}\"\n",
	}
}

// handle delivers the message of job j, as Pub/Sub would.
func (x *e2e) handle(t *testing.T, j *store.Job) *store.Job {
	t.Helper()
	m := job.Message{Version: 1, JobID: j.ID, Repository: j.Owner + "/" + j.Name, Ref: j.Ref, SHA: j.SHA, Before: j.Before,
		DeliveryID: j.DeliveryID, Trigger: job.Trigger(j.Trigger), PublishedAt: time.Now()}
	if err := x.w.Handle(x.ctx, m, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatalf("Handle(%s): %v", j.ID, err)
	}
	got, err := x.store.Job(x.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// v1Seq describes a job's v1 events in Firestore as "Kind:status" words.
func (x *e2e) v1Seq(t *testing.T, id string) (string, *store.JobHistory) {
	t.Helper()
	h, err := x.store.JobEvents(x.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for _, le := range h.V1 {
		ev := le.GetEvent()
		switch {
		case ev.GetMetaEvent() != nil:
			seq = append(seq, "Meta")
		case ev.GetDevLoopEvent() != nil:
			seq = append(seq, "DevLoop:"+ev.GetDevLoopEvent().GetStatus())
		case ev.GetBuildEvent() != nil:
			seq = append(seq, "Build:"+ev.GetBuildEvent().GetStatus())
		case ev.GetDeployEvent() != nil:
			seq = append(seq, "Deploy:"+ev.GetDeployEvent().GetStatus())
		case ev.GetStatusCheckEvent() != nil:
			seq = append(seq, "StatusCheck:"+ev.GetStatusCheckEvent().GetStatus())
		case ev.GetResourceStatusCheckEvent() != nil:
			if s := "Resource:" + ev.GetResourceStatusCheckEvent().GetStatus(); seq[len(seq)-1] != s {
				seq = append(seq, s)
			}
		}
	}
	return strings.Join(seq, " "), h
}

func (x *e2e) testPush(t *testing.T) {
	repo, err := x.git.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit("main", "first", x.files("app"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := x.store.CreateJob(x.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha, DeliveryID: "e2e-1", Trigger: "push"})
	if err != nil {
		t.Fatal(err)
	}
	got := x.handle(t, j)
	if got.Status != store.StatusSucceeded {
		t.Fatalf("job = %s %q, want succeeded", got.Status, got.Error)
	}
	got1, h := x.v1Seq(t, j.ID)
	want := "Meta DevLoop:In Progress Build:In Progress Build:Complete Deploy:In Progress StatusCheck:Started Resource:In Progress Resource:Succeeded StatusCheck:Succeeded Deploy:Complete DevLoop:Succeeded"
	if got1 != want && got1 != strings.Replace(want, "Resource:In Progress ", "", 1) {
		t.Errorf("v1 events in Firestore:\n got %s\nwant %s", got1, want)
	}
	if meta := h.V1[0].GetEvent().GetMetaEvent().GetMetadata().GetAdditional(); meta[event.KeyJobID] != j.ID || meta[event.KeyCommit] != sha || meta[event.KeyRepository] != "octo/app" {
		t.Errorf("MetaEvent metadata = %v", meta)
	}
	logs := 0
	for _, ev := range h.V2 {
		if ev.GetSkaffoldLogEvent() != nil {
			logs++
		}
	}
	if logs < 3 {
		t.Errorf("%d v2 log events, want the build and deploy output", logs)
	}
	st, err := x.store.State(x.ctx, "octo", "app")
	if err != nil {
		t.Fatalf("state: %v", err)
	}
	if st.JobID != j.ID || st.V1.GetDeployState().GetStatusCode() != enumspb.StatusCode_DEPLOY_SUCCESS ||
		st.V1.GetStatusCheckState().GetStatus() != event.Succeeded || st.V2.GetBuildState().GetArtifacts()[x.registry+"/octo/app"] != event.V2Succeeded {
		t.Errorf("final state in Firestore: job %s v1 %v v2 build %v", st.JobID, st.V1, st.V2.GetBuildState())
	}
	if ref := st.V1.GetMetadata().GetBuild().GetAdditional()[x.registry+"/octo/app"]; !strings.Contains(ref, "@sha256:") {
		t.Errorf("state does not record the pushed digest: %q", ref)
	}
	// The job records what it deployed (a rollback's source), and is no
	// pending deploy.
	if want := st.V1.GetMetadata().GetBuild().GetAdditional()[x.registry+"/octo/app"]; got.DeployPending || len(got.Images) != 1 || got.Images["app"] != want {
		t.Errorf("deployed job records deploy pending %t images %v, want images {app: %s}", got.DeployPending, got.Images, want)
	}
}

// testDeployPending: with auto-deploy off a push only builds; the job
// records its images as the repository's pending deploy, and the
// deploy-only job an Execute deploy intent creates (CreateDeployJob)
// deploys exactly those images without building.
func (x *e2e) testDeployPending(t *testing.T) {
	const name = "gated"
	err := x.store.TrackRepository(x.ctx, store.Repository{Owner: "octo", Name: name, HookID: 2, WebhookSecret: []byte("s"), TrackedBy: "octo",
		Triggers: store.Triggers{AutoBuild: true, AutoDeploy: false, AutoSync: true}})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := x.git.Create("octo", name)
	if err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit("main", "first", x.files(name))
	if err != nil {
		t.Fatal(err)
	}
	built, err := x.store.CreateJob(x.ctx, store.Job{Owner: "octo", Name: name, Ref: "refs/heads/main", SHA: sha, DeliveryID: "e2e-gated", Trigger: "push"})
	if err != nil {
		t.Fatal(err)
	}
	got := x.handle(t, built)
	image := x.registry + "/octo/" + name
	ref := got.Images[name]
	if got.Status != store.StatusSucceeded || !got.DeployPending || !strings.HasPrefix(ref, image+":"+sha[:7]+"@sha256:") || len(got.Images) != 1 {
		t.Fatalf("built job = %s %q, deploy pending %t, images %v; want succeeded, deploy pending, %s → %s:%s@sha256:…",
			got.Status, got.Error, got.DeployPending, got.Images, name, image, sha[:7])
	}
	if seq, _ := x.v1Seq(t, built.ID); seq != "Meta DevLoop:In Progress Build:In Progress Build:Complete DevLoop:Succeeded" {
		t.Errorf("built job's v1 events = %s, want a build only", seq)
	}
	if r, err := x.store.Repository(x.ctx, "octo", name); err != nil || r.PendingDeployJobID != built.ID {
		t.Fatalf("repository's pending deploy = %+v (%v), want job %s", r, err, built.ID)
	}
	if _, err := x.kube.AppsV1().Deployments(store.DefaultNamespace("octo", name)).Get(x.ctx, name, metav1.GetOptions{}); err == nil {
		t.Fatalf("deployed although auto-deploy is off")
	}

	// Execute {deploy: true}.
	dj, err := x.store.CreateDeployJob(x.ctx, "octo", name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got = x.handle(t, dj)
	if got.Status != store.StatusSucceeded || got.Error != "" || got.DeployPending {
		t.Fatalf("deploy job = %s %q deploy pending %t, want succeeded", got.Status, got.Error, got.DeployPending)
	}
	want := "Meta DevLoop:In Progress Deploy:In Progress StatusCheck:Started Resource:In Progress Resource:Succeeded StatusCheck:Succeeded Deploy:Complete DevLoop:Succeeded"
	seq, h := x.v1Seq(t, dj.ID)
	if seq != want && seq != strings.Replace(want, "Resource:In Progress ", "", 1) {
		t.Errorf("deploy job's v1 events:\n got %s\nwant %s", seq, want)
	}
	if meta := h.V1[0].GetEvent().GetMetaEvent().GetMetadata().GetAdditional(); meta[event.KeyTrigger] != "execute" || meta[event.KeyCommit] != sha {
		t.Errorf("deploy job's MetaEvent metadata = %v, want trigger execute, commit %s", meta, sha)
	}
	d, err := x.kube.AppsV1().Deployments(store.DefaultNamespace("octo", name)).Get(x.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != ref {
		t.Errorf("deployment image = %q, want the built %q", img, ref)
	}
	st, err := x.store.State(x.ctx, "octo", name)
	if err != nil {
		t.Fatal(err)
	}
	if st.JobID != dj.ID || st.V1.GetDeployState().GetStatusCode() != enumspb.StatusCode_DEPLOY_SUCCESS ||
		st.V1.GetDeployState().GetAutoTrigger() || st.V1.GetMetadata().GetBuild().GetAdditional()[image] != ref {
		t.Errorf("state after the deploy: job %s v1 %v", st.JobID, st.V1)
	}
}
