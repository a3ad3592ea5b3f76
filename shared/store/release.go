package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
)

// ReleasesCollection holds the locks that keep two runners from running
// Helm on the same release at once.
const ReleasesCollection = "releases"

type releaseLockDoc struct {
	Owner   string    `firestore:"owner"`
	Expires time.Time `firestore:"expires"`
}

// LockRelease takes the cross-runner lock of a Helm release (key such as
// "namespace/release"), waiting while another owner holds it, for at most
// hold: a lock whose holder died expires then. It polls every poll
// interval until ctx ends. The returned unlock frees the lock if owner
// still holds it.
func (s *Store) LockRelease(ctx context.Context, key, owner string, hold, poll time.Duration) (unlock func(), err error) {
	if key == "" || owner == "" || hold <= 0 {
		return nil, fmt.Errorf("lock release %q: %w", key, ErrInvalid)
	}
	if poll <= 0 {
		poll = time.Second
	}
	ref := s.client.Collection(ReleasesCollection).Doc(strings.ReplaceAll(key, "/", "~"))
	for {
		err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
			snap, err := tx.Get(ref)
			now := s.now()
			switch {
			case err == nil:
				var d releaseLockDoc
				if err := snap.DataTo(&d); err != nil {
					return err
				}
				if d.Owner != owner && now.Before(d.Expires) {
					return ErrLeased
				}
			case !isNotFound(err):
				return err
			}
			return tx.Set(ref, releaseLockDoc{Owner: owner, Expires: now.Add(hold)})
		})
		if err == nil {
			return func() {
				uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				_ = s.client.RunTransaction(uctx, func(ctx context.Context, tx *firestore.Transaction) error {
					snap, err := tx.Get(ref)
					if err != nil {
						return err
					}
					if o, _ := snap.DataAt("owner"); o != owner {
						return nil
					}
					return tx.Delete(ref)
				})
			}, nil
		}
		if ctx.Err() != nil {
			// The RPC may report the end of ctx as its own status error.
			return nil, fmt.Errorf("lock release %s: %w", key, ctx.Err())
		}
		if !errors.Is(err, ErrLeased) {
			return nil, fmt.Errorf("lock release %s: %w", key, translate(err))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock release %s: %w", key, ctx.Err())
		case <-time.After(poll):
		}
	}
}
