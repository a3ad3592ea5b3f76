// Package githubfake is a small stand-in for GitHub, for tests and local
// demos only: GitHub cannot be reached here. It serves, over one HTTP
// server, the parts kube-git-deploy uses: the OAuth web flow (authorize,
// which signs the configured user in at once, and the token exchange with
// PKCE), the REST API (GET /user and repository hooks, under /api/v3/ as
// on GitHub Enterprise Server), with GitHub's status codes and JSON shapes.
//
// It is not GitHub: it keeps everything in memory and checks only what
// kube-git-deploy depends on.
//
// New starts one on a free loopback port, as tests want. NewUnstarted
// returns one that serves nothing yet: it is an http.Handler to mount into
// another server (the local stack's GitHub stand-in does), or Start serves
// it on a given listener, e.g. a fixed port.
package githubfake

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// APIPrefix is where the REST API is served, as on GitHub Enterprise Server.
const APIPrefix = "/api/v3/"

// Hook is a repository webhook as created through the API.
type Hook struct {
	ID          int64
	URL         string
	ContentType string
	Secret      string
	InsecureSSL string
	Events      []string
	Active      bool
}

// Server is a fake GitHub. Its zero value is not usable; call New.
type Server struct {
	// URL is the web base URL ("http://127.0.0.1:port/"); APIURL is URL +
	// "api/v3/".
	URL, APIURL string

	clientID, clientSecret string
	mux                    *http.ServeMux
	srv                    *httptest.Server

	mu        sync.Mutex
	users     map[string]string // token → login
	signIn    string            // login signed in by authorize
	scopes    string            // scopes granted by the token exchange
	codes     map[string]grant
	repos     map[string][]string // "owner/name" (lower case) → admin logins
	hooks     map[string][]Hook   // "owner/name" (lower case) → hooks
	nextHook  int64
	exchanges int
}

type grant struct {
	login, challenge, redirect string
	expires                    time.Time
}

// New starts a fake GitHub on a loopback port for an OAuth App with the
// given credentials. Close it when done.
func New(clientID, clientSecret string) *Server {
	s := NewUnstarted(clientID, clientSecret)
	s.Start(nil)
	return s
}

// NewUnstarted returns a fake GitHub for an OAuth App with the given
// credentials that serves nothing yet. Serve it with Start, or mount it
// (it is an http.Handler for the OAuth and REST routes) and call
// SetBaseURL.
func NewUnstarted(clientID, clientSecret string) *Server {
	s := &Server{
		clientID: clientID, clientSecret: clientSecret,
		users: map[string]string{}, codes: map[string]grant{},
		repos: map[string][]string{}, hooks: map[string][]Hook{}, nextHook: 1000,
		scopes: "admin:repo_hook",
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login/oauth/authorize", s.authorize)
	mux.HandleFunc("POST /login/oauth/access_token", s.accessToken)
	mux.HandleFunc("GET "+APIPrefix+"user", s.user)
	mux.HandleFunc("POST "+APIPrefix+"repos/{owner}/{repo}/hooks", s.createHook)
	mux.HandleFunc("GET "+APIPrefix+"repos/{owner}/{repo}/hooks", s.listHooks)
	mux.HandleFunc("DELETE "+APIPrefix+"repos/{owner}/{repo}/hooks/{id}", s.deleteHook)
	s.mux = mux
	return s
}

// Start serves the fake on l, or on a free loopback port if l is nil, and
// sets URL and APIURL. Close stops it.
func (s *Server) Start(l net.Listener) {
	srv := httptest.NewUnstartedServer(s.mux)
	if l != nil {
		srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	s.srv = srv
	s.SetBaseURL(srv.URL + "/")
}

// SetBaseURL sets URL (the web base, ending in "/") and APIURL for a fake
// mounted into another server.
func (s *Server) SetBaseURL(base string) {
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	s.URL = base
	s.APIURL = strings.TrimSuffix(base, "/") + APIPrefix
}

// ServeHTTP serves the OAuth routes (/login/oauth/...) and the REST API
// (under APIPrefix).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close stops the server Start started; it does nothing for a mounted fake.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
}

// AddUser makes login exist with an access token (for tests that skip the
// OAuth flow) and returns the token.
func (s *Server) AddUser(login string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := "gho_" + rand.Text()
	s.users[tok] = login
	return tok
}

// SignInAs sets the user that authorize signs in, and the scopes the token
// exchange grants (comma separated, as GitHub sends them).
func (s *Server) SignInAs(login, scopes string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signIn, s.scopes = login, scopes
}

// AddRepo creates owner/name with the given admins (who may manage hooks).
func (s *Server) AddRepo(owner, name string, admins ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[key(owner, name)] = admins
}

// Repo reports whether owner/name exists (case-insensitively, as on
// GitHub) and returns its admins.
func (s *Server) Repo(owner, name string) (admins []string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	admins, ok = s.repos[key(owner, name)]
	return slices.Clone(admins), ok
}

// TokenLogin returns the user an access token belongs to, if it is one
// this fake issued (by the token exchange or AddUser).
func (s *Server) TokenLogin(token string) (string, bool) {
	if token == "" {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	login, ok := s.users[token]
	return login, ok
}

// Hooks returns the hooks of owner/name.
func (s *Server) Hooks(owner, name string) []Hook {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hooks[key(owner, name)])
}

// Exchanges counts successful token exchanges.
func (s *Server) Exchanges() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchanges
}

func key(owner, name string) string { return strings.ToLower(owner + "/" + name) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

// authorize signs the configured user in at once and redirects back with a
// code, as GitHub does after the user approves.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != s.clientID {
		http.Error(w, "unknown client_id", http.StatusNotFound)
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" {
		http.Error(w, "redirect_uri is required", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	login := s.signIn
	code := rand.Text()
	if login != "" {
		s.codes[code] = grant{login: login, challenge: q.Get("code_challenge"), redirect: redirect.String(), expires: time.Now().Add(10 * time.Minute)}
	}
	s.mu.Unlock()
	back := redirect.Query()
	if login == "" {
		back.Set("error", "access_denied")
		back.Set("error_description", "The user has denied your application access.")
	} else {
		back.Set("code", code)
	}
	back.Set("state", q.Get("state"))
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// accessToken exchanges a code, checking the client, the redirect URI and
// the PKCE verifier. Like GitHub it answers errors with 200 and an error
// field.
func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f := r.PostForm
	if f.Get("client_id") != s.clientID || f.Get("client_secret") != s.clientSecret {
		writeJSON(w, http.StatusOK, map[string]string{"error": "incorrect_client_credentials", "error_description": "The client_id and/or client_secret passed are incorrect."})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.codes[f.Get("code")]
	delete(s.codes, f.Get("code"))
	bad := !ok || time.Now().After(g.expires) || (f.Get("redirect_uri") != "" && f.Get("redirect_uri") != g.redirect)
	if !bad && g.challenge != "" {
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		bad = base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge
	}
	if bad {
		writeJSON(w, http.StatusOK, map[string]string{"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."})
		return
	}
	tok := "gho_" + rand.Text()
	s.users[tok] = g.login
	s.exchanges++
	writeJSON(w, http.StatusOK, map[string]string{"access_token": tok, "token_type": "bearer", "scope": s.scopes})
}

// login returns the user of the request's token, or answers 401.
func (s *Server) login(w http.ResponseWriter, r *http.Request) (string, bool) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(auth, "token ")
	}
	s.mu.Lock()
	login := s.users[tok]
	s.mu.Unlock()
	if !ok || login == "" {
		apiError(w, http.StatusUnauthorized, "Bad credentials")
		return "", false
	}
	return login, true
}

func (s *Server) user(w http.ResponseWriter, r *http.Request) {
	login, ok := s.login(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"login": login, "id": len(login), "type": "User"})
}

// repoAdmin checks the repository exists for the user and that the user
// administers it; GitHub answers 404 for repositories a user cannot see.
func (s *Server) repoAdmin(w http.ResponseWriter, r *http.Request) (string, bool) {
	login, ok := s.login(w, r)
	if !ok {
		return "", false
	}
	k := key(r.PathValue("owner"), r.PathValue("repo"))
	s.mu.Lock()
	admins, exists := s.repos[k]
	s.mu.Unlock()
	if !exists {
		apiError(w, http.StatusNotFound, "Not Found")
		return "", false
	}
	if !slices.Contains(admins, login) {
		apiError(w, http.StatusNotFound, "Not Found")
		return "", false
	}
	return k, true
}

func hookJSON(h Hook) map[string]any {
	return map[string]any{
		"type": "Repository", "id": h.ID, "name": "web", "active": h.Active, "events": h.Events,
		"config": map[string]any{"url": h.URL, "content_type": h.ContentType, "insecure_ssl": h.InsecureSSL, "secret": "********"},
	}
}

func (s *Server) createHook(w http.ResponseWriter, r *http.Request) {
	k, ok := s.repoAdmin(w, r)
	if !ok {
		return
	}
	var in struct {
		Name   string   `json:"name"`
		Active *bool    `json:"active"`
		Events []string `json:"events"`
		Config struct {
			URL         string `json:"url"`
			ContentType string `json:"content_type"`
			Secret      string `json:"secret"`
			InsecureSSL string `json:"insecure_ssl"`
		} `json:"config"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		apiError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	if u, err := url.Parse(in.Config.URL); err != nil || u.Host == "" {
		apiError(w, http.StatusUnprocessableEntity, "Validation Failed: config.url is invalid")
		return
	}
	if len(in.Events) == 0 {
		in.Events = []string{"push"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hooks[k] {
		if h.URL == in.Config.URL {
			apiError(w, http.StatusUnprocessableEntity, "Validation Failed: Hook already exists on this repository")
			return
		}
	}
	if len(s.hooks[k]) >= 20 {
		apiError(w, http.StatusUnprocessableEntity, "Validation Failed: The \"push\" event cannot have more than 20 hooks")
		return
	}
	s.nextHook++
	h := Hook{ID: s.nextHook, URL: in.Config.URL, ContentType: in.Config.ContentType, Secret: in.Config.Secret,
		InsecureSSL: in.Config.InsecureSSL, Events: in.Events, Active: in.Active == nil || *in.Active}
	s.hooks[k] = append(s.hooks[k], h)
	writeJSON(w, http.StatusCreated, hookJSON(h))
}

func (s *Server) listHooks(w http.ResponseWriter, r *http.Request) {
	k, ok := s.repoAdmin(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	out := []map[string]any{}
	for _, h := range s.hooks[k] {
		out = append(out, hookJSON(h))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteHook(w http.ResponseWriter, r *http.Request) {
	k, ok := s.repoAdmin(w, r)
	if !ok {
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.hooks[k], func(h Hook) bool { return h.ID == id })
	if i < 0 {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.hooks[k] = slices.Delete(s.hooks[k], i, i+1)
	w.WriteHeader(http.StatusNoContent)
}

// String describes the server for logs.
func (s *Server) String() string { return fmt.Sprintf("githubfake at %s", s.URL) }
