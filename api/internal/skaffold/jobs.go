package skaffold

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// jobsServer serves the job history API (kgd.jobs.v1.Jobs): reading
// needs an identified caller, starting a job an operator of the
// repository, as for the Skaffold API.
type jobsServer struct {
	jobspb.UnimplementedJobsServer
	svc *Service
}

// DefaultJobsPage is the page size of ListJobs when the request names none.
const DefaultJobsPage = 20

// tracked identifies the caller and returns the tracked repository
// owner/name (NotFound when it is not tracked).
func (s *jobsServer) tracked(ctx context.Context, owner, name string) (caller.Identity, scope, *store.Repository, error) {
	id, err := s.svc.identify(ctx)
	if err != nil {
		return caller.Identity{}, scope{}, nil, err
	}
	o, n, err := ParseScope(owner + "/" + name)
	if err != nil {
		return caller.Identity{}, scope{}, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	sc := scope{owner: o, name: n}
	repos, err := s.svc.repos(ctx, sc)
	if err != nil {
		return caller.Identity{}, scope{}, nil, err
	}
	return id, sc, &repos[0], nil
}

// jobOf returns job id of the repository in sc: NotFound for an unknown
// job or one of another repository (which is not told apart).
func (s *jobsServer) jobOf(ctx context.Context, sc scope, id string) (*store.Job, error) {
	j, err := s.svc.store.Job(ctx, id)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) || (err == nil && j.RepoKey != store.RepoKey(sc.owner, sc.name)) {
		return nil, status.Errorf(codes.NotFound, "%s has no job %q", sc, truncate(id, 130))
	}
	if err != nil {
		return nil, grpcError(err, "read job "+id)
	}
	return j, nil
}

// ListRepositories implements jobspb.JobsServer.
func (s *jobsServer) ListRepositories(ctx context.Context, _ *jobspb.ListRepositoriesRequest) (*jobspb.ListRepositoriesResponse, error) {
	id, err := s.svc.identify(ctx)
	if err != nil {
		return nil, err
	}
	repos, err := s.svc.store.Repositories(ctx)
	if err != nil {
		return nil, grpcError(err, "list repositories")
	}
	out := make([]*jobspb.Repository, len(repos))
	errs := make([]error, len(repos))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8) // reads at once
	for i, r := range repos {
		out[i] = &jobspb.Repository{
			Repository: r.Owner + "/" + r.Name, TrackedBy: r.TrackedBy, TrackedAt: timestamp(r.TrackedAt),
			AutoBuild: r.Triggers.AutoBuild, AutoDeploy: r.Triggers.AutoDeploy,
			CanOperate: s.svc.globalOperator(id) || r.Policy.IsOperator(id.Email),
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			latest, err := s.svc.store.Jobs(ctx, r.Owner, r.Name, 1)
			if err != nil {
				errs[i] = grpcError(err, "list jobs of "+r.Owner+"/"+r.Name)
				return
			}
			if len(latest) > 0 {
				out[i].LatestJob = jobProto(&latest[0])
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b *jobspb.Repository) int {
		return cmp.Compare(strings.ToLower(a.Repository), strings.ToLower(b.Repository))
	})
	return &jobspb.ListRepositoriesResponse{Repositories: out}, nil
}

// ListJobs implements jobspb.JobsServer.
func (s *jobsServer) ListJobs(ctx context.Context, req *jobspb.ListJobsRequest) (*jobspb.ListJobsResponse, error) {
	_, sc, _, err := s.tracked(ctx, req.GetOwner(), req.GetName())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultJobsPage
	case size < 0 || size > store.MaxJobsPage:
		return nil, status.Errorf(codes.InvalidArgument, "page_size %d is not 1–%d", size, store.MaxJobsPage)
	}
	jobs, next, err := s.svc.store.JobsPage(ctx, sc.owner, sc.name, size, req.GetPageToken())
	if errors.Is(err, store.ErrInvalid) {
		return nil, status.Errorf(codes.InvalidArgument, "page_token: %v", err)
	}
	if err != nil {
		return nil, grpcError(err, "list jobs of "+sc.String())
	}
	resp := &jobspb.ListJobsResponse{NextPageToken: next}
	for i := range jobs {
		resp.Jobs = append(resp.Jobs, jobProto(&jobs[i]))
	}
	return resp, nil
}

// GetJob implements jobspb.JobsServer. A job that has not finished shows
// the phases its events recorded so far.
func (s *jobsServer) GetJob(ctx context.Context, req *jobspb.GetJobRequest) (*jobspb.Job, error) {
	_, sc, _, err := s.tracked(ctx, req.GetOwner(), req.GetName())
	if err != nil {
		return nil, err
	}
	j, err := s.jobOf(ctx, sc, req.GetJobId())
	if err != nil {
		return nil, err
	}
	if !j.Status.Finished() && !j.StartedAt.IsZero() {
		batches, err := s.svc.store.JobBatches(ctx, j.ID)
		if err != nil {
			return nil, grpcError(err, "read the events of job "+j.ID)
		}
		var ps event.JobPhases
		for _, b := range batches {
			for _, e := range b.V2 {
				ps.Observe(e)
			}
		}
		j.Phases = store.PhasesOf(ps.List())
	}
	return jobProto(j), nil
}

// RerunJob implements jobspb.JobsServer: a new job for the same commit; a
// rerun of a deploy-only job deploys the same images again.
func (s *jobsServer) RerunJob(ctx context.Context, req *jobspb.RerunJobRequest) (*jobspb.Job, error) {
	id, sc, err := s.steer(ctx, req.GetOwner(), req.GetName(), "rerun")
	if err != nil {
		return nil, err
	}
	src, err := s.jobOf(ctx, sc, req.GetJobId())
	if err != nil {
		return nil, err
	}
	j := store.Job{
		Owner: src.Owner, Name: src.Name, Ref: src.Ref, SHA: src.SHA, Before: src.Before,
		Trigger: store.JobRerun, Actor: actorOf(id), SourceJob: src.ID,
		DeployOf: src.DeployOf, Images: src.Images, Units: src.Units,
		// Rerun what the job did: a job that deployed deploys again,
		// whatever auto-deploy says now.
		ForceDeploy: src.ForceDeploy || store.Requested(src.Trigger) || (src.Status == store.StatusSucceeded && !src.DeployPending),
	}
	if src.DeployOf == "" {
		j.Images, j.Units = nil, nil
	}
	return s.start(ctx, sc, j)
}

// DeployCommit implements jobspb.JobsServer.
func (s *jobsServer) DeployCommit(ctx context.Context, req *jobspb.DeployCommitRequest) (*jobspb.Job, error) {
	id, sc, err := s.steer(ctx, req.GetOwner(), req.GetName(), "deploy")
	if err != nil {
		return nil, err
	}
	branch := strings.TrimPrefix(req.GetBranch(), job.BranchPrefix)
	if branch == "" {
		return nil, status.Error(codes.InvalidArgument, "deploy: name the branch (\"branch\": \"main\")")
	}
	ref := job.BranchPrefix + branch
	// The branch must make a valid job (the commit is checked below).
	m := job.Message{Version: job.Version, JobID: "deploy", Repository: sc.String(), Ref: ref, SHA: strings.Repeat("0", 39) + "1",
		Trigger: job.TriggerExecute, PublishedAt: s.svc.now()}
	if err := m.Validate(); err != nil {
		var fe *job.FieldError
		if errors.As(err, &fe) {
			return nil, status.Errorf(codes.InvalidArgument, "deploy: branch %s", fe.Reason)
		}
		return nil, status.Errorf(codes.InvalidArgument, "deploy: %v", err)
	}
	// Only a commit pushed to the branch: GitHub serves any commit of the
	// repository's network by its SHA, a fork's too.
	sha, err := s.svc.store.FindCommit(ctx, sc.owner, sc.name, ref, req.GetCommit())
	if err != nil {
		return nil, grpcError(err, "deploy")
	}
	return s.start(ctx, sc, store.Job{Owner: sc.owner, Name: sc.name, Ref: ref, SHA: sha,
		Trigger: store.JobDeploy, Actor: actorOf(id), ForceDeploy: true})
}

// Rollback implements jobspb.JobsServer: a deploy-only job for the images
// an earlier successful job deployed.
func (s *jobsServer) Rollback(ctx context.Context, req *jobspb.RollbackRequest) (*jobspb.Job, error) {
	id, sc, err := s.steer(ctx, req.GetOwner(), req.GetName(), "rollback")
	if err != nil {
		return nil, err
	}
	src, err := s.jobOf(ctx, sc, req.GetJobId())
	if err != nil {
		return nil, err
	}
	if src.Status != store.StatusSucceeded || src.DeployPending || len(src.Images) == 0 {
		why := "it " + string(src.Status)
		switch {
		case src.Status == store.StatusSucceeded && src.DeployPending:
			why = "its deploy was left pending (auto-deploy off): use Execute deploy"
		case src.Status == store.StatusSucceeded:
			why = "it recorded no images (a job from before images were recorded, or one without docker units)"
		}
		return nil, status.Errorf(codes.FailedPrecondition, "rollback: job %s did not deploy images to roll back to: %s", src.ID, why)
	}
	images := maps.Clone(src.Images)
	units := slices.Clone(req.GetUnits())
	slices.Sort(units)
	units = slices.Compact(units)
	if len(units) > 0 {
		images = map[string]string{}
		for _, u := range units {
			ref, ok := src.Images[u]
			if !ok {
				return nil, status.Errorf(codes.InvalidArgument, "rollback: job %s deployed no image of unit %q (it deployed: %s)",
					src.ID, truncate(u, 100), strings.Join(slices.Sorted(maps.Keys(src.Images)), ", "))
			}
			images[u] = ref
		}
	}
	return s.start(ctx, sc, store.Job{Owner: src.Owner, Name: src.Name, Ref: src.Ref, SHA: src.SHA, Before: src.Before,
		Trigger: store.JobRollback, Actor: actorOf(id), DeployOf: src.ID, Images: images, Units: units, ForceDeploy: true})
}

// steer identifies the caller and checks that they may start jobs of the
// tracked repository owner/name (call names the call in a refusal).
func (s *jobsServer) steer(ctx context.Context, owner, name, call string) (caller.Identity, scope, error) {
	id, sc, _, err := s.tracked(ctx, owner, name)
	if err != nil {
		return caller.Identity{}, scope{}, err
	}
	if _, err := s.svc.steerable(ctx, id, sc, call); err != nil {
		return caller.Identity{}, scope{}, err
	}
	return id, sc, nil
}

// start records job j and queues it for the runners.
func (s *jobsServer) start(ctx context.Context, sc scope, j store.Job) (*jobspb.Job, error) {
	created, err := s.svc.store.CreateRequestedJob(ctx, j)
	if err != nil {
		return nil, grpcError(err, j.Trigger+" of "+sc.String())
	}
	s.svc.log.InfoContext(ctx, "job requested", logging.KeyRepo, sc.String(), logging.KeyJobID, created.ID,
		"trigger", created.Trigger, "source_job", cmp.Or(created.SourceJob, created.DeployOf), "caller", created.Actor)
	if err := s.svc.publish(ctx, *created); err != nil {
		// Recorded: the runners' sweep of unpublished jobs queues it.
		s.svc.log.WarnContext(ctx, "requested job recorded but not queued; the sweep queues it", logging.KeyJobID, created.ID, logging.KeyErr, err.Error())
	} else {
		created.PublishedAt = s.svc.now()
	}
	announce(ctx, []string{sc.String() + "=" + created.ID})
	return jobProto(created), nil
}

// actorOf names the caller as jobs record who asked for them.
func actorOf(id caller.Identity) string {
	if id.Local {
		return "local"
	}
	return id.Email
}

// jobProto is j as the job API shows it.
func jobProto(j *store.Job) *jobspb.Job {
	m := job.Message{Ref: j.Ref}
	out := &jobspb.Job{
		Id: j.ID, Repository: j.Owner + "/" + j.Name, Iteration: int32(j.Iteration), Status: string(j.Status),
		Commit: j.SHA, Ref: j.Ref, Branch: m.Branch(), Tag: m.Tag(), Trigger: j.Trigger, Actor: j.Actor, Error: j.Error,
		CreatedAt: timestamp(j.CreatedAt), StartedAt: timestamp(j.StartedAt), FinishedAt: timestamp(j.FinishedAt),
		Images: j.Images, SourceJob: cmp.Or(j.SourceJob, j.DeployOf), Units: j.Units, Attempts: int32(j.Attempts),
		DeployPending: j.DeployPending,
	}
	for _, p := range j.Phases {
		out.Phases = append(out.Phases, &jobspb.Phase{Name: p.Name, Status: p.Status, StartedAt: timestamp(p.StartedAt), FinishedAt: timestamp(p.FinishedAt)})
	}
	return out
}

// timestamp is t as a protobuf timestamp, nil for the zero time.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
