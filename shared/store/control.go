package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
)

// The Skaffold control API's Execute (and switching AutoBuild or AutoDeploy
// back on) runs what the repository's switches held back:
//
//   - a push made while auto-build was off is a pending job (status
//     pending); ReleasePendingJob queues the newest and cancels the rest;
//   - a job that built while auto-deploy was off records its images
//     (MarkDeployPending, repositories.pending_deploy_job_id);
//     CreateDeployJob queues a deploy-only job for them.
//
// Either way the caller publishes the returned job and calls
// MarkJobPublished, as the webhook does for the jobs it creates.

// Distinguishable causes of ErrNotFound for the control methods.
var (
	errNotTracked     = fmt.Errorf("repository is not tracked: %w", ErrNotFound)
	errNoPendingJob   = fmt.Errorf("no pending job: %w", ErrNotFound)
	errNoPendingBuild = fmt.Errorf("no built images wait for a deploy: %w", ErrNotFound)
)

// MarkDeployPending records that job jobID built images and left their
// deploy pending because auto-deploy is off: in one transaction it sets the
// job's images (unit name → "tag@digest") and deploy_pending, and points the
// repository's pending_deploy_job_id at the job unless it already points at
// a job of a higher iteration (a newer build waits already). If the
// repository is no longer tracked, only the job is updated. It returns
// ErrNotFound for an unknown job and ErrInvalid for an empty unit name or
// reference.
func (s *Store) MarkDeployPending(ctx context.Context, jobID string, images map[string]string) error {
	if err := checkID("job id", jobID); err != nil {
		return fmt.Errorf("mark deploy pending: %w", err)
	}
	for unit, ref := range images {
		if unit == "" || ref == "" {
			return fmt.Errorf("mark deploy pending of job %s: image %q=%q: %w", jobID, unit, ref, ErrInvalid)
		}
	}
	var imagesValue any = images
	if len(images) == 0 {
		imagesValue = firestore.Delete
	}
	ref := s.jobRef(jobID)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		j, err := jobFromSnap(snap)
		if err != nil {
			return err
		}
		repoRef := s.repoRef(j.Owner, j.Name)
		point := false
		repoSnap, err := tx.Get(repoRef)
		switch {
		case isNotFound(err):
			// Untracked: nothing will deploy it; the job keeps the record.
		case err != nil:
			return err
		default:
			var repo repositoryDoc
			if err := repoSnap.DataTo(&repo); err != nil {
				return fmt.Errorf("decode repository: %w", err)
			}
			newer, err := s.newerIteration(tx, repo.PendingDeployJobID, jobID, j.Iteration)
			if err != nil {
				return err
			}
			point = !newer
		}
		err = tx.Update(ref, []firestore.Update{
			{Path: "images", Value: imagesValue},
			{Path: "deploy_pending", Value: true},
		})
		if err != nil || !point {
			return err
		}
		return tx.Update(repoRef, []firestore.Update{{Path: "pending_deploy_job_id", Value: jobID}})
	})
	if err != nil {
		return fmt.Errorf("mark deploy pending of job %s: %w", jobID, translate(err))
	}
	return nil
}

// newerIteration reports whether job id other (if set and not self)
// exists with an iteration above iteration.
func (s *Store) newerIteration(tx *firestore.Transaction, other, self string, iteration int) (bool, error) {
	if other == "" || other == self {
		return false, nil
	}
	snap, err := tx.Get(s.jobRef(other))
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	v, err := snap.DataAt("iteration")
	if err != nil {
		return false, fmt.Errorf("job %s: %w", other, err)
	}
	n, _ := v.(int64)
	return int(n) > iteration, nil
}

// ReleasePendingJob queues the repository's pending job, the newest push
// held back while auto-build was off (by push time, then creation): in one
// transaction that job's status becomes queued with force_deploy set to
// forceDeploy (deploy what it builds even if auto-deploy is off), and every
// older pending job of the repository is canceled as superseded — the
// newest push wins, as in Skaffold. (Pushes are recorded with one write
// each, so this decision is taken here, off the webhook's path.) It
// returns the job as stored; the caller publishes it and calls
// MarkJobPublished.
//
// It returns an error wrapping ErrNotFound if the repository is not tracked
// or nothing is pending.
func (s *Store) ReleasePendingJob(ctx context.Context, owner, name string, forceDeploy bool) (*Job, error) {
	if err := checkRepo(owner, name); err != nil {
		return nil, fmt.Errorf("release pending job: %w", err)
	}
	repoRef := s.repoRef(owner, name)
	pending := s.client.Collection(JobsCollection).Where("repo", "==", repoRef.ID).Where("status", "==", string(StatusPending))
	var released *Job
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		released = nil
		if _, err := getRepoDoc(tx, repoRef); err != nil {
			return err
		}
		snaps, err := tx.Documents(pending).GetAll()
		if err != nil {
			return err
		}
		var jobs []*Job
		for _, snap := range snaps {
			j, err := jobFromSnap(snap)
			if err != nil {
				return err
			}
			jobs = append(jobs, j)
		}
		if len(jobs) == 0 {
			return nil
		}
		slices.SortFunc(jobs, func(a, b *Job) int {
			if c := a.PushedAt.Compare(b.PushedAt); c != 0 {
				return c
			}
			return a.CreatedAt.Compare(b.CreatedAt)
		})
		newest := jobs[len(jobs)-1]
		for _, old := range jobs[:len(jobs)-1] {
			err := tx.Update(s.jobRef(old.ID), []firestore.Update{
				{Path: "status", Value: string(StatusCanceled)},
				{Path: "finished_at", Value: s.now()},
				{Path: "error", Value: "superseded by job " + newest.ID + ", a newer push"},
			})
			if err != nil {
				return err
			}
		}
		newest.Status, newest.ForceDeploy = StatusQueued, forceDeploy
		released = newest
		return tx.Update(s.jobRef(newest.ID), []firestore.Update{
			{Path: "status", Value: string(StatusQueued)},
			{Path: "force_deploy", Value: forceDeploy},
		})
	})
	if err == nil && released == nil {
		err = errNoPendingJob
	}
	if err != nil {
		return nil, fmt.Errorf("release pending job of %s/%s: %w", owner, name, translate(err))
	}
	return released, nil
}

// CreateDeployJob queues a deploy-only job for the images of the
// repository's pending deploy (pending_deploy_job_id, see
// MarkDeployPending), in one transaction: the new job has Trigger
// "execute", the Ref, SHA and Before of the job that built the images,
// DeployOf naming that job, its Images, status queued, CreatedAt now and
// the repository's next iteration (latest_job_id points at it, as with
// CreateJob); pending_deploy_job_id is cleared. It returns the job as
// stored; the caller publishes it and calls MarkJobPublished.
//
// It returns an error wrapping ErrNotFound if the repository is not tracked
// or no deploy is pending (a pending_deploy_job_id naming a job that is
// gone is cleared).
func (s *Store) CreateDeployJob(ctx context.Context, owner, name string, now time.Time) (*Job, error) {
	if err := checkRepo(owner, name); err != nil {
		return nil, fmt.Errorf("create deploy job: %w", err)
	}
	if now.IsZero() {
		now = s.now()
	}
	repoRef := s.repoRef(owner, name)
	jobRef := s.client.Collection(JobsCollection).NewDoc()
	var created *Job
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		created = nil
		repo, err := getRepoDoc(tx, repoRef)
		if err != nil {
			return err
		}
		if repo.PendingDeployJobID == "" {
			return errNoPendingBuild
		}
		snap, err := tx.Get(s.jobRef(repo.PendingDeployJobID))
		if isNotFound(err) {
			// A stale pointer: clear it; nothing to deploy.
			return tx.Update(repoRef, []firestore.Update{{Path: "pending_deploy_job_id", Value: ""}})
		}
		if err != nil {
			return err
		}
		src, err := jobFromSnap(snap)
		if err != nil {
			return err
		}
		j := Job{
			ID: jobRef.ID, RepoKey: repoRef.ID, Owner: repo.Owner, Name: repo.Name,
			Ref: src.Ref, SHA: src.SHA, Before: src.Before, Trigger: "execute",
			Iteration: int(max(repo.NextIteration, 1)), Status: StatusQueued, CreatedAt: now,
			DeployOf: src.ID, Images: maps.Clone(src.Images),
		}
		err = tx.Update(repoRef, []firestore.Update{
			{Path: "next_iteration", Value: int64(j.Iteration) + 1},
			{Path: "latest_job_id", Value: j.ID},
			{Path: "pending_deploy_job_id", Value: ""},
		})
		if err != nil {
			return err
		}
		doc := toJobDoc(&j)
		s.expire(&doc, now)
		if err := tx.Create(jobRef, doc); err != nil {
			return err
		}
		created = &j
		return nil
	})
	if err == nil && created == nil {
		err = errNoPendingBuild
	}
	if err != nil {
		return nil, fmt.Errorf("create deploy job for %s/%s: %w", owner, name, translate(err))
	}
	return created, nil
}

// getRepoDoc reads a repository document in tx; errNotTracked if there is
// none.
func getRepoDoc(tx *firestore.Transaction, ref *firestore.DocumentRef) (*repositoryDoc, error) {
	snap, err := tx.Get(ref)
	if isNotFound(err) {
		return nil, errNotTracked
	}
	if err != nil {
		return nil, err
	}
	var d repositoryDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, fmt.Errorf("decode repository: %w", err)
	}
	return &d, nil
}

// ClearDeployPending forgets the repository's pending deploy if it belongs
// to a job older than iteration: a newer job deployed since, and deploying
// the older images later would roll the release back. A pending deploy of
// iteration or newer, or an untracked repository, is left alone.
func (s *Store) ClearDeployPending(ctx context.Context, owner, name string, iteration int) error {
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("clear pending deploy: %w", err)
	}
	repoRef := s.repoRef(owner, name)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(repoRef)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		var repo repositoryDoc
		if err := snap.DataTo(&repo); err != nil {
			return fmt.Errorf("decode repository: %w", err)
		}
		if repo.PendingDeployJobID == "" {
			return nil
		}
		keep, err := s.newerIteration(tx, repo.PendingDeployJobID, "", iteration-1)
		if err != nil || keep {
			return err
		}
		return tx.Update(repoRef, []firestore.Update{{Path: "pending_deploy_job_id", Value: ""}})
	})
	if err != nil {
		return fmt.Errorf("clear pending deploy of %s/%s: %w", owner, name, translate(err))
	}
	return nil
}
