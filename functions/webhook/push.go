package webhook

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
)

// zeroSHA is what GitHub sends as after for a deleted ref and as before
// for a created one.
const zeroSHA = "0000000000000000000000000000000000000000"

// Push is the part of a GitHub push event kube-git-deploy uses.
type Push struct {
	Ref     string `json:"ref"`
	Before  string `json:"before"`
	After   string `json:"after"`
	Created bool   `json:"created"`
	Deleted bool   `json:"deleted"`
	Forced  bool   `json:"forced"`
	// PushedAt is when the push happened, from repository.pushed_at
	// (GitHub sends Unix seconds in push events, ISO 8601 elsewhere); zero
	// when absent. It is part of the signed body, unlike the delivery id.
	PushedAt time.Time `json:"-"`
	// Pusher is who pushed: the sender's GitHub login, else the pusher's
	// name; empty when the payload names neither.
	Pusher string `json:"-"`
}

// ErrUnsupportedRef reports a push to a ref that is neither a branch nor a
// tag (e.g. refs/notes/...), which is ignored.
var ErrUnsupportedRef = errors.New("ref is neither a branch nor a tag")

// ParsePush decodes and checks a push event body. The ref must be a branch
// (refs/heads/…) or tag (refs/tags/…); after must be a 40-digit lowercase
// hex commit (all zeros only when deleted); before, when present, too.
func ParsePush(body []byte) (Push, error) {
	var p Push
	if err := json.Unmarshal(body, &p); err != nil {
		return Push{}, fmt.Errorf("decode push event: %w", err)
	}
	var repo struct {
		Repository struct {
			PushedAt json.RawMessage `json:"pushed_at"`
		} `json:"repository"`
		Sender struct {
			Login string `json:"login"`
		} `json:"sender"`
		Pusher struct {
			Name string `json:"name"`
		} `json:"pusher"`
	}
	if err := json.Unmarshal(body, &repo); err != nil {
		return Push{}, fmt.Errorf("decode push event: %w", err)
	}
	t, err := pushTime(repo.Repository.PushedAt)
	if err != nil {
		return Push{}, fmt.Errorf("push event: repository.pushed_at: %w", err)
	}
	p.PushedAt = t
	p.Pusher = strings.ToValidUTF8(truncate(cmp.Or(repo.Sender.Login, repo.Pusher.Name)), "")
	if !strings.HasPrefix(p.Ref, job.BranchPrefix) && !strings.HasPrefix(p.Ref, job.TagPrefix) {
		if p.Ref == "" || !strings.HasPrefix(p.Ref, "refs/") {
			return Push{}, fmt.Errorf("push event: ref %q is not a full ref", truncate(p.Ref))
		}
		return Push{}, fmt.Errorf("push event: %w: %q", ErrUnsupportedRef, truncate(p.Ref))
	}
	if !isSHA(p.After) {
		return Push{}, fmt.Errorf("push event: after is not a commit sha")
	}
	if p.Before != "" && !isSHA(p.Before) {
		return Push{}, fmt.Errorf("push event: before is not a commit sha")
	}
	if p.After == zeroSHA && !p.Deleted {
		return Push{}, fmt.Errorf("push event: after is the zero sha but the ref is not deleted")
	}
	return p, nil
}

// Branch returns the pushed branch, or "" for a tag: the ref without
// "refs/heads/" (never split on "/": feature/x is a branch).
func (p Push) Branch() string {
	b, _ := strings.CutPrefix(p.Ref, job.BranchPrefix)
	if b == p.Ref {
		return ""
	}
	return b
}

// Tag returns the pushed tag, or "" for a branch.
func (p Push) Tag() string {
	t, _ := strings.CutPrefix(p.Ref, job.TagPrefix)
	if t == p.Ref {
		return ""
	}
	return t
}

// pushTime reads pushed_at: Unix seconds, an ISO 8601 time, null or
// absent (zero).
func pushTime(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, nil
	}
	var secs int64
	if err := json.Unmarshal(raw, &secs); err == nil {
		if secs < 0 || secs > 1<<40 {
			return time.Time{}, errors.New("out of range")
		}
		return time.Unix(secs, 0).UTC(), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return time.Time{}, errors.New("neither Unix seconds nor a time")
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 time")
	}
	return t.UTC(), nil
}

func isSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
