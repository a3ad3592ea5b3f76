// Package source checks a repository out at an exact commit into a job's
// workspace, with the git command line. The repository is always fetched
// from the configured base URL and the tracked owner/name, never from a
// URL in a webhook payload, so a payload cannot point the runner anywhere
// else. The token, when given, travels in an HTTP header for the one git
// process, never in a URL, a file or the process arguments' URL.
package source

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// Fetcher clones repositories from one git host.
type Fetcher struct {
	base *url.URL
	git  string
}

// New returns a Fetcher for repositories under baseURL (GITHUB_WEB_URL,
// e.g. https://github.com/; tests serve repositories on loopback).
func New(baseURL string) (*Fetcher, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("source: base URL %q must be an absolute http(s) URL", baseURL)
	}
	git, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("source: git not found on PATH: %w", err)
	}
	return &Fetcher{base: u, git: git}, nil
}

var (
	validOwner = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)
	validName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	validSHA   = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// URL returns the clone URL of owner/name.
func (f *Fetcher) URL(owner, name string) string {
	return f.base.JoinPath(owner, name+".git").String()
}

// Checkout fetches commit sha of owner/name (and, if before is a commit,
// enough to diff against it) into dir, an empty or missing directory, and
// checks it out detached. token may be empty for public repositories.
func (f *Fetcher) Checkout(ctx context.Context, dir, owner, name, sha, token string) error {
	if !validOwner.MatchString(owner) || !validName.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("checkout: invalid repository %q", owner+"/"+name)
	}
	if !validSHA.MatchString(sha) {
		return fmt.Errorf("checkout %s/%s: invalid commit %q", owner, name, sha)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkout %s/%s: %w", owner, name, err)
	}
	steps := [][]string{
		{"init", "--quiet"},
		{"fetch", "--quiet", "--no-tags", "--depth=1", f.URL(owner, name), sha},
		{"checkout", "--quiet", "--detach", sha},
	}
	for _, args := range steps {
		if err := f.run(ctx, dir, token, args...); err != nil {
			return fmt.Errorf("checkout %s/%s@%s: %w", owner, name, sha[:7], err)
		}
	}
	return nil
}

// ChangedFiles lists the files that differ between before and sha (both
// fetched on demand). It returns nil, nil when before is empty or all
// zeros (a new ref: everything counts as changed).
func (f *Fetcher) ChangedFiles(ctx context.Context, dir, owner, name, before, sha, token string) ([]string, error) {
	if before == "" || strings.Trim(before, "0") == "" {
		return nil, nil
	}
	if !validSHA.MatchString(before) {
		return nil, fmt.Errorf("changed files: invalid commit %q", before)
	}
	if err := f.run(ctx, dir, token, "fetch", "--quiet", "--no-tags", "--depth=1", f.URL(owner, name), before); err != nil {
		return nil, fmt.Errorf("fetch %s/%s@%s: %w", owner, name, before[:7], err)
	}
	out, err := f.output(ctx, dir, "diff", "--name-only", "-z", before, sha)
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", before[:7], sha[:7], err)
	}
	var files []string
	for _, p := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if p != "" {
			files = append(files, p)
		}
	}
	return files, nil
}

// command builds a git command that reads no user or system configuration,
// never prompts, and sends token as basic auth (GitHub's x-access-token
// convention) through an environment-provided config entry.
func (f *Fetcher) command(ctx context.Context, dir, token string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, f.git, args...)
	cmd.Dir = dir
	env := []string{
		"HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "LANG=C",
		"PATH=" + os.Getenv("PATH"),
		// Only http(s): no file://, ssh:// or ext:: transports.
		"GIT_ALLOW_PROTOCOL=http:https",
	}
	if token != "" {
		auth := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))
		env = append(env, "GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic "+auth)
	}
	cmd.Env = env
	return cmd
}

func (f *Fetcher) run(ctx context.Context, dir, token string, args ...string) error {
	_, err := f.outputWithToken(ctx, dir, token, args...)
	return err
}

func (f *Fetcher) output(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return f.outputWithToken(ctx, dir, "", args...)
}

func (f *Fetcher) outputWithToken(ctx context.Context, dir, token string, args ...string) ([]byte, error) {
	cmd := f.command(ctx, dir, token, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if token != "" {
			msg = strings.ReplaceAll(msg, token, "***")
		}
		return nil, fmt.Errorf("git %s: %v: %s", args[0], err, msg)
	}
	return out, nil
}
