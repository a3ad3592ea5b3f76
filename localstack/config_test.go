package localstack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(env(nil))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := Ports{Private: 5000, Public: 5001, RPC: 50051, RPCHTTP: 50052, Registry: 5005, GitHub: 5080, Firestore: 5010, PubSub: 5011}
	if diff := cmp.Diff(want, c.Ports); diff != "" {
		t.Errorf("default ports (-want +got):\n%s", diff)
	}
	if c.Project != "demo-local" || c.GitHubClientID != "local-dev-client" || c.GitHubClientSecret != "local-dev-secret" {
		t.Errorf("defaults = %q %q %q", c.Project, c.GitHubClientID, c.GitHubClientSecret)
	}
	if c.Kubeconfig != "" || c.LogDir == "" {
		t.Errorf("Kubeconfig %q, LogDir %q", c.Kubeconfig, c.LogDir)
	}
	// A random key per run.
	again, _ := LoadConfig(env(nil))
	if c.EncryptionKey == "" || c.EncryptionKey == again.EncryptionKey {
		t.Errorf("encryption keys %q and %q: want random ones", c.EncryptionKey, again.EncryptionKey)
	}
	u := c.URLs()
	if u.PrivateAPI != "http://localhost:5000/" || u.APIHTTP != "http://localhost:50052/" || u.Registry != "localhost:5005" ||
		u.GitHub != "http://localhost:5080/" || u.GitHubAPI != "http://localhost:5080/api/v3/" || u.FirestoreHost != "127.0.0.1:5010" {
		t.Errorf("URLs = %+v", u)
	}
}

func TestLoadConfigOverrides(t *testing.T) {
	t.Parallel()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	c, err := LoadConfig(env(map[string]string{
		"GOOGLE_CLOUD_PROJECT": "my-project", "PRIVATE_HTTP_PORT": "6000", "PUBLIC_HTTP_PORT": "6001",
		"KGD_RPC_PORT": "6051", "KGD_RPC_HTTP_PORT": "6052", "KGD_REGISTRY_PORT": "0", "KGD_GITHUB_PORT": "6080",
		"KGD_FIRESTORE_PORT": "0", "KGD_PUBSUB_PORT": " 6011 ", "GITHUB_CLIENT_ID": "id", "GITHUB_CLIENT_SECRET": "secret",
		"KGD_ENCRYPTION_KEY": key, "KUBECONFIG": kubeconfig, "KGD_K8S_BIN": "/opt/k8s",
	}))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := Ports{Private: 6000, Public: 6001, RPC: 6051, RPCHTTP: 6052, Registry: 0, GitHub: 6080, Firestore: 0, PubSub: 6011}
	if diff := cmp.Diff(want, c.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if c.Project != "my-project" || c.GitHubClientID != "id" || c.GitHubClientSecret != "secret" || c.EncryptionKey != key ||
		c.Kubeconfig != kubeconfig || c.K8sBinDir != "/opt/k8s" {
		t.Errorf("config = %+v", c)
	}
}

// TestRealGitHub: with a public URL for webhooks and an OAuth App, the
// stack uses real GitHub and starts no stand-in.
func TestRealGitHub(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(env(map[string]string{
		"PUBLIC_HTTP_HOST": "https://abc.tunnel.example.com", "GITHUB_CLIENT_ID": "Iv1.0123", "GITHUB_CLIENT_SECRET": "s3cret",
	}))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	u := c.URLs()
	if !c.RealGitHub() || u.GitHub != "https://github.com/" || u.GitHubAPI != "https://api.github.com/" {
		t.Errorf("real GitHub = %v, URLs %s %s", c.RealGitHub(), u.GitHub, u.GitHubAPI)
	}
	if !c.unused()["KGD_GITHUB_PORT"] {
		t.Error("the stand-in's port is still reserved")
	}
	s := &Stack{Config: c, URLs: u, Kubeconfig: "/k"}
	got := map[string]string{}
	for _, kv := range s.childEnv() {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k, want := range map[string]string{
		"PUBLIC_HTTP_HOST": "https://abc.tunnel.example.com", "GITHUB_WEB_URL": "https://github.com/",
		"GITHUB_API_URL": "https://api.github.com/", "GITHUB_CLIENT_ID": "Iv1.0123",
	} {
		if got[k] != want {
			t.Errorf("binaries get %s=%q, want %q", k, got[k], want)
		}
	}
	if d, _ := LoadConfig(env(nil)); d.RealGitHub() || d.URLs().GitHub != "http://localhost:5080/" {
		t.Errorf("without PUBLIC_HTTP_HOST the stand-in must be used")
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		vars map[string]string
		want []string // variables named, in order
	}{
		{"not-a-number", map[string]string{"PUBLIC_HTTP_PORT": "http"}, []string{"PUBLIC_HTTP_PORT"}},
		{"negative", map[string]string{"KGD_REGISTRY_PORT": "-1"}, []string{"KGD_REGISTRY_PORT"}},
		{"too-large", map[string]string{"KGD_RPC_HTTP_PORT": "70000"}, []string{"KGD_RPC_HTTP_PORT"}},
		{"same-port", map[string]string{"KGD_GITHUB_PORT": "5000"}, []string{"KGD_GITHUB_PORT"}},
		{"project", map[string]string{"GOOGLE_CLOUD_PROJECT": "Bad_Project"}, []string{"GOOGLE_CLOUD_PROJECT"}},
		{"key", map[string]string{"KGD_ENCRYPTION_KEY": "c2hvcnQ="}, []string{"KGD_ENCRYPTION_KEY"}},
		{"kubeconfig", map[string]string{"KUBECONFIG": "/nonexistent/kubeconfig"}, []string{"KUBECONFIG"}},
		{"several", map[string]string{"PRIVATE_HTTP_PORT": "x", "KGD_PUBSUB_PORT": "y"}, []string{"PRIVATE_HTTP_PORT", "KGD_PUBSUB_PORT"}},
		{"real-github-needs-an-oauth-app", map[string]string{"PUBLIC_HTTP_HOST": "https://tunnel.example.com"}, []string{"GITHUB_CLIENT_ID"}},
		{"real-github-public-url", map[string]string{"PUBLIC_HTTP_HOST": "http://tunnel.example.com", "GITHUB_CLIENT_ID": "Iv1.x", "GITHUB_CLIENT_SECRET": "s"}, []string{"PUBLIC_HTTP_HOST"}},
		{"real-github-web-url", map[string]string{"PUBLIC_HTTP_HOST": "https://t.example.com", "GITHUB_CLIENT_ID": "Iv1.x", "GITHUB_CLIENT_SECRET": "s", "GITHUB_WEB_URL": "ftp://x"}, []string{"GITHUB_WEB_URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(env(tc.vars))
			if err == nil {
				t.Fatal("LoadConfig succeeded")
			}
			var got []string
			for _, e := range flatten(err) {
				var ce *ConfigError
				if !errors.As(e, &ce) {
					t.Errorf("error %q is not a *ConfigError", e)
					continue
				}
				got = append(got, ce.Var)
				if !strings.HasPrefix(e.Error(), ce.Var+": ") {
					t.Errorf("message %q does not start with the variable", e)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("variables named (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

// flatten returns the leaves of joined errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// busyPort listens on a free loopback port for the test's life.
func busyPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// freeConfig is a valid configuration whose ports are all 0.
func freeConfig(t *testing.T) Config {
	t.Helper()
	c, err := LoadConfig(env(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	c.Ports = Ports{}
	return c
}

func TestCheckPorts(t *testing.T) {
	t.Parallel()
	c := freeConfig(t)
	if err := c.CheckPorts(); err != nil {
		t.Fatalf("CheckPorts with free ports: %v", err)
	}
	busy := busyPort(t)
	c.Ports.Public = busy
	err := c.CheckPorts()
	var pe *PortInUseError
	if !errors.As(err, &pe) || pe.Port != busy || pe.Var.Env != "PUBLIC_HTTP_PORT" {
		t.Fatalf("CheckPorts = %v, want a *PortInUseError for PUBLIC_HTTP_PORT %d", err, busy)
	}
	for _, want := range []string{"port " + strconv.Itoa(busy), "PUBLIC_HTTP_PORT", "PublicAPI", "already in use", "set PUBLIC_HTTP_PORT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestStartFailsEarly(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	for _, n := range []string{FunctionsBinary, RunnerBinary, APIBinary} {
		if err := os.WriteFile(filepath.Join(bin, n), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k8s := t.TempDir() // no control plane binaries

	t.Run("busy-port", func(t *testing.T) {
		c := freeConfig(t)
		c.BinDir, c.Kubeconfig = bin, "/dev/null"
		c.Ports.RPCHTTP = busyPort(t)
		var out bytes.Buffer
		began := time.Now()
		_, err := Start(context.Background(), c, &out)
		var pe *PortInUseError
		if !errors.As(err, &pe) || pe.Var.Env != "KGD_RPC_HTTP_PORT" {
			t.Fatalf("Start = %v, want the busy KGD_RPC_HTTP_PORT", err)
		}
		if out.Len() != 0 || time.Since(began) > 5*time.Second {
			t.Errorf("Start did work before failing (%s): %s", time.Since(began), out.String())
		}
	})
	t.Run("missing-binary", func(t *testing.T) {
		c := freeConfig(t)
		c.BinDir, c.Kubeconfig = t.TempDir(), "/dev/null"
		_, err := Start(context.Background(), c, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "functions missing") || !strings.Contains(err.Error(), BuildCommand) {
			t.Fatalf("Start = %v, want the missing binary and how to build it", err)
		}
	})
	t.Run("missing-control-plane", func(t *testing.T) {
		c := freeConfig(t)
		c.BinDir, c.K8sBinDir = bin, k8s
		_, err := Start(context.Background(), c, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "control plane binaries missing") || !strings.Contains(err.Error(), "KUBECONFIG") {
			t.Fatalf("Start = %v, want the missing control plane binaries", err)
		}
	})
}
