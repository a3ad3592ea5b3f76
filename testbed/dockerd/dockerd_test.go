package dockerd_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/testbed/dockerd"
)

// TestEngine: an engine starts, answers, stops, starts again, and leaves
// the machine's docker0 (if any) in place.
func TestEngine(t *testing.T) {
	_, hadDocker0 := net.InterfaceByName("docker0")
	e, err := dockerd.New(dockerd.Options{LegacyBuilderPreferred: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for round := range 2 {
		if err := e.Start(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c, err := e.Client()
		if err != nil {
			t.Fatal(err)
		}
		ping, err := c.Ping(ctx)
		c.Close()
		if err != nil {
			t.Fatalf("round %d: ping: %v", round, err)
		}
		if ping.BuilderVersion != "1" {
			t.Errorf("round %d: Builder-Version %q, want 1 (features.buildkit=false)", round, ping.BuilderVersion)
		}
		if err := e.Stop(); err != nil {
			t.Fatalf("round %d: stop: %v", round, err)
		}
	}
	if _, err := net.InterfaceByName("docker0"); hadDocker0 == nil && err != nil {
		t.Errorf("docker0 is gone after the engine ran: %v", err)
	}
}
