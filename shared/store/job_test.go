package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestCreateJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "Alice", "App")

	in := store.Job{
		Owner: "Alice", Name: "App", Ref: "refs/heads/main", SHA: "sha-1", Before: "sha-0",
		DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Trigger: "push",
	}
	got := e.createJob(t, in)
	if got.ID == "" {
		t.Fatalf("CreateJob returned no id")
	}
	// No iteration yet: ClaimJob numbers a job when it starts.
	want := in
	want.ID, want.RepoKey, want.Iteration, want.Status, want.CreatedAt = got.ID, "alice~app", 0, store.StatusQueued, t0
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("CreateJob() (-want +got):\n%s", diff)
	}
	stored, err := s.Job(e.ctx, got.ID)
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	if diff := cmp.Diff(&want, stored); diff != "" {
		t.Errorf("Job() (-want +got):\n%s", diff)
	}
	// One write, to the job's own document: the repository is untouched.
	repo, err := s.Repository(e.ctx, "alice", "app")
	if err != nil {
		t.Fatalf("Repository: %v", err)
	}
	if repo.LatestJobID != "" || repo.NextIteration != 1 {
		t.Errorf("repository after CreateJob: latest %q next %d; want untouched (\"\", 1)", repo.LatestJobID, repo.NextIteration)
	}
	snap, err := e.client.Collection(store.JobsCollection).Doc(got.ID).Get(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := snap.Data(); d["published"] != false || !d["expire_at"].(time.Time).Equal(t0.Add(store.DefaultRetention)) {
		t.Errorf("job document = published %v expire_at %v; want false and %v", d["published"], d["expire_at"], t0.Add(store.DefaultRetention))
	}

	t.Run("execute-without-delivery", func(t *testing.T) {
		j := e.createJob(t, store.Job{ID: "exec-1", Owner: "alice", Name: "app", SHA: "sha-1", Trigger: "execute"})
		if j.ID != "exec-1" || j.Iteration != 0 {
			t.Errorf("CreateJob(execute) = id %q iteration %d, want exec-1, 0", j.ID, j.Iteration)
		}
	})

	errTests := []struct {
		name string
		job  store.Job
		want error
	}{
		{name: "id-taken", job: store.Job{ID: got.ID, Owner: "alice", Name: "app"}, want: store.ErrAlreadyExists},
		{name: "status-running", job: store.Job{Owner: "alice", Name: "app", Status: store.StatusRunning}, want: store.ErrInvalid},
		{name: "bad-id", job: store.Job{ID: "a/b", Owner: "alice", Name: "app"}, want: store.ErrInvalid},
		{name: "bad-delivery", job: store.Job{Owner: "alice", Name: "app", DeliveryID: "../x"}, want: store.ErrInvalid},
		{name: "bad-owner", job: store.Job{Owner: "", Name: "app"}, want: store.ErrInvalid},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.CreateJob(e.ctx, tt.job); !errors.Is(err, tt.want) {
				t.Fatalf("CreateJob() = %v, want %v", err, tt.want)
			}
		})
	}
	// The failed attempts changed nothing.
	if n := e.count(t, store.JobsCollection, "", nil); n != 2 {
		t.Errorf("jobs = %d, want 2", n)
	}
}

func TestCreateJobDuplicateDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")

	t.Run("sequential", func(t *testing.T) {
		first := e.createJob(t, store.Job{Owner: "alice", Name: "app", SHA: "a", DeliveryID: "seq"})
		_, err := s.CreateJob(e.ctx, store.Job{Owner: "alice", Name: "app", SHA: "a", DeliveryID: "seq"})
		if !errors.Is(err, store.ErrDuplicateDelivery) {
			t.Fatalf("second CreateJob = %v, want ErrDuplicateDelivery", err)
		}
		var dup *store.DuplicateDeliveryError
		if !errors.As(err, &dup) || dup.JobID != first.ID || dup.DeliveryID != "seq" || dup.Replay {
			t.Fatalf("second CreateJob error = %#v, want a DuplicateDeliveryError for job %s, no replay", err, first.ID)
		}
		if n := e.count(t, store.JobsCollection, "delivery_id", "seq"); n != 1 {
			t.Errorf("jobs of the delivery = %d, want 1", n)
		}
	})

	t.Run("replay", func(t *testing.T) {
		// The same push (its signed identity, push time included) under a
		// new delivery id.
		push := store.Job{Owner: "alice", Name: "app", Ref: "refs/heads/main", Before: "x", SHA: "y", PushedAt: t0, DeliveryID: "orig"}
		first := e.createJob(t, push)
		push.DeliveryID = "replayed"
		_, err := s.CreateJob(e.ctx, push)
		var dup *store.DuplicateDeliveryError
		if !errors.As(err, &dup) || dup.JobID != first.ID || !dup.Replay {
			t.Fatalf("replayed push = %v, want a replay of %s", err, first.ID)
		}
		push.PushedAt = t0.Add(time.Minute) // the same change pushed again later
		if _, err := s.CreateJob(e.ctx, push); err != nil {
			t.Errorf("a later push of the same change = %v, want a new job", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		const n = 3
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			jobs  = make([]*store.Job, n)
			errs  = make([]error, n)
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				jobs[i], errs[i] = s.CreateJob(e.ctx, store.Job{Owner: "alice", Name: "app", SHA: "b", DeliveryID: "conc"})
			}()
		}
		close(start)
		wg.Wait()
		var winner *store.Job
		for i, err := range errs {
			switch {
			case err == nil:
				if winner != nil {
					t.Fatalf("two CreateJob calls for one delivery succeeded: %s and %s", winner.ID, jobs[i].ID)
				}
				winner = jobs[i]
			case !errors.Is(err, store.ErrDuplicateDelivery):
				t.Errorf("CreateJob %d = %v, want success or ErrDuplicateDelivery", i, err)
			}
		}
		if winner == nil {
			t.Fatalf("no CreateJob succeeded: %v", errs)
		}
		for i, err := range errs {
			var dup *store.DuplicateDeliveryError
			if errors.As(err, &dup) && dup.JobID != winner.ID {
				t.Errorf("CreateJob %d names job %s, want %s", i, dup.JobID, winner.ID)
			}
		}
		if got := e.count(t, store.JobsCollection, "delivery_id", "conc"); got != 1 {
			t.Errorf("jobs of the delivery = %d, want 1", got)
		}
	})
	if n := e.count(t, store.JobsCollection, "", nil); n != 4 {
		t.Errorf("jobs = %d, want 4", n)
	}
}

// TestClaimNumbersJobs: a job gets its iteration when it is first
// claimed, in the order jobs start, per repository; renewing the claim or
// taking the job over keeps it.
func TestClaimNumbersJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	e.track(t, "bob", "app")
	var ids []string
	owners := []string{"alice", "bob", "alice", "alice", "bob"}
	for i, owner := range owners {
		ids = append(ids, e.createJob(t, store.Job{Owner: owner, Name: "app", DeliveryID: fmt.Sprintf("d-%d", i)}).ID)
	}
	var got []string
	for _, i := range []int{3, 1, 0, 4, 2} { // claimed in another order than created
		j, err := e.store.ClaimJob(e.ctx, ids[i], "runner", time.Minute, t0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s:%d", owners[i], j.Iteration))
	}
	want := []string{"alice:1", "bob:1", "alice:2", "bob:2", "alice:3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("iterations in claim order (-want +got):\n%s", diff)
	}
	again, err := e.store.ClaimJob(e.ctx, ids[3], "other-runner", time.Minute, t0.Add(2*time.Minute))
	if err != nil || again.Iteration != 1 {
		t.Errorf("takeover = iteration %v (%v), want 1 kept", again, err)
	}
	r, err := e.store.Repository(e.ctx, "alice", "app")
	if err != nil || r.NextIteration != 4 || r.LatestJobID != ids[2] {
		t.Errorf("alice/app next %d latest %q (%v), want 4, %s", r.NextIteration, r.LatestJobID, err, ids[2])
	}
}

// TestPendingNewestWins: pushes made while auto-build is off wait; the
// release queues the newest push (by push time) and cancels the older ones.
func TestPendingNewestWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")

	// Recorded out of push order, as concurrent deliveries can be.
	second := e.createJob(t, store.Job{Owner: "alice", Name: "app", Ref: "refs/heads/main", SHA: "2", PushedAt: t0.Add(time.Second), DeliveryID: "d-2", Status: store.StatusPending})
	first := e.createJob(t, store.Job{Owner: "alice", Name: "app", Ref: "refs/heads/main", SHA: "1", PushedAt: t0, DeliveryID: "d-1", Status: store.StatusPending})
	queued := e.createJob(t, store.Job{Owner: "alice", Name: "app", SHA: "3", DeliveryID: "d-3"})
	for _, j := range []*store.Job{first, second} {
		if got, _ := s.Job(e.ctx, j.ID); got.Status != store.StatusPending {
			t.Errorf("job %s = %s before the release, want pending (nothing is superseded while recording)", j.ID, got.Status)
		}
	}
	released, err := s.ReleasePendingJob(e.ctx, "alice", "app", false)
	if err != nil || released.ID != second.ID {
		t.Fatalf("ReleasePendingJob = %v, %v; want the newest push %s", released, err, second.ID)
	}
	tests := []struct {
		id        string
		want      store.JobStatus
		wantError string
	}{
		{first.ID, store.StatusCanceled, "superseded by job " + second.ID + ", a newer push"},
		{second.ID, store.StatusQueued, ""},
		{queued.ID, store.StatusQueued, ""},
	}
	for _, tt := range tests {
		j, err := s.Job(e.ctx, tt.id)
		if err != nil {
			t.Fatalf("Job(%s): %v", tt.id, err)
		}
		if j.Status != tt.want || j.Error != tt.wantError {
			t.Errorf("job %s: status %q error %q, want %q %q", tt.id, j.Status, j.Error, tt.want, tt.wantError)
		}
	}
}

func TestJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	e.track(t, "alice", "other")
	for i := range 5 {
		e.createJob(t, store.Job{Owner: "alice", Name: "app", SHA: fmt.Sprint(i + 1), DeliveryID: fmt.Sprintf("app-%d", i),
			CreatedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	e.createJob(t, store.Job{Owner: "alice", Name: "other", DeliveryID: "other-1"})

	tests := []struct {
		name, owner, repo string
		limit             int
		want              []string // SHAs
	}{
		{name: "limit", owner: "alice", repo: "app", limit: 3, want: []string{"5", "4", "3"}},
		{name: "all", owner: "Alice", repo: "APP", limit: 100, want: []string{"5", "4", "3", "2", "1"}},
		{name: "untracked", owner: "bob", repo: "app", limit: 10, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs, err := s.Jobs(e.ctx, tt.owner, tt.repo, tt.limit)
			if err != nil {
				t.Fatalf("Jobs: %v", err)
			}
			var got []string
			for _, j := range jobs {
				got = append(got, j.SHA)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Jobs() SHAs (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := s.Jobs(e.ctx, "alice", "app", 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Jobs(limit 0) = %v, want ErrInvalid", err)
	}
}

// TestJobLease drives one job through claims, renewals, an expiry and
// takeover, and finishing; time moves only through the now arguments.
func TestJobLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})
	const lease = 30 * time.Second
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

	claim := func(owner string, now time.Time) func() error {
		return func() error { _, err := s.ClaimJob(e.ctx, job.ID, owner, lease, now); return err }
	}
	renew := func(owner string, now time.Time) func() error {
		return func() error { return s.RenewLease(e.ctx, job.ID, owner, lease, now) }
	}
	finish := func(owner string, st store.JobStatus, msg string, now time.Time) func() error {
		return func() error { return s.FinishJob(e.ctx, job.ID, owner, st, msg, now) }
	}
	type lease_ struct {
		status   store.JobStatus
		owner    string
		expires  time.Time
		attempts int
	}
	steps := []struct {
		name    string
		op      func() error
		wantErr error
		want    lease_ // job afterwards
	}{
		{"a-claims", claim("a", at(0)), nil, lease_{store.StatusRunning, "a", at(30), 1}},
		{"b-blocked-by-live-lease", claim("b", at(10)), store.ErrLeased, lease_{store.StatusRunning, "a", at(30), 1}},
		{"a-reclaims-redelivery", claim("a", at(10)), nil, lease_{store.StatusRunning, "a", at(40), 2}},
		{"a-renews", renew("a", at(20)), nil, lease_{store.StatusRunning, "a", at(50), 2}},
		{"b-cannot-renew", renew("b", at(20)), store.ErrLeaseLost, lease_{store.StatusRunning, "a", at(50), 2}},
		{"b-still-blocked-at-expiry", claim("b", at(50)), store.ErrLeased, lease_{store.StatusRunning, "a", at(50), 2}},
		{"b-takes-over-after-expiry", claim("b", at(51)), nil, lease_{store.StatusRunning, "b", at(81), 3}},
		{"a-lost-renew", renew("a", at(52)), store.ErrLeaseLost, lease_{store.StatusRunning, "b", at(81), 3}},
		{"a-lost-finish", finish("a", store.StatusSucceeded, "", at(52)), store.ErrLeaseLost, lease_{store.StatusRunning, "b", at(81), 3}},
		{"b-finish-not-final", finish("b", store.StatusRunning, "", at(53)), store.ErrInvalid, lease_{store.StatusRunning, "b", at(81), 3}},
		{"b-finishes", finish("b", store.StatusFailed, "helm: timed out", at(60)), nil, lease_{store.StatusFailed, "", time.Time{}, 3}},
		{"b-finish-retried", finish("b", store.StatusFailed, "helm: timed out", at(61)), nil, lease_{store.StatusFailed, "", time.Time{}, 3}},
		{"b-finish-differently", finish("b", store.StatusSucceeded, "", at(62)), store.ErrLeaseLost, lease_{store.StatusFailed, "", time.Time{}, 3}},
		{"claim-finished", claim("c", at(70)), store.ErrJobFinished, lease_{store.StatusFailed, "", time.Time{}, 3}},
		{"renew-finished", renew("b", at(70)), store.ErrLeaseLost, lease_{store.StatusFailed, "", time.Time{}, 3}},
	}
	for _, st := range steps {
		if err := st.op(); !errors.Is(err, st.wantErr) {
			t.Fatalf("step %s: err = %v, want %v", st.name, err, st.wantErr)
		}
		j, err := s.Job(e.ctx, job.ID)
		if err != nil {
			t.Fatalf("step %s: Job: %v", st.name, err)
		}
		got := lease_{j.Status, j.LeaseOwner, j.LeaseExpires, j.Attempts}
		if diff := cmp.Diff(st.want, got, cmp.AllowUnexported(lease_{})); diff != "" {
			t.Fatalf("step %s: job (-want +got):\n%s", st.name, diff)
		}
	}

	final, err := s.Job(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := *job
	want.Iteration = 1 // numbered by its first claim
	want.Status, want.Attempts, want.Error = store.StatusFailed, 3, "helm: timed out"
	want.StartedAt, want.FinishedAt, want.FinishedBy = at(0), at(60), "b"
	if diff := cmp.Diff(&want, final); diff != "" {
		t.Errorf("finished job (-want +got):\n%s", diff)
	}

	errTests := []struct {
		name string
		op   func() error
		want error
	}{
		{"claim-unknown", func() error { _, err := s.ClaimJob(e.ctx, "nope", "a", lease, t0); return err }, store.ErrNotFound},
		{"renew-unknown", func() error { return s.RenewLease(e.ctx, "nope", "a", lease, t0) }, store.ErrNotFound},
		{"finish-unknown", func() error { return s.FinishJob(e.ctx, "nope", "a", store.StatusFailed, "", t0) }, store.ErrNotFound},
		{"claim-no-owner", func() error { _, err := s.ClaimJob(e.ctx, job.ID, "", lease, t0); return err }, store.ErrInvalid},
		{"claim-no-lease", func() error { _, err := s.ClaimJob(e.ctx, job.ID, "a", 0, t0); return err }, store.ErrInvalid},
		{"get-unknown", func() error { _, err := s.Job(e.ctx, "nope"); return err }, store.ErrNotFound},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestClaimJobConcurrent races three runners for one job: exactly one may
// win, the others must see ErrLeased (the store's transactions absorb the
// emulator's lock timeouts by retrying).
func TestClaimJobConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	job := e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-1"})

	const n = 3
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = s.ClaimJob(e.ctx, job.ID, fmt.Sprintf("runner-%d", i), time.Minute, t0)
		}()
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("runner-%d and runner-%d both claimed the job", winner, i)
			}
			winner = i
		case !errors.Is(err, store.ErrLeased):
			t.Errorf("runner-%d: ClaimJob = %v, want nil or ErrLeased", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no runner claimed the job: %v", errs)
	}
	j, err := s.Job(e.ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("runner-%d", winner); j.LeaseOwner != want || j.Attempts != 1 {
		t.Errorf("job lease owner %q attempts %d, want %q 1", j.LeaseOwner, j.Attempts, want)
	}
}

func TestExpiredJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

	ids := map[string]string{}
	for _, name := range []string{"short", "long", "queued", "finished"} {
		ids[name] = e.createJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: name}).ID
	}
	for _, c := range []struct {
		name  string
		lease time.Duration
	}{{"short", 10 * time.Second}, {"long", 20 * time.Second}, {"finished", 5 * time.Second}} {
		if _, err := s.ClaimJob(e.ctx, ids[c.name], "r", c.lease, t0); err != nil {
			t.Fatalf("ClaimJob(%s): %v", c.name, err)
		}
	}
	if err := s.FinishJob(e.ctx, ids["finished"], "r", store.StatusSucceeded, "", at(1)); err != nil {
		t.Fatalf("FinishJob: %v", err)
	}

	tests := []struct {
		name  string
		now   time.Time
		limit int
		want  []string
	}{
		{name: "none-yet", now: at(9), limit: 10, want: nil},
		{name: "at-expiry-not-expired", now: at(10), limit: 10, want: nil},
		{name: "one", now: at(15), limit: 10, want: []string{ids["short"]}},
		{name: "both-oldest-first", now: at(25), limit: 10, want: []string{ids["short"], ids["long"]}},
		{name: "limit", now: at(25), limit: 1, want: []string{ids["short"]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobs, err := s.ExpiredJobs(e.ctx, tt.now, tt.limit)
			if err != nil {
				t.Fatalf("ExpiredJobs: %v", err)
			}
			var got []string
			for _, j := range jobs {
				got = append(got, j.ID)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ExpiredJobs() (-want +got):\n%s", diff)
			}
		})
	}

	// A sweeper takes the expired job over and fails it.
	if _, err := s.ClaimJob(e.ctx, ids["short"], "sweeper", time.Minute, at(30)); err != nil {
		t.Fatalf("sweeper ClaimJob: %v", err)
	}
	if err := s.FinishJob(e.ctx, ids["short"], "sweeper", store.StatusFailed, "runner lost", at(30)); err != nil {
		t.Fatalf("sweeper FinishJob: %v", err)
	}
	jobs, err := s.ExpiredJobs(e.ctx, at(30), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].ID != ids["long"] {
		t.Errorf("ExpiredJobs after sweeping = %v, want only %s", jobs, ids["long"])
	}
}
