package localstack_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// TestJobHistoryEndToEnd drives the job API on the whole system: the
// history of real pushes (phases, images with digests, who pushed), a
// rerun, a deploy of an earlier commit by its short SHA and a rollback to
// an earlier job's images, each a new job that the real runner runs and
// that the cluster then shows.
func TestJobHistoryEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, d := startStack(t, ctx, t.Output())
	rest, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(rest)
	if err != nil {
		t.Fatal(err)
	}
	const owner, repo, full = "demo", "hello", "demo/hello"
	base := st.URLs.APIHTTP + "/kgd/v1/repositories/demo/hello"
	call := func(t *testing.T, method, url, body string, into proto.Message) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s %v", method, url, resp.StatusCode, raw, err)
		}
		if err := protojson.Unmarshal(raw, into); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, raw)
		}
	}
	waitJob := func(t *testing.T, id string) *jobspb.Job {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 4*time.Minute)
		defer wcancel()
		it, err := d.WaitForJob(wctx, full, id, nil)
		if err != nil {
			t.Fatalf("events of job %s: %v", id, err)
		}
		if it.Status != "Succeeded" {
			t.Fatalf("job %s: %s", id, it)
		}
		// The job's record is final right after its iteration's end.
		var j jobspb.Job
		for {
			call(t, http.MethodGet, base+"/jobs/"+id, "", &j)
			if j.GetStatus() == string(store.StatusSucceeded) || wctx.Err() != nil {
				return &j
			}
			select {
			case <-wctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	deployed := func(t *testing.T) string {
		t.Helper()
		dep, err := kube.AppsV1().Deployments(store.DefaultNamespace(owner, repo)).Get(ctx, "hello", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return dep.Spec.Template.Spec.Containers[0].Image
	}
	push := func(t *testing.T, message string) *demo.Pushed {
		t.Helper()
		files, err := demo.Files(ctx, st.URLs.Registry, owner, repo, message)
		if err != nil {
			t.Fatal(err)
		}
		p, err := d.Push(ctx, owner, repo, "main", message, files)
		if err != nil || p.JobID == "" {
			t.Fatalf("push: %v %+v", err, p)
		}
		return p
	}

	first := push(t, "first")
	j1 := waitJob(t, first.JobID)
	second := push(t, "second")
	j2 := waitJob(t, second.JobID)

	t.Run("history", func(t *testing.T) {
		var list jobspb.ListJobsResponse
		call(t, http.MethodGet, base+"/jobs?page_size=1", "", &list)
		if len(list.GetJobs()) != 1 || list.GetJobs()[0].GetId() != j2.GetId() || list.GetNextPageToken() == "" {
			t.Fatalf("first page = %v", &list)
		}
		call(t, http.MethodGet, base+"/jobs?page_size=1&page_token="+list.GetNextPageToken(), "", &list)
		if len(list.GetJobs()) != 1 || list.GetJobs()[0].GetId() != j1.GetId() {
			t.Fatalf("second page = %v", &list)
		}
		for _, j := range []*jobspb.Job{j1, j2} {
			var phases []string
			for _, p := range j.GetPhases() {
				phases = append(phases, p.GetName()+"="+p.GetStatus())
				if p.GetStartedAt() == nil || p.GetFinishedAt() == nil {
					t.Errorf("job %s phase %s without times", j.GetId(), p.GetName())
				}
			}
			if want := []string{"build=Succeeded", "deploy=Succeeded", "status-check=Succeeded"}; !slices.Equal(phases, want) {
				t.Errorf("job %s phases %v, want %v", j.GetId(), phases, want)
			}
			img := j.GetImages()["hello"]
			if !strings.HasPrefix(img, st.URLs.Registry+"/demo/hello:"+j.GetCommit()[:7]+"@sha256:") {
				t.Errorf("job %s image %q", j.GetId(), img)
			}
			if j.GetActor() == "" || j.GetTrigger() != "push" || j.GetBranch() != "main" || j.GetIteration() == 0 {
				t.Errorf("job %v", j)
			}
		}
		if got := deployed(t); got != j2.GetImages()["hello"] {
			t.Errorf("cluster runs %s, want the second push's %s", got, j2.GetImages()["hello"])
		}
	})
	t.Run("rollback", func(t *testing.T) {
		var j jobspb.Job
		call(t, http.MethodPost, base+"/jobs/"+j1.GetId()+":rollback", "{}", &j)
		done := waitJob(t, j.GetId())
		if done.GetTrigger() != "rollback" || done.GetSourceJob() != j1.GetId() || done.GetImages()["hello"] != j1.GetImages()["hello"] {
			t.Errorf("rollback job %v", done)
		}
		for _, p := range done.GetPhases() {
			if p.GetName() == "build" {
				t.Errorf("a rollback built: %v", done.GetPhases())
			}
		}
		if got := deployed(t); got != j1.GetImages()["hello"] {
			t.Errorf("after the rollback the cluster runs %s, want the first push's %s", got, j1.GetImages()["hello"])
		}
	})
	t.Run("deploy a commit", func(t *testing.T) {
		var j jobspb.Job
		call(t, http.MethodPost, base+"/deploys", `{"branch":"main","commit":"`+second.After[:9]+`"}`, &j)
		done := waitJob(t, j.GetId())
		if done.GetTrigger() != "deploy" || done.GetCommit() != second.After {
			t.Errorf("deploy job %v", done)
		}
		if got := deployed(t); got != done.GetImages()["hello"] || !strings.Contains(got, ":"+second.After[:7]+"@") {
			t.Errorf("after the deploy the cluster runs %s, want the job's %s", got, done.GetImages()["hello"])
		}
	})
	t.Run("rerun", func(t *testing.T) {
		var j jobspb.Job
		call(t, http.MethodPost, base+"/jobs/"+j1.GetId()+":rerun", "{}", &j)
		done := waitJob(t, j.GetId())
		if done.GetTrigger() != "rerun" || done.GetCommit() != first.After || done.GetSourceJob() != j1.GetId() {
			t.Errorf("rerun job %v", done)
		}
		// Every unit is rebuilt and deployed: a rerun is not filtered by
		// what changed since the last deploy.
		var phases []string
		for _, p := range done.GetPhases() {
			phases = append(phases, p.GetName())
		}
		if !slices.Equal(phases, []string{"build", "deploy", "status-check"}) {
			t.Errorf("rerun phases %v", phases)
		}
		if got := deployed(t); !strings.Contains(got, ":"+first.After[:7]+"@") {
			t.Errorf("after the rerun the cluster runs %s, want commit %.7s", got, first.After)
		}
	})
}
