package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/loader"

	"github.com/kube-git-deploy/kube-git-deploy/bench"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/build"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/workspace"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/repoconfig"
)

const jobWarmup, jobSamples = 2, 20

// BenchmarkJob compares the demo app (localstack/demo, the app of make
// bench's push figure) run through the pipeline with the same work done
// directly with the same libraries, on the same parts (a git server on
// loopback, the Docker Engine, a registry, the local control plane):
//
//   - pipeline: Pipeline.Run of a new commit (checkout, render, build,
//     push, Helm upgrade, rollout check, every event into memory);
//   - direct: for the same kind of new commit, a go-git checkout with the
//     runner's source, kube-git-deploy.toml rendered with repoconfig, the
//     image built and pushed with the runner's builder, the chart loaded
//     and upgraded with its deployer and the rollout awaited with its
//     checker — no events, no workspace safety checks beyond the chart's
//     loader, nothing else.
//
// Each sample is a new commit that changes message.txt; the two variants
// alternate so that load on the machine hits both alike. One op is the
// whole series (make bench runs it with -benchtime=1x); the series are
// recorded for bench/RESULTS.md and the medians reported as metrics.
func BenchmarkJob(b *testing.B) {
	e := newEnv(b, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// Leave no images behind: an engine holding hundreds of leftovers
	// slows every later build and prune on the machine.
	b.Cleanup(func() {
		if _, err := build.Prune(context.Background(), e.docker, e.registry+"/octo/bench", 0); err != nil {
			b.Logf("remove the benchmark's images: %v", err)
		}
	})
	files, err := demo.Files(ctx, e.registry, "octo", "bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	repo := map[string]string{}
	for k, v := range files {
		repo[k] = string(v)
	}
	r, err := e.git.Create("octo", "bench")
	if err != nil {
		b.Fatal(err)
	}
	sha, err := r.Commit("main", "deploy", repo)
	if err != nil {
		b.Fatal(err)
	}
	j := Job{
		Job: event.Job{ID: "job-bench", Repository: "octo/bench", Commit: sha, Ref: "refs/heads/main", Branch: "main",
			DeliveryID: "d-bench", Trigger: "push", Iteration: 1},
		Owner: "octo", Name: "bench", Triggers: event.Triggers{Build: true, Deploy: true, Sync: true},
		Policy: deploy.Policy{Namespaces: []string{"default"}, CreateNamespaces: true},
	}
	commit := func(i int, variant string) string {
		sha, err := r.Commit("main", variant, map[string]string{"app/message.txt": fmt.Sprintf("%s %d %d\n", variant, i, time.Now().UnixNano())})
		if err != nil {
			b.Fatal(err)
		}
		return sha
	}
	for b.Loop() {
		var pipe, direct []time.Duration
		for i := range jobWarmup + jobSamples {
			j.Commit, j.Iteration = commit(i, "pipeline"), i+1
			t0 := time.Now()
			var rec recorder
			out, err := e.p.Run(ctx, j, &rec)
			if err != nil || out.Err != nil {
				b.Fatalf("Run: %v %+v\n%s", err, out.Err, rec.logs())
			}
			dp := time.Since(t0)

			sha := commit(i, "direct")
			t0 = time.Now()
			if err := e.direct(ctx, b.TempDir(), sha); err != nil {
				b.Fatal(err)
			}
			dd := time.Since(t0)
			if i >= jobWarmup {
				pipe, direct = append(pipe, dp), append(direct, dd)
			}
		}
		for _, s := range []bench.Series{
			{Figure: "2", Name: "one job of the demo app", Case: "pipeline (Pipeline.Run, events into memory)", Unit: "ms", Warmup: jobWarmup, Samples: bench.Millis(pipe),
				Note: "new commit (message.txt changed) each sample; the runner's source, builder, deployer and checker on a loopback git server, Docker, registry, local control plane"},
			{Figure: "2", Name: "one job of the demo app", Case: "direct (same libraries, no pipeline)", Unit: "ms", Warmup: jobWarmup, Samples: bench.Millis(direct),
				Note: "go-git checkout of the new commit, repoconfig render, build+push, Helm upgrade, rollout wait; alternating with the pipeline sample"},
		} {
			if err := bench.Record(s); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(bench.Summarize(bench.Millis(pipe)).Median, "pipeline-ms")
		b.ReportMetric(bench.Summarize(bench.Millis(direct)).Median, "direct-ms")
	}
}

// direct does one job's work for commit sha of octo/bench without the
// pipeline: checkout, render, build and push, Helm upgrade, rollout wait.
func (e *env) direct(ctx context.Context, dir, sha string) error {
	if err := e.p.src.Checkout(ctx, dir, "octo", "bench", sha, ""); err != nil {
		return err
	}
	src, err := os.ReadFile(filepath.Join(dir, repoconfig.FileName))
	if err != nil {
		return err
	}
	cfg, err := repoconfig.Parse(src, repoconfig.Vars{SHA: sha, Branch: "main", Ref: "refs/heads/main", Owner: "octo", Name: "bench"})
	if err != nil {
		return err
	}
	u := cfg.Units[0]
	tree, err := workspace.Open(dir)
	if err != nil {
		return err
	}
	defer tree.Close()
	contextRoot, err := tree.Sub(u.Docker.Directory)
	if err != nil {
		return err
	}
	res, err := e.p.builder.Build(ctx, build.Request{Context: contextRoot, Tag: u.Docker.Tag, Push: true}, func(string) {})
	contextRoot.Close()
	if err != nil {
		return err
	}
	chrt, err := loader.Load(filepath.Join(dir, u.Helm.Chart))
	if err != nil {
		return err
	}
	name := imageName(res.Tag)
	d, err := e.p.deployer.Deploy(ctx, deploy.Request{Release: "direct", Namespace: "default", Chart: chrt,
		Owner: "octo/bench", Policy: deploy.Policy{Namespaces: []string{"default"}},
		Set: map[string]string{"image.repository": name, "image.tag": res.Tag[len(name)+1:], "image.digest": res.Digest}}, func(string) {})
	if err != nil {
		return err
	}
	return e.p.checker.Wait(ctx, d.Resources, time.Minute, func(rollout.Update) {})
}
