package repos

import (
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMayManage(t *testing.T) {
	t.Parallel()
	alice := caller.Identity{Email: "alice@example.com"}
	ops := caller.Identity{Email: "ops@example.com"}
	mallory := caller.Identity{Email: "mallory@example.com"}
	tracked := &store.Repository{TrackedByCaller: "alice@example.com", Policy: store.Policy{Operators: []string{"Ops@Example.com"}}}
	legacy := &store.Repository{} // tracked before trackers were recorded
	tests := []struct {
		name          string
		id            caller.Identity
		repo          *store.Repository
		policy, right bool
	}{
		{"tracker-policy", alice, tracked, true, true},
		{"tracker-untrack", alice, tracked, false, true},
		{"operator-policy", ops, tracked, true, true},
		{"operator-untrack", ops, tracked, false, true},
		{"stranger-policy", mallory, tracked, true, false},
		{"stranger-untrack", mallory, tracked, false, false},
		{"local-policy", caller.Local, tracked, true, true},
		{"legacy-policy", alice, legacy, true, false},
		{"legacy-untrack", mallory, legacy, false, true},
		{"legacy-local-policy", caller.Local, legacy, true, true},
	}
	for _, tt := range tests {
		if got := mayManage(tt.id, tt.repo, tt.policy); got != tt.right {
			t.Errorf("%s: mayManage = %v, want %v", tt.name, got, tt.right)
		}
	}
}
