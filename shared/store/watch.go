package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// WatchEvents calls fn with every stored event batch in scope, oldest
// first, then with each new batch as it is written, until ctx ends or fn
// returns an error. One Firestore listener serves both the replay and the
// live part, so there is no gap and no duplicate between them. scope is
// "owner/name" for one repository, or "" for all of them. Batches are
// ordered by their commit time; a job's own batches keep their order
// because each is written after the previous one.
//
// In production, a scoped watch needs the composite index events(repo
// ASC, created ASC) (terraform/firestore.tf).
func (s *Store) WatchEvents(ctx context.Context, scope string, fn func(EventBatch) error) error {
	q := s.client.Collection(EventsCollection).OrderBy("created", firestore.Asc)
	if scope != "" {
		owner, name, ok := strings.Cut(scope, "/")
		if !ok || checkRepo(owner, name) != nil {
			return fmt.Errorf("watch events of %q: %w", scope, ErrInvalid)
		}
		q = s.client.Collection(EventsCollection).Where("repo", "==", RepoKey(owner, name)).OrderBy("created", firestore.Asc)
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
			b, err := decodeBatch(ch.Doc)
			if err != nil {
				return err
			}
			if err := fn(b); err != nil {
				return err
			}
		}
	}
}

func decodeBatch(snap *firestore.DocumentSnapshot) (EventBatch, error) {
	var d eventDoc
	if err := snap.DataTo(&d); err != nil {
		return EventBatch{}, fmt.Errorf("decode events %s: %w", snap.Ref.ID, err)
	}
	owner, name, _ := strings.Cut(d.Repo, "~")
	b := EventBatch{Job: JobRef{ID: d.JobID, Owner: owner, Name: name, Iteration: int(d.Iteration)}, Chunk: int(d.Chunk)}
	for i, raw := range d.V1 {
		e := new(v1pb.LogEntry)
		if err := proto.Unmarshal(raw, e); err != nil {
			return EventBatch{}, fmt.Errorf("decode events %s: v1 event %d: %w", snap.Ref.ID, i, err)
		}
		b.V1 = append(b.V1, e)
	}
	for i, raw := range d.V2 {
		e := new(v2pb.Event)
		if err := proto.Unmarshal(raw, e); err != nil {
			return EventBatch{}, fmt.Errorf("decode events %s: v2 event %d: %w", snap.Ref.ID, i, err)
		}
		b.V2 = append(b.V2, e)
	}
	return b, nil
}
