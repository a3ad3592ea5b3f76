package githubstandin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/githubfake"
	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
)

// Headers of a webhook delivery, as GitHub sends them.
const (
	EventHeader        = "X-GitHub-Event"
	DeliveryHeader     = "X-GitHub-Delivery"
	HookIDHeader       = "X-GitHub-Hook-ID"
	TargetIDHeader     = "X-GitHub-Hook-Installation-Target-ID"
	TargetTypeHeader   = "X-GitHub-Hook-Installation-Target-Type"
	Signature256Header = "X-Hub-Signature-256"
	SignatureHeader    = "X-Hub-Signature"
	// UserAgent starts with GitHub-Hookshot/ like GitHub's.
	UserAgent = "GitHub-Hookshot/kgd-standin"
)

// keptDeliveries is how many deliveries per repository are remembered
// (GitHub keeps those of the last 3 days).
const keptDeliveries = 500

// Commit is one commit for Push.
type Commit struct {
	// Branch defaults to the repository's default branch (main). A new
	// branch starts from main.
	Branch string
	// Message defaults to "Update <files>".
	Message string
	// Author is the login of the pusher, who must administer the
	// repository; default its admin.
	Author string
	// Files are written (slash-separated path → content); Delete lists
	// paths to remove.
	Files  map[string][]byte
	Delete []string
	// NoDelivery commits and pushes without delivering webhooks.
	NoDelivery bool
}

// PushResult is what Push did.
type PushResult struct {
	Ref string `json:"ref"`
	// Before is the ref's previous commit, all zeros when it was created.
	Before  string `json:"before"`
	After   string `json:"after"`
	Created bool   `json:"created"`
	// Payload is the push event as delivered.
	Payload    json.RawMessage `json:"-"`
	Deliveries []Delivery      `json:"deliveries"`
}

// Delivery is one webhook delivery and its outcome.
type Delivery struct {
	// ID numbers the delivery records of the stand-in, as GitHub's
	// delivery ids do; a redelivery is a new record with the same GUID.
	ID         int64     `json:"id"`
	GUID       string    `json:"guid"`
	Event      string    `json:"event"`
	HookID     int64     `json:"hook_id"`
	URL        string    `json:"url"`
	Redelivery bool      `json:"redelivery"`
	At         time.Time `json:"delivered_at"`
	// Duration is in seconds, as GitHub reports it.
	Duration float64 `json:"duration"`
	// StatusCode is the receiver's HTTP status; 0 when there was no answer
	// (Error says why).
	StatusCode int `json:"status_code"`
	// Status is GitHub's summary of the outcome: "OK" for a 2xx answer,
	// "Invalid HTTP Response: <code>" for another answer, "failed to
	// connect" or "timed out" without one.
	Status string `json:"status"`
	// Response is the start of the receiver's answer.
	Response string `json:"response,omitempty"`
	Error    string `json:"error,omitempty"`

	payload []byte
}

// Push commits c to owner/name as its author, then delivers the push to the
// repository's hooks (unless c.NoDelivery), waiting for the answers.
func (s *Server) Push(ctx context.Context, owner, name string, c Commit) (*PushResult, error) {
	r := s.repo(owner, name)
	if r == nil {
		return nil, fmt.Errorf("push to %s/%s: %w", owner, name, ErrNotFound)
	}
	if c.Branch == "" {
		c.Branch = r.defaultBranch
	}
	if c.Author == "" {
		c.Author = r.admin
	}
	if !strings.EqualFold(c.Author, r.admin) {
		return nil, fmt.Errorf("push to %s/%s: %s may not push (only %s administers it): %w", owner, name, c.Author, r.admin, ErrForbidden)
	}
	if c.Message == "" {
		c.Message = "Update " + strings.Join(slices.Sorted(maps.Keys(c.Files)), ", ")
	}
	u := s.urls().user(c.Author)
	r.mu.Lock()
	refs, err := r.git.Refs()
	if err != nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("push to %s/%s: %w", owner, name, err)
	}
	before, after, err := r.git.Apply(gitserve.Change{Branch: c.Branch, Message: c.Message,
		Author: gitserve.Signature{Name: u.Name, Email: u.Email}, Files: c.Files, Delete: c.Delete})
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("push to %s/%s: %w", owner, name, err)
	}
	ref := "refs/heads/" + c.Branch
	payload, err := s.pushPayload(r, ref, before, after, slices.Collect(maps.Values(refs)), c.Author)
	if err != nil {
		return nil, fmt.Errorf("push to %s/%s: %w", owner, name, err)
	}
	s.log.Info("pushed", "repo", r.owner+"/"+r.name, "ref", ref, "after", after, "pusher", c.Author)
	res := &PushResult{Ref: ref, Before: before, After: after, Created: before == "", Payload: payload, Deliveries: []Delivery{}}
	if res.Created {
		res.Before = zeroSHA
	}
	if !c.NoDelivery {
		res.Deliveries = s.Deliver(ctx, owner, name, "push", payload)
	}
	return res, nil
}

// ErrForbidden reports a user who may not do what was asked.
var ErrForbidden = errors.New("forbidden")

// pushPayload is the JSON push event of ref going from before ("" for a
// new ref) to after ("" for a deleted one). A new ref lists the commits
// not reachable from known, the repository's refs before the push.
func (s *Server) pushPayload(r *repoInfo, ref, before, after string, known []string, pusher string) ([]byte, error) {
	var (
		head    *gitserve.CommitInfo
		commits []gitserve.CommitInfo
	)
	if after != "" {
		not := known
		if before != "" {
			not = []string{before}
		}
		var err error
		if commits, err = r.git.Commits(after, maxPushCommits, not...); err != nil {
			return nil, err
		}
		last, err := r.git.Commits(after, 1)
		if err != nil {
			return nil, err
		}
		if len(last) == 1 {
			head = &last[0]
		}
	}
	return json.Marshal(s.urls().pushEvent(r, ref, before, head, commits, pusher, time.Now()))
}

// Deliver sends event with payload to every active hook of owner/name that
// subscribes to it, one after the other, as GitHub does, and returns the
// outcomes.
func (s *Server) Deliver(ctx context.Context, owner, name, event string, payload []byte) []Delivery {
	r := s.repo(owner, name)
	if r == nil {
		return nil
	}
	out := []Delivery{}
	for _, h := range s.gh.Hooks(owner, name) {
		if !h.Active || (!slices.Contains(h.Events, event) && !slices.Contains(h.Events, "*")) {
			continue
		}
		out = append(out, s.send(ctx, r, h, event, newGUID(), payload, false))
	}
	return out
}

// Redeliver sends a recorded delivery of owner/name again, with its GUID
// and payload, to the same hook (which must still exist), as GitHub's
// "Redeliver" button does.
func (s *Server) Redeliver(ctx context.Context, owner, name, guid string) (Delivery, error) {
	r := s.repo(owner, name)
	if r == nil {
		return Delivery{}, fmt.Errorf("redeliver %s: %s/%s: %w", guid, owner, name, ErrNotFound)
	}
	var old *Delivery
	s.mu.Lock()
	for _, d := range s.deliveries[key(r)] {
		if d.GUID == guid {
			old = d
		}
	}
	s.mu.Unlock()
	if old == nil {
		return Delivery{}, fmt.Errorf("redeliver: no delivery %s for %s/%s: %w", guid, owner, name, ErrNotFound)
	}
	return s.redeliver(ctx, r, old)
}

// redeliver sends old again to its hook, with its GUID and payload.
func (s *Server) redeliver(ctx context.Context, r *repoInfo, old *Delivery) (Delivery, error) {
	hooks := s.gh.Hooks(r.owner, r.name)
	i := slices.IndexFunc(hooks, func(h githubfake.Hook) bool { return h.ID == old.HookID })
	if i < 0 {
		return Delivery{}, fmt.Errorf("redeliver %s: hook %d of %s/%s was deleted: %w", old.GUID, old.HookID, r.owner, r.name, ErrNotFound)
	}
	return s.send(ctx, r, hooks[i], old.Event, old.GUID, old.payload, true), nil
}

// Deliveries returns the recent deliveries of owner/name, oldest first.
func (s *Server) Deliveries(owner, name string) []Delivery {
	r := s.repo(owner, name)
	if r == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Delivery, 0, len(s.deliveries[key(r)]))
	for _, d := range s.deliveries[key(r)] {
		out = append(out, *d)
	}
	return out
}

func key(r *repoInfo) string { return strings.ToLower(r.owner + "/" + r.name) }

// send makes one delivery and records it.
func (s *Server) send(ctx context.Context, r *repoInfo, h githubfake.Hook, event, guid string, payload []byte, redelivery bool) Delivery {
	d := Delivery{GUID: guid, Event: event, HookID: h.ID, URL: h.URL, Redelivery: redelivery, At: time.Now().UTC(), payload: payload}
	body, contentType := payload, "application/json"
	if h.ContentType == "form" {
		body, contentType = []byte(url.Values{"payload": {string(payload)}}.Encode()), "application/x-www-form-urlencoded"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if o := s.outage(); err == nil && o != nil {
		// The receivers are "down": nothing is sent.
		if o.StatusCode == 0 {
			err = errOutage
		} else {
			d.StatusCode, d.Response = o.StatusCode, http.StatusText(o.StatusCode)
		}
	} else if err == nil {
		hdr := req.Header
		hdr.Set("Accept", "*/*")
		hdr.Set("Content-Type", contentType)
		hdr.Set("User-Agent", UserAgent)
		hdr.Set(EventHeader, event)
		hdr.Set(DeliveryHeader, guid)
		hdr.Set(HookIDHeader, strconv.FormatInt(h.ID, 10))
		hdr.Set(TargetIDHeader, strconv.FormatInt(r.id, 10))
		hdr.Set(TargetTypeHeader, "repository")
		if h.Secret != "" {
			hdr.Set(SignatureHeader, "sha1="+hexHMAC(sha1Hash, h.Secret, body))
			hdr.Set(Signature256Header, "sha256="+hexHMAC(sha256Hash, h.Secret, body))
		}
		var resp *http.Response
		if resp, err = s.client.Do(req); err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			d.StatusCode, d.Response = resp.StatusCode, string(b)
		}
	}
	d.Duration = time.Since(d.At).Seconds()
	d.Status = deliveryStatus(d.StatusCode, err)
	if err != nil {
		d.Error = err.Error()
		s.log.Warn("delivery failed", "repo", r.owner+"/"+r.name, "event", event, "guid", guid, "url", h.URL, "err", err.Error())
	} else {
		s.log.Info("delivered", "repo", r.owner+"/"+r.name, "event", event, "guid", guid, "url", h.URL,
			"status", d.StatusCode, "response", strings.TrimSpace(d.Response))
	}
	s.mu.Lock()
	s.nextDeliveryID++
	d.ID = s.nextDeliveryID
	list := append(s.deliveries[key(r)], &d)
	if len(list) > keptDeliveries {
		list = list[len(list)-keptDeliveries:]
	}
	s.deliveries[key(r)] = list
	s.mu.Unlock()
	return d
}

// errOutage is the error of a delivery made while SetOutage holds the
// receivers down without an answer.
var errOutage = errors.New("receiver down (stand-in outage): connection refused")

// deliveryStatus is GitHub's status text of a delivery that was answered
// code, or failed with err.
func deliveryStatus(code int, err error) string {
	var ne net.Error
	switch {
	case err != nil && errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case err != nil:
		return "failed to connect"
	case code >= 200 && code <= 299:
		return "OK"
	default:
		return "Invalid HTTP Response: " + strconv.Itoa(code)
	}
}

// Outage makes the stand-in record deliveries as failed without sending
// them, as if every receiver (PublicAPI) were down; see SetOutage.
type Outage struct {
	// StatusCode is recorded as each delivery's answer: 0 records an
	// unreachable receiver (status "failed to connect", status_code 0),
	// e.g. 503 an error answer ("Invalid HTTP Response: 503").
	StatusCode int `json:"status_code"`
}

// SetOutage starts an outage of every receiver, or ends it when o is nil.
// Deliveries and redeliveries made meanwhile fail as o says and are
// recorded; the hooks' deliveries API lists them as GitHub would.
func (s *Server) SetOutage(o *Outage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o != nil {
		c := *o
		o = &c
	}
	s.down = o
}

func (s *Server) outage() *Outage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

const (
	sha1Hash   = "sha1"
	sha256Hash = "sha256"
)

// hexHMAC is the hex HMAC of body keyed with secret, as GitHub signs.
func hexHMAC(hash, secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	if hash == sha1Hash {
		m = hmac.New(sha1.New, []byte(secret))
	}
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// newGUID returns a random UUID, the form of GitHub's delivery ids.
func newGUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
