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
	// V1Seq and V2Seq are the repository sequence numbers of V1's and V2's
	// events, set when the batch was stored (see Sequences); AppendEvents
	// ignores them.
	V1Seq, V2Seq []int64
}

// LastSeq is the highest sequence number of the batch (0 for a batch
// without sequence numbers).
func (b EventBatch) LastSeq() int64 {
	var last int64
	for _, s := range [][]int64{b.V1Seq, b.V2Seq} {
		if n := len(s); n > 0 {
			last = max(last, s[n-1])
		}
	}
	return last
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
	// V1Seq and V2Seq number V1's and V2's events in the repository's
	// sequence; SeqFirst and SeqLast bound the batch's numbers.
	V1Seq    []int64 `firestore:"v1_seq"`
	V2Seq    []int64 `firestore:"v2_seq"`
	SeqFirst int64   `firestore:"seq_first"`
	SeqLast  int64   `firestore:"seq_last"`
	// ExpireAt is when the TTL policy deletes the batch (Store.Retention).
	ExpireAt time.Time `firestore:"expire_at,omitempty"`
}

// rawEvent is one emitted event, in either schema or both, encoded.
type rawEvent struct{ v1, v2 []byte }

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
	// Sequence numbers, their bounds and the expiry.
	n += len("v1_seq") + 1 + len("v2_seq") + 1 + 8*(len(v1)+len(v2))
	n += len("seq_first") + 1 + 8 + len("seq_last") + 1 + 8 + len("expire_at") + 1 + 8
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
	// Without an order between the schemas, v1 events are numbered first.
	var raw []rawEvent
	for _, b := range v1 {
		raw = append(raw, rawEvent{v1: b})
	}
	for _, b := range v2 {
		raw = append(raw, rawEvent{v2: b})
	}
	_, err := s.appendRaw(ctx, b.Job, b.Chunk, raw)
	if errors.Is(err, ErrAlreadyExists) {
		// A Create the client retried after a lost answer finds its own
		// document; only a different one belongs to another writer.
		if same, _, cerr := s.sameChunk(ctx, b.Job, b.Chunk, v1, v2); cerr == nil && same {
			return nil
		}
	}
	return err
}

// appendRaw stores one chunk of a job's events and numbers them, in the
// order emitted, with the next numbers of the repository's sequence: one
// transaction reads and advances the repository's counter and creates
// the chunk, so numbers are unique, gapless per repository and increase
// in the order chunks are committed. It returns the chunk's first number.
func (s *Store) appendRaw(ctx context.Context, ref JobRef, chunk int, events []rawEvent) (int64, error) {
	id := eventDocID(ref.ID, chunk)
	var v1, v2 [][]byte
	for _, e := range events {
		if e.v1 != nil {
			v1 = append(v1, e.v1)
		}
		if e.v2 != nil {
			v2 = append(v2, e.v2)
		}
	}
	if size := eventDocSize(ref, id, v1, v2); size > MaxEventBatchBytes {
		return 0, fmt.Errorf("append events of job %s chunk %d: %d bytes: %w", ref.ID, chunk, size, ErrTooLarge)
	}
	doc := eventDoc{
		Repo: ref.RepoKey(), JobID: ref.ID, Iteration: int64(ref.Iteration), Chunk: int64(chunk),
		V1: nonNil(v1), V2: nonNil(v2), V1Seq: []int64{}, V2Seq: []int64{},
	}
	if s.retention > 0 {
		doc.ExpireAt = s.now().Add(s.retention)
	}
	chunkRef := s.client.Collection(EventsCollection).Doc(id)
	counterRef := s.client.Collection(SequencesCollection).Doc(ref.RepoKey())
	var first int64
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		if _, err := tx.Get(chunkRef); err == nil {
			return ErrAlreadyExists
		} else if !isNotFound(err) {
			return err
		}
		next := int64(1)
		snap, err := tx.Get(counterRef)
		switch {
		case err == nil:
			if v, err := snap.DataAt("next"); err == nil {
				next, _ = v.(int64)
			}
		case !isNotFound(err):
			return err
		}
		d := doc
		d.V1Seq, d.V2Seq = []int64{}, []int64{}
		d.SeqFirst = next
		for _, e := range events {
			if e.v1 != nil {
				d.V1Seq = append(d.V1Seq, next)
				next++
			}
			if e.v2 != nil {
				d.V2Seq = append(d.V2Seq, next)
				next++
			}
		}
		d.SeqLast = next - 1
		first = d.SeqFirst
		if err := tx.Create(chunkRef, d); err != nil {
			return err
		}
		return tx.Set(counterRef, map[string]any{"next": next})
	}, firestore.MaxAttempts(appendAttempts))
	if err != nil {
		return 0, fmt.Errorf("append events of job %s chunk %d: %w", ref.ID, chunk, translate(err))
	}
	return first, nil
}

// appendAttempts is how often an append transaction is tried: jobs of one
// repository that write at the same moment contend for its counter.
const appendAttempts = 25

func nonNil(b [][]byte) [][]byte {
	if b == nil {
		return [][]byte{}
	}
	return b
}

// sameChunk reports whether the stored chunk holds exactly v1 and v2: a
// Create retried by the client after a lost answer finds its own document.
// It also returns the stored chunk's first sequence number.
func (s *Store) sameChunk(ctx context.Context, ref JobRef, chunk int, v1, v2 [][]byte) (bool, int64, error) {
	snap, err := s.eventRef(ref.ID, chunk).Get(ctx)
	if err != nil {
		return false, 0, translate(err)
	}
	var d eventDoc
	if err := snap.DataTo(&d); err != nil {
		return false, 0, err
	}
	eq := func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }
	return d.JobID == ref.ID && eq(d.V1, nonNil(v1)) && eq(d.V2, nonNil(v2)), d.SeqFirst, nil
}

// JobEvents returns every event of the job in order, and the chunk number
// to continue at. A job without events (or an unknown job) has an empty
// history.
func (s *Store) JobEvents(ctx context.Context, jobID string) (*JobHistory, error) {
	batches, err := s.JobBatches(ctx, jobID)
	if err != nil {
		return nil, err
	}
	h := &JobHistory{}
	for _, b := range batches {
		h.V1 = append(h.V1, b.V1...)
		h.V2 = append(h.V2, b.V2...)
		h.NextChunk = b.Chunk + 1
	}
	return h, nil
}

// JobBatches returns the job's stored batches in chunk order, with their
// sequence numbers (an export of one job). An unknown job has none.
func (s *Store) JobBatches(ctx context.Context, jobID string) ([]EventBatch, error) {
	if err := checkID("job id", jobID); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	// Equality only: the automatic single-field index serves it, and a
	// job's chunks are few enough to sort here.
	snaps, err := s.client.Collection(EventsCollection).Where("job_id", "==", jobID).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("read events of job %s: %w", jobID, translate(err))
	}
	batches := make([]EventBatch, len(snaps))
	for i, snap := range snaps {
		if batches[i], _, err = decodeBatch(snap); err != nil {
			return nil, fmt.Errorf("read events of job %s: %w", jobID, err)
		}
	}
	slices.SortFunc(batches, func(a, b EventBatch) int { return cmp.Compare(a.Chunk, b.Chunk) })
	return batches, nil
}
