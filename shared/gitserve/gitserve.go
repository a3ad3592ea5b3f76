// Package gitserve serves git repositories over smart HTTP on loopback, for
// tests and local demos only (GitHub cannot be reached here): a directory
// of bare repositories laid out as OWNER/NAME.git, served by git
// http-backend through net/http/cgi, optionally requiring a token the way
// GitHub accepts one (basic auth with any user name).
//
// New starts a server on a free loopback port, as tests want.
// NewUnstarted returns one that serves nothing yet: it is an http.Handler
// to mount into another server (the local stack's GitHub stand-in does),
// or Start serves it on a given listener, e.g. a fixed port.
package gitserve

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Server serves the bare repositories under Root.
type Server struct {
	// Root holds OWNER/NAME.git bare repositories.
	Root string
	// URL is the base URL; a repository is at URL + "OWNER/NAME.git".
	URL string

	opts    Options
	handler http.Handler
	srv     *httptest.Server

	mu       sync.Mutex
	tempWork string // holds the working clones when Options.WorkDir is empty
}

// Options configures NewUnstarted.
type Options struct {
	// Token, when non-empty, is the only basic-auth password accepted.
	// With none, every request is served: a server mounted elsewhere can
	// authorize requests before they reach it.
	Token string
	// WorkDir is where the working clones of Create go (as
	// WorkDir/OWNER/NAME); empty means a temporary directory that Close
	// removes.
	WorkDir string
}

// New serves root on a loopback port. A non-empty token is required as
// the basic-auth password of every request.
func New(root, token string) (*Server, error) {
	s, err := NewUnstarted(root, Options{Token: token})
	if err != nil {
		return nil, err
	}
	s.Start(nil)
	return s, nil
}

// NewUnstarted returns a Server for root that serves nothing yet: serve it
// with Start, or mount it (it is an http.Handler for paths
// /OWNER/NAME.git/...) and set URL.
func NewUnstarted(root string, opts Options) (*Server, error) {
	git, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("gitserve: %w", err)
	}
	backend := &cgi.Handler{
		Path: git, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	}
	s := &Server{Root: root, opts: opts, handler: backend}
	if opts.Token != "" {
		s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, pw, ok := r.BasicAuth(); !ok || pw != opts.Token {
				w.Header().Set("WWW-Authenticate", `Basic realm="gitserve"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			backend.ServeHTTP(w, r)
		})
	}
	return s, nil
}

// SplitPath returns the repository a request path such as
// /OWNER/NAME.git/info/refs is for.
func SplitPath(p string) (owner, name string, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 3)
	if len(parts) < 2 || parts[0] == "" || !strings.HasSuffix(parts[1], ".git") {
		return "", "", false
	}
	name = strings.TrimSuffix(parts[1], ".git")
	if name == "" {
		return "", "", false
	}
	return parts[0], name, true
}

// Start serves on l, or on a free loopback port if l is nil, and sets URL.
// Close stops it.
func (s *Server) Start(l net.Listener) {
	srv := httptest.NewUnstartedServer(s.handler)
	if l != nil {
		srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	s.srv = srv
	s.URL = srv.URL + "/"
}

// ServeHTTP serves git's smart HTTP protocol for /OWNER/NAME.git/... paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close stops the server Start started and removes the temporary
// working clones.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tempWork != "" {
		os.RemoveAll(s.tempWork)
		s.tempWork = ""
	}
}

// workDir returns where working clones go.
func (s *Server) workDir() (string, error) {
	if s.opts.WorkDir != "" {
		return s.opts.WorkDir, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tempWork == "" {
		dir, err := os.MkdirTemp("", "gitserve-work-")
		if err != nil {
			return "", fmt.Errorf("create working directory: %w", err)
		}
		s.tempWork = dir
	}
	return s.tempWork, nil
}

// Repo is a working clone used to create commits in a served repository.
// Its methods are not safe for concurrent use.
type Repo struct {
	Bare, Work string
}

// Create makes an empty bare repository OWNER/NAME.git under the root and a
// working directory pushing to it.
func (s *Server) Create(owner, name string) (*Repo, error) {
	bare := filepath.Join(s.Root, owner, name+".git")
	base, err := s.workDir()
	if err != nil {
		return nil, err
	}
	work := filepath.Join(base, owner, name)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("create working directory: %w", err)
	}
	r := &Repo{Bare: bare, Work: work}
	for _, c := range [][]string{
		{"init", "--quiet", "--bare", "-b", "main", bare},
		{"-C", bare, "config", "uploadpack.allowReachableSHA1InWant", "true"},
		{"-C", bare, "config", "http.receivepack", "true"},
		{"-C", work, "init", "--quiet", "-b", "main"},
		{"-C", work, "remote", "add", "origin", bare},
	} {
		if _, err := git(nil, c...); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Commit writes files (path → content; empty content deletes) into the
// working directory, commits them and pushes to branch; it returns the
// commit's SHA.
func (r *Repo) Commit(branch, message string, files map[string]string) (string, error) {
	c := Change{Branch: branch, Message: message, Files: map[string][]byte{}}
	for p, content := range files {
		if content == "" {
			c.Delete = append(c.Delete, p)
			continue
		}
		c.Files[p] = []byte(content)
	}
	_, after, err := r.Apply(c)
	return after, err
}

// Signature is a commit's author or committer.
type Signature struct {
	Name, Email string
	When        time.Time
}

// Change is one commit for Apply.
type Change struct {
	// Branch is the branch to commit to (created if missing).
	Branch string
	// From is the branch a new Branch starts from; empty means main. A
	// new branch in a repository without commits has no parent.
	From    string
	Message string
	// Author, when its Name is set, authors and commits the change;
	// otherwise "kgd test" does.
	Author Signature
	// Files are written (path → content, slash-separated paths inside the
	// repository); Delete lists paths to remove.
	Files  map[string][]byte
	Delete []string
}

var validBranch = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,200}$`)

// Apply commits c on top of its branch's head and pushes it; before is the
// branch's previous head ("" when the branch is new), after the new commit.
func (r *Repo) Apply(c Change) (before, after string, err error) {
	if !validBranch.MatchString(c.Branch) || strings.Contains(c.Branch, "..") || strings.HasPrefix(c.Branch, "-") {
		return "", "", fmt.Errorf("invalid branch name %q", c.Branch)
	}
	if _, err := git(nil, "check-ref-format", "refs/heads/"+c.Branch); err != nil {
		return "", "", fmt.Errorf("invalid branch name %q", c.Branch)
	}
	before, err = r.Head(c.Branch)
	if err != nil {
		return "", "", err
	}
	base := before
	if base == "" {
		from := c.From
		if from == "" {
			from = "main"
		}
		if base, err = r.Head(from); err != nil {
			return "", "", err
		}
	}
	if _, err := git(nil, "-C", r.Work, "fetch", "--quiet", "origin"); err != nil {
		return "", "", err
	}
	if base != "" {
		// Whatever a failed earlier change left behind goes.
		for _, args := range [][]string{
			{"-C", r.Work, "checkout", "--quiet", "--force", "-B", c.Branch, base},
			{"-C", r.Work, "clean", "-fdxq"},
		} {
			if _, err := git(nil, args...); err != nil {
				return "", "", err
			}
		}
	} else {
		// An unborn branch with an empty index and working tree.
		for _, args := range [][]string{
			{"-C", r.Work, "symbolic-ref", "HEAD", "refs/heads/" + c.Branch},
			{"-C", r.Work, "read-tree", "--empty"},
			{"-C", r.Work, "clean", "-fdxq"},
		} {
			if _, err := git(nil, args...); err != nil {
				return "", "", err
			}
		}
	}
	for p, content := range c.Files {
		full, err := r.path(p)
		if err != nil {
			return "", "", err
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", "", fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.WriteFile(full, content, 0o644); err != nil {
			return "", "", fmt.Errorf("write %s: %w", p, err)
		}
	}
	for _, p := range c.Delete {
		full, err := r.path(p)
		if err != nil {
			return "", "", err
		}
		if err := os.RemoveAll(full); err != nil {
			return "", "", fmt.Errorf("delete %s: %w", p, err)
		}
	}
	var env []string
	if c.Author.Name != "" {
		env = []string{"GIT_AUTHOR_NAME=" + c.Author.Name, "GIT_AUTHOR_EMAIL=" + c.Author.Email,
			"GIT_COMMITTER_NAME=" + c.Author.Name, "GIT_COMMITTER_EMAIL=" + c.Author.Email}
		if !c.Author.When.IsZero() {
			when := c.Author.When.Format(time.RFC3339)
			env = append(env, "GIT_AUTHOR_DATE="+when, "GIT_COMMITTER_DATE="+when)
		}
	}
	for _, args := range [][]string{
		{"-C", r.Work, "add", "-A"},
		{"-C", r.Work, "-c", "user.name=kgd test", "-c", "user.email=test@kgd.invalid", "commit", "--quiet", "--allow-empty", "-m", c.Message},
		{"-C", r.Work, "push", "--quiet", "origin", "HEAD:refs/heads/" + c.Branch},
	} {
		if _, err := git(env, args...); err != nil {
			return "", "", err
		}
	}
	out, err := git(nil, "-C", r.Work, "rev-parse", "HEAD")
	if err != nil {
		return "", "", err
	}
	return before, strings.TrimSpace(string(out)), nil
}

// path returns the working-tree path of a slash-separated repository path,
// refusing paths that leave the repository or touch .git.
func (r *Repo) path(p string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(p))
	if p == "" || filepath.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) ||
		clean == ".git" || strings.HasPrefix(clean, ".git"+string(filepath.Separator)) {
		return "", fmt.Errorf("invalid path %q", p)
	}
	return filepath.Join(r.Work, clean), nil
}

// Head returns the commit branch points to in the bare repository, or ""
// if there is no such branch.
func (r *Repo) Head(branch string) (string, error) {
	refs, err := r.Refs()
	if err != nil {
		return "", err
	}
	return refs["refs/heads/"+branch], nil
}

// Refs returns every branch and tag of the bare repository: full ref name
// → object.
func (r *Repo) Refs() (map[string]string, error) {
	out, err := git(nil, "-C", r.Bare, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/", "refs/tags/")
	if err != nil {
		return nil, err
	}
	refs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if ref, obj, ok := strings.Cut(line, " "); ok {
			refs[ref] = obj
		}
	}
	return refs, nil
}

// CommitInfo describes one commit the way a push event lists it.
type CommitInfo struct {
	SHA, Tree, Message       string
	Author, Committer        Signature
	Added, Removed, Modified []string
}

// Commits returns the commits reachable from to but from none of the
// commits in not, oldest first, at most max of them (the newest max).
func (r *Repo) Commits(to string, max int, not ...string) ([]CommitInfo, error) {
	args := []string{"-C", r.Bare, "log", "--reverse", "-z", fmt.Sprintf("--max-count=%d", max),
		"--format=%H%x1f%T%x1f%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%cI%x1f%B", to}
	if len(not) > 0 {
		args = append(append(args, "--not"), not...)
	}
	args = append(args, "--")
	out, err := git(nil, args...)
	if err != nil {
		return nil, err
	}
	var commits []CommitInfo
	for _, rec := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if rec == "" {
			continue
		}
		f := strings.SplitN(rec, "\x1f", 9)
		if len(f) != 9 {
			return nil, fmt.Errorf("git log: unexpected record %q", rec)
		}
		aWhen, _ := time.Parse(time.RFC3339, f[4])
		cWhen, _ := time.Parse(time.RFC3339, f[7])
		ci := CommitInfo{SHA: f[0], Tree: f[1], Message: strings.TrimRight(f[8], "\n"),
			Author: Signature{Name: f[2], Email: f[3], When: aWhen}, Committer: Signature{Name: f[5], Email: f[6], When: cWhen}}
		if err := r.changedFiles(&ci); err != nil {
			return nil, err
		}
		commits = append(commits, ci)
	}
	return commits, nil
}

func (r *Repo) changedFiles(ci *CommitInfo) error {
	out, err := git(nil, "-C", r.Bare, "diff-tree", "-r", "--no-commit-id", "--name-status", "--root", "-z", ci.SHA)
	if err != nil {
		return err
	}
	f := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	ci.Added, ci.Removed, ci.Modified = []string{}, []string{}, []string{}
	for i := 0; i+1 < len(f); i += 2 {
		switch f[i] {
		case "A":
			ci.Added = append(ci.Added, f[i+1])
		case "D":
			ci.Removed = append(ci.Removed, f[i+1])
		default:
			ci.Modified = append(ci.Modified, f[i+1])
		}
	}
	return nil
}

// BasicAuth returns the Authorization header value for token.
func BasicAuth(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))
}

func git(env []string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "LANG=C")
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
