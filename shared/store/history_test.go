package store_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestCreateRequestedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "octo", "app")
	sha := strings.Repeat("a", 40)
	img := map[string]string{"web": "r/web:1@sha256:" + strings.Repeat("b", 64)}
	tests := []struct {
		name string
		j    store.Job
		ok   bool
	}{
		{"rerun", store.Job{Trigger: store.JobRerun, SourceJob: "p-1"}, true},
		{"rerun of a deploy-only job", store.Job{Trigger: store.JobRerun, SourceJob: "r-1", DeployOf: "p-1", Images: img}, true},
		{"deploy", store.Job{Trigger: store.JobDeploy}, true},
		{"rollback", store.Job{Trigger: store.JobRollback, DeployOf: "p-1", Images: img, Units: []string{"web"}}, true},
		{"push", store.Job{Trigger: "push"}, false},
		{"rollback without images", store.Job{Trigger: store.JobRollback, DeployOf: "p-1"}, false},
		{"deploy with images", store.Job{Trigger: store.JobDeploy, DeployOf: "p-1", Images: img}, false},
		{"images without a source", store.Job{Trigger: store.JobRerun, Images: img}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := tt.j
			j.Owner, j.Name, j.Ref, j.SHA, j.Actor = "octo", "app", "refs/heads/main", sha, "alice@example.com"
			// Fields only runners and pushes set are cleared.
			j.Status, j.Iteration, j.Phases, j.DeliveryID = store.StatusRunning, 9, []store.Phase{{Name: "build"}}, "d-1"
			got, err := e.store.CreateRequestedJob(e.ctx, j)
			if !tt.ok {
				if !errors.Is(err, store.ErrInvalid) {
					t.Fatalf("CreateRequestedJob = %v, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stored, err := e.store.Job(e.ctx, got.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := j
			want.ID, want.RepoKey, want.Status, want.Iteration, want.Phases, want.DeliveryID, want.CreatedAt = got.ID, "octo~app", store.StatusQueued, 0, nil, "", t0
			if diff := cmp.Diff(&want, stored); diff != "" || !strings.HasPrefix(got.ID, "r-") {
				t.Errorf("stored job %s (-want +got):\n%s", got.ID, diff)
			}
		})
	}
}

func TestJobsPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	var want []string
	for i := range 7 {
		// Two jobs per second: the page order breaks ties by id.
		j := e.createJob(t, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: fmt.Sprintf("%040x", i),
			DeliveryID: fmt.Sprintf("d-%d", i), CreatedAt: t0.Add(time.Duration(i/2) * time.Second)})
		want = append(want, j.ID)
	}
	e.createJob(t, store.Job{Owner: "octo", Name: "other", Ref: "refs/heads/main", SHA: strings.Repeat("f", 40), DeliveryID: "d-o"})
	var got []string
	token := ""
	for pages := 1; ; pages++ {
		jobs, next, err := e.store.JobsPage(e.ctx, "octo", "app", 3, token)
		if err != nil {
			t.Fatal(err)
		}
		for i, j := range jobs {
			got = append(got, j.ID)
			if i > 0 && j.CreatedAt.After(jobs[i-1].CreatedAt) {
				t.Errorf("page %d not newest first", pages)
			}
		}
		if token = next; token == "" {
			if pages != 3 {
				t.Errorf("%d pages of 3 for 7 jobs", pages)
			}
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d jobs over the pages, want %d: %v", len(got), len(want), got)
	}
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Errorf("job %s on two pages", id)
		}
		seen[id] = true
	}
	for _, bad := range []struct {
		limit int
		token string
	}{{0, ""}, {101, ""}, {3, "bm9wZQ"}, {3, "%%%"}} {
		if _, _, err := e.store.JobsPage(e.ctx, "octo", "app", bad.limit, bad.token); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("JobsPage(%d, %q) = %v, want ErrInvalid", bad.limit, bad.token, err)
		}
	}
}

func TestRecordJobResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	j := e.claimedJob(t, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: strings.Repeat("a", 40), DeliveryID: "d-1"})
	images := map[string]string{"web": "r/web:1@sha256:" + strings.Repeat("b", 64)}
	phases := []store.Phase{{Name: "build", Status: "Succeeded", StartedAt: t0, FinishedAt: t0.Add(time.Second)}}
	if err := e.store.RecordJobResult(e.ctx, j.ID, "someone-else", images, phases); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("RecordJobResult by another runner = %v, want ErrLeaseLost", err)
	}
	if err := e.store.RecordJobResult(e.ctx, j.ID, "test-runner", images, phases); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.Job(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(images, got.Images); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(phases, got.Phases); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
}

func TestFindCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	for i, sha := range []string{"abcdef1" + strings.Repeat("0", 33), "abcdef2" + strings.Repeat("0", 33), "1234567" + strings.Repeat("0", 33)} {
		e.createJob(t, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: sha, DeliveryID: fmt.Sprintf("d-%d", i)})
	}
	tests := []struct {
		prefix, want string
		err          error
	}{
		{"1234567", "1234567" + strings.Repeat("0", 33), nil},
		{"ABCDEF1", "abcdef1" + strings.Repeat("0", 33), nil},
		{"abcdef0", "", store.ErrNotFound},
		{"abcdef", "", store.ErrInvalid},   // too short
		{"fedcba9", "", store.ErrNotFound}, // pushed to dev, not to main
		{"fedcba9" + strings.Repeat("0", 33), "", store.ErrNotFound},
		{"xyzxyzx", "", store.ErrInvalid},
	}
	e.createJob(t, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/dev", SHA: "fedcba9" + strings.Repeat("0", 33), DeliveryID: "d-dev"})
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			got, err := e.store.FindCommit(e.ctx, "octo", "app", "refs/heads/main", tt.prefix)
			if got != tt.want || (tt.err == nil) != (err == nil) || (tt.err != nil && !errors.Is(err, tt.err)) {
				t.Errorf("FindCommit(%s) = %q, %v; want %q, %v", tt.prefix, got, err, tt.want, tt.err)
			}
		})
	}
	// Another commit starting with abcdef1: that prefix is ambiguous.
	e.createJob(t, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: "abcdef1" + strings.Repeat("9", 33), DeliveryID: "d-9"})
	if _, err := e.store.FindCommit(e.ctx, "octo", "app", "refs/heads/main", "abcdef1"); !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("ambiguous prefix: %v", err)
	}
}
