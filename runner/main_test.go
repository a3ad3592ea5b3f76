package main

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

func TestGoogleRegistryAuth(t *testing.T) {
	calls := 0
	auth := googleRegistryAuth(func(context.Context) (oauth2.TokenSource, error) {
		calls++
		return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "ya29.token"}), nil
	})
	tests := []struct{ host, user, pass string }{
		{"us-central1-docker.pkg.dev", "oauth2accesstoken", "ya29.token"},
		{"gcr.io", "oauth2accesstoken", "ya29.token"},
		{"eu.gcr.io", "oauth2accesstoken", "ya29.token"},
		{"127.0.0.1:5000", "", ""},
		{"docker.pkg.dev.evil.example", "", ""},
	}
	for _, tt := range tests {
		user, pass, err := auth(context.Background(), tt.host)
		if err != nil || user != tt.user || pass != tt.pass {
			t.Errorf("auth(%q) = %q, %q, %v; want %q, %q", tt.host, user, pass, err, tt.user, tt.pass)
		}
	}
	if calls != 3 {
		t.Errorf("credentials looked up %d times, want 3 (only for Google registries)", calls)
	}
	failing := googleRegistryAuth(func(context.Context) (oauth2.TokenSource, error) { return nil, errors.New("no ADC") })
	if _, _, err := failing(context.Background(), "us-docker.pkg.dev"); err == nil {
		t.Error("missing credentials did not fail the push auth")
	}
}

func TestLoadConfig(t *testing.T) {
	const key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	const secretName = "projects/p/secrets/kgd-encryption-key/versions/latest"
	caPEM := base64.StdEncoding.EncodeToString([]byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"))
	base := map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "KGD_ENCRYPTION_KEY": key}
	with := func(kv ...string) func(string) string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return func(k string) string { return env[k] }
	}
	t.Run("valid", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			env  []string
			kube string
		}{
			{"minimal", nil, "in-cluster configuration or ~/.kube/config"},
			{"key-from-secret-manager", []string{"KGD_ENCRYPTION_KEY", "", "KGD_ENCRYPTION_KEY_SECRET", secretName}, "in-cluster configuration or ~/.kube/config"},
			{"gke", []string{"KGD_KUBE_ENDPOINT", "https://10.0.0.1", "KGD_KUBE_CA_DATA", caPEM, "KUBECONFIG", "/ignored"}, "GKE endpoint https://10.0.0.1 with the runner's Google identity"},
			{"kubeconfig-secret", []string{"KGD_KUBECONFIG_SECRET", "projects/p/secrets/kc/versions/3"}, "kubeconfig from projects/p/secrets/kc/versions/3"},
			{"health", []string{"KGD_HEALTH_PORT", "8080", "KGD_LISTEN_HOST", "0.0.0.0"}, "in-cluster configuration or ~/.kube/config"},
			{"legacy-builder", []string{"KGD_BUILDER", "legacy"}, "in-cluster configuration or ~/.kube/config"},
			{"sinks", []string{"KGD_SINK_WEBHOOK_URL", "https://hooks.example.com/kgd", "KGD_SINK_WEBHOOK_KEY", "0123456789abcdef",
				"KGD_SINK_GRPC_TARGET", "events.example.com:443", "KGD_SINK_GRPC_TOKEN_SECRET", "projects/p/secrets/t/versions/1"}, "in-cluster configuration or ~/.kube/config"},
			{"loopback-sinks", []string{"KGD_SINK_WEBHOOK_URL", "http://127.0.0.1:9/", "KGD_SINK_WEBHOOK_KEY_SECRET", "projects/p/secrets/k/versions/latest",
				"KGD_SINK_GRPC_TARGET", "localhost:9", "KGD_SINK_GRPC_INSECURE", "true"}, "in-cluster configuration or ~/.kube/config"},
			{"reports-and-topic", []string{"KGD_GITHUB_REPORTS", "off", "KGD_API_URL", "https://kgd-api-xyz.a.run.app", "KGD_EVENTS_TOPIC", "off"}, "in-cluster configuration or ~/.kube/config"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				c, err := loadConfig(with(tt.env...))
				if err != nil {
					t.Fatalf("loadConfig = %v", err)
				}
				if got := c.kube.String(); got != tt.kube {
					t.Errorf("cluster = %q, want %q", got, tt.kube)
				}
			})
		}
	})
	t.Run("outputs", func(t *testing.T) {
		c, err := loadConfig(with())
		if err != nil || !c.githubReports || c.eventsTopic != "kgd-events" || c.apiURL != nil || c.sinks.webhookURL != nil || c.sinks.grpcTarget != "" {
			t.Errorf("defaults: reports %v, topic %q, API URL %v, sinks %+v, %v; want reports on, topic kgd-events, no links, no sinks",
				c.githubReports, c.eventsTopic, c.apiURL, c.sinks, err)
		}
		c, err = loadConfig(with("KGD_GITHUB_REPORTS", "off", "KGD_EVENTS_TOPIC", "off", "KGD_API_URL", "https://api.example"))
		if err != nil || c.githubReports || c.eventsTopic != "" || c.apiURL.String() != "https://api.example" {
			t.Errorf("off: reports %v, topic %q, API URL %v, %v", c.githubReports, c.eventsTopic, c.apiURL, err)
		}
	})
	t.Run("builder", func(t *testing.T) {
		for _, tt := range []struct{ env, want string }{{"", "auto"}, {"auto", "auto"}, {" buildkit ", "buildkit"}, {"legacy", "legacy"}} {
			c, err := loadConfig(with("KGD_BUILDER", tt.env))
			if err != nil || string(c.builder) != tt.want {
				t.Errorf("KGD_BUILDER=%q: builder %q, %v; want %q", tt.env, c.builder, err, tt.want)
			}
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for _, tt := range []struct {
			name, want string
			env        []string
		}{
			{"no-project", "GOOGLE_CLOUD_PROJECT", []string{"GOOGLE_CLOUD_PROJECT", ""}},
			{"short-key", "KGD_ENCRYPTION_KEY", []string{"KGD_ENCRYPTION_KEY", "short"}},
			{"no-key", "KGD_ENCRYPTION_KEY", []string{"KGD_ENCRYPTION_KEY", ""}},
			{"both-keys", "KGD_ENCRYPTION_KEY_SECRET", []string{"KGD_ENCRYPTION_KEY_SECRET", secretName}},
			{"bad-secret-name", "KGD_ENCRYPTION_KEY_SECRET", []string{"KGD_ENCRYPTION_KEY", "", "KGD_ENCRYPTION_KEY_SECRET", "kgd-encryption-key"}},
			{"deadline", "KGD_STATUS_CHECK_DEADLINE", []string{"KGD_STATUS_CHECK_DEADLINE", "soon"}},
			{"concurrency", "KGD_RUNNER_CONCURRENCY", []string{"KGD_RUNNER_CONCURRENCY", "0"}},
			{"health-port", "KGD_HEALTH_PORT", []string{"KGD_HEALTH_PORT", "http"}},
			{"build-memory", "KGD_BUILD_MEMORY", []string{"KGD_BUILD_MEMORY", "lots"}},
			{"build-cpus", "KGD_BUILD_CPUS", []string{"KGD_BUILD_CPUS", "-1"}},
			{"build-timeout", "KGD_BUILD_TIMEOUT", []string{"KGD_BUILD_TIMEOUT", "0s"}},
			{"images-kept", "KGD_IMAGES_KEPT", []string{"KGD_IMAGES_KEPT", "0"}},
			{"builder", "KGD_BUILDER", []string{"KGD_BUILDER", "kaniko"}},
			{"git-cache-relative", "KGD_GIT_CACHE", []string{"KGD_GIT_CACHE", "cache"}},
			{"lease", "KGD_LEASE", []string{"KGD_LEASE", "1s"}},
			{"unclaimed-after", "KGD_UNCLAIMED_AFTER", []string{"KGD_UNCLAIMED_AFTER", "never"}},
			{"retention", "KGD_RETENTION", []string{"KGD_RETENTION", "-1h"}},
			{"github-api-url", "GITHUB_API_URL", []string{"GITHUB_API_URL", "ftp://x"}},
			{"redeliver-interval", "KGD_REDELIVER_INTERVAL", []string{"KGD_REDELIVER_INTERVAL", "often"}},
			{"endpoint-without-ca", "KGD_KUBE_CA_DATA", []string{"KGD_KUBE_ENDPOINT", "https://10.0.0.1"}},
			{"plain-http-endpoint", "KGD_KUBE_ENDPOINT", []string{"KGD_KUBE_ENDPOINT", "http://10.0.0.1", "KGD_KUBE_CA_DATA", caPEM}},
			{"ca-without-endpoint", "KGD_KUBE_CA_DATA", []string{"KGD_KUBE_CA_DATA", caPEM}},
			{"ca-not-base64", "KGD_KUBE_CA_DATA", []string{"KGD_KUBE_ENDPOINT", "https://10.0.0.1", "KGD_KUBE_CA_DATA", "%%%"}},
			{"endpoint-and-secret", "KGD_KUBECONFIG_SECRET", []string{"KGD_KUBE_ENDPOINT", "https://10.0.0.1", "KGD_KUBE_CA_DATA", caPEM, "KGD_KUBECONFIG_SECRET", "projects/p/secrets/kc/versions/latest"}},
			{"kubeconfig-secret-name", "KGD_KUBECONFIG_SECRET", []string{"KGD_KUBECONFIG_SECRET", "kc"}},
			{"github-reports", "KGD_GITHUB_REPORTS", []string{"KGD_GITHUB_REPORTS", "yes"}},
			{"api-url", "KGD_API_URL", []string{"KGD_API_URL", "kgd-api"}},
			{"sink-webhook-http", "KGD_SINK_WEBHOOK_URL", []string{"KGD_SINK_WEBHOOK_URL", "http://hooks.example.com/", "KGD_SINK_WEBHOOK_KEY", "0123456789abcdef"}},
			{"sink-webhook-userinfo", "KGD_SINK_WEBHOOK_URL", []string{"KGD_SINK_WEBHOOK_URL", "https://u:p@hooks.example.com/", "KGD_SINK_WEBHOOK_KEY", "0123456789abcdef"}},
			{"sink-webhook-no-key", "KGD_SINK_WEBHOOK_KEY", []string{"KGD_SINK_WEBHOOK_URL", "https://hooks.example.com/"}},
			{"sink-webhook-short-key", "KGD_SINK_WEBHOOK_KEY", []string{"KGD_SINK_WEBHOOK_URL", "https://hooks.example.com/", "KGD_SINK_WEBHOOK_KEY", "short"}},
			{"sink-webhook-two-keys", "KGD_SINK_WEBHOOK_KEY_SECRET", []string{"KGD_SINK_WEBHOOK_URL", "https://hooks.example.com/", "KGD_SINK_WEBHOOK_KEY", "0123456789abcdef", "KGD_SINK_WEBHOOK_KEY_SECRET", "projects/p/secrets/k/versions/1"}},
			{"sink-webhook-key-alone", "KGD_SINK_WEBHOOK_KEY", []string{"KGD_SINK_WEBHOOK_KEY", "0123456789abcdef"}},
			{"sink-grpc-target", "KGD_SINK_GRPC_TARGET", []string{"KGD_SINK_GRPC_TARGET", "events.example.com"}},
			{"sink-grpc-plaintext-remote", "KGD_SINK_GRPC_INSECURE", []string{"KGD_SINK_GRPC_TARGET", "events.example.com:80", "KGD_SINK_GRPC_INSECURE", "true"}},
			{"sink-grpc-token-alone", "KGD_SINK_GRPC_TARGET", []string{"KGD_SINK_GRPC_TOKEN", "t"}},
			{"sink-grpc-token-secret-name", "KGD_SINK_GRPC_TOKEN_SECRET", []string{"KGD_SINK_GRPC_TARGET", "events.example.com:443", "KGD_SINK_GRPC_TOKEN_SECRET", "t"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := loadConfig(with(tt.env...))
				if err == nil || !strings.Contains(err.Error(), tt.want+":") {
					t.Errorf("loadConfig = %v, want an error naming %s", err, tt.want)
				}
			})
		}
	})
}
