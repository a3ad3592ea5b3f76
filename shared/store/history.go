package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
)

// Job.Trigger values of the jobs people start on purpose through the job API
// (CreateRequestedJob), besides "push" and "execute".
const (
	// JobRerun builds and deploys the commit of an earlier job again.
	JobRerun = "rerun"
	// JobDeploy builds and deploys a commit a caller chose.
	JobDeploy = "deploy"
	// JobRollback deploys, without building, the images an earlier
	// successful job deployed.
	JobRollback = "rollback"
)

// Requested reports whether trigger names a job a person asked for
// through the job API: such a job runs as asked, never superseded by a
// push and never superseding one.
func Requested(trigger string) bool {
	return trigger == JobRerun || trigger == JobDeploy || trigger == JobRollback
}

// CreateRequestedJob records a job a caller asked for: a rerun (Trigger
// JobRerun, SourceJob set; a rerun of a deploy-only job deploys the
// same images, with DeployOf and Images), a deploy of a chosen commit
// (JobDeploy) or a rollback (JobRollback: DeployOf names the job
// whose Images it deploys, Units optionally limits the units). The job
// gets a new random id ("r-…"), status queued and CreatedAt now; the
// caller publishes it and calls MarkJobPublished. The caller checks that
// the repository is tracked and that the caller may steer it.
func (s *Store) CreateRequestedJob(ctx context.Context, j Job) (*Job, error) {
	if err := checkRepo(j.Owner, j.Name); err != nil {
		return nil, fmt.Errorf("create job: %w", err)
	}
	if !Requested(j.Trigger) {
		return nil, fmt.Errorf("create job for %s/%s: trigger %q is not a requested job's: %w", j.Owner, j.Name, j.Trigger, ErrInvalid)
	}
	if j.Trigger == JobRollback && (j.DeployOf == "" || len(j.Images) == 0) {
		return nil, fmt.Errorf("create rollback job for %s/%s: no source job or images: %w", j.Owner, j.Name, ErrInvalid)
	}
	if j.Trigger == JobDeploy && (j.DeployOf != "" || len(j.Images) > 0) {
		return nil, fmt.Errorf("create deploy job for %s/%s: a deploy of a commit builds it: %w", j.Owner, j.Name, ErrInvalid)
	}
	if (j.DeployOf == "") != (len(j.Images) == 0) {
		return nil, fmt.Errorf("create %s job for %s/%s: a deploy-only job needs both its source job and its images: %w", j.Trigger, j.Owner, j.Name, ErrInvalid)
	}
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("create job: %w", err)
	}
	j.ID = "r-" + hex.EncodeToString(b[:])
	j.RepoKey = RepoKey(j.Owner, j.Name)
	j.Status = StatusQueued
	j.CreatedAt = s.now()
	j.DeliveryID, j.PushedAt = "", time.Time{}
	j.Iteration = 0
	j.StartedAt, j.FinishedAt, j.FinishedBy = time.Time{}, time.Time{}, ""
	j.LeaseOwner, j.LeaseExpires, j.Attempts, j.Error = "", time.Time{}, 0, ""
	j.PublishedAt, j.MessageID = time.Time{}, ""
	j.DeployPending, j.Phases = false, nil
	j.Images = maps.Clone(j.Images)
	j.Units = slices.Clone(j.Units)
	return s.createJob(ctx, j, true)
}

// RecordJobResult records what a running job built or deployed (unit →
// "tag@digest") and its phases, before the job finishes. Only the lease
// owner may (ErrLeaseLost otherwise). Empty images leave the recorded ones
// (a deploy-only job's, or a pending deploy's) as they are.
func (s *Store) RecordJobResult(ctx context.Context, id, owner string, images map[string]string, phases []Phase) error {
	if err := checkID("job id", id); err != nil {
		return fmt.Errorf("record job result: %w", err)
	}
	updates := []firestore.Update{{Path: "phases", Value: phases}}
	if len(images) > 0 {
		updates = append(updates, firestore.Update{Path: "images", Value: images})
	}
	if err := s.updateLeased(ctx, id, owner, updates); err != nil {
		return fmt.Errorf("record result of job %s: %w", id, err)
	}
	return nil
}

// PhasesOf is the record of the phases a job's events showed.
func PhasesOf(ps []event.JobPhase) []Phase {
	var out []Phase
	for _, p := range ps {
		out = append(out, Phase{Name: p.Name, Status: p.Status, StartedAt: p.StartedAt, FinishedAt: p.FinishedAt})
	}
	return out
}

// MaxJobsPage is the most jobs JobsPage returns at once.
const MaxJobsPage = 100

// pageCursor is the position after a page's last job, as JobsPage's
// opaque page token.
type pageCursor struct {
	Created time.Time `json:"c"`
	ID      string    `json:"i"`
}

// JobsPage returns up to limit (1–MaxJobsPage) jobs of the repository
// owner/name, newest first, after the position token names (a previous
// page's next token; "" for the first page), and the token of the next
// page ("" when this one is the last). A token that is not one of
// JobsPage's is ErrInvalid. It works for untracked repositories too.
func (s *Store) JobsPage(ctx context.Context, owner, name string, limit int, token string) ([]Job, string, error) {
	if err := checkRepo(owner, name); err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	if limit <= 0 || limit > MaxJobsPage {
		return nil, "", fmt.Errorf("list jobs of %s/%s: page size %d is not 1–%d: %w", owner, name, limit, MaxJobsPage, ErrInvalid)
	}
	q := s.client.Collection(JobsCollection).
		Where("repo", "==", RepoKey(owner, name)).
		OrderBy("created_at", firestore.Desc).
		OrderBy(firestore.DocumentID, firestore.Desc)
	if token != "" {
		c, err := decodeCursor(token)
		if err != nil {
			return nil, "", fmt.Errorf("list jobs of %s/%s: %w", owner, name, err)
		}
		q = q.StartAfter(c.Created, c.ID)
	}
	// One more than asked tells whether another page follows.
	jobs, err := s.queryJobs(ctx, q.Limit(limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("list jobs of %s/%s: %w", owner, name, err)
	}
	if len(jobs) <= limit {
		return jobs, "", nil
	}
	jobs = jobs[:limit]
	last := jobs[limit-1]
	raw, err := json.Marshal(pageCursor{Created: last.CreatedAt, ID: last.ID})
	if err != nil {
		return nil, "", fmt.Errorf("list jobs of %s/%s: %w", owner, name, err)
	}
	return jobs, base64.RawURLEncoding.EncodeToString(raw), nil
}

func decodeCursor(token string) (pageCursor, error) {
	var c pageCursor
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(raw, &c)
	}
	if err != nil || c.Created.IsZero() || checkID("job id", c.ID) != nil {
		return pageCursor{}, fmt.Errorf("page token %q is not one this API gave: %w", truncateID(token), ErrInvalid)
	}
	return c, nil
}

func truncateID(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// FindCommit returns the full commit SHA of owner/name that starts with
// prefix (7–40 hex digits) among the commits its latest 500 jobs on ref
// built: ErrNotFound when none matches, ErrInvalid when the prefix is too
// short or matches more than one commit. Only commits pushed to ref are
// found: a commit GitHub would serve by its SHA alone (a fork's, say) is
// not one of the branch's.
func (s *Store) FindCommit(ctx context.Context, owner, name, ref, prefix string) (string, error) {
	prefix = strings.ToLower(prefix)
	if len(prefix) < 7 || len(prefix) > 40 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return "", fmt.Errorf("commit %q is not 7–40 hex digits: %w", truncateID(prefix), ErrInvalid)
	}
	jobs, err := s.Jobs(ctx, owner, name, 500)
	if err != nil {
		return "", err
	}
	found := ""
	for _, j := range jobs {
		if j.Ref != ref || !strings.HasPrefix(j.SHA, prefix) || j.SHA == found {
			continue
		}
		if found != "" {
			return "", fmt.Errorf("commit %s is ambiguous (%.12s, %.12s, …): give more digits: %w", prefix, found, j.SHA, ErrInvalid)
		}
		found = j.SHA
	}
	if found == "" {
		return "", fmt.Errorf("no job of %s/%s built a commit starting with %s on %s (a commit is deployable once it was pushed to the branch): %w", owner, name, prefix, ref, ErrNotFound)
	}
	return found, nil
}
