package queue_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
)

// BenchmarkPublish measures Publish until the server's ack on the emulator,
// the latency a webhook adds, for the chosen batching settings (no
// batching: count=1) and two alternatives; "parallel" runs many publishers at once, as concurrent
// webhook requests on one function instance would.
func BenchmarkPublish(b *testing.B) {
	settings := []struct {
		name string
		edit func(*pubsub.PublishSettings)
	}{
		{"count=1", func(*pubsub.PublishSettings) {}}, // what NewPublisher sets
		{"delay=1ms", func(s *pubsub.PublishSettings) {
			s.CountThreshold = pubsub.DefaultPublishSettings.CountThreshold
			s.DelayThreshold = time.Millisecond
		}},
		{"library-default", func(s *pubsub.PublishSettings) { *s = pubsub.DefaultPublishSettings }},
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, s := range settings {
			b.Run(mode+"/"+s.name, func(b *testing.B) {
				ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
				defer cancel()
				project := emulatortest.ProjectID(b)
				client, err := pubsub.NewClient(ctx, project)
				if err != nil {
					b.Fatalf("pubsub.NewClient: %v", err)
				}
				defer client.Close()
				names := queue.DefaultNames(project)
				if err := queue.Ensure(ctx, client, names, queue.EnsureOptions{}); err != nil {
					b.Fatalf("Ensure: %v", err)
				}
				p := queue.NewPublisher(client, names.Topic)
				defer p.Stop()
				queue.SetPublishSettings(p, s.edit)
				// Warm up the connection and the emulator's JIT: without this
				// the first sub-benchmark measures a cold JVM.
				for i := range 200 {
					if _, err := p.Publish(ctx, newJob(fmt.Sprintf("warm-up-%d", i))); err != nil {
						b.Fatalf("Publish: %v", err)
					}
				}
				var n atomic.Int64
				publish := func() {
					if _, err := p.Publish(ctx, newJob(fmt.Sprintf("bench-%d", n.Add(1)))); err != nil {
						b.Errorf("Publish: %v", err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				if mode == "serial" {
					for b.Loop() {
						publish()
					}
					return
				}
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						publish()
					}
				})
			})
		}
	}
}
