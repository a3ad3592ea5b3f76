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

// TestJobEndToEnd runs one job through the worker and the real pipeline —
// git on loopback, the Docker Engine, a loopback registry, the local
// control plane — and reads the events and state back from Firestore.
func TestJobEndToEnd(t *testing.T) {
	e := newEnv(t)
	cp := controlplanetest.Start(t)
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer docker.Close()
	if err := build.Ping(e.ctx, docker); err != nil {
		t.Fatalf("no Docker daemon: start dockerd or set DOCKER_HOST: %v", err)
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	regHost := strings.TrimPrefix(reg.URL, "http://")
	git, err := gitserve.New(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer git.Close()
	repo, err := git.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit("main", "first", map[string]string{
		"kube-git-deploy.toml": "[app]\n[[docker]]\ndirectory = \"./app\"\ntag = \"" + regHost + "/octo/app:{{ .git.shortSha }}\"\n[[helm]]\nchart = \"./deploy\"\n",
		"app/Dockerfile":       "FROM scratch\nCOPY hello.txt /\n",
		"app/hello.txt":        "hello\n",
		"deploy/Chart.yaml":    "apiVersion: v2\nname: app\nversion: 0.1.0\n",
		"deploy/templates/d.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: 1\n" +
			"  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n" +
			"      containers:\n        - name: c\n          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	src, err := source.New(git.URL)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dep, err := deploy.New(cp.Kubeconfig, quiet)
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
	j, err := e.store.CreateJob(e.ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha, DeliveryID: "e2e-1", Trigger: "push"})
	if err != nil {
		t.Fatal(err)
	}
	m := job.Message{Version: 1, JobID: j.ID, Repository: "octo/app", Ref: j.Ref, SHA: sha, DeliveryID: "e2e-1", Trigger: job.TriggerPush, PublishedAt: time.Now()}
	if err := w.Handle(e.ctx, m, queue.Delivery{Attempt: 1}); err != nil {
		t.Fatalf("Handle: %v", err)
	}

	got, err := e.store.Job(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusSucceeded {
		t.Fatalf("job = %s %q, want succeeded", got.Status, got.Error)
	}
	h, err := e.store.JobEvents(e.ctx, j.ID)
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
	got1 := strings.Join(seq, " ")
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
	st, err := e.store.State(e.ctx, "octo", "app")
	if err != nil {
		t.Fatalf("state: %v", err)
	}
	if st.JobID != j.ID || st.V1.GetDeployState().GetStatusCode() != enumspb.StatusCode_DEPLOY_SUCCESS ||
		st.V1.GetStatusCheckState().GetStatus() != event.Succeeded || st.V2.GetBuildState().GetArtifacts()[regHost+"/octo/app"] != event.V2Succeeded {
		t.Errorf("final state in Firestore: job %s v1 %v v2 build %v", st.JobID, st.V1, st.V2.GetBuildState())
	}
	if ref := st.V1.GetMetadata().GetBuild().GetAdditional()[regHost+"/octo/app"]; !strings.Contains(ref, "@sha256:") {
		t.Errorf("state does not record the pushed digest: %q", ref)
	}
}
