// Package gitserve serves git repositories over smart HTTP on loopback, for
// tests and local demos only (GitHub cannot be reached here): a directory
// of bare repositories laid out as OWNER/NAME.git, served by git
// http-backend through net/http/cgi, optionally requiring a token the way
// GitHub accepts one (basic auth with any user name).
package gitserve

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Server serves the bare repositories under Root.
type Server struct {
	// Root holds OWNER/NAME.git bare repositories.
	Root string
	// URL is the base URL; a repository is at URL + "OWNER/NAME.git".
	URL string
	srv *httptest.Server
}

// New serves root on a loopback port. A non-empty token is required as
// the basic-auth password of every request.
func New(root, token string) (*Server, error) {
	git, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("gitserve: %w", err)
	}
	backend := &cgi.Handler{
		Path: git, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	}
	h := http.Handler(backend)
	if token != "" {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, pw, ok := r.BasicAuth(); !ok || pw != token {
				w.Header().Set("WWW-Authenticate", `Basic realm="gitserve"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			backend.ServeHTTP(w, r)
		})
	}
	s := &Server{Root: root, srv: httptest.NewServer(h)}
	s.URL = s.srv.URL + "/"
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Repo is a working clone used to create commits in a served repository.
type Repo struct {
	Bare, Work string
}

// Create makes an empty bare repository OWNER/NAME.git under the root and a
// working directory pushing to it.
func (s *Server) Create(owner, name string) (*Repo, error) {
	bare := filepath.Join(s.Root, owner, name+".git")
	work, err := os.MkdirTemp("", "gitserve-work-")
	if err != nil {
		return nil, err
	}
	r := &Repo{Bare: bare, Work: work}
	for _, c := range [][]string{
		{"init", "--quiet", "--bare", bare},
		{"-C", bare, "config", "uploadpack.allowReachableSHA1InWant", "true"},
		{"-C", bare, "config", "http.receivepack", "true"},
		{"-C", work, "init", "--quiet", "-b", "main"},
		{"-C", work, "remote", "add", "origin", bare},
	} {
		if err := git(c...); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Commit writes files (path → content; empty content deletes) into the
// working directory, commits them and pushes to branch; it returns the
// commit's SHA.
func (r *Repo) Commit(branch, message string, files map[string]string) (string, error) {
	for p, content := range files {
		full := filepath.Join(r.Work, filepath.FromSlash(p))
		if content == "" {
			if err := os.Remove(full); err != nil && !os.IsNotExist(err) {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	for _, c := range [][]string{
		{"-C", r.Work, "add", "-A"},
		{"-C", r.Work, "-c", "user.name=kgd test", "-c", "user.email=test@kgd.invalid", "commit", "--quiet", "--allow-empty", "-m", message},
		{"-C", r.Work, "push", "--quiet", "origin", "HEAD:refs/heads/" + branch},
	} {
		if err := git(c...); err != nil {
			return "", err
		}
	}
	out, err := exec.Command("git", "-C", r.Work, "rev-parse", "HEAD").Output()
	if err != nil {
		return "", fmt.Errorf("rev-parse: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// BasicAuth returns the Authorization header value for token.
func BasicAuth(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))
}

func git(args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
