package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

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
