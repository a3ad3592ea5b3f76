// Package repos tracks and untracks GitHub repositories (PrivateAPI's
// GET /api/v0/github/repositories/tracked and POST and DELETE
// /api/v0/github/repositories/{user}/{repo}).
//
// Tracking creates a push webhook on GitHub with a fresh random secret
// (content type json, TLS verification on unless the public URL is plain
// HTTP) and stores the repository, hook id and sealed secret. Untracking
// deletes the hook (a hook already gone from GitHub is fine) and the
// repository record; the job history and events are kept.
package repos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/functions/internal/web"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Store is the persistence the handler needs.
type Store interface {
	Repositories(ctx context.Context) ([]store.Repository, error)
	Repository(ctx context.Context, owner, name string) (*store.Repository, error)
	TrackRepository(ctx context.Context, r store.Repository) error
	UntrackRepository(ctx context.Context, owner, name string) error
	Token(ctx context.Context, login string) (*store.Token, error)
	LatestToken(ctx context.Context) (*store.Token, error)
}

// Handler serves the tracking routes.
type Handler struct {
	store     Store
	client    func(token string) *github.Client
	publicURL *url.URL
	log       *slog.Logger
}

// New returns a Handler. publicURL is the base URL GitHub reaches
// PublicAPI at (PUBLIC_HTTP_HOST); client builds a GitHub API client for a
// token.
func New(st Store, client func(token string) *github.Client, publicURL *url.URL, log *slog.Logger) (*Handler, error) {
	if st == nil || client == nil || publicURL == nil || log == nil {
		return nil, errors.New("repos: store, client, public URL and logger are required")
	}
	if publicURL.Scheme != "http" && publicURL.Scheme != "https" || publicURL.Host == "" {
		return nil, fmt.Errorf("repos: public URL %q must be an absolute http(s) URL", publicURL)
	}
	return &Handler{store: st, client: client, publicURL: publicURL, log: log}, nil
}

// Register adds the routes to m.
func (h *Handler) Register(m *web.Mux) {
	m.Handle("GET /api/v0/github/repositories/tracked", h.handleList)
	m.Handle("POST /api/v0/github/repositories/{user}/{repo}", h.handleTrack)
	m.Handle("DELETE /api/v0/github/repositories/{user}/{repo}", h.handleUntrack)
}

// repoJSON is a tracked repository as the API shows it: never the secret.
type repoJSON struct {
	Owner      string    `json:"owner"`
	Name       string    `json:"name"`
	FullName   string    `json:"full_name"`
	HookID     int64     `json:"web_hook_id"`
	TrackedBy  string    `json:"tracked_by"`
	TrackedAt  time.Time `json:"tracked_at"`
	AutoBuild  bool      `json:"auto_build"`
	AutoDeploy bool      `json:"auto_deploy"`
	LatestJob  string    `json:"latest_job_id,omitempty"`
	PendingJob string    `json:"pending_job_id,omitempty"`
}

func toJSON(r store.Repository) repoJSON {
	return repoJSON{
		Owner: r.Owner, Name: r.Name, FullName: r.Owner + "/" + r.Name, HookID: r.HookID,
		TrackedBy: r.TrackedBy, TrackedAt: r.TrackedAt.UTC(),
		AutoBuild: r.Triggers.AutoBuild, AutoDeploy: r.Triggers.AutoDeploy,
		LatestJob: r.LatestJobID, PendingJob: r.PendingJobID,
	}
}

// handleList handles the GET /api/v0/github/repositories/tracked route.
func (h *Handler) handleList(w http.ResponseWriter, r *http.Request) error {
	list, err := h.store.Repositories(r.Context())
	if err != nil {
		return fmt.Errorf("list tracked repositories: %w", err)
	}
	out := make([]repoJSON, 0, len(list))
	for _, repo := range list {
		out = append(out, toJSON(repo))
	}
	return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "repositories": out})
}

// GitHub's rules for owner (user or organization) and repository names.
var (
	validOwner = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)
	validName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

func pathRepo(r *http.Request) (owner, name string, err error) {
	owner, name = r.PathValue("user"), r.PathValue("repo")
	if !validOwner.MatchString(owner) || !validName.MatchString(name) || name == "." || name == ".." {
		return "", "", web.Errorf(http.StatusBadRequest, nil, "%q is not a valid GitHub repository", owner+"/"+name)
	}
	return owner, name, nil
}

// token returns the GitHub token to act with: the login named by the
// login query parameter, else the most recent sign-in.
func (h *Handler) token(ctx context.Context, login string) (*store.Token, error) {
	var (
		tok *store.Token
		err error
	)
	if login != "" {
		tok, err = h.store.Token(ctx, login)
	} else {
		tok, err = h.store.LatestToken(ctx)
	}
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		if login != "" {
			return nil, web.Errorf(http.StatusUnauthorized, err, "GitHub user %q has not signed in; start at /api/v0/github/login_url", login)
		}
		return nil, web.Errorf(http.StatusUnauthorized, err, "nobody has signed in with GitHub; start at /api/v0/github/login_url")
	case err != nil:
		return nil, fmt.Errorf("read GitHub token: %w", err)
	}
	return tok, nil
}

// webhookURL is where GitHub delivers a repository's pushes.
func (h *Handler) webhookURL(owner, name string) string {
	u := *h.publicURL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v0/github/repositories/" + url.PathEscape(owner) + "/" + url.PathEscape(name) + "/web_hook"
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// handleTrack handles the POST /api/v0/github/repositories/{user}/{repo}
// route. The optional login query parameter picks whose token creates the
// hook; by default the latest signed-in user's.
func (h *Handler) handleTrack(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	owner, name, err := pathRepo(r)
	if err != nil {
		return err
	}
	switch _, err := h.store.Repository(ctx, owner, name); {
	case err == nil:
		return web.Errorf(http.StatusConflict, nil, "repository %s/%s is already tracked", owner, name)
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("look up %s/%s: %w", owner, name, err)
	}
	tok, err := h.token(ctx, r.URL.Query().Get("login"))
	if err != nil {
		return err
	}

	secretBytes := make([]byte, 32)
	rand.Read(secretBytes)
	secret := hex.EncodeToString(secretBytes)
	insecure := "0"
	if h.publicURL.Scheme == "http" {
		insecure = "1"
	}
	gh := h.client(tok.AccessToken)
	hook, _, err := gh.Repositories.CreateHook(ctx, owner, name, &github.Hook{
		Config: &github.HookConfig{
			URL: github.String(h.webhookURL(owner, name)), ContentType: github.String("json"),
			Secret: github.String(secret), InsecureSSL: github.String(insecure),
		},
		Events: []string{"push"},
		Active: github.Bool(true),
	})
	if err != nil {
		return gitHubError(err, "create the webhook of "+owner+"/"+name)
	}

	repo := store.Repository{
		Owner: owner, Name: name, HookID: hook.GetID(), WebhookSecret: []byte(secret),
		TrackedBy: tok.Login, Triggers: store.DefaultTriggers(),
	}
	if err := h.store.TrackRepository(ctx, repo); err != nil {
		// Undo on GitHub what could not be recorded, so no orphan hook
		// keeps delivering to a repository we do not know.
		if _, derr := gh.Repositories.DeleteHook(context.WithoutCancel(ctx), owner, name, hook.GetID()); derr != nil && !isNotFound(derr) {
			h.log.ErrorContext(ctx, "orphan webhook left on GitHub", "repo", owner+"/"+name, "hook_id", hook.GetID(), "err", derr.Error())
		}
		if errors.Is(err, store.ErrAlreadyExists) {
			return web.Errorf(http.StatusConflict, err, "repository %s/%s is already tracked", owner, name)
		}
		return fmt.Errorf("track %s/%s: %w", owner, name, err)
	}
	stored, err := h.store.Repository(ctx, owner, name)
	if err != nil {
		return fmt.Errorf("read back %s/%s: %w", owner, name, err)
	}
	h.log.InfoContext(ctx, "repository tracked", "repo", owner+"/"+name, "hook_id", hook.GetID(), "login", tok.Login)
	return web.JSON(w, http.StatusCreated, map[string]any{"ok": true, "repository": toJSON(*stored)})
}

// handleUntrack handles the DELETE /api/v0/github/repositories/{user}/{repo}
// route. With force=true the repository is untracked even if GitHub refuses
// to delete the hook (for a revoked token); the hook then stays on GitHub
// and its deliveries are answered 404.
func (h *Handler) handleUntrack(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	owner, name, err := pathRepo(r)
	if err != nil {
		return err
	}
	repo, err := h.store.Repository(ctx, owner, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return web.Errorf(http.StatusNotFound, err, "repository %s/%s is not tracked", owner, name)
	case err != nil:
		return fmt.Errorf("look up %s/%s: %w", owner, name, err)
	}
	force := r.URL.Query().Get("force") == "true"
	hookDeleted := false
	login := firstNonEmpty(r.URL.Query().Get("login"), repo.TrackedBy)
	tok, err := h.token(ctx, login)
	if err == nil {
		_, err = h.client(tok.AccessToken).Repositories.DeleteHook(ctx, repo.Owner, repo.Name, repo.HookID)
		switch {
		case err == nil:
			hookDeleted = true
		case isNotFound(err):
			hookDeleted, err = true, nil // already gone
		default:
			err = gitHubError(err, "delete the webhook of "+owner+"/"+name)
		}
	}
	if err != nil && !force {
		return err
	}
	if err := h.store.UntrackRepository(ctx, repo.Owner, repo.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("untrack %s/%s: %w", owner, name, err)
	}
	h.log.InfoContext(ctx, "repository untracked", "repo", owner+"/"+name, "hook_deleted", hookDeleted)
	return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "repository": repo.Owner + "/" + repo.Name, "web_hook_deleted": hookDeleted})
}

func isNotFound(err error) bool {
	var er *github.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotFound
}

// gitHubError translates a GitHub API failure into a public error without
// echoing GitHub's response (which may contain URLs with tokens).
func gitHubError(err error, doing string) error {
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		switch er.Response.StatusCode {
		case http.StatusUnauthorized:
			return web.Errorf(http.StatusUnauthorized, err, "GitHub rejected the token while trying to %s; sign in again", doing)
		case http.StatusForbidden:
			return web.Errorf(http.StatusForbidden, err, "GitHub refused to %s: the user must be a repository admin and grant admin:repo_hook", doing)
		case http.StatusNotFound:
			return web.Errorf(http.StatusNotFound, err, "GitHub could not %s: repository not found, or the token cannot see it", doing)
		case http.StatusUnprocessableEntity:
			return web.Errorf(http.StatusUnprocessableEntity, err, "GitHub refused to %s: %s", doing, er.Message)
		}
	}
	return web.Errorf(http.StatusBadGateway, err, "could not reach GitHub to %s", doing)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
