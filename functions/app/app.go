// Package app assembles the two HTTP functions, PrivateAPI (OAuth and
// repository tracking) and PublicAPI (GitHub webhooks), from the
// configuration: it is their composition root, the only place that builds
// the Firestore, Pub/Sub and HTTP clients.
package app

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/functions/internal/web"
	"github.com/kube-git-deploy/kube-git-deploy/functions/oauth"
	"github.com/kube-git-deploy/kube-git-deploy/functions/repos"
	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// App holds the two functions' handlers and the clients they share.
type App struct {
	// Private serves PrivateAPI; Public serves PublicAPI.
	Private, Public http.Handler

	firestore *firestore.Client
	pubsub    *pubsub.Client
	publisher *queue.Publisher
}

// New builds the clients and handlers. The clients connect lazily, so New
// does no network I/O. Close releases them.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	box, err := secret.NewBox(cfg.EncryptionKey, cfg.PreviousKeys...)
	if err != nil {
		return nil, fmt.Errorf("KGD_ENCRYPTION_KEY: %w", err)
	}
	stateKey, err := hkdf.Key(sha256.New, cfg.EncryptionKey, nil, "kube-git-deploy oauth state v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive oauth state key: %w", err)
	}
	fs, err := firestore.NewClient(ctx, cfg.Project)
	if err != nil {
		return nil, fmt.Errorf("firestore client: %w", err)
	}
	ps, err := pubsub.NewClient(ctx, cfg.Project)
	if err != nil {
		fs.Close()
		return nil, fmt.Errorf("pubsub client: %w", err)
	}
	a := &App{firestore: fs, pubsub: ps, publisher: queue.NewPublisher(ps, cfg.Topic)}
	st, err := store.New(fs, box, store.WithRetention(cfg.Retention))
	if err != nil {
		a.Close()
		return nil, err
	}

	httpClient := &http.Client{Timeout: 15 * time.Second}
	apiURL := *cfg.GitHubAPIURL
	gitHub := func(token string) *github.Client {
		c := github.NewClient(httpClient).WithAuthToken(token)
		c.BaseURL = &apiURL
		return c
	}

	mode := cfg.AuthMode
	if mode == "" {
		mode = caller.ModeIAM // a Config not from LoadConfig: trust nobody by default
	}
	identify := func(r *http.Request) (caller.Identity, error) {
		return caller.FromHeader(mode, r.Header, time.Now())
	}

	private := web.NewMux(log)
	private.Handle("GET /healthz", health("private"))
	o, err := oauth.New(oauth.Config{
		ClientID: cfg.GitHubClientID, ClientSecret: cfg.GitHubClientSecret,
		WebURL: cfg.GitHubWebURL.String(), RedirectURL: cfg.OAuthCallbackURL.String(),
		PrivateRepos: cfg.PrivateRepos, StateKey: stateKey, Identify: identify,
	}, st, gitHub, httpClient, log, nil)
	if err != nil {
		a.Close()
		return nil, err
	}
	o.Register(private)
	r, err := repos.New(repos.Config{Store: st, GitHub: gitHub, PublicURL: cfg.PublicURL, Identify: identify, Log: log})
	if err != nil {
		a.Close()
		return nil, err
	}
	r.Register(private)

	public := web.NewMux(log)
	public.Handle("GET /healthz", health("public"))
	wh, err := webhook.New(st, a.publisher, log, nil)
	if err != nil {
		a.Close()
		return nil, err
	}
	wh.Register(public)
	// GitHub sends the browser back to the callback; in the cloud only
	// PublicAPI is reachable without a Google identity. The signed,
	// single-use, expiring state (issued only by PrivateAPI's login_url)
	// and PKCE make it safe to serve publicly; the token is stored for the
	// caller the state's flow recorded. PublicAPI never identifies callers:
	// Cloud Run lets anyone reach it, so its Authorization header is
	// unverified.
	o.RegisterCallback(public)

	a.Private, a.Public = requireCaller(private, identify, log), public
	return a, nil
}

// requireCaller answers every PrivateAPI request but GET /healthz with 401
// when the caller cannot be identified (IAM mode without a usable identity
// token), before routing, so nothing is read or written for it.
func requireCaller(next http.Handler, identify func(*http.Request) (caller.Identity, error), log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if _, err := identify(r); err != nil {
			w.Header().Set("WWW-Authenticate", "Bearer")
			web.Handler(log, func(http.ResponseWriter, *http.Request) error {
				return web.Errorf(http.StatusUnauthorized, err, "%s", err.Error())
			}).ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// health handles the GET /healthz route of one server.
func health(server string) web.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		return web.JSON(w, http.StatusOK, map[string]any{"ok": true, "server": server})
	}
}

// Close flushes the publisher and closes the clients.
func (a *App) Close() error {
	if a.publisher != nil {
		a.publisher.Stop()
	}
	if a.pubsub != nil {
		a.pubsub.Close()
	}
	if a.firestore != nil {
		a.firestore.Close()
	}
	return nil
}
