// Package repos tracks and untracks GitHub repositories and sets their
// deploy policies (PrivateAPI's GET /api/v0/github/repositories/tracked,
// POST and DELETE /api/v0/github/repositories/{user}/{repo} and PUT
// /api/v0/github/repositories/{user}/{repo}/policy).
//
// Tracking creates a push webhook on GitHub with a fresh random secret
// (content type json, TLS verification on unless the public URL is plain
// HTTP) and stores the repository, hook id, sealed secret, deploy policy
// and who tracked it. Untracking deletes the hook (a hook already gone from
// GitHub is fine) and the repository record; the job history and events
// are kept.
//
// A caller acts on GitHub only with tokens it obtained itself (see
// package oauth): the login query parameter picks among the caller's own
// tokens, never another caller's. In IAM mode only the caller who tracked
// a repository, or one of its policy's operators, may change its policy or
// untrack it; locally (caller.Local) everything is allowed.
package repos

import (
	"cmp"
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
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Store is the persistence the handler needs.
type Store interface {
	Repositories(ctx context.Context) ([]store.Repository, error)
	Repository(ctx context.Context, owner, name string) (*store.Repository, error)
	TrackRepository(ctx context.Context, r store.Repository) error
	UntrackRepository(ctx context.Context, owner, name string) error
	SetPolicy(ctx context.Context, owner, name string, p store.Policy) error
	SetGitHubReports(ctx context.Context, owner, name string, on bool) error
	Token(ctx context.Context, caller, login string) (*store.Token, error)
	LatestToken(ctx context.Context, caller string) (*store.Token, error)
}

// Config holds a Handler's dependencies; every field is required.
type Config struct {
	Store Store
	// GitHub builds a GitHub API client for a token.
	GitHub func(token string) *github.Client
	// PublicURL is the base URL GitHub reaches PublicAPI at
	// (PUBLIC_HTTP_HOST).
	PublicURL *url.URL
	// Identify tells who calls (caller.Identify with the configured mode).
	Identify func(r *http.Request) (caller.Identity, error)
	Log      *slog.Logger
}

// Handler serves the tracking routes.
type Handler struct {
	store     Store
	client    func(token string) *github.Client
	publicURL *url.URL
	identify  func(r *http.Request) (caller.Identity, error)
	log       *slog.Logger
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.GitHub == nil || cfg.PublicURL == nil || cfg.Identify == nil || cfg.Log == nil {
		return nil, errors.New("repos: store, GitHub client, public URL, identify and logger are required")
	}
	if cfg.PublicURL.Scheme != "http" && cfg.PublicURL.Scheme != "https" || cfg.PublicURL.Host == "" {
		return nil, fmt.Errorf("repos: public URL %q must be an absolute http(s) URL", cfg.PublicURL)
	}
	return &Handler{store: cfg.Store, client: cfg.GitHub, publicURL: cfg.PublicURL, identify: cfg.Identify, log: cfg.Log}, nil
}

// Register adds the routes to m.
func (h *Handler) Register(m *web.Mux) {
	m.Handle("GET /api/v0/github/repositories/tracked", h.handleList)
	m.Handle("POST /api/v0/github/repositories/{user}/{repo}", h.handleTrack)
	m.Handle("DELETE /api/v0/github/repositories/{user}/{repo}", h.handleUntrack)
	m.Handle("PUT /api/v0/github/repositories/{user}/{repo}/policy", h.handleSetPolicy)
	m.Handle("PUT /api/v0/github/repositories/{user}/{repo}/reports", h.handleSetReports)
}

// repoJSON is a tracked repository as the API shows it: never the secret.
type repoJSON struct {
	Owner           string      `json:"owner"`
	Name            string      `json:"name"`
	FullName        string      `json:"full_name"`
	HookID          int64       `json:"web_hook_id"`
	TrackedBy       string      `json:"tracked_by"`
	TrackedByCaller string      `json:"tracked_by_caller"`
	TrackedAt       time.Time   `json:"tracked_at"`
	AutoBuild       bool        `json:"auto_build"`
	AutoDeploy      bool        `json:"auto_deploy"`
	LatestJob       string      `json:"latest_job_id,omitempty"`
	Policy          policyJSON  `json:"policy"`
	Reports         reportsJSON `json:"reports"`
}

// reportsJSON says where a repository's jobs are reported besides the API.
type reportsJSON struct {
	// GitHub: commit statuses and Deployments on GitHub (default true).
	GitHub *bool `json:"github"`
}

func toJSON(r store.Repository) repoJSON {
	return repoJSON{
		Owner: r.Owner, Name: r.Name, FullName: r.Owner + "/" + r.Name, HookID: r.HookID,
		TrackedBy: r.TrackedBy, TrackedByCaller: r.TrackedByCaller, TrackedAt: r.TrackedAt.UTC(),
		AutoBuild: r.Triggers.AutoBuild, AutoDeploy: r.Triggers.AutoDeploy,
		LatestJob: r.LatestJobID,
		Policy:    toPolicyJSON(r.Policy),
		Reports:   reportsJSON{GitHub: new(!r.GitHubReportsOff)},
	}
}

// caller returns who calls, or a 401.
func (h *Handler) caller(r *http.Request) (caller.Identity, error) {
	id, err := h.identify(r)
	if err != nil {
		return caller.Identity{}, web.Errorf(http.StatusUnauthorized, err, "%s", err.Error())
	}
	return id, nil
}

// handleList handles the GET /api/v0/github/repositories/tracked route.
func (h *Handler) handleList(w http.ResponseWriter, r *http.Request) error {
	if _, err := h.caller(r); err != nil {
		return err
	}
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

// GitHub's rules for owner (user or organization) and repository names;
// a login follows the owner rule.
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

// token returns the caller's own GitHub token to act with: its token of
// login when login is given, else the one it obtained most recently.
// Another caller's tokens are never used: a login the caller has not
// signed in as is a 401.
func (h *Handler) token(ctx context.Context, id caller.Identity, login string) (*store.Token, error) {
	var (
		tok *store.Token
		err error
	)
	if login != "" {
		if !validOwner.MatchString(login) {
			return nil, web.Errorf(http.StatusBadRequest, nil, "login %q is not a GitHub login", login)
		}
		tok, err = h.store.Token(ctx, id.Email, login)
	} else {
		tok, err = h.store.LatestToken(ctx, id.Email)
	}
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		if login != "" {
			return nil, web.Errorf(http.StatusUnauthorized, err, "sign in as %s first: you have no token of GitHub user %s; start at /api/v0/github/login_url", login, login)
		}
		return nil, web.Errorf(http.StatusUnauthorized, err, "sign in with GitHub first; start at /api/v0/github/login_url")
	case err != nil:
		return nil, fmt.Errorf("read GitHub token: %w", err)
	}
	return tok, nil
}

// mayManage reports whether id may change repo's policy (policy true) or
// untrack it (policy false): locally anyone; in IAM mode the caller who
// tracked it and its policy's operators. A repository tracked before
// trackers were recorded may be untracked by any caller (so that it can be
// tracked again, and owned), but its policy changed by none.
func mayManage(id caller.Identity, repo *store.Repository, policy bool) bool {
	switch {
	case id.Local:
		return true
	case repo.TrackedByCaller == "":
		return !policy
	}
	return strings.EqualFold(repo.TrackedByCaller, id.Email) || repo.Policy.IsOperator(id.Email)
}

// webhookURL is where GitHub delivers a repository's pushes.
func (h *Handler) webhookURL(owner, name string) string {
	u := *h.publicURL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v0/github/repositories/" + url.PathEscape(owner) + "/" + url.PathEscape(name) + "/web_hook"
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// handleTrack handles the POST /api/v0/github/repositories/{user}/{repo}
// route. The optional body {"policy": {...}} sets the deploy policy (a
// complete policy object; without one the repository gets
// store.DefaultPolicy). The optional login query parameter picks which of
// the caller's own tokens creates the hook; by default its most recent.
// Nothing reaches GitHub before the body is known to be valid.
func (h *Handler) handleTrack(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, err := h.caller(r)
	if err != nil {
		return err
	}
	owner, name, err := pathRepo(r)
	if err != nil {
		return err
	}
	var body trackBody
	if _, err := readJSON(r, &body); err != nil {
		return err
	}
	policy := store.DefaultPolicy(owner, name)
	if body.Policy != nil {
		policy = body.Policy.policy()
	}
	if err := validatePolicy(policy); err != nil {
		return err
	}
	switch _, err := h.store.Repository(ctx, owner, name); {
	case err == nil:
		return web.Errorf(http.StatusConflict, nil, "repository %s/%s is already tracked", owner, name)
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("look up %s/%s: %w", owner, name, err)
	}
	tok, err := h.token(ctx, id, r.URL.Query().Get("login"))
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
		TrackedBy: tok.Login, TrackedByCaller: id.Email, Triggers: store.DefaultTriggers(), Policy: policy,
	}
	if err := h.store.TrackRepository(ctx, repo); err != nil {
		// Undo on GitHub what could not be recorded, so no orphan hook
		// keeps delivering to a repository we do not know.
		if _, derr := gh.Repositories.DeleteHook(context.WithoutCancel(ctx), owner, name, hook.GetID()); derr != nil && !isNotFound(derr) {
			h.log.ErrorContext(ctx, "orphan webhook left on GitHub", "repo", owner+"/"+name, "hook_id", hook.GetID(), "err", derr.Error())
		}
		switch {
		case errors.Is(err, store.ErrAlreadyExists):
			return web.Errorf(http.StatusConflict, err, "repository %s/%s is already tracked", owner, name)
		case errors.Is(err, store.ErrInvalid):
			return invalidPolicy(err)
		}
		return fmt.Errorf("track %s/%s: %w", owner, name, err)
	}
	stored, err := h.store.Repository(ctx, owner, name)
	if err != nil {
		return fmt.Errorf("read back %s/%s: %w", owner, name, err)
	}
	h.log.InfoContext(ctx, "repository tracked", "repo", owner+"/"+name, "hook_id", hook.GetID(), "login", tok.Login, "caller", id.Email)
	return web.JSON(w, http.StatusCreated, map[string]any{"ok": true, "repository": toJSON(*stored)})
}

// handleUntrack handles the DELETE /api/v0/github/repositories/{user}/{repo}
// route. Only a caller allowed to manage the repository may (see
// mayManage); it deletes the hook with one of its own tokens: login's if
// given, else its token of the GitHub user who tracked the repository,
// else its most recent. With force=true the repository is untracked even
// if the hook cannot be deleted (a revoked token, or no token at all); the
// hook then stays on GitHub and its deliveries are answered 404.
func (h *Handler) handleUntrack(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, owner, name, repo, err := h.trackedRepo(r)
	if err != nil {
		return err
	}
	if !mayManage(id, repo, false) {
		return web.Errorf(http.StatusForbidden, nil, "only %s (who tracked %s/%s) and the operators of its policy may untrack it", repo.TrackedByCaller, owner, name)
	}
	force := r.URL.Query().Get("force") == "true"
	hookDeleted := false
	login := r.URL.Query().Get("login")
	if login == "" && repo.TrackedBy != "" && validOwner.MatchString(repo.TrackedBy) {
		if _, err := h.store.Token(ctx, id.Email, repo.TrackedBy); err == nil {
			login = repo.TrackedBy
		}
	}
	tok, err := h.token(ctx, id, login)
	if err == nil {
		_, err = h.client(tok.AccessToken).Repositories.DeleteHook(ctx, repo.Owner, repo.Name, repo.HookID)
		switch {
		case err == nil:
			hookDeleted = true
		case isNotFound(err) && strings.EqualFold(tok.Login, repo.TrackedBy):
			// The user who created the hook can no longer see it: gone.
			// For anyone else a 404 may just mean the repository is
			// invisible to them, so it stays an error.
			hookDeleted, err = true, nil
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
	h.log.InfoContext(ctx, "repository untracked", "repo", owner+"/"+name, "hook_deleted", hookDeleted, "caller", id.Email)
	return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "repository": repo.Owner + "/" + repo.Name, "web_hook_deleted": hookDeleted})
}

// trackedRepo returns the caller of r and the tracked repository its path
// names (404 if it is not tracked).
func (h *Handler) trackedRepo(r *http.Request) (id caller.Identity, owner, name string, repo *store.Repository, err error) {
	if id, err = h.caller(r); err != nil {
		return id, "", "", nil, err
	}
	if owner, name, err = pathRepo(r); err != nil {
		return id, "", "", nil, err
	}
	repo, err = h.store.Repository(r.Context(), owner, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return id, owner, name, nil, web.Errorf(http.StatusNotFound, err, "repository %s/%s is not tracked", owner, name)
	case err != nil:
		return id, owner, name, nil, fmt.Errorf("look up %s/%s: %w", owner, name, err)
	}
	return id, owner, name, repo, nil
}

// handleSetPolicy handles the PUT
// /api/v0/github/repositories/{user}/{repo}/policy route: the body, a
// complete policy object, replaces the repository's deploy policy. Only a
// caller allowed to manage the repository may (see mayManage).
func (h *Handler) handleSetPolicy(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, owner, name, repo, err := h.trackedRepo(r)
	if err != nil {
		return err
	}
	if !mayManage(id, repo, true) {
		if repo.TrackedByCaller == "" {
			return web.Errorf(http.StatusForbidden, nil, "%s/%s was tracked before trackers were recorded; untrack it and track it again to own its policy", owner, name)
		}
		return web.Errorf(http.StatusForbidden, nil, "only %s (who tracked %s/%s) and the operators of its policy may change it", repo.TrackedByCaller, owner, name)
	}
	var body policyJSON
	switch given, err := readJSON(r, &body); {
	case err != nil:
		return err
	case !given:
		return web.Errorf(http.StatusBadRequest, nil, "request body: a policy object is required")
	}
	policy := body.policy()
	if err := validatePolicy(policy); err != nil {
		return err
	}
	switch err := h.store.SetPolicy(ctx, owner, name, policy); {
	case errors.Is(err, store.ErrNotFound):
		return web.Errorf(http.StatusNotFound, err, "repository %s/%s is not tracked", owner, name)
	case errors.Is(err, store.ErrInvalid):
		return invalidPolicy(err)
	case err != nil:
		return fmt.Errorf("set policy of %s/%s: %w", owner, name, err)
	}
	h.log.InfoContext(ctx, "deploy policy changed", "repo", owner+"/"+name, "caller", id.Email)
	return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "repository": repo.Owner + "/" + repo.Name, "policy": toPolicyJSON(policy)})
}

// handleSetReports handles the PUT
// /api/v0/github/repositories/{user}/{repo}/reports route: {"github": bool}
// turns the commit statuses and Deployments the runner posts on GitHub on
// or off. Who may change the policy may change this.
func (h *Handler) handleSetReports(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id, owner, name, repo, err := h.trackedRepo(r)
	if err != nil {
		return err
	}
	if !mayManage(id, repo, true) {
		return web.Errorf(http.StatusForbidden, nil, "only %s (who tracked %s/%s) and the operators of its policy may change its reports", cmp.Or(repo.TrackedByCaller, "who tracks it"), owner, name)
	}
	var body reportsJSON
	switch given, err := readJSON(r, &body); {
	case err != nil:
		return err
	case !given || body.GitHub == nil:
		return web.Errorf(http.StatusBadRequest, nil, `request body: {"github": true} or {"github": false} is required`)
	}
	switch err := h.store.SetGitHubReports(ctx, owner, name, *body.GitHub); {
	case errors.Is(err, store.ErrNotFound):
		return web.Errorf(http.StatusNotFound, err, "repository %s/%s is not tracked", owner, name)
	case err != nil:
		return fmt.Errorf("set reports of %s/%s: %w", owner, name, err)
	}
	h.log.InfoContext(ctx, "GitHub reports changed", "repo", owner+"/"+name, "caller", id.Email, "github", *body.GitHub)
	return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "repository": repo.Owner + "/" + repo.Name, "reports": body})
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
