package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
)

// OAuthStatesCollection holds the OAuth flows in progress.
const OAuthStatesCollection = "oauth_states"

// ErrExpired reports an OAuth state used after its expiry.
var ErrExpired = errors.New("expired")

// OAuthState is one GitHub sign-in in progress: the random id sent to
// GitHub as (part of) the OAuth state parameter, the PKCE verifier of the
// flow and the caller who started it. It is single use: ConsumeOAuthState
// deletes it.
type OAuthState struct {
	// ID is the random, unguessable id of the flow.
	ID string
	// Verifier is the PKCE code verifier; sealed in Firestore.
	Verifier string
	// ExpiresAt is when the flow stops being accepted.
	ExpiresAt time.Time
	// Caller is the identity that started the flow (caller.Identity's
	// email, or "local"); the token the flow obtains is stored as that
	// caller's. The callback takes it from here, never from its request,
	// which comes from a browser without a Google identity.
	Caller string
}

type oauthStateDoc struct {
	Verifier  []byte    `firestore:"verifier"`
	ExpiresAt time.Time `firestore:"expires_at"`
	// Caller is empty in flows started before callers were recorded.
	Caller string `firestore:"caller"`
	// ExpireAt drives a TTL policy that deletes abandoned flows.
	ExpireAt time.Time `firestore:"expire_at"`
}

const verifierField = "verifier"

// PutOAuthState records a new sign-in flow; ID, Verifier, ExpiresAt and
// Caller are required. It returns ErrAlreadyExists if the id is taken.
func (s *Store) PutOAuthState(ctx context.Context, st OAuthState) error {
	if err := checkID("oauth state id", st.ID); err != nil {
		return fmt.Errorf("put oauth state: %w", err)
	}
	if st.Verifier == "" || st.ExpiresAt.IsZero() {
		return fmt.Errorf("put oauth state: missing verifier or expiry: %w", ErrInvalid)
	}
	if err := checkCaller(st.Caller); err != nil {
		return fmt.Errorf("put oauth state: %w", err)
	}
	ref := s.client.Collection(OAuthStatesCollection).Doc(st.ID)
	sealed, err := s.box.Seal([]byte(st.Verifier), sealAAD(ref, verifierField))
	if err != nil {
		return fmt.Errorf("put oauth state: %w", err)
	}
	doc := oauthStateDoc{Verifier: sealed, ExpiresAt: st.ExpiresAt, ExpireAt: st.ExpiresAt.Add(24 * time.Hour), Caller: st.Caller}
	if _, err := ref.Create(ctx, doc); err != nil {
		return fmt.Errorf("put oauth state: %w", translate(err))
	}
	return nil
}

// ConsumeOAuthState returns the flow with the given id and deletes it, in
// one transaction, so a state can be used once. It returns ErrNotFound for
// an unknown or already used id and ErrExpired (after deleting it) for a
// flow whose expiry is before now. A flow recorded without a caller (before
// callers were recorded) is consumed and refused with ErrInvalid.
func (s *Store) ConsumeOAuthState(ctx context.Context, id string, now time.Time) (*OAuthState, error) {
	if err := checkID("oauth state id", id); err != nil {
		return nil, fmt.Errorf("consume oauth state: %w", err)
	}
	ref := s.client.Collection(OAuthStatesCollection).Doc(id)
	var d oauthStateDoc
	err := s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		if err := snap.DataTo(&d); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		return tx.Delete(ref)
	})
	if err != nil {
		return nil, fmt.Errorf("consume oauth state: %w", translate(err))
	}
	if now.After(d.ExpiresAt) {
		return nil, fmt.Errorf("consume oauth state: %w", ErrExpired)
	}
	if d.Caller == "" {
		return nil, fmt.Errorf("consume oauth state: flow without a caller: %w", ErrInvalid)
	}
	plain, err := s.box.Open(d.Verifier, sealAAD(ref, verifierField))
	if err != nil {
		return nil, fmt.Errorf("consume oauth state: %w", err)
	}
	return &OAuthState{ID: id, Verifier: string(plain), ExpiresAt: d.ExpiresAt, Caller: d.Caller}, nil
}
