package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// PrivateAPI's routes (docs/functions.md). Its answers are JSON objects
// with "ok"; they are returned raw too, for --output json.

// Login is the answer to GET /api/v0/github/login_url.
type Login struct {
	// URL is GitHub's authorize URL to open in a browser.
	URL string `json:"login_url"`
	// ExpiresAt is when the sign-in flow expires.
	ExpiresAt time.Time `json:"expires_at"`
}

// LoginURL starts a GitHub sign-in for the caller and returns the URL to
// open; whoever completes it gives their GitHub token to this caller.
func (c *Client) LoginURL(ctx context.Context) (*Login, json.RawMessage, error) {
	var out Login
	raw, err := c.callPrivate(ctx, request{method: http.MethodGet, path: "api/v0/github/login_url"}, &out)
	if err == nil && out.URL == "" {
		err = &Error{Code: codes.Internal, Message: "PrivateAPI answered no login_url"}
	}
	return &out, raw, err
}

// Policy is a repository's deploy policy, a complete object: what is
// sent is what is stored.
type Policy struct {
	Namespaces       []string `json:"namespaces"`
	CreateNamespaces bool     `json:"create_namespaces"`
	ClusterScoped    bool     `json:"cluster_scoped"`
	AllowKinds       []string `json:"allow_kinds"`
	Adopt            bool     `json:"adopt"`
	ServiceAccount   string   `json:"service_account"`
	Operators        []string `json:"operators"`
}

// Tracked is a tracked repository as PrivateAPI lists it.
type Tracked struct {
	Owner           string    `json:"owner"`
	Name            string    `json:"name"`
	FullName        string    `json:"full_name"`
	HookID          int64     `json:"web_hook_id"`
	TrackedBy       string    `json:"tracked_by"`
	TrackedByCaller string    `json:"tracked_by_caller"`
	TrackedAt       time.Time `json:"tracked_at"`
	AutoBuild       bool      `json:"auto_build"`
	AutoDeploy      bool      `json:"auto_deploy"`
	Policy          Policy    `json:"policy"`
	Reports         struct {
		GitHub *bool `json:"github"`
	} `json:"reports"`
}

// Repo returns the repository's owner and name.
func (t Tracked) Repo() Repo { return Repo{Owner: t.Owner, Name: t.Name} }

// TrackedRepositories lists what is tracked (GET
// /api/v0/github/repositories/tracked).
func (c *Client) TrackedRepositories(ctx context.Context) ([]Tracked, json.RawMessage, error) {
	var out struct {
		Repositories []Tracked `json:"repositories"`
	}
	raw, err := c.callPrivate(ctx, request{method: http.MethodGet, path: "api/v0/github/repositories/tracked"}, &out)
	return out.Repositories, raw, err
}

// Tracked returns repo as PrivateAPI lists it, or a NOT_FOUND *Error.
func (c *Client) Tracked(ctx context.Context, repo Repo) (*Tracked, error) {
	list, _, err := c.TrackedRepositories(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range list {
		if strings.EqualFold(t.Owner, repo.Owner) && strings.EqualFold(t.Name, repo.Name) {
			return &t, nil
		}
	}
	return nil, &Error{Code: codes.NotFound, Message: repo.String() + " is not tracked", Hint: "track it with `kgd track " + repo.String() + "`"}
}

func (r Repo) privatePath() string { return "api/v0/github/repositories/" + r.path() }

// Track tracks repo: PrivateAPI creates its webhook with one of the
// caller's GitHub tokens (login's, when not empty). policy, when not
// nil, is the repository's deploy policy; nil means the default.
// Tracking a tracked repository is ALREADY_EXISTS.
func (c *Client) Track(ctx context.Context, repo Repo, login string, policy *Policy) (json.RawMessage, error) {
	req := request{svc: servicePrivate, method: http.MethodPost, path: repo.privatePath(), query: loginQuery(login)}
	if policy != nil {
		req.body = jsonBody(map[string]*Policy{"policy": policy})
	}
	return c.callPrivate(ctx, req, nil)
}

// Untrack stops tracking repo: PrivateAPI deletes its webhook (with
// login's token, when not empty); force untracks even if the hook cannot
// be deleted. The job history is kept.
func (c *Client) Untrack(ctx context.Context, repo Repo, login string, force bool) (json.RawMessage, error) {
	q := loginQuery(login)
	if force {
		if q == nil {
			q = url.Values{}
		}
		q.Set("force", "true")
	}
	return c.callPrivate(ctx, request{method: http.MethodDelete, path: repo.privatePath(), query: q}, nil)
}

// SetPolicy replaces repo's deploy policy with policy, a JSON object
// (PUT …/policy).
func (c *Client) SetPolicy(ctx context.Context, repo Repo, policy json.RawMessage) (json.RawMessage, error) {
	return c.callPrivate(ctx, request{method: http.MethodPut, path: repo.privatePath() + "/policy", body: policy}, nil)
}

// SetGitHubReports turns the runner's commit statuses and Deployments on
// GitHub on or off for repo (PUT …/reports).
func (c *Client) SetGitHubReports(ctx context.Context, repo Repo, on bool) (json.RawMessage, error) {
	return c.callPrivate(ctx, request{method: http.MethodPut, path: repo.privatePath() + "/reports", body: jsonBody(map[string]bool{"github": on})}, nil)
}

func loginQuery(login string) url.Values {
	if login == "" {
		return nil
	}
	return url.Values{"login": {login}}
}

// callPrivate sends a request to PrivateAPI and decodes its answer into out
// (when not nil); it returns the answer as sent.
func (c *Client) callPrivate(ctx context.Context, req request, out any) (json.RawMessage, error) {
	req.svc = servicePrivate
	b, _, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return nil, &Error{Code: codes.Internal, Message: fmt.Sprintf("PrivateAPI answered %s %s with what is not JSON: %.200s", req.method, req.path, b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, &Error{Code: codes.Internal, Message: fmt.Sprintf("PrivateAPI's answer to %s %s: %v", req.method, req.path, err)}
		}
	}
	return b, nil
}
