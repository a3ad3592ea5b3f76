package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/go-cmp/cmp"

	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// pointers returns the repository's newest pending job (status pending)
// and its pending deploy id.
func (e *env) pointers(t testing.TB, owner, name string) (pending, pendingDeploy string) {
	t.Helper()
	r, err := e.store.Repository(e.ctx, owner, name)
	if err != nil {
		t.Fatalf("Repository(%s/%s): %v", owner, name, err)
	}
	jobs, err := e.store.Jobs(e.ctx, owner, name, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Status == store.StatusPending {
			return j.ID, r.PendingDeployJobID
		}
	}
	return "", r.PendingDeployJobID
}

func (e *env) job(t testing.TB, id string) *store.Job {
	t.Helper()
	j, err := e.store.Job(e.ctx, id)
	if err != nil {
		t.Fatalf("Job(%s): %v", id, err)
	}
	return j
}

func TestReleasePendingJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store

	tests := []struct {
		repo        string
		forceDeploy bool
	}{
		{repo: "build-only", forceDeploy: false},
		{repo: "build-and-deploy", forceDeploy: true},
	}
	for _, tt := range tests {
		t.Run(tt.repo, func(t *testing.T) {
			e.track(t, "Alice", tt.repo)
			queued := e.createJob(t, store.Job{Owner: "alice", Name: tt.repo, SHA: "sha-1", DeliveryID: tt.repo + "-1"})
			pending := e.createJob(t, store.Job{Owner: "alice", Name: tt.repo, Ref: "refs/heads/main", SHA: "sha-2", Before: "sha-1",
				DeliveryID: tt.repo + "-2", Trigger: "push", Status: store.StatusPending})

			got, err := s.ReleasePendingJob(e.ctx, "ALICE", tt.repo, tt.forceDeploy)
			if err != nil {
				t.Fatalf("ReleasePendingJob: %v", err)
			}
			want := *pending
			want.Status, want.ForceDeploy = store.StatusQueued, tt.forceDeploy
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("ReleasePendingJob() (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(&want, e.job(t, pending.ID)); diff != "" {
				t.Errorf("stored job (-want +got):\n%s", diff)
			}
			if p, _ := e.pointers(t, "alice", tt.repo); p != "" {
				t.Errorf("pending job %q after the release, want none", p)
			}
			if j := e.job(t, queued.ID); j.Status != store.StatusQueued || j.ForceDeploy {
				t.Errorf("other job = %s force %t, want untouched", j.Status, j.ForceDeploy)
			}

			_, err = s.ReleasePendingJob(e.ctx, "alice", tt.repo, tt.forceDeploy)
			if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "no pending job") {
				t.Errorf("second ReleasePendingJob = %v, want ErrNotFound (no pending job)", err)
			}
			if j := e.job(t, pending.ID); j.Status != store.StatusQueued {
				t.Errorf("released job after the second release = %s, want queued", j.Status)
			}
		})
	}

	t.Run("canceled", func(t *testing.T) {
		// The pending job is no longer pending (say an operator canceled
		// it): nothing is released.
		e.track(t, "alice", "stale")
		pending := e.createJob(t, store.Job{Owner: "alice", Name: "stale", SHA: "1", DeliveryID: "stale-1", Status: store.StatusPending})
		_, err := e.client.Collection(store.JobsCollection).Doc(pending.ID).Update(e.ctx, []firestore.Update{{Path: "status", Value: "canceled"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReleasePendingJob(e.ctx, "alice", "stale", true); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ReleasePendingJob = %v, want ErrNotFound", err)
		}
		if j := e.job(t, pending.ID); j.Status != store.StatusCanceled || j.ForceDeploy {
			t.Errorf("canceled job = %s force %t, want untouched", j.Status, j.ForceDeploy)
		}
	})
}

func TestMarkDeployPending(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	var ids []string
	for i := range 3 {
		ids = append(ids, e.claimedJob(t, store.Job{Owner: "alice", Name: "app", SHA: "sha", DeliveryID: "mark-" + string(rune('a'+i))}).ID)
	}
	images := func(tag string) map[string]string {
		return map[string]string{"web": "reg/web:" + tag + "@sha256:" + strings.Repeat(tag[:1], 64)}
	}

	steps := []struct {
		name        string
		job         string
		images      map[string]string
		wantPointer string // the repository's pending deploy afterwards
	}{
		{name: "second-job", job: ids[1], images: images("2"), wantPointer: ids[1]},
		{name: "older-job-does-not-overwrite", job: ids[0], images: images("1"), wantPointer: ids[1]},
		{name: "newer-job-overwrites", job: ids[2], images: nil, wantPointer: ids[2]},
		{name: "same-job-again", job: ids[2], images: images("3"), wantPointer: ids[2]},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := s.MarkDeployPending(e.ctx, st.job, st.images); err != nil {
				t.Fatalf("MarkDeployPending: %v", err)
			}
			j := e.job(t, st.job)
			if !j.DeployPending || !cmp.Equal(st.images, j.Images) {
				t.Errorf("job: deploy pending %t images %v, want true %v", j.DeployPending, j.Images, st.images)
			}
			if _, p := e.pointers(t, "alice", "app"); p != st.wantPointer {
				t.Errorf("pending_deploy_job_id = %q, want %q", p, st.wantPointer)
			}
		})
	}

	t.Run("untracked", func(t *testing.T) {
		e.track(t, "alice", "gone")
		j := e.claimedJob(t, store.Job{Owner: "alice", Name: "gone", SHA: "sha", DeliveryID: "gone-1"})
		if err := s.UntrackRepository(e.ctx, "alice", "gone"); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkDeployPending(e.ctx, j.ID, images("9")); err != nil {
			t.Fatalf("MarkDeployPending for an untracked repository: %v", err)
		}
		if got := e.job(t, j.ID); !got.DeployPending || !cmp.Equal(images("9"), got.Images) {
			t.Errorf("job: deploy pending %t images %v, want recorded", got.DeployPending, got.Images)
		}
		if _, err := s.Repository(e.ctx, "alice", "gone"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Repository = %v, want it still untracked", err)
		}
	})

	errTests := []struct {
		name   string
		job    string
		images map[string]string
		want   error
	}{
		{name: "unknown-job", job: "nope", want: store.ErrNotFound},
		{name: "bad-id", job: "a/b", want: store.ErrInvalid},
		{name: "empty-ref", job: ids[0], images: map[string]string{"web": ""}, want: store.ErrInvalid},
		{name: "empty-unit", job: ids[0], images: map[string]string{"": "reg/web:1"}, want: store.ErrInvalid},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.MarkDeployPending(e.ctx, tt.job, tt.images); !errors.Is(err, tt.want) {
				t.Errorf("MarkDeployPending = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCreateDeployJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "Alice", "App")
	built := e.claimedJob(t, store.Job{Owner: "alice", Name: "app", Ref: "refs/heads/main", SHA: "sha-2", Before: "sha-1",
		DeliveryID: "deploy-1", Trigger: "push"})
	images := map[string]string{"web": "reg/web:abc@sha256:" + strings.Repeat("a", 64), "api": "reg/api:abc@sha256:" + strings.Repeat("b", 64)}
	if err := s.MarkDeployPending(e.ctx, built.ID, images); err != nil {
		t.Fatal(err)
	}

	if _, err := s.CreateDeployJob(e.ctx, "alice", "none", t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateDeployJob(untracked) = %v, want ErrNotFound", err)
	}
	now := t0.Add(time.Hour)
	got, err := s.CreateDeployJob(e.ctx, "ALICE", "app", now)
	if err != nil {
		t.Fatalf("CreateDeployJob: %v", err)
	}
	want := &store.Job{
		ID: got.ID, RepoKey: "alice~app", Owner: "Alice", Name: "App",
		Ref: "refs/heads/main", SHA: "sha-2", Before: "sha-1", Trigger: "execute",
		Iteration: 2, Status: store.StatusQueued, CreatedAt: now,
		DeployOf: built.ID, Images: images,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CreateDeployJob() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, e.job(t, got.ID)); diff != "" {
		t.Errorf("stored deploy job (-want +got):\n%s", diff)
	}
	r, err := s.Repository(e.ctx, "alice", "app")
	if err != nil {
		t.Fatal(err)
	}
	if r.PendingDeployJobID != "" || r.LatestJobID != got.ID || r.NextIteration != 3 {
		t.Errorf("repository: pending deploy %q latest %q next %d; want \"\", %q, 3", r.PendingDeployJobID, r.LatestJobID, r.NextIteration, got.ID)
	}
	if src := e.job(t, built.ID); !src.DeployPending || !cmp.Equal(images, src.Images) {
		t.Errorf("source job changed: deploy pending %t images %v", src.DeployPending, src.Images)
	}

	_, err = s.CreateDeployJob(e.ctx, "alice", "app", now)
	if !errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "not tracked") {
		t.Errorf("second CreateDeployJob = %v, want ErrNotFound (nothing pending)", err)
	}
	if n := e.count(t, store.JobsCollection, "deploy_of", built.ID); n != 1 {
		t.Errorf("%d deploy jobs of %s, want 1", n, built.ID)
	}

	t.Run("source-gone", func(t *testing.T) {
		j := e.claimedJob(t, store.Job{Owner: "alice", Name: "app", SHA: "sha-3", DeliveryID: "deploy-3"})
		if err := s.MarkDeployPending(e.ctx, j.ID, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.Collection(store.JobsCollection).Doc(j.ID).Delete(e.ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateDeployJob(e.ctx, "alice", "app", now); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("CreateDeployJob = %v, want ErrNotFound", err)
		}
		if _, p := e.pointers(t, "alice", "app"); p != "" {
			t.Errorf("pending_deploy_job_id = %q, want the stale pointer cleared", p)
		}
	})
}

// TestControlUntracked: every control method tells an untracked repository
// (ErrNotFound saying so) from one with nothing pending.
func TestControlUntracked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "idle")
	ops := []struct {
		name string
		op   func(owner, name string) error
	}{
		{"ReleasePendingJob", func(owner, name string) error {
			_, err := e.store.ReleasePendingJob(e.ctx, owner, name, false)
			return err
		}},
		{"CreateDeployJob", func(owner, name string) error {
			_, err := e.store.CreateDeployJob(e.ctx, owner, name, t0)
			return err
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			untracked := op.op("alice", "none")
			idle := op.op("alice", "idle")
			if !errors.Is(untracked, store.ErrNotFound) || !errors.Is(idle, store.ErrNotFound) {
				t.Fatalf("untracked: %v; nothing pending: %v; want ErrNotFound for both", untracked, idle)
			}
			if !strings.Contains(untracked.Error(), "not tracked") || strings.Contains(idle.Error(), "not tracked") {
				t.Errorf("messages do not tell the cases apart:\n untracked: %v\n idle:      %v", untracked, idle)
			}
			if err := op.op("a/b", "x"); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("bad owner: %v, want ErrInvalid", err)
			}
		})
	}
}

// TestCreateJobControlFields: CreateJob keeps the ForceDeploy request but
// never creates a deploy-only job or a job that looks built.
func TestCreateJobControlFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	got := e.createJob(t, store.Job{Owner: "alice", Name: "app", SHA: "sha", Trigger: "execute",
		ForceDeploy: true, DeployOf: "other", Images: map[string]string{"web": "reg/web:1"}, DeployPending: true})
	for _, j := range []*store.Job{got, e.job(t, got.ID)} {
		if !j.ForceDeploy || j.DeployOf != "" || j.Images != nil || j.DeployPending {
			t.Errorf("job = force %t deploy of %q images %v deploy pending %t; want true, \"\", nil, false",
				j.ForceDeploy, j.DeployOf, j.Images, j.DeployPending)
		}
	}
}

func TestClearDeployPending(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "clear")
	older := e.claimedJob(t, store.Job{Owner: "alice", Name: "clear", SHA: "sha-1", DeliveryID: "clear-1"})
	newer := e.claimedJob(t, store.Job{Owner: "alice", Name: "clear", SHA: "sha-2", DeliveryID: "clear-2"})
	img := map[string]string{"web": "r/web:1@sha256:" + strings.Repeat("a", 64)}
	if err := e.store.MarkDeployPending(e.ctx, older.ID, img); err != nil {
		t.Fatal(err)
	}
	// A deploy of the same iteration as the pending one keeps it.
	if err := e.store.ClearDeployPending(e.ctx, "alice", "clear", older.Iteration-1); err != nil {
		t.Fatal(err)
	}
	if _, d := e.pointers(t, "alice", "clear"); d != older.ID {
		t.Errorf("after an older deploy: pending deploy %q, want %q", d, older.ID)
	}
	if err := e.store.ClearDeployPending(e.ctx, "alice", "clear", older.Iteration); err != nil {
		t.Fatal(err)
	}
	if _, d := e.pointers(t, "alice", "clear"); d != older.ID {
		t.Errorf("after a deploy of the same iteration: pending deploy %q, want %q", d, older.ID)
	}
	// A newer deploy clears it.
	if err := e.store.ClearDeployPending(e.ctx, "alice", "clear", newer.Iteration); err != nil {
		t.Fatal(err)
	}
	if _, d := e.pointers(t, "alice", "clear"); d != "" {
		t.Errorf("after a newer deploy: pending deploy %q, want none", d)
	}
	if err := e.store.ClearDeployPending(e.ctx, "alice", "untracked", 9); err != nil {
		t.Errorf("untracked repository: %v", err)
	}
}
