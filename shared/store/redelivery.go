package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"cloud.google.com/go/firestore"
)

// RedeliveriesCollection holds one document per webhook redelivery a
// runner asked GitHub for: document id RedeliveryKey(owner, name, guid,
// attempt); fields repo, owner, name, guid, attempt, hook_id, delivery_id,
// claimed_by, claimed_at and expire_at (TTL policy, claimed_at +
// RedeliveryTTL). Runners write it with ClaimRedelivery (a Create) before
// asking GitHub, so one attempt is requested once however many runners
// sweep at the same time.
const RedeliveriesCollection = "redeliveries"

// RedeliveryTTL is how long a redelivery claim is kept (the
// redeliveries.expire_at TTL policy deletes it afterwards): longer than
// GitHub keeps a hook's deliveries (3 days), so a claim outlives the
// delivery it is about.
const RedeliveryTTL = 7 * 24 * time.Hour

// maxRedeliveryAttempt bounds Redelivery.Attempt; runners make a handful.
const maxRedeliveryAttempt = 1000

// Redelivery is a runner's claim on one redelivery of a failed webhook
// delivery: attempt Attempt of delivering GUID again to a repository.
type Redelivery struct {
	// Owner and Name are the repository's.
	Owner, Name string
	// GUID is the delivery's GUID (X-GitHub-Delivery), which every
	// redelivery of it keeps.
	GUID string
	// Attempt numbers the redeliveries of GUID from 0: a later attempt is
	// claimed only after the earlier one was seen to fail.
	Attempt int
	// HookID is the repository hook the delivery was made to.
	HookID int64
	// DeliveryID is the id of the delivery record redelivered.
	DeliveryID int64
	// ClaimedBy identifies the runner (e.g. host/pid).
	ClaimedBy string
	// ClaimedAt is when the claim was made; ClaimRedelivery sets it
	// when zero.
	ClaimedAt time.Time
}

type redeliveryDoc struct {
	Repo       string    `firestore:"repo"`
	Owner      string    `firestore:"owner"`
	Name       string    `firestore:"name"`
	GUID       string    `firestore:"guid"`
	Attempt    int64     `firestore:"attempt"`
	HookID     int64     `firestore:"hook_id"`
	DeliveryID int64     `firestore:"delivery_id"`
	ClaimedBy  string    `firestore:"claimed_by"`
	ClaimedAt  time.Time `firestore:"claimed_at"`
	ExpireAt   time.Time `firestore:"expire_at"`
}

// RedeliveryKey returns the document id of a redelivery claim:
// "owner~name~guid~attempt", the repository part lowercased as in RepoKey.
func RedeliveryKey(owner, name, guid string, attempt int) string {
	return RepoKey(owner, name) + "~" + guid + "~" + strconv.Itoa(attempt)
}

func checkRedelivery(owner, name, guid string, attempt int) error {
	if err := checkRepo(owner, name); err != nil {
		return err
	}
	if err := checkID("delivery guid", guid); err != nil {
		return err
	}
	if attempt < 0 || attempt > maxRedeliveryAttempt {
		return fmt.Errorf("redelivery attempt %d: %w", attempt, ErrInvalid)
	}
	return nil
}

func (s *Store) redeliveryRef(owner, name, guid string, attempt int) *firestore.DocumentRef {
	return s.client.Collection(RedeliveriesCollection).Doc(RedeliveryKey(owner, name, guid, attempt))
}

// ClaimRedelivery records that the caller is about to ask GitHub for
// redelivery r. It returns ErrAlreadyExists if that attempt was claimed
// before (by any runner, until the claim expires): the caller must not
// redeliver then.
func (s *Store) ClaimRedelivery(ctx context.Context, r Redelivery) error {
	if err := checkRedelivery(r.Owner, r.Name, r.GUID, r.Attempt); err != nil {
		return fmt.Errorf("claim redelivery: %w", err)
	}
	if r.ClaimedAt.IsZero() {
		r.ClaimedAt = s.now()
	}
	doc := redeliveryDoc{
		Repo: RepoKey(r.Owner, r.Name), Owner: r.Owner, Name: r.Name, GUID: r.GUID, Attempt: int64(r.Attempt),
		HookID: r.HookID, DeliveryID: r.DeliveryID, ClaimedBy: r.ClaimedBy,
		ClaimedAt: r.ClaimedAt, ExpireAt: r.ClaimedAt.Add(RedeliveryTTL),
	}
	if _, err := s.redeliveryRef(r.Owner, r.Name, r.GUID, r.Attempt).Create(ctx, doc); err != nil {
		return fmt.Errorf("claim redelivery %s of %s/%s (attempt %d): %w", r.GUID, r.Owner, r.Name, r.Attempt, translate(err))
	}
	return nil
}

// ReleaseRedelivery deletes a claim whose redelivery GitHub refused, so a
// later sweep may claim the attempt again. Releasing a claim that does not
// exist is not an error.
func (s *Store) ReleaseRedelivery(ctx context.Context, owner, name, guid string, attempt int) error {
	if err := checkRedelivery(owner, name, guid, attempt); err != nil {
		return fmt.Errorf("release redelivery: %w", err)
	}
	if _, err := s.redeliveryRef(owner, name, guid, attempt).Delete(ctx); err != nil {
		return fmt.Errorf("release redelivery %s of %s/%s (attempt %d): %w", guid, owner, name, attempt, translate(err))
	}
	return nil
}
