package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// From says where reading a scope's events starts.
type From struct {
	// AfterSeq, for a one-repository scope, starts after this number of
	// the repository's sequence (0: from its first numbered event): only
	// events numbered higher are delivered, so a client resumes exactly
	// where it stopped. A one-repository scope never delivers the batches
	// stored before sequence numbers existed; all repositories do.
	AfterSeq int64
	// Since starts with the batches committed at or after it (any scope);
	// zero is from the first. Ignored with AfterSeq.
	Since time.Time
}

// WatchEvents calls fn with every stored event batch in scope from from,
// oldest first, then with each new batch as it is written, until ctx ends
// or fn returns an error. One Firestore listener serves both the replay
// and the live part, so there is no gap and no duplicate between them.
// scope is "owner/name" for one repository, or "" for all of them.
//
// Order: a repository's batches arrive in the order of their sequence
// numbers, which is the order their appends committed in (AppendEvents
// numbers them in the same transaction that advances the repository's
// counter, so they serialize). With all repositories in scope, batches
// are ordered by their commit time (the created timestamp), ties broken
// by document id ("<job id>-<chunk>"): a replay always comes in that
// order, and so do live batches, as Firestore's listener delivers the
// commits it observes in commit-time order. Batches of different
// repositories committed at the same moment by concurrent writers have
// no order beyond that rule.
//
// In production a scoped watch needs the composite indexes events(repo
// ASC, created ASC) and events(repo ASC, seq_last ASC)
// (terraform/firestore.tf).
func (s *Store) WatchEvents(ctx context.Context, scope string, from From, fn func(EventBatch) error) error {
	return s.WatchEventsCommitted(ctx, scope, from, func(b EventBatch, _ time.Time) error { return fn(b) })
}

// WatchEventsCommitted is WatchEvents that also hands fn each batch's
// commit time: its events document's created timestamp, by which an
// all-repositories scope is ordered and which From.Since compares with.
// A caller that restarts a watch from the last commit time it saw
// (From.Since is inclusive) uses it to skip what it already has.
func (s *Store) WatchEventsCommitted(ctx context.Context, scope string, from From, fn func(EventBatch, time.Time) error) error {
	q, err := s.eventsQuery(scope, from)
	if err != nil {
		return err
	}
	it := q.Snapshots(ctx)
	defer it.Stop()
	for {
		snap, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, iterator.Done) || status.Code(err) == codes.Canceled {
				return ctx.Err()
			}
			return fmt.Errorf("watch events: %w", translate(err))
		}
		for _, ch := range snap.Changes {
			if ch.Kind != firestore.DocumentAdded {
				continue
			}
			if err := deliver(ch.Doc, from, fn); err != nil {
				return err
			}
		}
	}
}

// ReadEvents calls fn with every batch stored in scope from from, in the
// order WatchEvents delivers them, and returns: a one-time read (exports,
// a job's history) that does not follow new events.
func (s *Store) ReadEvents(ctx context.Context, scope string, from From, fn func(EventBatch) error) error {
	q, err := s.eventsQuery(scope, from)
	if err != nil {
		return err
	}
	it := q.Documents(ctx)
	defer it.Stop()
	for {
		snap, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read events: %w", translate(err))
		}
		if err := deliver(snap, from, func(b EventBatch, _ time.Time) error { return fn(b) }); err != nil {
			return err
		}
	}
}

// eventsQuery is the query of scope's batches from from.
func (s *Store) eventsQuery(scope string, from From) (firestore.Query, error) {
	events := s.client.Collection(EventsCollection)
	if scope == "" {
		if from.AfterSeq > 0 {
			return firestore.Query{}, fmt.Errorf("watch events: a sequence number needs a repository scope: %w", ErrInvalid)
		}
		q := events.OrderBy("created", firestore.Asc)
		if !from.Since.IsZero() {
			q = events.Where("created", ">=", from.Since).OrderBy("created", firestore.Asc)
		}
		return q.OrderBy(firestore.DocumentID, firestore.Asc), nil
	}
	owner, name, ok := strings.Cut(scope, "/")
	if !ok || checkRepo(owner, name) != nil {
		return firestore.Query{}, fmt.Errorf("watch events of %q: %w", scope, ErrInvalid)
	}
	repo := events.Where("repo", "==", RepoKey(owner, name))
	if !from.Since.IsZero() && from.AfterSeq == 0 {
		return repo.Where("created", ">=", from.Since).OrderBy("created", firestore.Asc), nil
	}
	// By sequence number, not commit time: numbers are the order the
	// repository's appends were serialized in, while commit times can tie
	// (the emulator keeps milliseconds), and a tie would be broken by the
	// document id, which is not that order.
	return repo.Where("seq_last", ">", from.AfterSeq).OrderBy("seq_last", firestore.Asc), nil
}

// deliver decodes a batch and hands it to fn, without the events at or
// before from.AfterSeq (a batch can straddle the resume position).
func deliver(snap *firestore.DocumentSnapshot, from From, fn func(EventBatch, time.Time) error) error {
	b, created, err := decodeBatch(snap)
	if err != nil {
		return err
	}
	if from.AfterSeq > 0 {
		b = b.After(from.AfterSeq)
		if len(b.V1)+len(b.V2) == 0 {
			return nil
		}
	}
	return fn(b, created)
}

// After returns b without its events numbered at most seq (and without
// events stored before sequence numbers existed).
func (b EventBatch) After(seq int64) EventBatch {
	out := EventBatch{Job: b.Job, Chunk: b.Chunk}
	for i, e := range b.V1 {
		if i < len(b.V1Seq) && b.V1Seq[i] > seq {
			out.V1, out.V1Seq = append(out.V1, e), append(out.V1Seq, b.V1Seq[i])
		}
	}
	for i, e := range b.V2 {
		if i < len(b.V2Seq) && b.V2Seq[i] > seq {
			out.V2, out.V2Seq = append(out.V2, e), append(out.V2Seq, b.V2Seq[i])
		}
	}
	return out
}

// IterationStart returns the sequence number just before the first event
// of owner/name's iteration: From{AfterSeq: it} replays from that
// iteration on. It returns ErrNotFound when the iteration has no numbered
// events (yet).
func (s *Store) IterationStart(ctx context.Context, owner, name string, iteration int) (int64, error) {
	if err := checkRepo(owner, name); err != nil {
		return 0, fmt.Errorf("iteration start: %w", err)
	}
	snaps, err := s.client.Collection(JobsCollection).Where("repo", "==", RepoKey(owner, name)).
		Where("iteration", "==", iteration).Limit(1).Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("iteration %d of %s/%s: %w", iteration, owner, name, translate(err))
	}
	if len(snaps) == 0 {
		return 0, fmt.Errorf("iteration %d of %s/%s: %w", iteration, owner, name, ErrNotFound)
	}
	snap, err := s.eventRef(snaps[0].Ref.ID, 0).Get(ctx)
	if err != nil {
		return 0, fmt.Errorf("iteration %d of %s/%s: first events: %w", iteration, owner, name, translate(err))
	}
	first, err := snap.DataAt("seq_first")
	if n, ok := first.(int64); err != nil || !ok || n == 0 {
		return 0, fmt.Errorf("iteration %d of %s/%s: events without sequence numbers: %w", iteration, owner, name, ErrNotFound)
	} else {
		return n - 1, nil
	}
}

// decodeBatch returns the batch of an events document and its commit
// time (created).
func decodeBatch(snap *firestore.DocumentSnapshot) (EventBatch, time.Time, error) {
	var d eventDoc
	if err := snap.DataTo(&d); err != nil {
		return EventBatch{}, time.Time{}, fmt.Errorf("decode events %s: %w", snap.Ref.ID, err)
	}
	owner, name, _ := strings.Cut(d.Repo, "~")
	b := EventBatch{Job: JobRef{ID: d.JobID, Owner: owner, Name: name, Iteration: int(d.Iteration)}, Chunk: int(d.Chunk),
		V1Seq: d.V1Seq, V2Seq: d.V2Seq}
	for i, raw := range d.V1 {
		e := new(v1pb.LogEntry)
		if err := proto.Unmarshal(raw, e); err != nil {
			return EventBatch{}, time.Time{}, fmt.Errorf("decode events %s: v1 event %d: %w", snap.Ref.ID, i, err)
		}
		b.V1 = append(b.V1, e)
	}
	for i, raw := range d.V2 {
		e := new(v2pb.Event)
		if err := proto.Unmarshal(raw, e); err != nil {
			return EventBatch{}, time.Time{}, fmt.Errorf("decode events %s: v2 event %d: %w", snap.Ref.ID, i, err)
		}
		b.V2 = append(b.V2, e)
	}
	return b, d.Created, nil
}

// LastSequence returns the highest sequence number given to an event of
// owner/name so far (0 before its first numbered event): a resume
// position above it is in the future. Numbers are never reused, so it
// only grows, also when the events expire.
func (s *Store) LastSequence(ctx context.Context, owner, name string) (int64, error) {
	if err := checkRepo(owner, name); err != nil {
		return 0, fmt.Errorf("last sequence number: %w", err)
	}
	snap, err := s.client.Collection(SequencesCollection).Doc(RepoKey(owner, name)).Get(ctx)
	if isNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last sequence number of %s/%s: %w", owner, name, translate(err))
	}
	v, err := snap.DataAt("next")
	next, ok := v.(int64)
	if err != nil || !ok || next < 1 {
		return 0, fmt.Errorf("last sequence number of %s/%s: counter %v is not a number: %w", owner, name, v, ErrInvalid)
	}
	return next - 1, nil
}
