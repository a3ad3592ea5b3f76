package pipeline

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/loader"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/build"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/workspace"
)

// BenchmarkJob compares one small unit run through the whole pipeline
// (checkout, render, build, push, helm upgrade, rollout check, events) with
// the same docker build + push + helm upgrade + rollout check done directly
// with the same libraries. The ratio pipeline/direct is the runner's
// overhead.
func BenchmarkJob(b *testing.B) {
	e := newEnv(b, time.Minute)
	ctx := context.Background()
	j := e.push(b, "bench", e.repoFiles("FROM scratch\nCOPY hello.txt /\n", ""))

	b.Run("pipeline", func(b *testing.B) {
		for b.Loop() {
			var rec recorder
			out, err := e.p.Run(ctx, j, &rec)
			if err != nil || out.Err != nil {
				b.Fatalf("Run: %v %+v", err, out.Err)
			}
		}
	})
	b.Run("direct", func(b *testing.B) {
		dir := b.TempDir()
		if err := e.p.src.Checkout(ctx, dir, "octo", "bench", j.Commit, ""); err != nil {
			b.Fatal(err)
		}
		tag := e.registry + "/octo/bench:direct"
		tree, err := workspace.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer tree.Close()
		contextRoot, err := tree.Sub("app")
		if err != nil {
			b.Fatal(err)
		}
		defer contextRoot.Close()
		for b.Loop() {
			res, err := e.p.builder.Build(ctx, build.Request{Context: contextRoot, Tag: tag, Push: true}, func(string) {})
			if err != nil {
				b.Fatal(err)
			}
			chrt, err := loader.Load(filepath.Join(dir, "deploy"))
			if err != nil {
				b.Fatal(err)
			}
			d, err := e.p.deployer.Deploy(ctx, deploy.Request{Release: "bench-direct", Namespace: "default", Chart: chrt,
				Owner: "octo/bench", Policy: deploy.Policy{Namespaces: []string{"default"}},
				Set: map[string]string{"image.repository": e.registry + "/octo/bench", "image.tag": "direct", "image.digest": res.Digest}}, func(string) {})
			if err != nil {
				b.Fatal(err)
			}
			if err := e.p.checker.Wait(ctx, d.Resources, time.Minute, func(rollout.Update) {}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
