package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
)

// Repository is a tracked GitHub repository.
type Repository struct {
	// Owner and Name are as GitHub displays them; lookups ignore case.
	Owner string
	Name  string
	// HookID is the id of the webhook created on GitHub.
	HookID int64
	// WebhookSecret is the HMAC key of the webhook. It is sealed in
	// Firestore and plaintext only here. It must not be empty.
	WebhookSecret []byte
	// TrackedBy is the GitHub login whose token created the webhook; the
	// runner clones with that token (see RepositoryToken).
	TrackedBy string
	// TrackedByCaller is the identity (caller.Identity's email, or "local")
	// that tracked the repository with its own token of TrackedBy. Empty
	// for repositories tracked before callers were recorded.
	TrackedByCaller string
	// TrackedAt is when it was tracked; TrackRepository sets it when zero.
	TrackedAt time.Time
	// Triggers says which phases run automatically on a push.
	Triggers Triggers
	// NextIteration is the iteration the next job will get (from 1).
	// TrackRepository sets it; callers cannot.
	NextIteration int
	// LatestJobID is the newest job of the repository, if any.
	LatestJobID string
	// PendingDeployJobID is the newest job that built images but left
	// their deploy to an Execute request because auto-deploy is off, if
	// any (see MarkDeployPending and CreateDeployJob).
	PendingDeployJobID string
	// Policy is the repository's deploy policy. TrackRepository stores
	// DefaultPolicy when it has no namespace.
	Policy Policy
	// Deployed maps each unit to the commit a job last deployed it at
	// successfully (RecordDeployed): the base of the unit's paths filter.
	Deployed map[string]string
	// GitHubReportsOff turns off the runner's commit statuses and
	// Deployments on GitHub for the repository (on by default; see
	// SetGitHubReports).
	GitHubReportsOff bool
}

// Key returns the repository's document id (see RepoKey).
func (r Repository) Key() string { return RepoKey(r.Owner, r.Name) }

// Triggers are Skaffold's auto-build, auto-deploy and auto-sync switches for
// one repository. Every trigger is on unless turned off.
type Triggers struct {
	AutoBuild  bool
	AutoDeploy bool
	AutoSync   bool
}

// DefaultTriggers returns the triggers of a newly tracked repository: all on.
func DefaultTriggers() Triggers {
	return Triggers{AutoBuild: true, AutoDeploy: true, AutoSync: true}
}

type repositoryDoc struct {
	Owner         string      `firestore:"owner"`
	Name          string      `firestore:"name"`
	HookID        int64       `firestore:"hook_id"`
	WebhookSecret []byte      `firestore:"webhook_secret"`
	TrackedBy     string      `firestore:"tracked_by"`
	TrackedAt     time.Time   `firestore:"tracked_at"`
	Triggers      triggersDoc `firestore:"triggers"`
	NextIteration int64       `firestore:"next_iteration"`
	LatestJobID   string      `firestore:"latest_job_id"`
	// Written by MarkDeployPending and CreateDeployJob.
	PendingDeployJobID string `firestore:"pending_deploy_job_id"`
	// Missing in documents written before deploy policies existed.
	Policy *policyDoc `firestore:"policy,omitempty"`
	// Written by RecordDeployed.
	Deployed map[string]string `firestore:"deployed,omitempty"`
	// Missing in documents written before callers were recorded.
	TrackedByCaller string `firestore:"tracked_by_caller"`
	// Missing (reports on) unless SetGitHubReports turned them off.
	GitHubReportsOff bool `firestore:"github_reports_off,omitempty"`
}

// triggersDoc uses pointers so a missing field reads as on.
type triggersDoc struct {
	AutoBuild  *bool `firestore:"auto_build"`
	AutoDeploy *bool `firestore:"auto_deploy"`
	AutoSync   *bool `firestore:"auto_sync"`
}

func toTriggersDoc(t Triggers) triggersDoc {
	return triggersDoc{AutoBuild: &t.AutoBuild, AutoDeploy: &t.AutoDeploy, AutoSync: &t.AutoSync}
}

func (d triggersDoc) triggers() Triggers {
	on := func(b *bool) bool { return b == nil || *b }
	return Triggers{AutoBuild: on(d.AutoBuild), AutoDeploy: on(d.AutoDeploy), AutoSync: on(d.AutoSync)}
}

const webhookSecretField = "webhook_secret"

func (s *Store) repoRef(owner, name string) *firestore.DocumentRef {
	return s.client.Collection(RepositoriesCollection).Doc(RepoKey(owner, name))
}

// TrackRepository records a newly tracked repository. A zero Triggers means
// DefaultTriggers. Iterations continue after the newest job recorded for
// the repository, so tracking it again after UntrackRepository does not
// reuse iteration numbers. It returns ErrAlreadyExists if the repository is
// already tracked.
func (s *Store) TrackRepository(ctx context.Context, r Repository) error {
	if err := checkRepo(r.Owner, r.Name); err != nil {
		return fmt.Errorf("track repository: %w", err)
	}
	if len(r.WebhookSecret) == 0 {
		return fmt.Errorf("track repository %s/%s: empty webhook secret: %w", r.Owner, r.Name, ErrInvalid)
	}
	ref := s.repoRef(r.Owner, r.Name)
	sealed, err := s.box.Seal(r.WebhookSecret, sealAAD(ref, webhookSecretField))
	if err != nil {
		return fmt.Errorf("track repository %s/%s: %w", r.Owner, r.Name, err)
	}
	last, err := s.lastIteration(ctx, ref.ID)
	if err != nil {
		return fmt.Errorf("track repository %s/%s: %w", r.Owner, r.Name, err)
	}
	if r.Triggers == (Triggers{}) {
		r.Triggers = DefaultTriggers()
	}
	if len(r.Policy.Namespaces) == 0 {
		r.Policy = DefaultPolicy(r.Owner, r.Name)
	}
	if err := r.Policy.Validate(); err != nil {
		return fmt.Errorf("track repository %s/%s: %w", r.Owner, r.Name, err)
	}
	if r.TrackedAt.IsZero() {
		r.TrackedAt = s.now()
	}
	doc := repositoryDoc{
		Owner:            r.Owner,
		Name:             r.Name,
		HookID:           r.HookID,
		WebhookSecret:    sealed,
		TrackedBy:        r.TrackedBy,
		TrackedByCaller:  strings.ToLower(r.TrackedByCaller),
		TrackedAt:        r.TrackedAt,
		Triggers:         toTriggersDoc(r.Triggers),
		NextIteration:    int64(last) + 1,
		Policy:           toPolicyDoc(r.Policy),
		GitHubReportsOff: r.GitHubReportsOff,
	}
	if _, err := ref.Create(ctx, doc); err != nil {
		return fmt.Errorf("track repository %s/%s: %w", r.Owner, r.Name, translate(err))
	}
	return nil
}

// lastIteration returns the highest iteration of the repository's jobs, or
// 0 if it has none.
func (s *Store) lastIteration(ctx context.Context, key string) (int, error) {
	docs, err := s.client.Collection(JobsCollection).
		Where("repo", "==", key).
		OrderBy("iteration", firestore.Desc).
		Limit(1).
		Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("find last iteration: %w", translate(err))
	}
	if len(docs) == 0 {
		return 0, nil
	}
	v, err := docs[0].DataAt("iteration")
	if err != nil {
		return 0, fmt.Errorf("find last iteration: %w", err)
	}
	n, _ := v.(int64)
	return int(n), nil
}

// Repository returns the tracked repository owner/name (any case), or
// ErrNotFound.
func (s *Store) Repository(ctx context.Context, owner, name string) (*Repository, error) {
	if err := checkRepo(owner, name); err != nil {
		return nil, fmt.Errorf("get repository: %w", err)
	}
	snap, err := s.repoRef(owner, name).Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("get repository %s/%s: %w", owner, name, translate(err))
	}
	r, err := s.repositoryFromSnap(snap)
	if err != nil {
		return nil, fmt.Errorf("get repository %s/%s: %w", owner, name, err)
	}
	return r, nil
}

// Repositories returns every tracked repository ordered by key.
func (s *Store) Repositories(ctx context.Context) ([]Repository, error) {
	it := s.client.Collection(RepositoriesCollection).OrderBy(firestore.DocumentID, firestore.Asc).Documents(ctx)
	defer it.Stop()
	var out []Repository
	for {
		snap, err := it.Next()
		if err == iterator.Done {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list repositories: %w", translate(err))
		}
		r, err := s.repositoryFromSnap(snap)
		if err != nil {
			return nil, fmt.Errorf("list repositories: %s: %w", snap.Ref.ID, err)
		}
		out = append(out, *r)
	}
}

func (s *Store) repositoryFromSnap(snap *firestore.DocumentSnapshot) (*Repository, error) {
	var d repositoryDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	plain, err := s.box.Open(d.WebhookSecret, sealAAD(snap.Ref, webhookSecretField))
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	return &Repository{
		Owner:              d.Owner,
		Name:               d.Name,
		HookID:             d.HookID,
		WebhookSecret:      plain,
		TrackedBy:          d.TrackedBy,
		TrackedByCaller:    d.TrackedByCaller,
		TrackedAt:          d.TrackedAt,
		Triggers:           d.Triggers.triggers(),
		NextIteration:      int(d.NextIteration),
		LatestJobID:        d.LatestJobID,
		PendingDeployJobID: d.PendingDeployJobID,
		Policy:             d.Policy.policy(d.Owner, d.Name),
		Deployed:           d.Deployed,
		GitHubReportsOff:   d.GitHubReportsOff,
	}, nil
}

// UntrackRepository deletes the repository's document, so pushes no longer
// create jobs. Jobs, events and state are kept. It returns ErrNotFound if
// the repository is not tracked.
func (s *Store) UntrackRepository(ctx context.Context, owner, name string) error {
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("untrack repository: %w", err)
	}
	if _, err := s.repoRef(owner, name).Delete(ctx, firestore.Exists); err != nil {
		return fmt.Errorf("untrack repository %s/%s: %w", owner, name, translate(err))
	}
	return nil
}

// SetTriggers replaces the repository's triggers, or returns ErrNotFound.
func (s *Store) SetTriggers(ctx context.Context, owner, name string, t Triggers) error {
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("set triggers: %w", err)
	}
	_, err := s.repoRef(owner, name).Update(ctx, []firestore.Update{{Path: "triggers", Value: toTriggersDoc(t)}})
	if err != nil {
		return fmt.Errorf("set triggers of %s/%s: %w", owner, name, translate(err))
	}
	return nil
}

// SetGitHubReports turns the runner's commit statuses and Deployments on
// GitHub on or off for the repository, or returns ErrNotFound.
func (s *Store) SetGitHubReports(ctx context.Context, owner, name string, on bool) error {
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("set GitHub reports: %w", err)
	}
	_, err := s.repoRef(owner, name).Update(ctx, []firestore.Update{{Path: "github_reports_off", Value: !on}})
	if err != nil {
		return fmt.Errorf("set GitHub reports of %s/%s: %w", owner, name, translate(err))
	}
	return nil
}

// SetPolicy replaces the repository's deploy policy after validating it,
// or returns ErrNotFound.
func (s *Store) SetPolicy(ctx context.Context, owner, name string, p Policy) error {
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("set policy of %s/%s: %w", owner, name, err)
	}
	_, err := s.repoRef(owner, name).Update(ctx, []firestore.Update{{Path: "policy", Value: toPolicyDoc(p)}})
	if err != nil {
		return fmt.Errorf("set policy of %s/%s: %w", owner, name, translate(err))
	}
	return nil
}

// RecordDeployed records that a job successfully deployed (or, without a
// chart, built) units of owner/name at commit sha, one field per unit, so
// later pushes compare each unit's paths with what it actually runs. A
// repository no longer tracked is not an error.
func (s *Store) RecordDeployed(ctx context.Context, owner, name string, units []string, sha string) error {
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("record deployed: %w", err)
	}
	if len(units) == 0 {
		return nil
	}
	var updates []firestore.Update
	for _, u := range units {
		if u == "" || strings.ContainsAny(u, ".`") {
			return fmt.Errorf("record deployed %s/%s: unit %q: %w", owner, name, u, ErrInvalid)
		}
		updates = append(updates, firestore.Update{FieldPath: firestore.FieldPath{"deployed", u}, Value: sha})
	}
	_, err := s.repoRef(owner, name).Update(ctx, updates)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("record deployed %s/%s: %w", owner, name, translate(err))
	}
	return nil
}
