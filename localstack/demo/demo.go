// Package demo pushes a sample app through a running local stack
// (package localstack) the way a user would: create a repository in the
// GitHub stand-in, sign in through PrivateAPI's OAuth flow as a browser
// does, track the repository, push a commit (the stand-in delivers the
// webhook to PublicAPI) and follow the job's events on the API service.
//
// Each step is a method, so end-to-end tests drive the same code as make
// demo. Every step can be repeated: an existing repository or an already
// tracked one is fine, and each push is a new commit.
package demo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/localstack"
)

// Defaults of the demo repository.
const (
	Owner = "demo"
	Name  = "hello"
)

// Demo drives a running stack.
type Demo struct {
	// URLs of the stack (localstack.Config.URLs).
	URLs localstack.URLs
	// Client makes the requests; it must follow redirects (the zero
	// http.Client does).
	Client *http.Client
}

// New returns a Demo for the stack at urls, with a client that keeps
// cookies and follows redirects like a browser.
func New(urls localstack.URLs) *Demo {
	jar, _ := cookiejar.New(nil)
	return &Demo{URLs: urls, Client: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// response is the JSON every endpoint of the stack answers with.
type response struct {
	status int
	body   map[string]any
	raw    []byte
}

func (r response) errorf(doing string) error {
	msg, _ := r.body["error"].(string)
	if msg == "" {
		msg = strings.TrimSpace(string(r.raw))
	}
	return fmt.Errorf("%s: %d %s: %s", doing, r.status, http.StatusText(r.status), msg)
}

func (d *Demo) call(ctx context.Context, method, u string, in any) (response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return response{}, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return response{}, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.Client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return response{}, err
	}
	r := response{status: resp.StatusCode, raw: raw}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		return r, fmt.Errorf("%s %s answered %s, not JSON: %.200s", method, resp.Request.URL.Redacted(), resp.Status, raw)
	}
	return r, nil
}

// CreateRepo creates owner/name in the GitHub stand-in with login as its
// admin; created is false if it existed already.
func (d *Demo) CreateRepo(ctx context.Context, owner, name, login string) (created bool, err error) {
	r, err := d.call(ctx, http.MethodPost, d.URLs.GitHub+"_standin/repos", map[string]any{"owner": owner, "name": name, "admin": login})
	if err != nil {
		return false, fmt.Errorf("create %s/%s in the GitHub stand-in: %w", owner, name, err)
	}
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		return false, r.errorf("create " + owner + "/" + name + " in the GitHub stand-in")
	}
	return r.status == http.StatusCreated, nil
}

// SignIn signs login in as a browser does: it asks PrivateAPI for the
// login URL, opens it on the GitHub stand-in (whose authorize page
// approves at once for its signed-in user, set to login first) and
// follows the redirect back to PrivateAPI's OAuth callback. It returns the
// scopes granted.
func (d *Demo) SignIn(ctx context.Context, login string) (scopes string, err error) {
	r, err := d.call(ctx, http.MethodPut, d.URLs.GitHub+"_standin/sign-in", map[string]string{"login": login})
	if err != nil {
		return "", fmt.Errorf("sign in: choose the stand-in user: %w", err)
	}
	if r.status != http.StatusOK {
		return "", r.errorf("sign in: choose the stand-in user")
	}
	r, err = d.call(ctx, http.MethodGet, d.URLs.PrivateAPI+"api/v0/github/login_url", nil)
	if err != nil {
		return "", fmt.Errorf("sign in: %w", err)
	}
	loginURL, _ := r.body["login_url"].(string)
	if r.status != http.StatusOK || loginURL == "" {
		return "", r.errorf("sign in: GET login_url")
	}
	// The authorize page redirects to the callback, which answers JSON.
	r, err = d.call(ctx, http.MethodGet, loginURL, nil)
	if err != nil {
		return "", fmt.Errorf("sign in: follow the login URL: %w", err)
	}
	if r.status != http.StatusOK {
		return "", r.errorf("sign in: OAuth callback")
	}
	if got, _ := r.body["login"].(string); !strings.EqualFold(got, login) {
		return "", fmt.Errorf("sign in: signed in as %q, want %q", got, login)
	}
	switch s := r.body["scopes"].(type) {
	case string:
		scopes = s
	case []any:
		var list []string
		for _, v := range s {
			list = append(list, fmt.Sprint(v))
		}
		scopes = strings.Join(list, ",")
	}
	return scopes, nil
}

// Track asks PrivateAPI to track owner/name (it creates the webhook in the
// stand-in); already is true if it was tracked before.
func (d *Demo) Track(ctx context.Context, owner, name string) (already bool, err error) {
	r, err := d.call(ctx, http.MethodPost, d.URLs.PrivateAPI+"api/v0/github/repositories/"+url.PathEscape(owner)+"/"+url.PathEscape(name), nil)
	if err != nil {
		return false, fmt.Errorf("track %s/%s: %w", owner, name, err)
	}
	switch r.status {
	case http.StatusCreated:
		return false, nil
	case http.StatusConflict:
		return true, nil
	default:
		return false, r.errorf("track " + owner + "/" + name)
	}
}

// Untrack asks PrivateAPI to stop tracking owner/name (it deletes the
// webhook).
func (d *Demo) Untrack(ctx context.Context, owner, name string) error {
	r, err := d.call(ctx, http.MethodDelete, d.URLs.PrivateAPI+"api/v0/github/repositories/"+url.PathEscape(owner)+"/"+url.PathEscape(name), nil)
	if err != nil {
		return fmt.Errorf("untrack %s/%s: %w", owner, name, err)
	}
	if r.status != http.StatusOK {
		return r.errorf("untrack " + owner + "/" + name)
	}
	return nil
}

// Delivery is one webhook delivery the stand-in made for a push.
type Delivery struct {
	GUID       string `json:"guid"`
	HookID     int64  `json:"hook_id"`
	URL        string `json:"url"`
	StatusCode int    `json:"status_code"`
	Response   string `json:"response"`
	Error      string `json:"error"`
	// At is when the stand-in began the delivery (after its commit).
	At time.Time `json:"delivered_at"`
}

// Pushed is the outcome of Push.
type Pushed struct {
	Ref, Before, After string
	Deliveries         []Delivery
	// JobID is the job PublicAPI recorded for the push, from the answer to
	// the delivery ("" when no delivery was answered with one).
	JobID string
}

// Push commits files (path → content; nil content deletes) to branch of
// owner/name in the stand-in, as its admin, which delivers the push to the
// repository's webhooks and reports the answers.
func (d *Demo) Push(ctx context.Context, owner, name, branch, message string, files map[string][]byte) (*Pushed, error) {
	enc := map[string]string{}
	var del []string
	for p, b := range files {
		if b == nil {
			del = append(del, p)
			continue
		}
		enc[p] = base64.StdEncoding.EncodeToString(b)
	}
	r, err := d.call(ctx, http.MethodPost, d.URLs.GitHub+"_standin/repos/"+url.PathEscape(owner)+"/"+url.PathEscape(name)+"/commits",
		map[string]any{"branch": branch, "message": message, "files_base64": enc, "delete": del})
	if err != nil {
		return nil, fmt.Errorf("push to %s/%s: %w", owner, name, err)
	}
	if r.status != http.StatusCreated {
		return nil, r.errorf("push to " + owner + "/" + name)
	}
	var out struct {
		Ref, Before, After string
		Deliveries         []Delivery
	}
	if err := json.Unmarshal(r.raw, &out); err != nil {
		return nil, fmt.Errorf("push to %s/%s: %w", owner, name, err)
	}
	p := &Pushed{Ref: out.Ref, Before: out.Before, After: out.After, Deliveries: out.Deliveries}
	for _, dl := range p.Deliveries {
		var ans struct {
			JobID string `json:"job_id"`
		}
		if json.Unmarshal([]byte(dl.Response), &ans) == nil && ans.JobID != "" {
			p.JobID = ans.JobID
		}
	}
	return p, nil
}

// ErrNotDelivered reports a push that no webhook accepted as a job.
var ErrNotDelivered = errors.New("the push did not become a job")
