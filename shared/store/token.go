package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/firestore"
)

// Token is a GitHub OAuth token that one caller (a Google identity, or
// "local") obtained by signing in as one GitHub user. A caller acts on
// GitHub only with tokens of its own: tokens are stored and looked up by
// caller and login together.
type Token struct {
	// Caller is the identity that signed in (caller.Identity's email, or
	// "local"); compared case-insensitively and stored lowercased.
	Caller string
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
	Caller    string    `firestore:"caller"`
	Login     string    `firestore:"login"`
	Token     []byte    `firestore:"token"`
	Scopes    []string  `firestore:"scopes"`
	CreatedAt time.Time `firestore:"created_at"`
}

const tokenField = "token"

// maxCallerLen bounds a caller identity (an email is at most 254 bytes).
const maxCallerLen = 320

// TokenKey returns the document id of caller's token for login:
// "<sha256 of the lowercased caller, hex>~<lowercased login>". The hash
// keeps any identity (an email may hold characters a document id cannot)
// to a fixed-size, id-safe prefix. Documents of the earlier scheme (id =
// login alone, no caller) are never read.
func TokenKey(caller, login string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(caller)))
	return hex.EncodeToString(sum[:]) + "~" + strings.ToLower(login)
}

func checkCaller(caller string) error {
	if strings.TrimSpace(caller) == "" || len(caller) > maxCallerLen || !utf8.ValidString(caller) {
		return fmt.Errorf("caller %q: %w", caller, ErrInvalid)
	}
	return nil
}

func (s *Store) tokenRef(caller, login string) *firestore.DocumentRef {
	return s.client.Collection(TokensCollection).Doc(TokenKey(caller, login))
}

// PutToken stores t, replacing the token the same caller obtained for the
// same login. Tokens of other callers, even for the same login, are
// untouched.
func (s *Store) PutToken(ctx context.Context, t Token) error {
	if err := checkCaller(t.Caller); err != nil {
		return fmt.Errorf("put token: %w", err)
	}
	if err := checkName("login", t.Login); err != nil {
		return fmt.Errorf("put token: %w", err)
	}
	if t.AccessToken == "" {
		return fmt.Errorf("put token of %s: empty access token: %w", t.Login, ErrInvalid)
	}
	ref := s.tokenRef(t.Caller, t.Login)
	sealed, err := s.box.Seal([]byte(t.AccessToken), sealAAD(ref, tokenField))
	if err != nil {
		return fmt.Errorf("put token of %s: %w", t.Login, err)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = s.now()
	}
	doc := tokenDoc{Caller: strings.ToLower(t.Caller), Login: t.Login, Token: sealed, Scopes: t.Scopes, CreatedAt: t.CreatedAt}
	if _, err := ref.Set(ctx, doc); err != nil {
		return fmt.Errorf("put token of %s: %w", t.Login, translate(err))
	}
	return nil
}

// LatestToken returns the token caller stored most recently, of whichever
// login, or ErrNotFound when caller has not signed in. Tokens of other
// callers are never returned.
func (s *Store) LatestToken(ctx context.Context, caller string) (*Token, error) {
	if err := checkCaller(caller); err != nil {
		return nil, fmt.Errorf("get latest token: %w", err)
	}
	// An equality filter alone needs no composite index; a caller has one
	// token per GitHub login it signed in as, so sorting here is cheap.
	snaps, err := s.client.Collection(TokensCollection).Where("caller", "==", strings.ToLower(caller)).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("get latest token: %w", translate(err))
	}
	var (
		latest *firestore.DocumentSnapshot
		at     time.Time
	)
	for _, snap := range snaps {
		v, err := snap.DataAt("created_at")
		if err != nil {
			continue
		}
		if t, ok := v.(time.Time); ok && (latest == nil || t.After(at) || (t.Equal(at) && snap.Ref.ID > latest.Ref.ID)) {
			latest, at = snap, t
		}
	}
	if latest == nil {
		return nil, fmt.Errorf("get latest token: %w", ErrNotFound)
	}
	return s.openToken(latest)
}

// Token returns the token caller obtained for login (both any case), or
// ErrNotFound.
func (s *Store) Token(ctx context.Context, caller, login string) (*Token, error) {
	if err := checkCaller(caller); err != nil {
		return nil, fmt.Errorf("get token: %w", err)
	}
	if err := checkName("login", login); err != nil {
		return nil, fmt.Errorf("get token: %w", err)
	}
	snap, err := s.tokenRef(caller, login).Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("get token of %s: %w", login, translate(err))
	}
	return s.openToken(snap)
}

// RepositoryToken returns the token r was tracked with: the one its
// tracker (TrackedByCaller) obtained for TrackedBy. It returns ErrNotFound
// if that token is gone, or if r was tracked before trackers were recorded
// (no TrackedByCaller): such a repository must be tracked again.
func (s *Store) RepositoryToken(ctx context.Context, r *Repository) (*Token, error) {
	if r == nil || r.TrackedByCaller == "" || r.TrackedBy == "" {
		return nil, fmt.Errorf("get repository token: no tracker recorded (track the repository again): %w", ErrNotFound)
	}
	t, err := s.Token(ctx, r.TrackedByCaller, r.TrackedBy)
	if err != nil {
		return nil, fmt.Errorf("get repository token of %s/%s: %w", r.Owner, r.Name, err)
	}
	return t, nil
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
	return &Token{Caller: d.Caller, Login: d.Login, AccessToken: string(plain), Scopes: d.Scopes, CreatedAt: d.CreatedAt}, nil
}
