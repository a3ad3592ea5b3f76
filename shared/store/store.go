package store

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
)

// Collection names; see the package documentation for their documents.
const (
	RepositoriesCollection = "repositories"
	TokensCollection       = "tokens"
	DeliveriesCollection   = "deliveries"
	PushesCollection       = "pushes"
	SequencesCollection    = "sequences"
	JobsCollection         = "jobs"
	EventsCollection       = "events"
	StatesCollection       = "states"
)

// Sentinel errors. Errors returned by Store wrap one of them when the cause
// is known; test with errors.Is.
var (
	// ErrNotFound reports that a repository, token, job or state does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists reports that a document to be created exists: the
	// repository is tracked, the job id is taken, or the event chunk was
	// written by another writer.
	ErrAlreadyExists = errors.New("already exists")
	// ErrDuplicateDelivery reports a webhook delivery that already created a
	// job. The error is a *DuplicateDeliveryError carrying that job's id.
	ErrDuplicateDelivery = errors.New("duplicate delivery")
	// ErrLeased reports that a job is running under another owner's lease
	// that has not expired.
	ErrLeased = errors.New("job is leased by another owner")
	// ErrLeaseLost reports that the caller no longer holds the job's lease:
	// another owner claimed it, or the job finished.
	ErrLeaseLost = errors.New("job lease lost")
	// ErrJobFinished reports that a job has already reached a final status.
	ErrJobFinished = errors.New("job already finished")
	// ErrTooLarge reports a value that does not fit into one Firestore
	// document (see MaxEventBatchBytes).
	ErrTooLarge = errors.New("too large for one document")
	// ErrInvalid reports an argument the store refuses before contacting
	// Firestore: a malformed owner, name, login or id, or a missing value.
	ErrInvalid = errors.New("invalid argument")
)

// DuplicateDeliveryError is returned by CreateJob for a delivery id that
// already created a job. It matches ErrDuplicateDelivery with errors.Is.
type DuplicateDeliveryError struct {
	// DeliveryID is the GitHub delivery id of the delivery refused.
	DeliveryID string
	// JobID is the job created by the first delivery.
	JobID string
	// Replay reports that the delivery id is new but the push is not: the
	// same signed push (repository, ref, before, after, push time) under
	// another delivery id, as a replayed capture would be.
	Replay bool
}

// Error implements error.
func (e *DuplicateDeliveryError) Error() string {
	if e.Replay {
		return fmt.Sprintf("delivery %s repeats the push of job %s: %v", e.DeliveryID, e.JobID, ErrDuplicateDelivery)
	}
	return fmt.Sprintf("delivery %s already created job %s: %v", e.DeliveryID, e.JobID, ErrDuplicateDelivery)
}

// Is reports whether target is ErrDuplicateDelivery.
func (e *DuplicateDeliveryError) Is(target error) bool { return target == ErrDuplicateDelivery }

// Store reads and writes kube-git-deploy's records in Firestore. It is safe
// for concurrent use. The Firestore client is owned by the caller.
type Store struct {
	client    *firestore.Client
	box       *secret.Box
	now       func() time.Time
	retention time.Duration
}

// DefaultRetention is how long events and finished jobs are kept.
const DefaultRetention = 30 * 24 * time.Hour

// WithRetention makes the documents of events and jobs carry expire_at =
// written + d, which Firestore's TTL policies (terraform/firestore.tf)
// delete after; 0 keeps them forever. New uses DefaultRetention. A
// repository's latest state never expires.
func WithRetention(d time.Duration) Option {
	return func(s *Store) { s.retention = d }
}

// Option configures a Store.
type Option func(*Store)

// WithClock makes the store read the current time from now, for the
// timestamps it sets itself (tracked_at, created_at, delivery expiry).
// Lease decisions always use the now arguments of the job methods.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// New returns a Store over client that seals secrets with box.
func New(client *firestore.Client, box *secret.Box, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, fmt.Errorf("new store: nil firestore client: %w", ErrInvalid)
	}
	if box == nil {
		return nil, fmt.Errorf("new store: nil secret box: %w", ErrInvalid)
	}
	s := &Store{client: client, box: box, now: time.Now, retention: DefaultRetention}
	for _, o := range opts {
		o(s)
	}
	if s.now == nil {
		return nil, fmt.Errorf("new store: nil clock: %w", ErrInvalid)
	}
	if s.retention < 0 {
		return nil, fmt.Errorf("new store: negative retention: %w", ErrInvalid)
	}
	return s, nil
}

// translate maps the Firestore status codes that have a meaning for callers
// to sentinel errors and returns every other error unchanged.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var dup *DuplicateDeliveryError
	if errors.As(err, &dup) {
		return err
	}
	switch status.Code(err) {
	case codes.NotFound:
		return ErrNotFound
	case codes.AlreadyExists:
		return ErrAlreadyExists
	}
	return err
}

// isNotFound reports whether err is Firestore's NotFound.
func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// validName matches GitHub owner and repository names and logins (including
// Enterprise managed users' underscores); it also keeps them safe as parts of
// a document id.
var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)

// validID matches job and delivery ids.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

func checkName(what, s string) error {
	if !validName.MatchString(s) || s == "." || s == ".." {
		return fmt.Errorf("%s %q: %w", what, s, ErrInvalid)
	}
	return nil
}

func checkID(what, s string) error {
	if !validID.MatchString(s) {
		return fmt.Errorf("%s %q: %w", what, s, ErrInvalid)
	}
	return nil
}

// RepoKey returns the document id of a repository: "owner~name" in lower
// case, because GitHub compares names case-insensitively.
func RepoKey(owner, name string) string {
	return strings.ToLower(owner) + "~" + strings.ToLower(name)
}

func checkRepo(owner, name string) error {
	if err := checkName("owner", owner); err != nil {
		return err
	}
	return checkName("repository name", name)
}

// sealAAD binds a sealed value to the document and field it is stored in.
// The path is relative to the database, so exports can be imported into
// another project.
func sealAAD(ref *firestore.DocumentRef, field string) []byte {
	return []byte(ref.Parent.ID + "/" + ref.ID + "#" + field)
}
