// Package githubstandin is a stand-in for GitHub, for local development
// and tests only: GitHub cannot be reached from here. One HTTP server
// plays the parts of GitHub kube-git-deploy talks to:
//
//   - the OAuth web flow and the REST API the functions call (GET /user,
//     repository hooks), from shared/githubfake; its authorize page
//     approves at once for the signed-in stand-in user;
//   - the REST API of a hook's deliveries the runner calls (list them,
//     redeliver one), over the deliveries recorded here (deliveries.go);
//   - the REST API of commit statuses and Deployments the runner reports
//     to (statuses.go): create and list commit statuses and the combined
//     status under repos/OWNER/NAME/statuses/SHA and commits/REF/status(es);
//     create, list and get deployments and create and list their statuses
//     under repos/OWNER/NAME/deployments, with GitHub's validation (422),
//     required-contexts check (409), auto_inactive, paging (Link) and
//     X-RateLimit-* headers; what they record is read back with Statuses,
//     Deployments and APIRequests;
//   - git over smart HTTP at URL + OWNER/NAME.git, from shared/gitserve,
//     for the runner's checkouts (and for git clone and git push by hand);
//   - push webhooks, delivered as GitHub delivers them: a POST to each
//     active hook of the repository, signed with the hook's secret
//     (X-Hub-Signature-256 and X-Hub-Signature), with the X-GitHub-Event,
//     X-GitHub-Delivery and X-GitHub-Hook-ID headers and a payload shaped
//     like GitHub's push event;
//   - small admin endpoints that GitHub does not have, under AdminPrefix
//     (/_standin/): create a repository, commit files to a branch and
//     deliver the push, list and redeliver deliveries, change the
//     signed-in user, make every receiver "down" (SetOutage), make the
//     commit status and deployment API fail with a rate limit or a server
//     error (SetAPIOutage).
//
// Webhooks are delivered only to loopback addresses. Everything lives in
// memory and in a directory of bare repositories for the life of the
// Server.
package githubstandin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/githubfake"
	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
)

// AdminPrefix is where the stand-in's own endpoints live; nothing under it
// exists on GitHub.
const AdminPrefix = "/_standin/"

// Defaults for Config.
const (
	DefaultUser   = "demo"
	DefaultScopes = "admin:repo_hook,repo"
)

// Config configures New.
type Config struct {
	// ClientID and ClientSecret are the OAuth App credentials the token
	// exchange accepts (the functions' GITHUB_CLIENT_ID and
	// GITHUB_CLIENT_SECRET).
	ClientID, ClientSecret string
	// User is who the authorize page signs in; default DefaultUser.
	User string
	// Scopes are what the token exchange grants; default DefaultScopes.
	Scopes string
	// Root holds the repositories; empty means a temporary directory that
	// Close removes.
	Root string
	// Log receives one line per delivery and per push; nil discards.
	Log *slog.Logger
	// Client delivers webhooks; nil means a client with GitHub's 10 s
	// timeout that follows no redirects and uses no proxy. Either way
	// only loopback addresses are dialled.
	Client *http.Client
}

// Server is the stand-in. Create it with New, serve it with Start (or
// mount it, it is an http.Handler, and call SetBaseURL), stop it with
// Close.
type Server struct {
	// URL is the web base URL (GITHUB_WEB_URL), ending in "/"; APIURL is
	// the REST API's (GITHUB_API_URL), URL + "api/v3/".
	URL, APIURL string

	gh       *githubfake.Server
	git      *gitserve.Server
	handler  http.Handler
	log      *slog.Logger
	client   *http.Client
	root     string
	tempRoot bool
	srv      *http.Server

	ctx    context.Context // ends at Close; bounds background deliveries
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	repos      map[string]*repoInfo // lower-case "owner/name"
	nextRepoID int64
	deliveries map[string][]*Delivery // lower-case "owner/name", newest last
	// nextDeliveryID is the id of the latest delivery record.
	nextDeliveryID int64
	down           *Outage // SetOutage
	user           string
	api            apiState // commit statuses, deployments (statuses.go)
}

// New returns a stand-in that serves nothing yet.
func New(cfg Config) (*Server, error) {
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("github stand-in: the OAuth client id and secret are required")
	}
	if cfg.User == "" {
		cfg.User = DefaultUser
	}
	if !validOwner.MatchString(cfg.User) {
		return nil, fmt.Errorf("github stand-in: invalid user %q", cfg.User)
	}
	if cfg.Scopes == "" {
		cfg.Scopes = DefaultScopes
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Client == nil {
		cfg.Client = loopbackClient()
	}
	s := &Server{log: cfg.Log, client: cfg.Client, root: cfg.Root, repos: map[string]*repoInfo{},
		deliveries: map[string][]*Delivery{}, nextRepoID: 700000001, nextDeliveryID: 12000000000, user: cfg.User,
		api: newAPIState()}
	if s.root == "" {
		dir, err := os.MkdirTemp("", "kgd-github-standin-")
		if err != nil {
			return nil, fmt.Errorf("github stand-in: %w", err)
		}
		s.root, s.tempRoot = dir, true
	}
	repoRoot, workRoot := filepath.Join(s.root, "repos"), filepath.Join(s.root, "work")
	for _, d := range []string{repoRoot, workRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			s.removeRoot()
			return nil, fmt.Errorf("github stand-in: %w", err)
		}
	}
	git, err := gitserve.NewUnstarted(repoRoot, gitserve.Options{WorkDir: workRoot})
	if err != nil {
		s.removeRoot()
		return nil, fmt.Errorf("github stand-in: %w", err)
	}
	s.git = git
	s.gh = githubfake.NewUnstarted(cfg.ClientID, cfg.ClientSecret)
	s.gh.SignInAs(cfg.User, cfg.Scopes)
	s.ctx, s.cancel = context.WithCancel(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/login/oauth/", s.gh)
	mux.Handle(githubfake.APIPrefix, s.gh)
	s.deliveryRoutes(mux)
	s.statusRoutes(mux)
	s.adminRoutes(mux)
	mux.HandleFunc("/", s.serveGit)
	s.handler = mux
	return s, nil
}

// Start serves on l, or on a free loopback port if l is nil, and sets URL
// and APIURL.
func (s *Server) Start(l net.Listener) error {
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("github stand-in: %w", err)
		}
	}
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	s.SetBaseURL("http://" + l.Addr().String() + "/")
	go s.srv.Serve(l)
	return nil
}

// SetBaseURL sets URL and APIURL for a stand-in served by someone else.
func (s *Server) SetBaseURL(base string) {
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	s.URL, s.APIURL = base, base+strings.TrimPrefix(githubfake.APIPrefix, "/")
	s.gh.SetBaseURL(base)
	s.git.URL = base
}

// ServeHTTP serves every route of the stand-in.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close stops the server, waits for deliveries under way and removes a
// temporary repository directory.
func (s *Server) Close() error {
	var err error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = s.srv.Shutdown(ctx)
	}
	s.cancel()
	s.wg.Wait()
	s.removeRoot()
	return err
}

func (s *Server) removeRoot() {
	if s.tempRoot {
		os.RemoveAll(s.root)
	}
}

func (s *Server) urls() urls { return urls{web: s.URL, api: s.APIURL} }

// SignInAs sets who the authorize page signs in and the scopes granted.
func (s *Server) SignInAs(login, scopes string) error {
	if !validOwner.MatchString(login) {
		return fmt.Errorf("invalid login %q", login)
	}
	if scopes == "" {
		scopes = DefaultScopes
	}
	s.mu.Lock()
	s.user = login
	s.mu.Unlock()
	s.gh.SignInAs(login, scopes)
	return nil
}

// SignedIn returns who the authorize page signs in.
func (s *Server) SignedIn() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user
}

// Token returns a new access token of login, for callers that skip the
// OAuth flow.
func (s *Server) Token(login string) string { return s.gh.AddUser(login) }

// Hooks returns the hooks of owner/name.
func (s *Server) Hooks(owner, name string) []githubfake.Hook { return s.gh.Hooks(owner, name) }

// GitHub names are short; these are GitHub's own rules for user and
// repository names.
var (
	validOwner = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)
	validName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// ErrNotFound reports an unknown repository.
var ErrNotFound = errors.New("repository not found")

// Repo describes a repository of the stand-in.
type Repo struct {
	ID            int64  `json:"id"`
	FullName      string `json:"full_name"`
	Owner         string `json:"owner"`
	Name          string `json:"name"`
	Admin         string `json:"admin"`
	Private       bool   `json:"private"`
	DefaultBranch string `json:"default_branch"`
	CloneURL      string `json:"clone_url"`
	HTMLURL       string `json:"html_url"`
}

func (s *Server) describe(r *repoInfo) Repo {
	full := r.owner + "/" + r.name
	return Repo{ID: r.id, FullName: full, Owner: r.owner, Name: r.name, Admin: r.admin, Private: r.private,
		DefaultBranch: r.defaultBranch, CloneURL: s.URL + full + ".git", HTMLURL: s.URL + full}
}

// CreateRepo creates owner/name, administered by admin (who may manage its
// hooks and push to it; default owner), with default branch main and no
// commits. created is false, and nothing changes, if it exists already.
func (s *Server) CreateRepo(owner, name, admin string, private bool) (repo Repo, created bool, err error) {
	if !validOwner.MatchString(owner) || !validName.MatchString(name) || name == "." || name == ".." || strings.HasSuffix(name, ".git") {
		return Repo{}, false, fmt.Errorf("invalid repository name %q", owner+"/"+name)
	}
	if admin == "" {
		admin = owner
	}
	if !validOwner.MatchString(admin) {
		return Repo{}, false, fmt.Errorf("invalid admin login %q", admin)
	}
	k := strings.ToLower(owner + "/" + name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.repos[k]; ok {
		return s.describe(r), false, nil
	}
	g, err := s.git.Create(owner, name)
	if err != nil {
		return Repo{}, false, fmt.Errorf("create %s/%s: %w", owner, name, err)
	}
	r := &repoInfo{id: s.nextRepoID, owner: owner, name: name, admin: admin, defaultBranch: "main",
		private: private, created: time.Now(), git: g}
	s.nextRepoID++
	s.repos[k] = r
	s.gh.AddRepo(owner, name, admin)
	s.log.Info("repository created", "repo", owner+"/"+name, "admin", admin, "private", private)
	return s.describe(r), true, nil
}

// Repo returns owner/name, or ErrNotFound.
func (s *Server) Repo(owner, name string) (Repo, error) {
	r := s.repo(owner, name)
	if r == nil {
		return Repo{}, fmt.Errorf("%s/%s: %w", owner, name, ErrNotFound)
	}
	return s.describe(r), nil
}

func (s *Server) repo(owner, name string) *repoInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[strings.ToLower(owner+"/"+name)]
}

// loopbackClient delivers webhooks like GitHub (10 s timeout, redirects
// not followed) but dials nothing except loopback addresses.
func loopbackClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
			var lastErr error = fmt.Errorf("%s has no addresses", host)
			for _, ip := range ips {
				if !ip.IsLoopback() {
					lastErr = fmt.Errorf("the GitHub stand-in delivers only to loopback addresses, not %s (%s)", host, ip)
					continue
				}
				c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return c, nil
				}
				lastErr = err
			}
			return nil, lastErr
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
