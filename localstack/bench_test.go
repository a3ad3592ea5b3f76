package localstack_test

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
)

// BenchmarkPushToDeployed measures the product's main path through the real
// binaries (startStack): a commit pushed to the GitHub stand-in, which
// delivers the signed webhook; PublicAPI records and queues the job
// (accepted-ms: push until the webhook's 202); the runner checks out,
// builds, pushes to the registry, deploys with Helm and waits for the
// rollout; the API streams it (deployed-ms: push until the iteration's
// DevLoop Succeeded arrives on /v1/events). One op is one push, run one
// after the other; the values are medians.
func BenchmarkPushToDeployed(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	st, d := startStack(b, ctx, io.Discard)
	push := func(msg string) (accepted, deployed time.Duration) {
		files, err := demo.Files(ctx, st.URLs.Registry, "demo", "hello", msg)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		p, err := d.Push(ctx, "demo", "hello", "main", msg, files)
		if err != nil {
			b.Fatal(err)
		}
		accepted = time.Since(start)
		it, err := d.WaitForCommit(ctx, "demo/hello", p.After, nil)
		if err != nil {
			b.Fatal(err)
		}
		if it.Status != "Succeeded" {
			b.Fatalf("%s", it)
		}
		return accepted, time.Since(start)
	}
	push("warm-up") // the first build fills Docker's cache
	var acc, dep []time.Duration
	b.ResetTimer()
	for i := range b.N {
		a, d := push("push " + time.Now().Format(time.RFC3339Nano) + string(rune('a'+i%26)))
		acc, dep = append(acc, a), append(dep, d)
	}
	b.StopTimer()
	slices.Sort(acc)
	slices.Sort(dep)
	b.ReportMetric(float64(acc[len(acc)/2].Microseconds())/1000, "accepted-ms")
	b.ReportMetric(float64(dep[len(dep)/2].Microseconds())/1000, "deployed-ms")
}
