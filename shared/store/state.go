package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/protobuf/proto"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// RepoState is the Skaffold state of a repository's latest job.
type RepoState struct {
	// JobID and Iteration identify the job the state belongs to.
	JobID     string
	Iteration int
	// V1 and V2 are the state in the two schemas, never nil (a state
	// written as nil reads back empty).
	V1 *v1pb.State
	V2 *v2pb.State
	// Updated is the server time of the last write.
	Updated time.Time
	// Version counts the writes of the document, from 1.
	Version int64
}

type stateDoc struct {
	JobID     string    `firestore:"job_id"`
	Iteration int64     `firestore:"iteration"`
	V1        []byte    `firestore:"v1"`
	V2        []byte    `firestore:"v2"`
	Updated   time.Time `firestore:"updated,serverTimestamp"`
	Version   int64     `firestore:"version"`
}

func (s *Store) stateRef(owner, name string) *firestore.DocumentRef {
	return s.client.Collection(StatesCollection).Doc(RepoKey(owner, name))
}

// PutState records the state of job jobID (iteration iteration) as the
// repository's current state. A state of an older iteration than the one
// stored is ignored, so a slow runner of an old job cannot overwrite the
// state of a newer one.
func (s *Store) PutState(ctx context.Context, owner, name, jobID string, iteration int, v1 *v1pb.State, v2 *v2pb.State) error {
	ref := JobRef{ID: jobID, Owner: owner, Name: name, Iteration: iteration}
	if err := ref.check(); err != nil {
		return fmt.Errorf("put state: %w", err)
	}
	var b1, b2 []byte
	var err error
	if v1 != nil {
		if b1, err = proto.Marshal(v1); err != nil {
			return fmt.Errorf("put state of job %s: marshal v1: %w", jobID, err)
		}
	}
	if v2 != nil {
		if b2, err = proto.Marshal(v2); err != nil {
			return fmt.Errorf("put state of job %s: marshal v2: %w", jobID, err)
		}
	}
	return s.putStateRaw(ctx, ref, b1, b2)
}

func (s *Store) putStateRaw(ctx context.Context, job JobRef, v1, v2 []byte) error {
	if size := len(v1) + len(v2) + 256; size > MaxEventBatchBytes {
		return fmt.Errorf("put state of job %s: %d bytes: %w", job.ID, size, ErrTooLarge)
	}
	ref := s.stateRef(job.Owner, job.Name)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		var old stateDoc
		snap, err := tx.Get(ref)
		switch {
		case err == nil:
			if err := snap.DataTo(&old); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			if old.Iteration > int64(job.Iteration) {
				return nil // a newer job owns the state
			}
		case !isNotFound(err):
			return err
		}
		return tx.Set(ref, stateDoc{
			JobID: job.ID, Iteration: int64(job.Iteration),
			V1: v1, V2: v2, Version: old.Version + 1,
		})
	})
	if err != nil {
		return fmt.Errorf("put state of job %s: %w", job.ID, translate(err))
	}
	return nil
}

// State returns the repository's current state, or ErrNotFound if no job
// ever recorded one.
func (s *Store) State(ctx context.Context, owner, name string) (*RepoState, error) {
	if err := checkRepo(owner, name); err != nil {
		return nil, fmt.Errorf("get state: %w", err)
	}
	snap, err := s.stateRef(owner, name).Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("get state of %s/%s: %w", owner, name, translate(err))
	}
	st, err := decodeState(snap)
	if err != nil {
		return nil, fmt.Errorf("get state of %s/%s: %w", owner, name, err)
	}
	return st, nil
}

func decodeState(snap *firestore.DocumentSnapshot) (*RepoState, error) {
	var d stateDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	st := &RepoState{JobID: d.JobID, Iteration: int(d.Iteration), Updated: d.Updated, Version: d.Version}
	st.V1, st.V2 = new(v1pb.State), new(v2pb.State)
	if err := proto.Unmarshal(d.V1, st.V1); err != nil {
		return nil, fmt.Errorf("v1: %w", err)
	}
	if err := proto.Unmarshal(d.V2, st.V2); err != nil {
		return nil, fmt.Errorf("v2: %w", err)
	}
	return st, nil
}

// LatestState returns the most recently written state of any repository
// and the repository's owner and name, or ErrNotFound if no job ever
// recorded one.
func (s *Store) LatestState(ctx context.Context) (owner, name string, st *RepoState, err error) {
	docs, err := s.client.Collection(StatesCollection).OrderBy("updated", firestore.Desc).Limit(1).Documents(ctx).GetAll()
	if err != nil {
		return "", "", nil, fmt.Errorf("get latest state: %w", translate(err))
	}
	if len(docs) == 0 {
		return "", "", nil, fmt.Errorf("get latest state: %w", ErrNotFound)
	}
	owner, name, _ = strings.Cut(docs[0].Ref.ID, "~")
	st, err = decodeState(docs[0])
	if err != nil {
		return "", "", nil, fmt.Errorf("get latest state: %w", err)
	}
	return owner, name, st, nil
}

// UpdateState changes the repository's current state in a transaction:
// fn gets the stored state (V1 and V2 never nil) and changes it in place;
// the result is written as the same job's state. A concurrent PutState
// (the runner's) is never lost: the transaction retries fn on the newer
// state. It returns ErrNotFound if no state was ever recorded.
func (s *Store) UpdateState(ctx context.Context, owner, name string, fn func(*RepoState) error) error {
	if err := checkRepo(owner, name); err != nil {
		return fmt.Errorf("update state: %w", err)
	}
	ref := s.stateRef(owner, name)
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		st, err := decodeState(snap)
		if err != nil {
			return err
		}
		if err := fn(st); err != nil {
			return err
		}
		b1, err := proto.Marshal(st.V1)
		if err != nil {
			return fmt.Errorf("marshal v1: %w", err)
		}
		b2, err := proto.Marshal(st.V2)
		if err != nil {
			return fmt.Errorf("marshal v2: %w", err)
		}
		if size := len(b1) + len(b2) + 256; size > MaxEventBatchBytes {
			return fmt.Errorf("%d bytes: %w", size, ErrTooLarge)
		}
		return tx.Set(ref, stateDoc{JobID: st.JobID, Iteration: int64(st.Iteration), V1: b1, V2: b2, Version: st.Version + 1})
	})
	if err != nil {
		return fmt.Errorf("update state of %s/%s: %w", owner, name, translate(err))
	}
	return nil
}
