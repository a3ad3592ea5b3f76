// Package oauth signs users in with GitHub (PrivateAPI's
// GET /api/v0/github/login_url and GET /api/v0/github/oauth_callback, the
// latter also on PublicAPI)
// using the OAuth web flow with a signed, expiring, single-use state and
// PKCE (S256), and stores each user's token sealed.
//
// Tokens belong to the caller who asked for login_url (a Google identity
// in IAM mode, caller.Local locally): the flow records that caller, and
// the callback stores the token as the flow's caller's. The callback never
// looks at its own request's identity: it runs on PublicAPI, reached by a
// browser that has none. A login_url is therefore a capability: whoever
// completes it hands their GitHub token to the caller who asked for it.
//
// The state sent to GitHub is "<id>.<expiry>.<mac>": a random flow id, the
// flow's expiry (Unix seconds) and an HMAC-SHA256 of both. A forged or
// expired state is rejected before any storage is touched; a valid one is
// consumed from Firestore together with the flow's PKCE verifier, so it
// works once.
package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
	"golang.org/x/oauth2"

	"github.com/kube-git-deploy/kube-git-deploy/functions/internal/web"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Scopes requested: admin:repo_hook creates and deletes webhooks;
// repo:status and repo_deployment let the runner post commit statuses and
// Deployments (they grant no access to code); repo, which includes both, is
// added only when private repositories must be cloned.
const (
	ScopeHooks       = "admin:repo_hook"
	ScopeStatuses    = "repo:status"
	ScopeDeployments = "repo_deployment"
	ScopePrivate     = "repo"
)

// Store is the persistence the handler needs.
type Store interface {
	PutOAuthState(ctx context.Context, st store.OAuthState) error
	ConsumeOAuthState(ctx context.Context, id string, now time.Time) (*store.OAuthState, error)
	PutToken(ctx context.Context, t store.Token) error
}

// Config configures the handler.
type Config struct {
	// ClientID and ClientSecret are the GitHub OAuth App's.
	ClientID, ClientSecret string
	// WebURL is GitHub's web base URL ("https://github.com/", or a GitHub
	// Enterprise Server's), where the authorize and token endpoints live.
	WebURL string
	// RedirectURL is the callback registered with the OAuth App.
	RedirectURL string
	// PrivateRepos adds the repo scope, needed to clone private repositories.
	PrivateRepos bool
	// StateKey signs states; at least 32 bytes.
	StateKey []byte
	// StateTTL is how long a sign-in may take; 0 means 10 minutes (GitHub's
	// codes expire after 10 minutes too).
	StateTTL time.Duration
	// Identify tells who calls login_url (caller.Identify with the
	// configured mode); required.
	Identify func(r *http.Request) (caller.Identity, error)
}

// Handler serves the sign-in routes.
type Handler struct {
	cfg    Config
	oauth  oauth2.Config
	store  Store
	client func(token string) *github.Client
	http   *http.Client
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Handler. client builds a GitHub API client for a token;
// httpClient is used for the token exchange; now may be nil.
func New(cfg Config, st Store, client func(token string) *github.Client, httpClient *http.Client, log *slog.Logger, now func() time.Time) (*Handler, error) {
	switch {
	case cfg.ClientID == "" || cfg.ClientSecret == "":
		return nil, errors.New("oauth: GitHub client id and secret are required")
	case cfg.WebURL == "" || cfg.RedirectURL == "":
		return nil, errors.New("oauth: GitHub web URL and redirect URL are required")
	case len(cfg.StateKey) < 32:
		return nil, errors.New("oauth: state key must be at least 32 bytes")
	case cfg.Identify == nil:
		return nil, errors.New("oauth: identify is required")
	case st == nil || client == nil || httpClient == nil || log == nil:
		return nil, errors.New("oauth: store, client, http client and logger are required")
	}
	if cfg.StateTTL == 0 {
		cfg.StateTTL = 10 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	base := strings.TrimSuffix(cfg.WebURL, "/")
	scopes := []string{ScopeHooks, ScopeStatuses, ScopeDeployments}
	if cfg.PrivateRepos {
		scopes = append(scopes, ScopePrivate)
	}
	return &Handler{
		cfg: cfg,
		oauth: oauth2.Config{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: cfg.RedirectURL, Scopes: scopes,
			Endpoint: oauth2.Endpoint{
				AuthURL: base + "/login/oauth/authorize", TokenURL: base + "/login/oauth/access_token",
				AuthStyle: oauth2.AuthStyleInParams,
			},
		},
		store: st, client: client, http: httpClient, log: log, now: now,
	}, nil
}

// Register adds both routes to m (PrivateAPI).
func (h *Handler) Register(m *web.Mux) {
	m.Handle("GET /api/v0/github/login_url", h.handleLoginURL)
	h.RegisterCallback(m)
}

// RegisterCallback adds only the callback route to m (PublicAPI, which a
// browser can reach in the cloud). A callback is only accepted with a
// state that login_url issued, signed, unexpired and not yet used.
func (h *Handler) RegisterCallback(m *web.Mux) {
	m.Handle("GET /api/v0/github/oauth_callback", h.handleCallback)
}

// handleLoginURL handles the GET /api/v0/github/login_url route: it starts
// a flow for the caller and returns the URL to send the user to.
func (h *Handler) handleLoginURL(w http.ResponseWriter, r *http.Request) error {
	who, err := h.cfg.Identify(r)
	if err != nil {
		return web.Errorf(http.StatusUnauthorized, err, "%s", err.Error())
	}
	id := rand.Text()
	expires := h.now().Add(h.cfg.StateTTL).Truncate(time.Second)
	verifier := oauth2.GenerateVerifier()
	if err := h.store.PutOAuthState(r.Context(), store.OAuthState{ID: id, Verifier: verifier, ExpiresAt: expires, Caller: who.Email}); err != nil {
		return fmt.Errorf("start sign-in: %w", err)
	}
	u := h.oauth.AuthCodeURL(h.signState(id, expires), oauth2.S256ChallengeOption(verifier))
	return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "login_url": u, "expires_at": expires.UTC()})
}

// handleCallback handles the GET /api/v0/github/oauth_callback route:
// GitHub sends the user back here with code and state. The token is
// stored for the caller recorded in the flow, whoever sends this request.
func (h *Handler) handleCallback(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return web.Errorf(http.StatusBadRequest, nil, "GitHub sign-in failed: %s", firstNonEmpty(q.Get("error_description"), e))
	}
	code, state := q.Get("code"), q.Get("state")
	if code == "" || state == "" {
		return web.Errorf(http.StatusBadRequest, nil, "code and state are required")
	}
	id, err := h.checkState(state)
	if err != nil {
		return web.Errorf(http.StatusBadRequest, err, "invalid or expired sign-in state; start again from /api/v0/github/login_url")
	}
	flow, err := h.store.ConsumeOAuthState(r.Context(), id, h.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired), errors.Is(err, store.ErrInvalid):
		return web.Errorf(http.StatusBadRequest, err, "sign-in state already used or expired; start again from /api/v0/github/login_url")
	case err != nil:
		return fmt.Errorf("finish sign-in: %w", err)
	}

	ctx := context.WithValue(r.Context(), oauth2.HTTPClient, h.http)
	tok, err := h.oauth.Exchange(ctx, code, oauth2.VerifierOption(flow.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			return web.Errorf(http.StatusBadRequest, err, "GitHub refused the code: %s", firstNonEmpty(re.ErrorDescription, re.ErrorCode))
		}
		return web.Errorf(http.StatusBadGateway, err, "could not exchange the code with GitHub")
	}
	user, _, err := h.client(tok.AccessToken).Users.Get(r.Context(), "")
	if err != nil || user.GetLogin() == "" {
		return web.Errorf(http.StatusBadGateway, err, "could not read the signed-in GitHub user")
	}
	scopes := grantedScopes(tok)
	if err := h.store.PutToken(r.Context(), store.Token{Caller: flow.Caller, Login: user.GetLogin(), AccessToken: tok.AccessToken, Scopes: scopes}); err != nil {
		return fmt.Errorf("store token of %s: %w", user.GetLogin(), err)
	}
	var missing []string
	for _, s := range h.oauth.Scopes {
		covered := (s == ScopeStatuses || s == ScopeDeployments) && slices.Contains(scopes, ScopePrivate)
		if !slices.Contains(scopes, s) && !covered {
			missing = append(missing, s)
		}
	}
	h.log.InfoContext(r.Context(), "signed in", "login", user.GetLogin(), "scopes", scopes, "caller", flow.Caller)
	// caller shows whom the token now serves, so a user who completed
	// someone else's login_url can tell.
	return web.JSON(w, http.StatusOK, map[string]any{
		"ok": true, "login": user.GetLogin(), "caller": flow.Caller, "scopes": scopes, "missing_scopes": nonNil(missing),
	})
}

// grantedScopes returns the scopes GitHub granted, which can be fewer than
// requested ("scope" is comma separated in GitHub's answer).
func grantedScopes(tok *oauth2.Token) []string {
	raw, _ := tok.Extra("scope").(string)
	return nonNil(strings.FieldsFunc(raw, func(r rune) bool { return r == ',' || r == ' ' }))
}

func (h *Handler) mac(payload string) string {
	m := hmac.New(sha256.New, h.cfg.StateKey)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (h *Handler) signState(id string, expires time.Time) string {
	payload := id + "." + strconv.FormatInt(expires.Unix(), 10)
	return payload + "." + h.mac(payload)
}

// ErrBadState reports a state that was not issued by this server or has
// expired.
var ErrBadState = errors.New("bad oauth state")

// checkState verifies a state's signature and expiry and returns its flow id.
func (h *Handler) checkState(state string) (string, error) {
	parts := strings.Split(state, ".")
	if len(parts) != 3 {
		return "", ErrBadState
	}
	payload := parts[0] + "." + parts[1]
	if !hmac.Equal([]byte(parts[2]), []byte(h.mac(payload))) {
		return "", fmt.Errorf("%w: signature mismatch", ErrBadState)
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", ErrBadState
	}
	if h.now().After(time.Unix(exp, 0)) {
		return "", fmt.Errorf("%w: expired", ErrBadState)
	}
	return parts[0], nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
