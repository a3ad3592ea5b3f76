package queue

import "cloud.google.com/go/pubsub/v2"

// SetPublishSettings lets BenchmarkPublish compare batching settings.
func SetPublishSettings(p *Publisher, edit func(*pubsub.PublishSettings)) {
	edit(&p.p.PublishSettings)
}
