package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
)

// Token is a GitHub OAuth token of one user.
type Token struct {
	// Login is the GitHub login as displayed; lookups ignore case.
	Login string
	// AccessToken is the OAuth access token. It is sealed in Firestore and
	// plaintext only here. It must not be empty.
	AccessToken string
	// Scopes are the OAuth scopes GitHub granted.
	Scopes []string
	// CreatedAt is when the token was stored; PutToken sets it when zero.
	CreatedAt time.Time
}

type tokenDoc struct {
	Login     string    `firestore:"login"`
	Token     []byte    `firestore:"token"`
	Scopes    []string  `firestore:"scopes"`
	CreatedAt time.Time `firestore:"created_at"`
}

const tokenField = "token"

func (s *Store) tokenRef(login string) *firestore.DocumentRef {
	return s.client.Collection(TokensCollection).Doc(strings.ToLower(login))
}

// PutToken stores t, replacing any token of the same login.
func (s *Store) PutToken(ctx context.Context, t Token) error {
	if err := checkName("login", t.Login); err != nil {
		return fmt.Errorf("put token: %w", err)
	}
	if t.AccessToken == "" {
		return fmt.Errorf("put token of %s: empty access token: %w", t.Login, ErrInvalid)
	}
	ref := s.tokenRef(t.Login)
	sealed, err := s.box.Seal([]byte(t.AccessToken), sealAAD(ref, tokenField))
	if err != nil {
		return fmt.Errorf("put token of %s: %w", t.Login, err)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = s.now()
	}
	doc := tokenDoc{Login: t.Login, Token: sealed, Scopes: t.Scopes, CreatedAt: t.CreatedAt}
	if _, err := ref.Set(ctx, doc); err != nil {
		return fmt.Errorf("put token of %s: %w", t.Login, translate(err))
	}
	return nil
}

// LatestToken returns the most recently stored token of any login, or
// ErrNotFound when nobody has signed in.
func (s *Store) LatestToken(ctx context.Context) (*Token, error) {
	snaps, err := s.client.Collection(TokensCollection).OrderBy("created_at", firestore.Desc).Limit(1).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("get latest token: %w", translate(err))
	}
	if len(snaps) == 0 {
		return nil, fmt.Errorf("get latest token: %w", ErrNotFound)
	}
	return s.openToken(snaps[0])
}

// Token returns the token of login (any case), or ErrNotFound.
func (s *Store) Token(ctx context.Context, login string) (*Token, error) {
	if err := checkName("login", login); err != nil {
		return nil, fmt.Errorf("get token: %w", err)
	}
	ref := s.tokenRef(login)
	snap, err := ref.Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("get token of %s: %w", login, translate(err))
	}
	return s.openToken(snap)
}

func (s *Store) openToken(snap *firestore.DocumentSnapshot) (*Token, error) {
	var d tokenDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, fmt.Errorf("get token %s: decode: %w", snap.Ref.ID, err)
	}
	plain, err := s.box.Open(d.Token, sealAAD(snap.Ref, tokenField))
	if err != nil {
		return nil, fmt.Errorf("get token %s: %w", snap.Ref.ID, err)
	}
	return &Token{Login: d.Login, AccessToken: string(plain), Scopes: d.Scopes, CreatedAt: d.CreatedAt}, nil
}
