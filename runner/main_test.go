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
