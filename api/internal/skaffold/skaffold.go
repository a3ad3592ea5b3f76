// Package skaffold serves the Skaffold API — proto.SkaffoldService (v1) and
// proto.v2.SkaffoldV2Service (v2) — over the events and state that runners
// record in Firestore, mapping kube-git-deploy's many repositories onto
// Skaffold's single dev loop:
//
//   - Scope: every call covers all tracked repositories, or one when the
//     client sends the gRPC metadata "x-kgd-repository: owner/name" (over
//     HTTP: the query parameter ?repository=owner/name or the header
//     X-Kgd-Repository).
//   - Events replays every stored event in scope, oldest first, then
//     streams new ones; it never ends by itself.
//   - GetState is the state of the latest job in scope, with the autoTrigger
//     flags of its repository's control settings.
//   - AutoBuild/AutoDeploy/AutoSync persist the repository's triggers;
//     Execute runs the pending push (build) or the pending deploy.
//   - Handle (off unless Options.HandleEnabled) appends a client's event to
//     the scoped repository's history, marked as injected.
//
// Access: every call identifies its caller (caller.Identify, from the
// authorization metadata). Anyone who gets through (in IAM mode, Cloud Run
// IAM's api_invokers) may read; steering (Execute, Auto*, Handle) needs an
// operator of every repository in scope: a global operator
// (Options.Operators) or one of the repository's Policy.Operators. A
// refused call changes nothing. In local mode every caller is caller.Local,
// an operator of everything.
package skaffold

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/feed"
	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// ScopeKey is the gRPC metadata key (and HTTP header) that scopes a call
// to one repository, "owner/name".
const ScopeKey = "x-kgd-repository"

// ScopeQuery is the HTTP query parameter that scopes a call.
const ScopeQuery = "repository"

// JobsHeader is the response metadata key in which Execute and Auto*
// name the jobs they started, "owner/name=job-id" each.
const JobsHeader = "x-kgd-jobs"

// streamHeader is the header metadata a stream sends once it is open,
// before its first message; the gateway then answers 200 at once.
const streamHeader = "x-kgd-stream"

// MaxHandledEventBytes bounds an event accepted by Handle.
const MaxHandledEventBytes = 64 << 10

// The metadata keys of the caller's Google identity token. Cloud Run IAM
// checks X-Serverless-Authorization when a request has one (and then
// passes Authorization on unchecked), else Authorization; the gateway
// forwards both headers under these keys.
const (
	AuthorizationKey           = "authorization"
	ServerlessAuthorizationKey = "x-serverless-authorization"
)

// HandledPrefix starts the mark of an event injected through Handle: the
// v1 LogEntry.entry of the event, and the message of the v2
// SkaffoldLogEvent that precedes it, read
// "[handle by <caller>] event injected through Handle, not emitted by a runner".
const HandledPrefix = "[handle by "

// Sync is not a kube-git-deploy phase: every job builds and deploys a whole
// commit. GetState reports it with these file-sync statuses.
const (
	SyncNotApplicable   = "Not Applicable"
	SyncNotApplicableV2 = "NotApplicable"
)

// Store is what the service reads and writes.
type Store interface {
	State(ctx context.Context, owner, name string) (*store.RepoState, error)
	LatestState(ctx context.Context) (owner, name string, st *store.RepoState, err error)
	Repository(ctx context.Context, owner, name string) (*store.Repository, error)
	Repositories(ctx context.Context) ([]store.Repository, error)
	SetTrigger(ctx context.Context, owner, name string, t store.Trigger, enabled bool) (bool, error)
	ReleasePendingJob(ctx context.Context, owner, name string, forceDeploy bool) (*store.Job, error)
	CreateDeployJob(ctx context.Context, owner, name string, now time.Time) (*store.Job, error)
	Jobs(ctx context.Context, owner, name string, limit int) ([]store.Job, error)
	MarkJobPublished(ctx context.Context, id, messageID string, at time.Time) error
	AppendEvents(ctx context.Context, b store.EventBatch) error
	UpdateState(ctx context.Context, owner, name string, fn func(*store.RepoState) error) error
}

// Publisher publishes job messages for the runners.
type Publisher interface {
	Publish(ctx context.Context, m job.Message) (string, error)
}

// Feed serves event streams (feed.Feed).
type Feed interface {
	Subscribe(scope string) (*feed.Subscription, error)
}

// Options configure a Service.
type Options struct {
	// Auth is how callers are identified: caller.ModeLocal (the API
	// listens on loopback only; every caller is caller.Local, an operator
	// of everything) or caller.ModeIAM (behind Cloud Run IAM; the caller
	// is the verified identity token's email). Required.
	Auth caller.Mode
	// Operators (KGD_OPERATORS) may steer every repository; each
	// repository's Policy.Operators may steer that one.
	Operators []string
	// HandleEnabled turns Handle on (KGD_HANDLE_ENABLED); off, Handle is
	// FailedPrecondition.
	HandleEnabled bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service holds what both API versions share. Register it with Register.
type Service struct {
	store     Store
	pub       Publisher
	feed      Feed
	log       *slog.Logger
	now       func() time.Time
	auth      caller.Mode
	operators []string
	handleOn  bool

	// stopping ends every stream when the server shuts down.
	stopping    context.Context
	stopStreams context.CancelFunc
}

// New returns a Service.
func New(st Store, pub Publisher, f Feed, log *slog.Logger, opts Options) (*Service, error) {
	if st == nil || pub == nil || f == nil || log == nil {
		return nil, errors.New("skaffold: store, publisher, feed and logger are required")
	}
	if opts.Auth != caller.ModeLocal && opts.Auth != caller.ModeIAM {
		return nil, fmt.Errorf("skaffold: auth mode %q is not %s or %s", opts.Auth, caller.ModeLocal, caller.ModeIAM)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	var ops []string
	for _, o := range opts.Operators {
		if o = strings.ToLower(strings.TrimSpace(o)); o != "" {
			ops = append(ops, o)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{store: st, pub: pub, feed: f, log: log, now: now, auth: opts.Auth, operators: ops, handleOn: opts.HandleEnabled,
		stopping: ctx, stopStreams: cancel}, nil
}

// Register registers both API versions on s.
func (svc *Service) Register(s grpc.ServiceRegistrar) {
	v1pb.RegisterSkaffoldServiceServer(s, &v1Server{svc: svc})
	v2pb.RegisterSkaffoldV2ServiceServer(s, &v2Server{svc: svc})
}

// StopStreams ends every open Events stream with codes.Unavailable, so a
// graceful server stop does not wait for streams that never end.
func (svc *Service) StopStreams() { svc.stopStreams() }

// scope is the set of repositories a call covers.
type scope struct {
	owner, name string // empty for all repositories
}

func (s scope) all() bool { return s.owner == "" }

// key is the feed's scope key: "" or "owner/name" in lower case.
func (s scope) key() string {
	if s.all() {
		return ""
	}
	return strings.ToLower(s.owner + "/" + s.name)
}

func (s scope) String() string {
	if s.all() {
		return "all repositories"
	}
	return s.owner + "/" + s.name
}

var (
	ownerRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// ParseScope parses "owner/name" ("" is all repositories).
func ParseScope(v string) (owner, name string, err error) {
	if v == "" {
		return "", "", nil
	}
	owner, name, ok := strings.Cut(v, "/")
	if !ok || !ownerRE.MatchString(owner) || !nameRE.MatchString(name) || name == "." || name == ".." {
		return "", "", fmt.Errorf("repository scope %q is not owner/name", truncate(v, 200))
	}
	return owner, name, nil
}

func scopeOf(ctx context.Context) (scope, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var v string
	for _, s := range md.Get(ScopeKey) {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if v != "" && !strings.EqualFold(v, s) {
			return scope{}, status.Errorf(codes.InvalidArgument, "conflicting %s values %q and %q", ScopeKey, truncate(v, 200), truncate(s, 200))
		}
		v = s
	}
	owner, name, err := ParseScope(v)
	if err != nil {
		return scope{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return scope{owner: owner, name: name}, nil
}

// identify returns the caller of ctx's call: caller.Local in local mode;
// in IAM mode the email of the identity token that Cloud Run IAM
// verified — x-serverless-authorization when present, else authorization
// — or Unauthenticated. A key sent more than once is refused: which value
// IAM checked would be ambiguous.
func (svc *Service) identify(ctx context.Context) (caller.Identity, error) {
	if svc.auth == caller.ModeLocal {
		return caller.Local, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(ServerlessAuthorizationKey)
	if len(vals) == 0 {
		vals = md.Get(AuthorizationKey)
	}
	if len(vals) > 1 {
		return caller.Identity{}, status.Error(codes.Unauthenticated, "more than one identity token: send one Authorization header")
	}
	var token string
	if len(vals) == 1 {
		token = vals[0]
	}
	id, err := caller.Identify(svc.auth, token, svc.now())
	if err != nil {
		return caller.Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

// globalOperator reports whether id may steer every repository.
func (svc *Service) globalOperator(id caller.Identity) bool {
	return id.Local || (id.Email != "" && slices.Contains(svc.operators, strings.ToLower(id.Email)))
}

// steerable returns the tracked repositories in scope once id may steer
// every one of them; otherwise PermissionDenied naming one it may not
// (call names the call). Callers change nothing before it returns.
func (svc *Service) steerable(ctx context.Context, id caller.Identity, sc scope, call string) ([]store.Repository, error) {
	repos, err := svc.repos(ctx, sc)
	if err != nil {
		return nil, err
	}
	if svc.globalOperator(id) {
		return repos, nil
	}
	for _, r := range repos {
		if !r.Policy.IsOperator(id.Email) {
			repo := r.Owner + "/" + r.Name
			svc.log.InfoContext(ctx, "steering refused", logging.KeyRepo, repo, "caller", id.Email, "call", call, "scope", sc.String())
			return nil, status.Errorf(codes.PermissionDenied, "%s of %s: %s may not steer %s (only the API's operators, KGD_OPERATORS, and the operators of its deploy policy may)",
				call, sc, id, repo)
		}
	}
	return repos, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// grpcError translates a store or feed error at the API boundary.
func grpcError(err error, what string) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.Canceled) {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, store.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, store.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, store.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, store.ErrTooLarge):
		code = codes.InvalidArgument
	case errors.Is(err, feed.ErrTooSlow):
		code = codes.ResourceExhausted
	case errors.Is(err, feed.ErrClosed):
		code = codes.Unavailable
	}
	return status.Errorf(code, "%s: %v", what, err)
}

// stream sends the scope's batches with send until the client goes away,
// the feed fails or the server stops.
func (svc *Service) stream(ctx context.Context, send func(store.EventBatch) error) error {
	if _, err := svc.identify(ctx); err != nil {
		return err
	}
	sc, err := scopeOf(ctx)
	if err != nil {
		return err
	}
	sub, err := svc.feed.Subscribe(sc.key())
	if err != nil {
		return grpcError(err, "events")
	}
	defer sub.Close()
	// Answer at once, so that HTTP clients see the 200 and the headers
	// before the first event (there may be none for a while).
	if err := grpc.SendHeader(ctx, metadata.Pairs(streamHeader, "open")); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(svc.stopping, cancel)
	defer stop()
	for {
		b, err := sub.Next(ctx)
		if err != nil {
			if svc.stopping.Err() != nil {
				return status.Error(codes.Unavailable, "events: the server is shutting down; reconnect to replay")
			}
			return grpcError(err, "events of "+sc.String())
		}
		if err := send(b); err != nil {
			return err
		}
	}
}

// sendEach streams, with send, the events that pick takes from each batch
// of the call's scope (see stream).
func sendEach[E any](svc *Service, ctx context.Context, pick func(store.EventBatch) []E, send func(E) error) error {
	return svc.stream(ctx, func(b store.EventBatch) error {
		for _, e := range pick(b) {
			if err := send(e); err != nil {
				return err
			}
		}
		return nil
	})
}

func v1Events(b store.EventBatch) []*v1pb.LogEntry { return b.V1 }
func v2Events(b store.EventBatch) []*v2pb.Event    { return b.V2 }

// stateOf returns the stored state of the latest job in scope (nil if
// none) and the triggers of its repository.
func (svc *Service) stateOf(ctx context.Context) (*store.RepoState, store.Triggers, error) {
	if _, err := svc.identify(ctx); err != nil {
		return nil, store.Triggers{}, err
	}
	sc, err := scopeOf(ctx)
	if err != nil {
		return nil, store.Triggers{}, err
	}
	owner, name := sc.owner, sc.name
	var st *store.RepoState
	if sc.all() {
		owner, name, st, err = svc.store.LatestState(ctx)
	} else {
		st, err = svc.store.State(ctx, owner, name)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, store.Triggers{}, grpcError(err, "get state")
	}
	trig := store.DefaultTriggers()
	if owner == "" {
		return st, trig, nil
	}
	repo, err := svc.store.Repository(ctx, owner, name)
	switch {
	case err == nil:
		trig = repo.Triggers
	case !errors.Is(err, store.ErrNotFound):
		return nil, store.Triggers{}, grpcError(err, "get state")
	case st == nil:
		return nil, store.Triggers{}, status.Errorf(codes.NotFound, "get state: %s is not tracked and has no recorded state", sc)
	}
	return st, trig, nil
}

func eventTriggers(t store.Triggers) event.Triggers {
	return event.Triggers{Build: t.AutoBuild, Deploy: t.AutoDeploy, Sync: t.AutoSync}
}

// repos returns the tracked repositories in scope.
func (svc *Service) repos(ctx context.Context, sc scope) ([]store.Repository, error) {
	if !sc.all() {
		r, err := svc.store.Repository(ctx, sc.owner, sc.name)
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "%s is not tracked", sc)
		}
		if err != nil {
			return nil, grpcError(err, "read repository")
		}
		return []store.Repository{*r}, nil
	}
	rs, err := svc.store.Repositories(ctx)
	if err != nil {
		return nil, grpcError(err, "list repositories")
	}
	if len(rs) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "no repository is tracked")
	}
	return rs, nil
}

// auto implements AutoBuild/AutoDeploy/AutoSync with Skaffold's rules: a
// missing value is an error, an unchanged one is AlreadyExists. Switching
// build or deploy on runs what waited for it, as Skaffold wakes its loop.
func (svc *Service) auto(ctx context.Context, t store.Trigger, enabled *bool) error {
	id, err := svc.identify(ctx)
	if err != nil {
		return err
	}
	if enabled == nil {
		return status.Error(codes.InvalidArgument, "missing required boolean parameter 'enabled'")
	}
	sc, err := scopeOf(ctx)
	if err != nil {
		return err
	}
	repos, err := svc.steerable(ctx, id, sc, "auto "+string(t))
	if err != nil {
		return err
	}
	var changed []store.Repository
	for _, r := range repos {
		ok, err := svc.store.SetTrigger(ctx, r.Owner, r.Name, t, *enabled)
		if err != nil {
			return grpcError(err, "auto "+string(t))
		}
		if ok {
			changed = append(changed, r)
		}
	}
	if len(changed) == 0 {
		return status.Errorf(codes.AlreadyExists, "auto %s is already set to %t", t, *enabled)
	}
	for _, r := range changed {
		svc.log.InfoContext(ctx, "auto trigger changed", logging.KeyRepo, r.Owner+"/"+r.Name, "trigger", string(t), "enabled", *enabled, "caller", id.Email)
	}
	if !*enabled || t == store.TriggerSync {
		return nil
	}
	var started []string
	for _, r := range changed {
		var ids []string
		if t == store.TriggerBuild {
			ids, err = svc.runPending(ctx, id, r, true, false)
		} else {
			ids, err = svc.runPending(ctx, id, r, false, true)
		}
		started = append(started, ids...)
		if err != nil {
			announce(ctx, started)
			return err
		}
	}
	announce(ctx, started)
	return nil
}

// execute implements Execute: build runs the pending push, deploy the
// pending deploy (or the released push's deploy); sync is accepted and
// has nothing to do.
func (svc *Service) execute(ctx context.Context, build, deploy bool) error {
	id, err := svc.identify(ctx)
	if err != nil {
		return err
	}
	sc, err := scopeOf(ctx)
	if err != nil {
		return err
	}
	if !build && !deploy {
		// Sync, or nothing: accepted and without effect, for operators.
		if svc.globalOperator(id) {
			return nil
		}
		_, err := svc.steerable(ctx, id, sc, "execute")
		return err
	}
	repos, err := svc.steerable(ctx, id, sc, "execute")
	if err != nil {
		return err
	}
	var started []string
	for _, r := range repos {
		ids, err := svc.runPending(ctx, id, r, build, deploy)
		started = append(started, ids...)
		if err != nil {
			announce(ctx, started)
			return err
		}
	}
	announce(ctx, started)
	return nil
}

// announce names the started jobs in the response metadata.
func announce(ctx context.Context, ids []string) {
	if len(ids) > 0 {
		_ = grpc.SetHeader(ctx, metadata.Pairs(JobsHeader, strings.Join(ids, ",")))
	}
}

// runPending queues repository r's pending push (build) and/or pending
// deploy, and publishes them. It returns "owner/name=job" for each job
// started. Jobs recorded earlier but never published (a publish that
// failed) are published again, so retrying a failed call recovers them.
func (svc *Service) runPending(ctx context.Context, id caller.Identity, r store.Repository, build, deploy bool) ([]string, error) {
	repo := r.Owner + "/" + r.Name
	var started []string
	released := false
	if build {
		j, err := svc.store.ReleasePendingJob(ctx, r.Owner, r.Name, deploy)
		switch {
		case err == nil:
			released = true
			svc.log.InfoContext(ctx, "pending push released", logging.KeyRepo, repo, logging.KeyJobID, j.ID, "caller", id.Email)
		case !errors.Is(err, store.ErrNotFound):
			return started, grpcError(err, "execute build of "+repo)
		}
	}
	if deploy && !released {
		j, err := svc.store.CreateDeployJob(ctx, r.Owner, r.Name, svc.now())
		switch {
		case err == nil:
			svc.log.InfoContext(ctx, "pending deploy queued", logging.KeyRepo, repo, logging.KeyJobID, j.ID, "caller", id.Email)
		case !errors.Is(err, store.ErrNotFound):
			return started, grpcError(err, "execute deploy of "+repo)
		}
	}
	jobs, err := svc.store.Jobs(ctx, r.Owner, r.Name, 20)
	if err != nil {
		return started, grpcError(err, "execute: list jobs of "+repo)
	}
	for _, j := range jobs {
		if j.Status != store.StatusQueued || !j.PublishedAt.IsZero() {
			continue
		}
		if err := svc.publish(ctx, j); err != nil {
			return started, status.Errorf(codes.Unavailable, "execute: job %s of %s is recorded but could not be queued (%v); retry", j.ID, repo, err)
		}
		started = append(started, repo+"="+j.ID)
	}
	return started, nil
}

func (svc *Service) publish(ctx context.Context, j store.Job) error {
	trigger := job.Trigger(j.Trigger)
	if trigger == "" {
		trigger = job.TriggerExecute
	}
	m := job.Message{
		Version: job.Version, JobID: j.ID, Repository: j.Owner + "/" + j.Name, Ref: j.Ref, SHA: j.SHA,
		Before: j.Before, DeliveryID: j.DeliveryID, Trigger: trigger, PublishedAt: svc.now(),
	}
	id, err := svc.pub.Publish(ctx, m)
	if err != nil {
		return err
	}
	return svc.store.MarkJobPublished(ctx, j.ID, id, svc.now())
}

// handle appends one client event to the scoped repository's history;
// wrap makes the batch of it, stamped ts and marked as injected by id.
func (svc *Service) handle(ctx context.Context, e proto.Message, set bool, wrap func(ts *timestamppb.Timestamp, id caller.Identity) store.EventBatch) error {
	id, err := svc.identify(ctx)
	if err != nil {
		return err
	}
	if !svc.handleOn {
		return status.Error(codes.FailedPrecondition, "Handle is disabled on this server (KGD_HANDLE_ENABLED=true turns it on)")
	}
	if !set {
		return status.Error(codes.InvalidArgument, "handle: the event has no event type set")
	}
	if n := proto.Size(e); n > MaxHandledEventBytes {
		return status.Errorf(codes.InvalidArgument, "handle: the event is %d bytes; the limit is %d", n, MaxHandledEventBytes)
	}
	sc, err := scopeOf(ctx)
	if err != nil {
		return err
	}
	if sc.all() {
		return status.Errorf(codes.InvalidArgument, "handle: an event belongs to one repository: set %s (HTTP: ?%s=owner/name)", ScopeKey, ScopeQuery)
	}
	repos, err := svc.steerable(ctx, id, sc, "handle")
	if err != nil {
		return err
	}
	r := repos[0]
	b := wrap(timestamppb.New(svc.now()), id)
	b.Job = store.JobRef{ID: "handled-" + randomID(), Owner: r.Owner, Name: r.Name, Iteration: max(r.NextIteration-1, 0)}
	if err := svc.store.AppendEvents(ctx, b); err != nil {
		return grpcError(err, "handle")
	}
	svc.log.InfoContext(ctx, "event handled", logging.KeyRepo, r.Owner+"/"+r.Name, "caller", id.Email, logging.KeyJobID, b.Job.ID)
	// As in Skaffold, the event also updates the state.
	err = svc.store.UpdateState(ctx, r.Owner, r.Name, func(st *store.RepoState) error {
		for _, e := range b.V1 {
			event.ApplyV1(st.V1, e)
		}
		for _, e := range b.V2 {
			event.ApplyV2(st.V2, e)
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) { // no job yet: no state to update
		return grpcError(err, "handle: update the state")
	}
	return nil
}

// handledMark is the text that marks an event id injected through Handle.
func handledMark(id caller.Identity) string {
	return HandledPrefix + id.Email + "] event injected through Handle, not emitted by a runner"
}

// v2HandledMark is the v2 SkaffoldLogEvent that precedes an event id
// injected through Handle, in the event's task: v2 events have no field
// of their own for it.
func v2HandledMark(e *v2pb.Event, id caller.Identity) *v2pb.Event {
	return &v2pb.Event{Timestamp: e.GetTimestamp(), EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{
		TaskId: v2TaskOf(e), SubtaskId: event.SubtaskNone, Level: enumspb.LogLevel_WARN, Message: handledMark(id)}}}
}

// v2TaskOf returns the task an event belongs to: a TaskEvent's id, or the
// task_id of an event that has one; "" otherwise.
func v2TaskOf(e *v2pb.Event) string {
	if t := e.GetTaskEvent(); t != nil {
		return t.GetId()
	}
	m := e.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("event_type"))
	if fd == nil || fd.Message() == nil {
		return ""
	}
	sub := m.Get(fd).Message()
	if f := sub.Descriptor().Fields().ByName("task_id"); f != nil && f.Kind() == protoreflect.StringKind {
		return sub.Get(f).String()
	}
	return ""
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// v1Server is proto.SkaffoldService.
type v1Server struct {
	v1pb.UnimplementedSkaffoldServiceServer
	svc *Service
}

func (s *v1Server) GetState(ctx context.Context, _ *emptypb.Empty) (*v1pb.State, error) {
	st, trig, err := s.svc.stateOf(ctx)
	if err != nil {
		return nil, err
	}
	var out *v1pb.State
	if st != nil && st.V1 != nil && st.V1.BuildState != nil {
		out = proto.Clone(st.V1).(*v1pb.State)
	} else {
		out = event.NewFactory(event.Job{}, event.Plan{}, s.svc.now).NewV1State(eventTriggers(trig))
	}
	// Only the flags: Skaffold's reset on enabling belongs to the switch,
	// not to reading the state.
	event.ShowTriggersV1(out, eventTriggers(trig))
	out.FileSyncState.Status = SyncNotApplicable
	return out, nil
}

func (s *v1Server) Events(_ *emptypb.Empty, stream grpc.ServerStreamingServer[v1pb.LogEntry]) error {
	return sendEach(s.svc, stream.Context(), v1Events, stream.Send)
}

// EventLog is the deprecated Events: the client's stream is ignored.
func (s *v1Server) EventLog(stream grpc.BidiStreamingServer[v1pb.LogEntry, v1pb.LogEntry]) error {
	return sendEach(s.svc, stream.Context(), v1Events, stream.Send)
}

func (s *v1Server) Execute(ctx context.Context, req *v1pb.UserIntentRequest) (*emptypb.Empty, error) {
	in := req.GetIntent()
	devloop := in.GetDevloop()
	return &emptypb.Empty{}, s.svc.execute(ctx, in.GetBuild() || devloop, in.GetDeploy() || devloop)
}

func v1Enabled(req *v1pb.TriggerRequest) *bool {
	if v, ok := req.GetState().GetVal().(*v1pb.TriggerState_Enabled); ok {
		return &v.Enabled
	}
	return nil
}

func (s *v1Server) AutoBuild(ctx context.Context, req *v1pb.TriggerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.auto(ctx, store.TriggerBuild, v1Enabled(req))
}

func (s *v1Server) AutoSync(ctx context.Context, req *v1pb.TriggerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.auto(ctx, store.TriggerSync, v1Enabled(req))
}

func (s *v1Server) AutoDeploy(ctx context.Context, req *v1pb.TriggerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.auto(ctx, store.TriggerDeploy, v1Enabled(req))
}

func (s *v1Server) Handle(ctx context.Context, e *v1pb.Event) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.handle(ctx, e, e.GetEventType() != nil, func(ts *timestamppb.Timestamp, id caller.Identity) store.EventBatch {
		return store.EventBatch{V1: []*v1pb.LogEntry{{Timestamp: ts, Event: e, Entry: handledMark(id)}}}
	})
}

// v2Server is proto.v2.SkaffoldV2Service.
type v2Server struct {
	v2pb.UnimplementedSkaffoldV2ServiceServer
	svc *Service
}

func (s *v2Server) GetState(ctx context.Context, _ *emptypb.Empty) (*v2pb.State, error) {
	st, trig, err := s.svc.stateOf(ctx)
	if err != nil {
		return nil, err
	}
	var out *v2pb.State
	if st != nil && st.V2 != nil && st.V2.BuildState != nil {
		out = proto.Clone(st.V2).(*v2pb.State)
	} else {
		out = event.NewFactory(event.Job{}, event.Plan{}, s.svc.now).NewV2State(eventTriggers(trig))
	}
	event.ShowTriggersV2(out, eventTriggers(trig))
	out.FileSyncState.Status = SyncNotApplicableV2
	return out, nil
}

func (s *v2Server) Events(_ *emptypb.Empty, stream grpc.ServerStreamingServer[v2pb.Event]) error {
	return sendEach(s.svc, stream.Context(), v2Events, stream.Send)
}

// ApplicationLogs streams nothing: container logs are not collected. The
// stream stays open, as Skaffold's does between iterations.
func (s *v2Server) ApplicationLogs(_ *emptypb.Empty, stream grpc.ServerStreamingServer[v2pb.Event]) error {
	if _, err := s.svc.identify(stream.Context()); err != nil {
		return err
	}
	if _, err := scopeOf(stream.Context()); err != nil {
		return err
	}
	if err := stream.SendHeader(metadata.Pairs(streamHeader, "open")); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
		return status.FromContextError(stream.Context().Err()).Err()
	case <-s.svc.stopping.Done():
		return status.Error(codes.Unavailable, "application logs: the server is shutting down")
	}
}

func (s *v2Server) Execute(ctx context.Context, req *v2pb.UserIntentRequest) (*emptypb.Empty, error) {
	in := req.GetIntent()
	devloop := in.GetDevloop()
	return &emptypb.Empty{}, s.svc.execute(ctx, in.GetBuild() || devloop, in.GetDeploy() || devloop)
}

func v2Enabled(req *v2pb.TriggerRequest) *bool {
	if v, ok := req.GetState().GetVal().(*v2pb.TriggerState_Enabled); ok {
		return &v.Enabled
	}
	return nil
}

func (s *v2Server) AutoBuild(ctx context.Context, req *v2pb.TriggerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.auto(ctx, store.TriggerBuild, v2Enabled(req))
}

func (s *v2Server) AutoSync(ctx context.Context, req *v2pb.TriggerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.auto(ctx, store.TriggerSync, v2Enabled(req))
}

func (s *v2Server) AutoDeploy(ctx context.Context, req *v2pb.TriggerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.auto(ctx, store.TriggerDeploy, v2Enabled(req))
}

func (s *v2Server) Handle(ctx context.Context, e *v2pb.Event) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, s.svc.handle(ctx, e, e.GetEventType() != nil, func(ts *timestamppb.Timestamp, id caller.Identity) store.EventBatch {
		if e.Timestamp == nil {
			e.Timestamp = ts
		}
		return store.EventBatch{V2: []*v2pb.Event{v2HandledMark(e, id), e}}
	})
}
