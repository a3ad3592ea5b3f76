package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// JobStatus is the life-cycle stage of a job.
type JobStatus string

// Job statuses. Queued and pending jobs wait, running jobs hold a lease,
// and the last three are final.
const (
	// StatusQueued: created and published; waiting for a runner.
	StatusQueued JobStatus = "queued"
	// StatusPending: created while auto-build is off; waits for Execute.
	StatusPending JobStatus = "pending"
	// StatusRunning: claimed by a runner holding a lease.
	StatusRunning JobStatus = "running"
	// StatusSucceeded: finished without error.
	StatusSucceeded JobStatus = "succeeded"
	// StatusFailed: finished with an error.
	StatusFailed JobStatus = "failed"
	// StatusCanceled: stopped before finishing, or superseded while pending.
	StatusCanceled JobStatus = "canceled"
)

// Finished reports whether s is a final status.
func (s JobStatus) Finished() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCanceled
}

// Job is one run of a repository's pipeline, normally for one push.
type Job struct {
	// ID is the job's document id. CreateJob generates one when empty.
	ID string
	// RepoKey is the repository's key (RepoKey(Owner, Name)); CreateJob
	// sets it.
	RepoKey string
	// Owner and Name are the repository's, in display case.
	Owner string
	Name  string
	// Ref, SHA and Before describe the push: the ref pushed, the commit
	// it now points at, and the commit it pointed at before.
	Ref    string
	SHA    string
	Before string
	// DeliveryID is GitHub's X-GitHub-Delivery; empty for jobs not made by
	// a webhook (Trigger "execute").
	DeliveryID string
	// PushedAt is when GitHub says the push happened (the push payload's
	// repository.pushed_at), zero for jobs not made by a push. It orders
	// pushes ("newer" means pushed later, whatever the iteration numbers)
	// and, with the repository, ref, before and after, identifies a push:
	// CreateJob refuses the same push twice, also under a new delivery id.
	PushedAt time.Time
	// Trigger says what created the job: "push", "execute", ...
	Trigger string
	// Iteration numbers the repository's jobs from 1; CreateJob assigns it.
	Iteration int
	// Status is the life-cycle stage. CreateJob accepts queued (the
	// default) or pending.
	Status JobStatus
	// CreatedAt, StartedAt and FinishedAt are the life-cycle times; zero
	// when not reached. CreateJob sets CreatedAt when zero.
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	// FinishedBy is the lease owner that finished the job.
	FinishedBy string
	// LeaseOwner and LeaseExpires describe the lease of a running job.
	LeaseOwner   string
	LeaseExpires time.Time
	// Attempts counts successful claims.
	Attempts int
	// Error is the failure message of a failed or canceled job.
	Error string
	// PublishedAt and MessageID record the Pub/Sub message that announced
	// the job; zero until MarkJobPublished. A queued job that was never
	// published must be published again (see MarkJobPublished).
	PublishedAt time.Time
	MessageID   string
	// HandedBack reports that the last runner gave the job back unfinished
	// (it was shutting down), so the next claim runs it again rather than
	// treating it as abandoned.
	HandedBack bool
	// ForceDeploy makes the runner deploy what it builds even while the
	// repository's auto-deploy is off: an Execute request asked for both
	// build and deploy (see ReleasePendingJob).
	ForceDeploy bool
	// DeployOf is the id of the job whose built images this job deploys;
	// non-empty means a deploy-only job, which builds nothing (see
	// CreateDeployJob). CreateJob clears it.
	DeployOf string
	// Images maps each unit name to the "tag@digest" reference of its
	// image: for a job that built and left its deploy pending, what it
	// pushed (MarkDeployPending); for a deploy-only job, what it deploys.
	// CreateJob clears it.
	Images map[string]string
	// DeployPending reports that the job built its images but did not
	// deploy them because auto-deploy is off (MarkDeployPending).
	// CreateJob clears it.
	DeployPending bool
	// Actor is who caused the job: the pusher GitHub names (a push) or the
	// caller who asked (a rerun, deploy or rollback); empty when unknown.
	Actor string
	// SourceJob is the job a rerun reruns (CreateRequestedJob); DeployOf
	// names the source of a deploy-only job.
	SourceJob string
	// Units, when set, are the only units the job deploys (a rollback of
	// some units); empty means every unit.
	Units []string
	// Phases are the build, deploy and status-check phases of a finished
	// job as its events recorded them (RecordJobResult), in order.
	Phases []Phase
}

// Phase is one phase of a job: its name (build, deploy, status-check), its
// last status (Skaffold's v2 task status: InProgress, Succeeded, Failed)
// and when it started and ended (zero while it runs).
type Phase struct {
	Name       string    `firestore:"name"`
	Status     string    `firestore:"status"`
	StartedAt  time.Time `firestore:"started_at"`
	FinishedAt time.Time `firestore:"finished_at,omitempty"`
}

// JobRef returns the job's identity for writing events.
func (j Job) JobRef() JobRef {
	return JobRef{ID: j.ID, Owner: j.Owner, Name: j.Name, Iteration: j.Iteration}
}

type jobDoc struct {
	Repo         string    `firestore:"repo"`
	Owner        string    `firestore:"owner"`
	Name         string    `firestore:"name"`
	Ref          string    `firestore:"ref"`
	SHA          string    `firestore:"sha"`
	Before       string    `firestore:"before"`
	DeliveryID   string    `firestore:"delivery_id"`
	PushedAt     time.Time `firestore:"pushed_at,omitempty"`
	Trigger      string    `firestore:"trigger"`
	Iteration    int64     `firestore:"iteration"`
	Status       string    `firestore:"status"`
	CreatedAt    time.Time `firestore:"created_at"`
	StartedAt    time.Time `firestore:"started_at,omitempty"`
	FinishedAt   time.Time `firestore:"finished_at,omitempty"`
	FinishedBy   string    `firestore:"finished_by"`
	LeaseOwner   string    `firestore:"lease_owner"`
	LeaseExpires time.Time `firestore:"lease_expires,omitempty"`
	Attempts     int64     `firestore:"attempts"`
	Error        string    `firestore:"error"`
	PublishedAt  time.Time `firestore:"published_at,omitempty"`
	MessageID    string    `firestore:"message_id"`
	HandedBack   bool      `firestore:"handed_back"`
	ForceDeploy  bool      `firestore:"force_deploy"`
	DeployOf     string    `firestore:"deploy_of"`
	// Images is omitted when empty; jobFromSnap reads an empty map as nil.
	Images        map[string]string `firestore:"images,omitempty"`
	DeployPending bool              `firestore:"deploy_pending"`
	Actor         string            `firestore:"actor,omitempty"`
	SourceJob     string            `firestore:"source_job,omitempty"`
	Units         []string          `firestore:"units,omitempty"`
	Phases        []Phase           `firestore:"phases,omitempty"`
	// Published is published_at != zero, as a field the sweeps can query
	// (Firestore cannot query a missing field).
	Published bool `firestore:"published"`
	// ExpireAt is when the TTL policy deletes the job (Store.Retention
	// after it was created, and again after it finished).
	ExpireAt time.Time `firestore:"expire_at,omitempty"`
}

func toJobDoc(j *Job) jobDoc {
	return jobDoc{
		Repo: j.RepoKey, Owner: j.Owner, Name: j.Name,
		Ref: j.Ref, SHA: j.SHA, Before: j.Before,
		DeliveryID: j.DeliveryID, PushedAt: j.PushedAt, Trigger: j.Trigger,
		Iteration: int64(j.Iteration), Status: string(j.Status),
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt,
		FinishedBy: j.FinishedBy, LeaseOwner: j.LeaseOwner, LeaseExpires: j.LeaseExpires,
		Attempts: int64(j.Attempts), Error: j.Error,
		PublishedAt: j.PublishedAt, MessageID: j.MessageID, Published: !j.PublishedAt.IsZero(), HandedBack: j.HandedBack,
		ForceDeploy: j.ForceDeploy, DeployOf: j.DeployOf, Images: j.Images, DeployPending: j.DeployPending,
		Actor: j.Actor, SourceJob: j.SourceJob, Units: j.Units, Phases: j.Phases,
	}
}

func jobFromSnap(snap *firestore.DocumentSnapshot) (*Job, error) {
	var d jobDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, fmt.Errorf("decode job %s: %w", snap.Ref.ID, err)
	}
	return &Job{
		ID: snap.Ref.ID, RepoKey: d.Repo, Owner: d.Owner, Name: d.Name,
		Ref: d.Ref, SHA: d.SHA, Before: d.Before,
		DeliveryID: d.DeliveryID, PushedAt: d.PushedAt, Trigger: d.Trigger,
		Iteration: int(d.Iteration), Status: JobStatus(d.Status),
		CreatedAt: d.CreatedAt, StartedAt: d.StartedAt, FinishedAt: d.FinishedAt,
		FinishedBy: d.FinishedBy, LeaseOwner: d.LeaseOwner, LeaseExpires: d.LeaseExpires,
		Attempts: int(d.Attempts), Error: d.Error,
		PublishedAt: d.PublishedAt, MessageID: d.MessageID, HandedBack: d.HandedBack,
		ForceDeploy: d.ForceDeploy, DeployOf: d.DeployOf, Images: nilIfEmpty(d.Images), DeployPending: d.DeployPending,
		Actor: d.Actor, SourceJob: d.SourceJob, Units: d.Units, Phases: d.Phases,
	}, nil
}

// nilIfEmpty returns m, or nil if m is empty, so a job without images
// reads the same whether its images field is missing or an empty map.
func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func (s *Store) jobRef(id string) *firestore.DocumentRef {
	return s.client.Collection(JobsCollection).Doc(id)
}

// PushKey identifies a push: the same repository, ref, before, after and
// push time (the signed payload's repository.pushed_at) are the same push,
// whatever its delivery id. A force-push back to an older commit differs
// in before, and pushing the same change again later in push time.
func PushKey(repoKey, ref, before, after string, pushedAt time.Time) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{repoKey, ref, before, after, strconv.FormatInt(pushedAt.Unix(), 10)}, "\x00")))
	return hex.EncodeToString(sum[:])
}

// jobKey is the id of a job whose caller gave none: the push's identity
// (PushKey) when it has a push time, else its delivery id (a redelivery),
// else a random id.
func (s *Store) jobKey(j Job) string {
	switch {
	case !j.PushedAt.IsZero():
		return "p-" + PushKey(j.RepoKey, j.Ref, j.Before, j.SHA, j.PushedAt)
	case j.DeliveryID != "":
		sum := sha256.Sum256([]byte(j.RepoKey + "\x00" + j.DeliveryID))
		return "d-" + hex.EncodeToString(sum[:])
	}
	return s.client.Collection(JobsCollection).NewDoc().ID
}

// CreateJob records a new job with one write and nothing else: no
// transaction, no write to the repository's document, so a burst of pushes
// to one repository never queues behind itself (Firestore sustains about
// one write per second per document). The caller checks that the
// repository is tracked (the webhook reads it to verify the signature).
//
// The job's id is its idempotency key (see jobKey): the same push again —
// a redelivery, or the same signed push replayed under a new delivery id,
// which GitHub does not sign — finds the job it made and nothing is
// written; the error is then a *DuplicateDeliveryError (matching
// ErrDuplicateDelivery) naming it, with Replay set when the delivery id
// differs. It returns ErrAlreadyExists if a given j.ID is taken.
//
// The job gets no iteration here (0): ClaimJob numbers it when a runner
// starts it. A pending job (auto-build off) does not supersede the
// repository's other pending pushes here either: ReleasePendingJob
// releases the newest and cancels the rest. The returned Job is j as
// stored: the life-cycle and lease fields, DeployOf, Images and
// DeployPending are cleared (deploy-only jobs come from CreateDeployJob);
// ForceDeploy is kept.
func (s *Store) CreateJob(ctx context.Context, j Job) (*Job, error) {
	if err := checkRepo(j.Owner, j.Name); err != nil {
		return nil, fmt.Errorf("create job: %w", err)
	}
	j.RepoKey = RepoKey(j.Owner, j.Name)
	given := j.ID != ""
	if !given {
		j.ID = s.jobKey(j)
	} else if err := checkID("job id", j.ID); err != nil {
		return nil, fmt.Errorf("create job: %w", err)
	}
	if j.DeliveryID != "" {
		if err := checkID("delivery id", j.DeliveryID); err != nil {
			return nil, fmt.Errorf("create job %s: %w", j.ID, err)
		}
	}
	switch j.Status {
	case "":
		j.Status = StatusQueued
	case StatusQueued, StatusPending:
	default:
		return nil, fmt.Errorf("create job %s: status %q: %w", j.ID, j.Status, ErrInvalid)
	}
	if j.CreatedAt.IsZero() {
		j.CreatedAt = s.now()
	}
	j.Iteration = 0
	j.StartedAt, j.FinishedAt, j.FinishedBy = time.Time{}, time.Time{}, ""
	j.LeaseOwner, j.LeaseExpires, j.Attempts, j.Error = "", time.Time{}, 0, ""
	j.PublishedAt, j.MessageID = time.Time{}, ""
	// Deploy-only jobs and their images come only from CreateDeployJob,
	// and deploy_pending only from the runner (MarkDeployPending).
	// ForceDeploy is a request, which a caller may make.
	j.DeployOf, j.Images, j.DeployPending = "", nil, false
	j.SourceJob, j.Units, j.Phases = "", nil, nil
	return s.createJob(ctx, j, given)
}

// createJob writes j, a new job (see CreateJob).
func (s *Store) createJob(ctx context.Context, j Job, given bool) (*Job, error) {
	doc := toJobDoc(&j)
	s.expire(&doc, j.CreatedAt)
	_, err := s.jobRef(j.ID).Create(ctx, doc)
	if status.Code(err) == codes.AlreadyExists && !given {
		existing, gerr := s.Job(ctx, j.ID)
		if gerr != nil {
			return nil, fmt.Errorf("create job %s for %s/%s: read the existing job: %w", j.ID, j.Owner, j.Name, gerr)
		}
		return nil, &DuplicateDeliveryError{DeliveryID: j.DeliveryID, JobID: existing.ID, Replay: existing.DeliveryID != j.DeliveryID}
	}
	if err != nil {
		return nil, fmt.Errorf("create job %s for %s/%s: %w", j.ID, j.Owner, j.Name, translate(err))
	}
	return &j, nil
}

// expire sets a job document's expiry: at + the store's retention.
func (s *Store) expire(d *jobDoc, at time.Time) {
	if s.retention > 0 {
		d.ExpireAt = at.Add(s.retention)
	}
}

// MarkJobPublished records that the Pub/Sub message messageID announced
// job id at time at. The webhook calls it after Publish returns, so a job
// whose PublishedAt is zero was recorded but possibly never published, and
// a redelivery of its webhook publishes it again. It returns ErrNotFound
// for an unknown job.
func (s *Store) MarkJobPublished(ctx context.Context, id, messageID string, at time.Time) error {
	if err := checkID("job id", id); err != nil {
		return fmt.Errorf("mark job published: %w", err)
	}
	_, err := s.jobRef(id).Update(ctx, []firestore.Update{
		{Path: "published_at", Value: at},
		{Path: "message_id", Value: messageID},
		{Path: "published", Value: true},
	})
	if err != nil {
		return fmt.Errorf("mark job %s published: %w", id, translate(err))
	}
	return nil
}

// Job returns the job with the given id, or ErrNotFound.
func (s *Store) Job(ctx context.Context, id string) (*Job, error) {
	if err := checkID("job id", id); err != nil {
		return nil, fmt.Errorf("get job: %w", err)
	}
	snap, err := s.jobRef(id).Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, translate(err))
	}
	return jobFromSnap(snap)
}

// Jobs returns up to limit jobs of the repository owner/name, newest
// (last created) first: jobs not started yet have no iteration. It works
// for untracked repositories too.
func (s *Store) Jobs(ctx context.Context, owner, name string, limit int) ([]Job, error) {
	if err := checkRepo(owner, name); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("list jobs of %s/%s: limit %d: %w", owner, name, limit, ErrInvalid)
	}
	q := s.client.Collection(JobsCollection).
		Where("repo", "==", RepoKey(owner, name)).
		OrderBy("created_at", firestore.Desc).
		Limit(limit)
	jobs, err := s.queryJobs(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list jobs of %s/%s: %w", owner, name, err)
	}
	return jobs, nil
}

// ExpiredJobs returns up to limit running jobs whose lease expired before
// now, oldest lease first: their runner died or hung, and another runner may
// claim them (ClaimJob) to take over or to finish them as failed.
func (s *Store) ExpiredJobs(ctx context.Context, now time.Time, limit int) ([]Job, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list expired jobs: limit %d: %w", limit, ErrInvalid)
	}
	q := s.client.Collection(JobsCollection).
		Where("status", "==", string(StatusRunning)).
		Where("lease_expires", "<", now).
		OrderBy("lease_expires", firestore.Asc).
		Limit(limit)
	jobs, err := s.queryJobs(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list expired jobs: %w", err)
	}
	return jobs, nil
}

// UnpublishedJobs lists queued jobs recorded before createdBefore that
// were never published: PublicAPI answered 503 because Pub/Sub failed, or
// died between recording and publishing (GitHub does not retry). A sweep
// publishes them. Oldest first.
func (s *Store) UnpublishedJobs(ctx context.Context, createdBefore time.Time, limit int) ([]Job, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list unpublished jobs: limit %d: %w", limit, ErrInvalid)
	}
	q := s.client.Collection(JobsCollection).
		Where("status", "==", string(StatusQueued)).
		Where("published", "==", false).
		Where("created_at", "<", createdBefore).
		OrderBy("created_at", firestore.Asc).
		Limit(limit)
	jobs, err := s.queryJobs(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list unpublished jobs: %w", err)
	}
	return jobs, nil
}

// UnclaimedJobs lists queued jobs published before publishedBefore that no
// runner has claimed since: their message was lost (Pub/Sub keeps
// messages, so this is a belt to its braces: an emulator restart, a
// deleted subscription). A sweep publishes them again; claiming makes the
// duplicate harmless. Oldest first.
func (s *Store) UnclaimedJobs(ctx context.Context, publishedBefore time.Time, limit int) ([]Job, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list unclaimed jobs: limit %d: %w", limit, ErrInvalid)
	}
	q := s.client.Collection(JobsCollection).
		Where("status", "==", string(StatusQueued)).
		Where("published_at", "<", publishedBefore).
		OrderBy("published_at", firestore.Asc).
		Limit(limit)
	jobs, err := s.queryJobs(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list unclaimed jobs: %w", err)
	}
	return jobs, nil
}

func (s *Store) queryJobs(ctx context.Context, q firestore.Query) ([]Job, error) {
	it := q.Documents(ctx)
	defer it.Stop()
	var out []Job
	for {
		snap, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, translate(err)
		}
		j, err := jobFromSnap(snap)
		if err != nil {
			return nil, err
		}
		out = append(out, *j)
	}
}

// ClaimJob gives owner a lease on the job until now+lease, marking it
// running: the at-least-once delivery of job messages makes a redelivered or
// duplicated message harmless, because only one claim succeeds while the
// lease is alive. It returns ErrJobFinished for a finished job and ErrLeased
// while another owner's lease has not expired (a lease is live up to and
// including its expiry instant). A claim of an expired lease
// takes the job over; a claim by the current owner renews it. Every
// successful claim counts an attempt.
func (s *Store) ClaimJob(ctx context.Context, id, owner string, lease time.Duration, now time.Time) (*Job, error) {
	if err := checkID("job id", id); err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	if owner == "" || lease <= 0 {
		return nil, fmt.Errorf("claim job %s: empty owner or non-positive lease: %w", id, ErrInvalid)
	}
	ref := s.jobRef(id)
	var claimed *Job
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		j, err := jobFromSnap(snap)
		if err != nil {
			return err
		}
		switch {
		case j.Status.Finished():
			return ErrJobFinished
		case j.Status == StatusRunning && j.LeaseOwner != owner && !now.After(j.LeaseExpires):
			return ErrLeased
		}
		// A job is numbered when it first starts, off the webhook's path:
		// the repository's counter is read and advanced here, once per
		// job, at the rate runners start jobs.
		var repoUpdates []firestore.Update
		repoRef := s.repoRef(j.Owner, j.Name)
		if j.Iteration == 0 {
			rsnap, err := tx.Get(repoRef)
			switch {
			case err == nil:
				next, _ := rsnap.DataAt("next_iteration")
				n, _ := next.(int64)
				j.Iteration = int(max(n, 1))
				repoUpdates = []firestore.Update{
					{Path: "next_iteration", Value: int64(j.Iteration) + 1},
					{Path: "latest_job_id", Value: j.ID},
				}
			case !isNotFound(err):
				return err
			}
		}
		j.Status = StatusRunning
		j.LeaseOwner = owner
		j.LeaseExpires = now.Add(lease)
		j.Attempts++
		updates := []firestore.Update{
			{Path: "status", Value: string(j.Status)},
			{Path: "lease_owner", Value: owner},
			{Path: "lease_expires", Value: j.LeaseExpires},
			{Path: "attempts", Value: int64(j.Attempts)},
			{Path: "handed_back", Value: false},
		}
		if j.StartedAt.IsZero() {
			j.StartedAt = now
			updates = append(updates, firestore.Update{Path: "started_at", Value: now})
		}
		if repoUpdates != nil {
			updates = append(updates, firestore.Update{Path: "iteration", Value: int64(j.Iteration)})
			if err := tx.Update(repoRef, repoUpdates); err != nil {
				return err
			}
		}
		claimed = j
		return tx.Update(ref, updates)
	})
	if err != nil {
		return nil, fmt.Errorf("claim job %s: %w", id, translate(err))
	}
	return claimed, nil
}

// HandBackJob returns a running job to the queued state, unfinished, and
// marks it handed back so the next claim runs it again: a runner calls it
// when it shuts down in the middle of the job. Only the lease owner may
// hand a job back (ErrLeaseLost otherwise).
func (s *Store) HandBackJob(ctx context.Context, id, owner string) error {
	if err := checkID("job id", id); err != nil {
		return fmt.Errorf("hand back job: %w", err)
	}
	err := s.updateLeased(ctx, id, owner, []firestore.Update{
		{Path: "status", Value: string(StatusQueued)},
		{Path: "lease_owner", Value: ""},
		{Path: "lease_expires", Value: firestore.Delete},
		{Path: "handed_back", Value: true},
	})
	if err != nil {
		return fmt.Errorf("hand back job %s: %w", id, err)
	}
	return nil
}

// updateLeased applies updates to a running job in a transaction, if owner
// holds its lease; ErrLeaseLost otherwise.
func (s *Store) updateLeased(ctx context.Context, id, owner string, updates []firestore.Update) error {
	ref := s.jobRef(id)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		j, err := jobFromSnap(snap)
		if err != nil {
			return err
		}
		if j.Status != StatusRunning || j.LeaseOwner != owner {
			return ErrLeaseLost
		}
		return tx.Update(ref, updates)
	})
	return translate(err)
}

// RenewLease extends owner's lease on the job to now+lease. It returns
// ErrLeaseLost if the job finished or another owner claimed it; an expired
// lease nobody else claimed can still be renewed.
func (s *Store) RenewLease(ctx context.Context, id, owner string, lease time.Duration, now time.Time) error {
	if err := checkID("job id", id); err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	if owner == "" || lease <= 0 {
		return fmt.Errorf("renew lease of job %s: empty owner or non-positive lease: %w", id, ErrInvalid)
	}
	if err := s.updateLeased(ctx, id, owner, []firestore.Update{{Path: "lease_expires", Value: now.Add(lease)}}); err != nil {
		return fmt.Errorf("renew lease of job %s: %w", id, err)
	}
	return nil
}

// FinishJob ends the job with a final status (succeeded, failed or
// canceled) and errMsg, clears the lease and records finished_at = now. Only
// the lease owner may finish a job; anyone else gets ErrLeaseLost. Repeating
// the same finish (a retry whose first answer was lost) succeeds.
func (s *Store) FinishJob(ctx context.Context, id, owner string, st JobStatus, errMsg string, now time.Time) error {
	if err := checkID("job id", id); err != nil {
		return fmt.Errorf("finish job: %w", err)
	}
	if owner == "" || !st.Finished() {
		return fmt.Errorf("finish job %s: empty owner or status %q not final: %w", id, st, ErrInvalid)
	}
	ref := s.jobRef(id)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		j, err := jobFromSnap(snap)
		if err != nil {
			return err
		}
		if j.Status.Finished() {
			if j.FinishedBy == owner && j.Status == st && j.Error == errMsg {
				return nil // already done by this very call
			}
			return ErrLeaseLost
		}
		if j.Status != StatusRunning || j.LeaseOwner != owner {
			return ErrLeaseLost
		}
		updates := []firestore.Update{
			{Path: "status", Value: string(st)},
			{Path: "error", Value: errMsg},
			{Path: "finished_at", Value: now},
			{Path: "finished_by", Value: owner},
			{Path: "lease_owner", Value: ""},
			{Path: "lease_expires", Value: firestore.Delete},
		}
		if s.retention > 0 {
			updates = append(updates, firestore.Update{Path: "expire_at", Value: now.Add(s.retention)})
		}
		return tx.Update(ref, updates)
	})
	if err != nil {
		return fmt.Errorf("finish job %s: %w", id, translate(err))
	}
	return nil
}
