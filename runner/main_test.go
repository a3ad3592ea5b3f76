package main

import (
	"context"
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
	base := map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "KGD_ENCRYPTION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
	if _, err := loadConfig(func(k string) string { return base[k] }); err != nil {
		t.Fatalf("loadConfig(minimal) = %v", err)
	}
	for _, tt := range []struct{ key, value string }{
		{"GOOGLE_CLOUD_PROJECT", ""}, {"KGD_ENCRYPTION_KEY", "short"},
		{"KGD_STATUS_CHECK_DEADLINE", "soon"}, {"KGD_RUNNER_CONCURRENCY", "0"},
	} {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		env[tt.key] = tt.value
		_, err := loadConfig(func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("loadConfig with %s=%q = %v, want an error naming it", tt.key, tt.value, err)
		}
	}
}
