// Package skaffold serves the Skaffold API — proto.SkaffoldService (v1) and
// proto.v2.SkaffoldV2Service (v2) — over the events and state that runners
// record in Firestore, mapping kube-git-deploy's many repositories onto
// Skaffold's single dev loop:
//
//   - Scope: every call covers all tracked repositories, or one when the
//     client sends the gRPC metadata "x-kgd-repository: owner/name" (over
//     HTTP: the query parameter ?repository=owner/name or the header
//     X-Kgd-Repository).
//   - Events replays a recent window of the stored events in scope —
//     the repository's last Options.ReplayIterations iterations, or with
//     all repositories the batches committed in the last
//     Options.ReplayWindow — oldest first, then streams new ones; it never
//     ends by itself. With one repository in scope a client resumes after
//     a sequence number instead ("x-kgd-since: N", HTTP ?since=N): exactly
//     the events numbered higher. Every MetaEvent carries its number in
//     metadata.additional["sequence"]; "x-kgd-sequence: true" (HTTP
//     ?sequence=true) sets every event's kgd_sequence field as well.
//     A position beyond the repository's latest number, or one whose next
//     events have expired, is OutOfRange. Streams need a tracked
//     repository (NotFound, also once it is untracked while streaming,
//     checked every Options.TrackCheck), and an instance serves at most
//     Options.MaxStreams at once (ResourceExhausted, HTTP 429).
//   - Order of a stream: one repository's events by sequence number (the
//     order they were recorded in); with all repositories in scope, the
//     stored batches by commit time, ties broken by document id
//     ("<job id>-<chunk>"), each batch's events by sequence number — the
//     order store.WatchEvents guarantees, the same on every instance.
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
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

// SinceKey is the gRPC metadata key (and HTTP header) with which an event
// stream resumes after a sequence number of the scoped repository.
const SinceKey = "x-kgd-since"

// SinceQuery is the HTTP query parameter of SinceKey.
const SinceQuery = "since"

// SequenceKey is the gRPC metadata key (and HTTP header) with which a
// client asks for every event's sequence number ("true"): the
// kgd_sequence field of v1 LogEntry and v2 Event, unset otherwise.
const SequenceKey = "x-kgd-sequence"

// SequenceQuery is the HTTP query parameter of SequenceKey.
const SequenceQuery = "sequence"

// MetaSequenceKey is the key of metadata.additional under which every
// streamed MetaEvent carries its own sequence number, in decimal.
const MetaSequenceKey = "sequence"

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
	IterationStart(ctx context.Context, owner, name string, iteration int) (int64, error)
	LastSequence(ctx context.Context, owner, name string) (int64, error)
	MarkJobPublished(ctx context.Context, id, messageID string, at time.Time) error
	AppendEvents(ctx context.Context, b store.EventBatch) error
	UpdateState(ctx context.Context, owner, name string, fn func(*store.RepoState) error) error
	// For exports.
	Job(ctx context.Context, id string) (*store.Job, error)
	JobBatches(ctx context.Context, jobID string) ([]store.EventBatch, error)
	ReadEvents(ctx context.Context, scope string, from store.From, fn func(store.EventBatch) error) error
	// For the job history API.
	JobsPage(ctx context.Context, owner, name string, limit int, token string) ([]store.Job, string, error)
	CreateRequestedJob(ctx context.Context, j store.Job) (*store.Job, error)
	FindCommit(ctx context.Context, owner, name, ref, prefix string) (string, error)
}

// Publisher publishes job messages for the runners.
type Publisher interface {
	Publish(ctx context.Context, m job.Message) (string, error)
}

// Feed serves event streams (feed.Feed).
type Feed interface {
	Subscribe(scope string, from, window store.From) (*feed.Subscription, error)
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
	// ReplayIterations is how many of a repository's latest iterations a
	// stream scoped to it replays when it does not resume
	// (KGD_STREAM_REPLAY_ITERATIONS); 0 means 5.
	ReplayIterations int
	// ReplayWindow is how far back a stream of all repositories replays
	// (KGD_STREAM_REPLAY_WINDOW); 0 means 1 hour.
	ReplayWindow time.Duration
	// MaxStreams is how many streams (Events, EventLog, ApplicationLogs)
	// the service serves at once (KGD_STREAM_MAX); 0 means 2000.
	MaxStreams int
	// TrackCheck is how often a stream of one repository checks that the
	// repository is still tracked (one read per repository and interval
	// for all its streams); an untracked repository's streams end with
	// NotFound. 0 means 1 minute.
	TrackCheck time.Duration
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

	replayIterations int
	replayWindow     time.Duration
	maxStreams       int
	streams          atomic.Int64 // open streams
	trackCheck       time.Duration

	trackMu sync.Mutex
	tracked map[string]trackedAt // the last tracking check per scope key

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
	if opts.ReplayIterations <= 0 {
		opts.ReplayIterations = 5
	}
	if opts.ReplayWindow <= 0 {
		opts.ReplayWindow = time.Hour
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 2000
	}
	if opts.TrackCheck <= 0 {
		opts.TrackCheck = time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{store: st, pub: pub, feed: f, log: log, now: now, auth: opts.Auth, operators: ops, handleOn: opts.HandleEnabled,
		replayIterations: opts.ReplayIterations, replayWindow: opts.ReplayWindow, maxStreams: opts.MaxStreams,
		trackCheck: opts.TrackCheck, tracked: map[string]trackedAt{},
		stopping: ctx, stopStreams: cancel}, nil
}

// Streams returns the number of streams open now.
func (svc *Service) Streams() int { return int(svc.streams.Load()) }

// admit counts a new stream in, or refuses it with ResourceExhausted
// when MaxStreams are open; done counts it out.
func (svc *Service) admit() (done func(), err error) {
	if n := svc.streams.Add(1); n > int64(svc.maxStreams) {
		svc.streams.Add(-1)
		return nil, status.Errorf(codes.ResourceExhausted, "too many streams: this API instance already serves %d, its limit (KGD_STREAM_MAX); retry later", svc.maxStreams)
	}
	var once sync.Once
	return func() { once.Do(func() { svc.streams.Add(-1) }) }, nil
}

// Register registers both API versions on s.
func (svc *Service) Register(s grpc.ServiceRegistrar) {
	v1pb.RegisterSkaffoldServiceServer(s, &v1Server{svc: svc})
	v2pb.RegisterSkaffoldV2ServiceServer(s, &v2Server{svc: svc})
	jobspb.RegisterJobsServer(s, &jobsServer{svc: svc})
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

// single returns the one value of ctx's metadata key ("" if none): empty
// values are ignored, and different ones are InvalidArgument.
func single(ctx context.Context, key string) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var v string
	for _, s := range md.Get(key) {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if v != "" && !strings.EqualFold(v, s) {
			return "", status.Errorf(codes.InvalidArgument, "conflicting %s values %q and %q", key, truncate(v, 200), truncate(s, 200))
		}
		v = s
	}
	return v, nil
}

func scopeOf(ctx context.Context) (scope, error) {
	v, err := single(ctx, ScopeKey)
	if err != nil {
		return scope{}, err
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

// streamOptions are an event stream's own parameters.
type streamOptions struct {
	since    *int64 // resume after this sequence number
	sequence bool   // set kgd_sequence
}

func streamOptionsOf(ctx context.Context) (streamOptions, error) {
	var o streamOptions
	v, err := single(ctx, SinceKey)
	if err != nil {
		return o, err
	}
	if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return o, status.Errorf(codes.InvalidArgument, "%s %q is not a sequence number (a whole number, 0 or more)", SinceKey, truncate(v, 40))
		}
		o.since = &n
	}
	if v, err = single(ctx, SequenceKey); err != nil {
		return o, err
	}
	if v != "" {
		if o.sequence, err = strconv.ParseBool(v); err != nil {
			return o, status.Errorf(codes.InvalidArgument, "%s %q is not true or false", SequenceKey, truncate(v, 40))
		}
	}
	return o, nil
}

// open checks a stream's caller, scope and parameters and counts it in
// (done counts it out). For a one-repository scope it returns the tracked
// repository.
func (svc *Service) open(ctx context.Context) (sc scope, o streamOptions, repo *store.Repository, done func(), err error) {
	if _, err = svc.identify(ctx); err != nil {
		return
	}
	if sc, err = scopeOf(ctx); err != nil {
		return
	}
	if o, err = streamOptionsOf(ctx); err != nil {
		return
	}
	if o.since != nil && sc.all() {
		err = status.Errorf(codes.InvalidArgument, "since needs a repository scope: set %s (HTTP: ?%s=owner/name); with all repositories in scope a stream replays the last %s",
			ScopeKey, ScopeQuery, svc.replayWindow)
		return
	}
	if done, err = svc.admit(); err != nil {
		return
	}
	if !sc.all() {
		repo, err = svc.store.Repository(ctx, sc.owner, sc.name)
		if errors.Is(err, store.ErrNotFound) {
			err = status.Errorf(codes.NotFound, "%s is not tracked", sc)
		} else if err != nil {
			err = grpcError(err, "read repository")
		}
		if err == nil && o.since != nil {
			err = svc.checkSince(ctx, sc, *o.since)
		}
		if err != nil {
			done()
			return
		}
	}
	return sc, o, repo, done, nil
}

// checkSince refuses a resume position beyond the repository's latest
// sequence number: the client holds a number this repository never gave
// out (another repository's, or a mistake), and waiting for it to come
// would silently skip every event up to it.
func (svc *Service) checkSince(ctx context.Context, sc scope, since int64) error {
	last, err := svc.store.LastSequence(ctx, sc.owner, sc.name)
	if err != nil {
		return grpcError(err, "read the latest sequence number")
	}
	if since > last {
		return status.Errorf(codes.OutOfRange, "since %d is beyond the latest sequence number of %s, %d: resume after a number this repository's stream gave, or omit since to replay the recent window", since, sc, last)
	}
	return nil
}

// trackedAt is the outcome of a tracking check and when it was made.
type trackedAt struct {
	at      time.Time
	tracked bool
}

// stillTracked reports whether sc's repository is tracked, reading the
// store at most about once per TrackCheck/2 per repository, whatever the
// number of its streams.
func (svc *Service) stillTracked(ctx context.Context, sc scope) (bool, error) {
	key := sc.key()
	now := svc.now()
	svc.trackMu.Lock()
	c, ok := svc.tracked[key]
	svc.trackMu.Unlock()
	if ok && now.Sub(c.at) < svc.trackCheck/2 {
		return c.tracked, nil
	}
	_, err := svc.store.Repository(ctx, sc.owner, sc.name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	c = trackedAt{at: now, tracked: err == nil}
	svc.trackMu.Lock()
	defer svc.trackMu.Unlock()
	svc.tracked[key] = c
	for k, v := range svc.tracked { // forget repositories nobody streams
		if now.Sub(v.at) > 2*svc.trackCheck {
			delete(svc.tracked, k)
		}
	}
	return c.tracked, nil
}

// errUntracked ends the streams of a repository that is no longer
// tracked.
var errUntracked = errors.New("untracked")

// watchTracking cancels ctx with errUntracked once sc's repository is no
// longer tracked; it returns when ctx ends. A failed check is logged and
// retried at the next interval: it ends no stream.
func (svc *Service) watchTracking(ctx context.Context, cancel context.CancelCauseFunc, sc scope) {
	t := time.NewTicker(svc.trackCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tracked, err := svc.stillTracked(ctx, sc)
		if err != nil {
			if ctx.Err() == nil {
				svc.log.WarnContext(ctx, "check that a streamed repository is tracked", logging.KeyRepo, sc.key(), logging.KeyErr, err.Error())
			}
			continue
		}
		if !tracked {
			cancel(errUntracked)
			return
		}
	}
}

// firstSeq is the lowest sequence number of b (0 if it has none).
func firstSeq(b store.EventBatch) int64 {
	var first int64
	for _, s := range [][]int64{b.V1Seq, b.V2Seq} {
		if len(s) > 0 && (first == 0 || s[0] < first) {
			first = s[0]
		}
	}
	return first
}

// replayStart returns where a stream of repo that does not resume starts:
// after the sequence number before the first event of its iteration
// NextIteration-ReplayIterations, or of the earliest of the later ones
// that has numbered events; from the first stored event if there is none
// (or the repository has fewer iterations).
func (svc *Service) replayStart(ctx context.Context, repo *store.Repository) (store.From, error) {
	for it := repo.NextIteration - svc.replayIterations; it >= 1 && it < repo.NextIteration; it++ {
		seq, err := svc.store.IterationStart(ctx, repo.Owner, repo.Name, it)
		if err == nil {
			return store.From{AfterSeq: seq}, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.From{}, grpcError(err, "events: find the replay window")
		}
	}
	return store.From{}, nil
}

// stream sends the scope's batches with send until the client goes away,
// the feed fails or the server stops. seq says whether to set every
// event's kgd_sequence.
func (svc *Service) stream(ctx context.Context, send func(b store.EventBatch, seq bool) error) error {
	sc, o, repo, done, err := svc.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	var from, window store.From
	if sc.all() {
		window = store.From{Since: svc.now().Add(-svc.replayWindow)}
		from = window
	} else {
		if window, err = svc.replayStart(ctx, repo); err != nil {
			return err
		}
		from = window
		if o.since != nil {
			from = store.From{AfterSeq: *o.since}
		}
	}
	sub, err := svc.feed.Subscribe(sc.key(), from, window)
	if err != nil {
		return grpcError(err, "events")
	}
	defer sub.Close()
	// Answer at once, so that HTTP clients see the 200 and the headers
	// before the first event (there may be none for a while).
	if err := grpc.SendHeader(ctx, metadata.Pairs(streamHeader, "open")); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(svc.stopping, func() { cancel(nil) })
	defer stop()
	if !sc.all() {
		go svc.watchTracking(ctx, cancel, sc)
	}
	// A resumed stream must go on right after its position: the events
	// after it may have expired (retention) meanwhile. (since=0 asks for
	// everything kept, however old.)
	resumed := o.since != nil && *o.since > 0
	for {
		b, err := sub.Next(ctx)
		if err != nil {
			switch {
			case svc.stopping.Err() != nil:
				return status.Error(codes.Unavailable, "events: the server is shutting down; reconnect to replay")
			case errors.Is(context.Cause(ctx), errUntracked):
				return status.Errorf(codes.NotFound, "events: %s is no longer tracked", sc)
			}
			return grpcError(err, "events of "+sc.String())
		}
		if resumed {
			if first := firstSeq(b); first > *o.since+1 {
				return status.Errorf(codes.OutOfRange, "events of %s after sequence number %d are no longer kept (expired); the oldest kept is %d: reconnect without since to replay the recent window, or with since=%d to go on from the oldest kept",
					sc, *o.since, first, first-1)
			}
			resumed = false
		}
		if err := send(b, o.sequence); err != nil {
			return err
		}
	}
}

// sendEach streams, with send, the events that pick takes from each batch
// of the call's scope (see stream), each as out makes it for the wire
// from the event and its sequence number (0 if it has none).
func sendEach[E any](svc *Service, ctx context.Context, pick func(store.EventBatch) ([]E, []int64), out func(e E, seq int64, withSeq bool) E, send func(E) error) error {
	return svc.stream(ctx, func(b store.EventBatch, withSeq bool) error {
		events, seqs := pick(b)
		for i, e := range events {
			var seq int64
			if i < len(seqs) {
				seq = seqs[i]
			}
			if err := send(out(e, seq, withSeq)); err != nil {
				return err
			}
		}
		return nil
	})
}

func v1Events(b store.EventBatch) ([]*v1pb.LogEntry, []int64) { return b.V1, b.V1Seq }
func v2Events(b store.EventBatch) ([]*v2pb.Event, []int64)    { return b.V2, b.V2Seq }

// v1Out is a stored v1 event as streamed: a MetaEvent gets its sequence
// number in metadata.additional, and with withSeq every event gets
// kgd_sequence. The stored event is shared by every stream and never
// changed: what differs is a copy.
func v1Out(e *v1pb.LogEntry, seq int64, withSeq bool) *v1pb.LogEntry {
	meta := seq > 0 && e.GetEvent().GetMetaEvent() != nil
	want := withSeq && seq > 0
	if !meta && !want && e.KgdSequence == nil {
		return e
	}
	if meta {
		e = proto.Clone(e).(*v1pb.LogEntry)
		m := e.Event.GetMetaEvent()
		if m.Metadata == nil {
			m.Metadata = &v1pb.Metadata{}
		}
		m.Metadata.Additional = withSequence(m.Metadata.Additional, seq)
	} else {
		e = shallowCopy(e)
	}
	e.KgdSequence = nil
	if want {
		e.KgdSequence = &seq
	}
	return e
}

// v2Out is v1Out for v2 events.
func v2Out(e *v2pb.Event, seq int64, withSeq bool) *v2pb.Event {
	meta := seq > 0 && e.GetMetaEvent() != nil
	want := withSeq && seq > 0
	if !meta && !want && e.KgdSequence == nil {
		return e
	}
	if meta {
		e = proto.Clone(e).(*v2pb.Event)
		m := e.GetMetaEvent()
		if m.Metadata == nil {
			m.Metadata = &v2pb.Metadata{}
		}
		m.Metadata.Additional = withSequence(m.Metadata.Additional, seq)
	} else {
		e = shallowCopy(e)
	}
	e.KgdSequence = nil
	if want {
		e.KgdSequence = &seq
	}
	return e
}

func withSequence(additional map[string]string, seq int64) map[string]string {
	if additional == nil {
		additional = map[string]string{}
	}
	additional[MetaSequenceKey] = strconv.FormatInt(seq, 10)
	return additional
}

// shallowCopy returns a new message with m's fields: sub-messages are
// shared, not copied (a stream only reads them).
func shallowCopy[M proto.Message](m M) M {
	src := m.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	dst.SetUnknown(src.GetUnknown())
	return dst.Interface().(M)
}

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
	m := job.Message{
		Version: job.Version, JobID: j.ID, Repository: j.Owner + "/" + j.Name, Ref: j.Ref, SHA: j.SHA,
		Before: j.Before, DeliveryID: j.DeliveryID, Trigger: job.TriggerOf(j.Trigger), PublishedAt: svc.now(),
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
	return sendEach(s.svc, stream.Context(), v1Events, v1Out, stream.Send)
}

// EventLog is the deprecated Events: the client's stream is ignored.
func (s *v1Server) EventLog(stream grpc.BidiStreamingServer[v1pb.LogEntry, v1pb.LogEntry]) error {
	return sendEach(s.svc, stream.Context(), v1Events, v1Out, stream.Send)
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
	return sendEach(s.svc, stream.Context(), v2Events, v2Out, stream.Send)
}

// ApplicationLogs streams nothing: container logs are not collected. The
// stream stays open, as Skaffold's does between iterations; it counts
// towards MaxStreams like the others.
func (s *v2Server) ApplicationLogs(_ *emptypb.Empty, stream grpc.ServerStreamingServer[v2pb.Event]) error {
	_, _, _, done, err := s.svc.open(stream.Context())
	if err != nil {
		return err
	}
	defer done()
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
		e.KgdSequence = nil // the store numbers events, not clients
		return store.EventBatch{V2: []*v2pb.Event{v2HandledMark(e, id), e}}
	})
}
