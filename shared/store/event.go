package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/protobuf/proto"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// MaxEventBatchBytes is the largest events document AppendEvents writes:
// 900 KiB, leaving room under Firestore's 1 MiB document limit for the
// index entries and the size rules' rounding.
const MaxEventBatchBytes = 900 << 10

// JobRef identifies the job that events and state belong to.
type JobRef struct {
	// ID is the job id.
	ID string
	// Owner and Name are the repository's.
	Owner string
	Name  string
	// Iteration is the job's iteration in its repository.
	Iteration int
}

// RepoKey returns the key of the job's repository.
func (r JobRef) RepoKey() string { return RepoKey(r.Owner, r.Name) }

func (r JobRef) check() error {
	if err := checkID("job id", r.ID); err != nil {
		return err
	}
	return checkRepo(r.Owner, r.Name)
}

// EventBatch is one chunk of a job's events: one events document.
type EventBatch struct {
	// Job is the job the events belong to.
	Job JobRef
	// Chunk numbers the job's batches from 0, without gaps.
	Chunk int
	// V1 and V2 are the events in the Skaffold v1 and v2 schemas; the two
	// lists are independent and either may be empty.
	V1 []*v1pb.LogEntry
	V2 []*v2pb.Event
}

// JobHistory is every event recorded for one job, in order.
type JobHistory struct {
	// V1 and V2 are the job's events in the two schemas.
	V1 []*v1pb.LogEntry
	V2 []*v2pb.Event
	// NextChunk is the chunk number a writer continuing the job uses.
	NextChunk int
}

type eventDoc struct {
	Repo      string    `firestore:"repo"`
	JobID     string    `firestore:"job_id"`
	Iteration int64     `firestore:"iteration"`
	Chunk     int64     `firestore:"chunk"`
	Created   time.Time `firestore:"created,serverTimestamp"`
	V1        [][]byte  `firestore:"v1"`
	V2        [][]byte  `firestore:"v2"`
}

func eventDocID(jobID string, chunk int) string { return fmt.Sprintf("%s-%08d", jobID, chunk) }

// eventDocSize computes an events document's size by Firestore's storage
// size rules: the document name, each field name plus one byte, strings
// plus one byte, 8 bytes per number and timestamp, bytes as is, and 32
// bytes per document.
func eventDocSize(ref JobRef, docID string, v1, v2 [][]byte) int {
	n := 32 + len(EventsCollection) + 1 + len(docID) + 1 + 16
	n += len("repo") + 1 + len(ref.RepoKey()) + 1
	n += len("job_id") + 1 + len(ref.ID) + 1
	n += len("iteration") + 1 + 8
	n += len("chunk") + 1 + 8
	n += len("created") + 1 + 8
	n += len("v1") + 1 + len("v2") + 1
	for _, b := range v1 {
		n += len(b)
	}
	for _, b := range v2 {
		n += len(b)
	}
	return n
}

func (s *Store) eventRef(jobID string, chunk int) *firestore.DocumentRef {
	return s.client.Collection(EventsCollection).Doc(eventDocID(jobID, chunk))
}

// AppendEvents writes one chunk of a job's events. The chunk's document id
// is derived from the job id and chunk number, so a second write of the
// same chunk with different events fails with ErrAlreadyExists: another
// writer (a runner that took the job over, or this one earlier) owns it. A batch larger than
// MaxEventBatchBytes fails with ErrTooLarge; JobWriter splits before that.
func (s *Store) AppendEvents(ctx context.Context, b EventBatch) error {
	if err := b.Job.check(); err != nil {
		return fmt.Errorf("append events: %w", err)
	}
	if b.Chunk < 0 || len(b.V1)+len(b.V2) == 0 {
		return fmt.Errorf("append events of job %s: negative chunk or no events: %w", b.Job.ID, ErrInvalid)
	}
	v1 := make([][]byte, len(b.V1))
	for i, e := range b.V1 {
		var err error
		if v1[i], err = proto.Marshal(e); err != nil {
			return fmt.Errorf("append events of job %s: marshal v1 event %d: %w", b.Job.ID, i, err)
		}
	}
	v2 := make([][]byte, len(b.V2))
	for i, e := range b.V2 {
		var err error
		if v2[i], err = proto.Marshal(e); err != nil {
			return fmt.Errorf("append events of job %s: marshal v2 event %d: %w", b.Job.ID, i, err)
		}
	}
	err := s.appendRaw(ctx, b.Job, b.Chunk, v1, v2)
	if errors.Is(err, ErrAlreadyExists) {
		// A Create the client retried after a lost answer finds its own
		// document; only a different one belongs to another writer.
		if same, cerr := s.sameChunk(ctx, b.Job, b.Chunk, v1, v2); cerr == nil && same {
			return nil
		}
	}
	return err
}

func (s *Store) appendRaw(ctx context.Context, ref JobRef, chunk int, v1, v2 [][]byte) error {
	id := eventDocID(ref.ID, chunk)
	if size := eventDocSize(ref, id, v1, v2); size > MaxEventBatchBytes {
		return fmt.Errorf("append events of job %s chunk %d: %d bytes: %w", ref.ID, chunk, size, ErrTooLarge)
	}
	doc := eventDoc{
		Repo: ref.RepoKey(), JobID: ref.ID, Iteration: int64(ref.Iteration), Chunk: int64(chunk),
		V1: nonNil(v1), V2: nonNil(v2),
	}
	if _, err := s.client.Collection(EventsCollection).Doc(id).Create(ctx, doc); err != nil {
		return fmt.Errorf("append events of job %s chunk %d: %w", ref.ID, chunk, translate(err))
	}
	return nil
}

func nonNil(b [][]byte) [][]byte {
	if b == nil {
		return [][]byte{}
	}
	return b
}

// sameChunk reports whether the stored chunk holds exactly v1 and v2: a
// Create retried by the client after a lost answer finds its own document.
func (s *Store) sameChunk(ctx context.Context, ref JobRef, chunk int, v1, v2 [][]byte) (bool, error) {
	snap, err := s.eventRef(ref.ID, chunk).Get(ctx)
	if err != nil {
		return false, translate(err)
	}
	var d eventDoc
	if err := snap.DataTo(&d); err != nil {
		return false, err
	}
	eq := func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }
	return d.JobID == ref.ID && eq(d.V1, nonNil(v1)) && eq(d.V2, nonNil(v2)), nil
}

// JobEvents returns every event of the job in order, and the chunk number
// to continue at. A job without events (or an unknown job) has an empty
// history.
func (s *Store) JobEvents(ctx context.Context, jobID string) (*JobHistory, error) {
	if err := checkID("job id", jobID); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	// Equality only: the automatic single-field index serves it, and a
	// job's chunks are few enough to sort here.
	snaps, err := s.client.Collection(EventsCollection).Where("job_id", "==", jobID).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("read events of job %s: %w", jobID, translate(err))
	}
	docs := make([]eventDoc, len(snaps))
	for i, snap := range snaps {
		if err := snap.DataTo(&docs[i]); err != nil {
			return nil, fmt.Errorf("read events of job %s: decode %s: %w", jobID, snap.Ref.ID, err)
		}
	}
	slices.SortFunc(docs, func(a, b eventDoc) int { return cmp.Compare(a.Chunk, b.Chunk) })
	h := &JobHistory{}
	for _, d := range docs {
		for i, b := range d.V1 {
			e := new(v1pb.LogEntry)
			if err := proto.Unmarshal(b, e); err != nil {
				return nil, fmt.Errorf("read events of job %s: chunk %d v1 event %d: %w", jobID, d.Chunk, i, err)
			}
			h.V1 = append(h.V1, e)
		}
		for i, b := range d.V2 {
			e := new(v2pb.Event)
			if err := proto.Unmarshal(b, e); err != nil {
				return nil, fmt.Errorf("read events of job %s: chunk %d v2 event %d: %w", jobID, d.Chunk, i, err)
			}
			h.V2 = append(h.V2, e)
		}
		h.NextChunk = int(d.Chunk) + 1
	}
	return h, nil
}
