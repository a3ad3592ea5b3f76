//go:build unix

// Package controlplanetest starts a local Kubernetes control plane for a
// test.
package controlplanetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane"
)

// Start starts a control plane whose Stop is registered with t.Cleanup. It
// fails the test (never skips) if the binaries are missing. Output of the
// processes goes to t.Log when the test runs with -v and the env variable
// KGD_K8S_LOG is set; otherwise only the last lines appear in errors.
func Start(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if errors.Is(err, controlplane.ErrBinariesMissing) {
		t.Fatalf("%v", err)
	}
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}
