// Package source checks a repository out at an exact commit into a job's
// workspace. It speaks git's smart HTTP protocol in process with go-git
// (github.com/go-git/go-git/v5) rather than running the git command line,
// because the runner's image is built FROM scratch: a static binary and CA
// certificates, with no git and no shell.
//
// Security properties:
//
//   - The repository is always fetched from the configured base URL and the
//     tracked owner/name (base + OWNER/NAME.git), never from a URL in a
//     webhook payload, so a payload cannot point the runner anywhere else.
//     Only http and https base URLs are accepted, and owner, name and
//     commits are validated before any network I/O.
//   - The token, when given, travels only as HTTP basic auth (user
//     x-access-token, GitHub's convention), never in a URL or a file, and
//     it is scrubbed from every error this package returns.
//   - Redirects are handled by go-git's HTTP transport, which follows them
//     only for the initial ref discovery (git's http.followRedirects
//     default), refuses https-to-http downgrades and drops the credentials
//     once a redirect leaves the repository's origin (scheme, host and
//     port). So no process-wide transport is installed here.
//   - Fetches honour the context (cancellation and deadline).
//   - No user or system git configuration is read, no hooks run, and
//     submodules and LFS objects are not fetched. The working tree is
//     written through a filesystem bound to the checkout directory: regular
//     files get ordinary permissions (the executable bit kept) and symlinks
//     are written as symlinks and never followed.
package source

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Fetcher clones repositories from one git host.
type Fetcher struct {
	base  *url.URL
	cache *objectCache // nil: every checkout fetches at depth 1
}

// New returns a Fetcher for repositories under baseURL (GITHUB_WEB_URL,
// e.g. https://github.com/; tests serve repositories on loopback).
func New(baseURL string, opts ...Option) (*Fetcher, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("source: base URL %q must be an absolute http(s) URL", baseURL)
	}
	if u.User != nil {
		return nil, errors.New("source: base URL must not contain credentials")
	}
	f := &Fetcher{base: u}
	for _, o := range opts {
		o(f)
	}
	return f, nil
}

var (
	validOwner = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)
	validName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	validSHA   = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// basicAuthUser is the basic-auth user name that goes with a token
// (GitHub's convention for installation and OAuth tokens).
const basicAuthUser = "x-access-token"

// Local refs the fetched commits are stored under, so that they are
// reachable in the repository.
const (
	commitRef = "refs/kgd/commit"
	beforeRef = "refs/kgd/before"
)

// URL returns the clone URL of owner/name.
func (f *Fetcher) URL(owner, name string) string {
	return f.base.JoinPath(owner, name+".git").String()
}

func validRepo(owner, name string) error {
	if !validOwner.MatchString(owner) || !validName.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("invalid repository %q", owner+"/"+name)
	}
	return nil
}

// Checkout fetches commit sha of owner/name (depth 1) into dir, an empty
// or missing directory, and checks it out detached. token may be empty for
// public repositories.
func (f *Fetcher) Checkout(ctx context.Context, dir, owner, name, sha, token string) error {
	if err := validRepo(owner, name); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	if !validSHA.MatchString(sha) {
		return fmt.Errorf("checkout %s/%s: invalid commit %q", owner, name, sha)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkout %s/%s: %w", owner, name, err)
	}
	if f.cache != nil {
		if err := f.cache.checkout(ctx, f, dir, owner, name, sha, token); err != nil {
			return scrub(fmt.Errorf("checkout %s/%s@%s: %w", owner, name, sha[:7], err), token)
		}
		return nil
	}
	st, wt, err := storage(dir)
	if err != nil {
		return fmt.Errorf("checkout %s/%s: %w", owner, name, err)
	}
	repo, err := git.Init(st, wt)
	if err != nil {
		return fmt.Errorf("checkout %s/%s: init repository: %w", owner, name, err)
	}
	if err := f.fetch(ctx, repo, owner, name, sha, commitRef, token); err != nil {
		return fmt.Errorf("checkout %s/%s@%s: %w", owner, name, sha[:7], err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkout %s/%s@%s: %w", owner, name, sha[:7], err)
	}
	w, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("checkout %s/%s@%s: %w", owner, name, sha[:7], err)
	}
	if err := w.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(sha), Force: true}); err != nil {
		return fmt.Errorf("checkout %s/%s@%s: %w", owner, name, sha[:7], err)
	}
	return nil
}

// ChangedFiles lists the files that differ between before and sha (both
// fetched on demand into dir, a checkout made by Checkout): added,
// modified and deleted paths, both names of a rename, sorted, like git
// diff --name-only without rename detection; an empty, non-nil list when
// nothing changed. It returns nil, nil when before is empty or all zeros
// (a new ref: everything counts as changed).
func (f *Fetcher) ChangedFiles(ctx context.Context, dir, owner, name, before, sha, token string) ([]string, error) {
	if before == "" || strings.Trim(before, "0") == "" {
		return nil, nil
	}
	if err := validRepo(owner, name); err != nil {
		return nil, fmt.Errorf("changed files: %w", err)
	}
	if !validSHA.MatchString(before) {
		return nil, fmt.Errorf("changed files: invalid commit %q", before)
	}
	if !validSHA.MatchString(sha) {
		return nil, fmt.Errorf("changed files: invalid commit %q", sha)
	}
	if f.cache != nil {
		if _, err := os.Stat(filepath.Join(dir, git.GitDirName)); errors.Is(err, os.ErrNotExist) {
			return f.cache.changedFiles(ctx, f, owner, name, before, sha, token)
		}
	}
	st, wt, err := storage(dir)
	if err != nil {
		return nil, fmt.Errorf("changed files %s/%s: %w", owner, name, err)
	}
	repo, err := git.Open(st, wt)
	if err != nil {
		return nil, fmt.Errorf("changed files %s/%s: open repository: %w", owner, name, err)
	}
	return f.diff(ctx, repo, owner, name, before, sha, token)
}

// diff lists the files that differ between before and sha in repo,
// fetching either (depth 1) if missing.
func (f *Fetcher) diff(ctx context.Context, repo *git.Repository, owner, name, before, sha, token string) ([]string, error) {
	for _, c := range [][2]string{{sha, commitRef}, {before, beforeRef}} {
		if _, err := repo.CommitObject(plumbing.NewHash(c[0])); err == nil {
			continue // already here, e.g. sha after Checkout
		}
		if err := f.fetch(ctx, repo, owner, name, c[0], c[1], token); err != nil {
			return nil, fmt.Errorf("fetch %s/%s@%s: %w", owner, name, c[0][:7], err)
		}
	}
	from, err := tree(repo, before)
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", before[:7], sha[:7], err)
	}
	to, err := tree(repo, sha)
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", before[:7], sha[:7], err)
	}
	// No rename detection: a rename lists both paths.
	changes, err := object.DiffTreeWithOptions(ctx, from, to, nil)
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", before[:7], sha[:7], err)
	}
	var files []string
	for _, c := range changes {
		for _, p := range []string{c.From.Name, c.To.Name} {
			if p != "" {
				files = append(files, p)
			}
		}
	}
	slices.Sort(files)
	// Not nil even when nothing changed: nil means "unknown".
	return append([]string{}, slices.Compact(files)...), nil
}

// ErrRefNotFound reports a ref that does not exist in the repository
// (deleted since the push).
var ErrRefNotFound = errors.New("ref not found")

var validRef = regexp.MustCompile(`^refs/(heads|tags)/[^\x00-\x20~^:?*\[\\]+$`)

// Head returns the commit ref (refs/heads/… or refs/tags/…) of owner/name
// points at now, as git ls-remote would: the ref's own value (for an
// annotated tag, the tag object). It returns ErrRefNotFound when the ref
// does not exist.
func (f *Fetcher) Head(ctx context.Context, owner, name, ref, token string) (string, error) {
	if err := validRepo(owner, name); err != nil {
		return "", fmt.Errorf("head: %w", err)
	}
	if !validRef.MatchString(ref) || strings.Contains(ref, "..") {
		return "", fmt.Errorf("head of %s/%s: invalid ref %q", owner, name, ref)
	}
	remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{f.URL(owner, name)}})
	var auth transport.AuthMethod
	if token != "" {
		auth = &githttp.BasicAuth{Username: basicAuthUser, Password: token}
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return "", fmt.Errorf("head of %s/%s %s: %w", owner, name, ref, ctxErr)
		}
		return "", scrub(fmt.Errorf("head of %s/%s %s: list refs: %w", owner, name, ref, err), token)
	}
	for _, r := range refs {
		if r.Name().String() == ref && r.Type() == plumbing.HashReference {
			return r.Hash().String(), nil
		}
	}
	return "", fmt.Errorf("head of %s/%s: %s: %w", owner, name, ref, ErrRefNotFound)
}

// storage returns the object storage (dir/.git) and working tree of the
// repository in dir, both bound to dir: paths cannot climb out of it and
// symlinks in the tree are not followed out of it.
func storage(dir string) (*filesystem.Storage, billy.Filesystem, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	// The working tree gets repository paths only, so a path that happens
	// to repeat abs must stay below abs rather than be folded onto it
	// (WithDeduplicatePath(false)); the object storage opens absolute
	// temporary-file paths of its own and needs the folding.
	wt := osfs.New(abs, osfs.WithBoundOS(), osfs.WithDeduplicatePath(false))
	dot := osfs.New(filepath.Join(abs, git.GitDirName), osfs.WithBoundOS())
	return filesystem.NewStorage(dot, cache.NewObjectLRUDefault()), wt, nil
}

// fetch fetches exactly commit sha (depth 1, no tags) from owner/name into
// repo and stores it under ref. The remote exists only for this call: no
// remote is written to the repository's configuration.
func (f *Fetcher) fetch(ctx context.Context, repo *git.Repository, owner, name, sha, ref, token string) error {
	return f.fetchDepth(ctx, repo, owner, name, sha, ref, token, 1)
}

// fetchDepth is fetch with a depth; 0 fetches every object sha needs that
// the commits of repo's refs (its "haves") do not have.
func (f *Fetcher) fetchDepth(ctx context.Context, repo *git.Repository, owner, name, sha, ref, token string, depth int) error {
	remote := git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{f.URL(owner, name)}})
	var auth transport.AuthMethod
	if token != "" {
		auth = &githttp.BasicAuth{Username: basicAuthUser, Password: token}
	}
	err := remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{config.RefSpec(sha + ":" + ref)},
		Depth:    depth,
		Tags:     git.NoTags,
		Auth:     auth,
		Force:    true,
	})
	if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		// go-git flattens the transport's error into text: report the
		// cancellation itself, so callers can match it with errors.Is.
		return fmt.Errorf("git fetch: %w", ctxErr)
	}
	return scrub(fmt.Errorf("git fetch: %w", err), token)
}

// tree returns the tree of commit sha in repo.
func tree(repo *git.Repository, sha string) (*object.Tree, error) {
	c, err := repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", sha[:7], err)
	}
	t, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("tree of %s: %w", sha[:7], err)
	}
	return t, nil
}

// scrub returns err with every occurrence of token in its message
// replaced, in plain text and as the basic-auth credential the transport
// sends (a server may echo the Authorization header into an error page
// that go-git quotes). A scrubbed error still matches errors.Is (e.g.
// against context.Canceled) but does not unwrap, so the original message
// cannot be reached through it.
func scrub(err error, token string) error {
	if err == nil || token == "" {
		return err
	}
	msg := err.Error()
	for _, secret := range []string{token, base64.StdEncoding.EncodeToString([]byte(basicAuthUser + ":" + token))} {
		msg = strings.ReplaceAll(msg, secret, "***")
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbedError{msg: msg, err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }

// Is reports whether the original error matches target.
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }
