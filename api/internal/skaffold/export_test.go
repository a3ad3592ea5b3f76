package skaffold_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// exportJob stores a job of owner/name that builds image and deploys it,
// in two batches, and returns its reference.
func (b *backend) exportJob(owner, name, delivery string) store.JobRef {
	b.t.Helper()
	j := b.claimedJob(owner, name, delivery)
	ref := j.JobRef()
	const image = "registry.example.com/octo/app"
	f := event.NewFactory(event.Job{ID: j.ID, Repository: owner + "/" + name, Iteration: ref.Iteration}, event.Plan{}, time.Now)
	batches := []store.EventBatch{
		{Job: ref, Chunk: 0,
			V1: []*v1pb.LogEntry{f.V1Meta(), f.V1Build(image, event.InProgress, nil)},
			V2: []*v2pb.Event{f.V2Log(event.TaskBuild, image, 0, "#5 [2/2] COPY hello /hello\n")}},
		{Job: ref, Chunk: 1,
			V1: []*v1pb.LogEntry{f.V1Built(image, image+":abc@sha256:"+strings.Repeat("ab", 32)), f.V1Deploy(event.InProgress, nil),
				f.V1ResourceStatus("deployment/app", event.Succeeded, "ok", 0, nil), f.V1Deploy(event.Complete, nil), f.V1DevLoop(event.Succeeded, nil)}},
	}
	for _, batch := range batches {
		if err := b.store.AppendEvents(b.ctx, batch); err != nil {
			b.t.Fatal(err)
		}
	}
	return ref
}

func get(t *testing.T, url string, header http.Header) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

func lines(body string) []string {
	if body == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(body, "\n"), "\n")
}

func TestExport(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	b.track("octo", "app", store.Triggers{AutoBuild: true, AutoDeploy: true})
	b.track("octo", "other", store.Triggers{AutoBuild: true, AutoDeploy: true})
	first := b.exportJob("octo", "app", "d-1")
	second := b.exportJob("octo", "app", "d-2")
	otherJob := b.exportJob("octo", "other", "d-3")
	a := b.startAPI(apiOptions{})
	url := a.httpURL + skaffold.ExportPath

	// The whole repository, seed 002's envelope: both jobs, in order, with
	// the build output, the pushed artifact and the deploy's manifests.
	code, ctype, body := get(t, url+"?repository=octo/app", nil)
	if code != http.StatusOK || ctype != "application/x-ndjson" {
		t.Fatalf("export: %d %s: %s", code, ctype, body)
	}
	type envelope struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		EventID    string `json:"event_id"`
		Event      struct {
			Sequence   int64 `json:"sequence"`
			BuildEvent *struct {
				Status   string `json:"status"`
				Log      string `json:"log"`
				Artifact *struct {
					Tag string `json:"tag"`
				} `json:"artifact"`
			} `json:"buildEvent"`
			DeployEvent *struct {
				Status    string   `json:"status"`
				Manifests []string `json:"manifests"`
			} `json:"deployEvent"`
		} `json:"event"`
	}
	var got []string
	var seqs []int64
	for _, l := range lines(body) {
		var e envelope
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if e.APIVersion != "skaffold.dev/v1alpha2" || e.Kind != "Event" {
			t.Errorf("line %q: header", l)
		}
		s := e.EventID + " "
		switch {
		case e.Event.BuildEvent != nil:
			s += "build " + e.Event.BuildEvent.Status
			if e.Event.BuildEvent.Log != "" {
				s += " log"
			}
			if e.Event.BuildEvent.Artifact != nil {
				s += " " + e.Event.BuildEvent.Artifact.Tag
			}
		case e.Event.DeployEvent != nil:
			s += "deploy " + e.Event.DeployEvent.Status + " " + strings.Join(e.Event.DeployEvent.Manifests, ",")
		}
		got, seqs = append(got, s), append(seqs, e.Event.Sequence)
	}
	var want []string
	for _, id := range []string{first.ID, second.ID} {
		want = append(want, id+" build IN_PROGRESS", id+" build IN_PROGRESS log", id+" build SUCCEEDED registry.example.com/octo/app:abc",
			id+" deploy IN_PROGRESS ", id+" deploy SUCCEEDED deployment/app")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("envelopes:\n got %q\nwant %q", got, want)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("sequence %d after %d", seqs[i], seqs[i-1])
		}
	}

	// Resuming after a sequence number: the second job's events only.
	if len(seqs) == len(want) {
		_, _, body = get(t, url+"?repository=octo/app&since="+strconv.FormatInt(seqs[4], 10), nil)
		if n := len(lines(body)); n != 5 || !strings.Contains(body, second.ID) || strings.Contains(body, first.ID) {
			t.Errorf("since the first job's last event: %d lines:\n%s", n, body)
		}
	}

	// One job, Skaffold's --event-log-file lines (v1: every event, not only
	// build and deploy), scope from the header.
	code, _, body = get(t, url+"?job="+first.ID+"&format=skaffold", http.Header{"X-Kgd-Repository": {"octo/app"}})
	if ls := lines(body); code != http.StatusOK || len(ls) != 7 || !strings.Contains(ls[0], `"metaEvent"`) || !strings.Contains(ls[6], `"devLoopEvent"`) || strings.Contains(body, second.ID) {
		t.Errorf("job export, skaffold format: %d, %d lines:\n%s", code, len(ls), body)
	}
	code, _, body = get(t, url+"?repository=octo/app&job="+first.ID+"&format=skaffold-v2", nil)
	if ls := lines(body); code != http.StatusOK || len(ls) != 1 || !strings.Contains(ls[0], `"skaffoldLogEvent"`) || !strings.Contains(ls[0], `"taskId"`) {
		t.Errorf("job export, skaffold-v2 format: %d:\n%s", code, body)
	}

	// Refusals: JSON errors, nothing streamed.
	for _, tc := range []struct {
		name, query string
		code        int
	}{
		{"no repository", "", http.StatusBadRequest},
		{"untracked repository", "?repository=octo/nope", http.StatusNotFound},
		{"unknown format", "?repository=octo/app&format=xml", http.StatusBadRequest},
		{"bad since", "?repository=octo/app&since=-3", http.StatusBadRequest},
		{"another repository's job", "?repository=octo/app&job=" + otherJob.ID, http.StatusNotFound},
		{"unknown job", "?repository=octo/app&job=nope", http.StatusNotFound},
		{"invalid job id", "?repository=octo/app&job=a%2Fb", http.StatusNotFound},
		{"invalid repository", "?repository=..%2F..", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ctype, body := get(t, url+tc.query, nil)
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if code != tc.code || ctype != "application/json" || json.Unmarshal([]byte(body), &st) != nil || st.Message == "" {
				t.Errorf("%s: %d %s %s; want %d with a JSON status", tc.query, code, ctype, body, tc.code)
			}
		})
	}
}

// TestExportIAM: in IAM mode an export needs an identity token, as the
// streams do.
func TestExportIAM(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	b.track("octo", "app", store.Triggers{AutoBuild: true, AutoDeploy: true})
	a := b.startAPI(apiOptions{auth: caller.ModeIAM})
	code, _, body := get(t, a.httpURL+skaffold.ExportPath+"?repository=octo/app", nil)
	if code != http.StatusUnauthorized {
		t.Errorf("export without a token: %d %s, want 401", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, a.httpURL+skaffold.ExportPath+"?repository=octo/app", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("POST export: %d, want a refusal", resp.StatusCode)
	}
}
