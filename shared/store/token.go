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
	var d tokenDoc
	if err := snap.DataTo(&d); err != nil {
		return nil, fmt.Errorf("get token of %s: decode: %w", login, err)
	}
	plain, err := s.box.Open(d.Token, sealAAD(ref, tokenField))
	if err != nil {
		return nil, fmt.Errorf("get token of %s: %w", login, err)
	}
	return &Token{Login: d.Login, AccessToken: string(plain), Scopes: d.Scopes, CreatedAt: d.CreatedAt}, nil
}
