package build

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/kube-git-deploy/kube-git-deploy/testbed/dockerd"
)

// The package's tests' own Docker Engine (testbed/dockerd), with
// features.buildkit=false: it answers /_ping with Builder-Version 1 like
// an engine that prefers the legacy builder, yet (Docker 20.10) builds
// with BuildKit when a request asks for it. The tests that prune its
// whole build cache therefore disturb no one else's builds on the
// machine's engine.
var (
	privateOnce   sync.Once
	privateEngine *dockerd.Engine
	privateErr    error
)

// mustPrivateEngine returns a client of the package's own engine,
// started at the first call and stopped when the tests end (runTests).
// It fails the test when the engine cannot start (it needs root and
// dockerd on PATH).
func mustPrivateEngine(tb testing.TB) *client.Client {
	tb.Helper()
	privateOnce.Do(func() {
		if privateEngine, privateErr = dockerd.New(dockerd.Options{LegacyBuilderPreferred: true}); privateErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // generous: the machine may be busy
		defer cancel()
		privateErr = privateEngine.Start(ctx)
	})
	if privateErr != nil {
		tb.Fatalf("start the tests' own dockerd: %v", privateErr)
	}
	c, err := privateEngine.Client()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// stopPrivateEngine stops the engine, if it was started, and removes it.
func stopPrivateEngine() {
	if privateEngine != nil {
		if err := privateEngine.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the tests' own dockerd:", err)
		}
	}
}
