package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/option"
	"google.golang.org/api/secretmanager/v1"
	"k8s.io/client-go/kubernetes"
)

// fakeSecretManager serves Secret Manager's REST route
// GET /v1/{name}:access for the given versions (Secret Manager itself
// cannot run here).
func fakeSecretManager(t *testing.T, versions map[string][]byte) secretAccessor {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/v1/"), ":access")
		switch {
		case !ok || r.Method != http.MethodGet:
			http.Error(w, `{"error":{"code":400,"message":"bad request"}}`, http.StatusBadRequest)
		case name == "projects/p/secrets/forbidden/versions/latest":
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"error":{"code":403,"message":"Permission 'secretmanager.versions.access' denied","status":"PERMISSION_DENIED"}}`)
		case versions[name] == nil:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}`)
		default:
			data := versions[name]
			crc := int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
			if strings.Contains(name, "corrupt") {
				crc++
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"name": name, "payload": map[string]any{
				"data": base64.StdEncoding.EncodeToString(data), "dataCrc32c": fmt.Sprint(crc)}})
		}
	}))
	t.Cleanup(srv.Close)
	svc, err := secretmanager.NewService(t.Context(), option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	return secretAccessor{svc}
}

func TestSecretAccess(t *testing.T) {
	const key = "projects/p/secrets/kgd-encryption-key/versions/latest"
	sm := fakeSecretManager(t, map[string][]byte{
		key:                                     []byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"),
		"projects/p/secrets/corrupt/versions/1": []byte("x"),
	})
	got, err := sm.access(t.Context(), key)
	if err != nil || string(got) != "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n" {
		t.Fatalf("access = %q, %v", got, err)
	}
	for _, tt := range []struct{ name, want string }{
		{"projects/p/secrets/forbidden/versions/latest", "roles/secretmanager.secretAccessor"},
		{"projects/p/secrets/missing/versions/latest", "gcloud secrets versions add"},
		{"projects/p/secrets/corrupt/versions/1", "checksum mismatch"},
	} {
		if _, err := sm.access(t.Context(), tt.name); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("access(%s) = %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
}

func TestKubeTarget(t *testing.T) {
	// A TLS server standing in for a GKE control plane: it answers
	// /version only to the runner's Google access token.
	var sawToken atomic.Value
	apiserver := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawToken.Store(r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer ya29.runner" {
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"major":"1","minor":"37","gitVersion":"v1.37.1-gke.1"}`)
	}))
	defer apiserver.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apiserver.Certificate().Raw})
	token := func(context.Context) (oauth2.TokenSource, error) {
		return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "ya29.runner"}), nil
	}
	noSecrets := func(context.Context, string) ([]byte, error) { return nil, errors.New("no secrets here") }

	t.Run("gke-endpoint", func(t *testing.T) {
		ca, err := decodeCA(base64.StdEncoding.EncodeToString(caPEM))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := kubeTarget{endpoint: apiserver.URL, caData: ca}.restConfig(t.Context(), token, noSecrets)
		if err != nil {
			t.Fatal(err)
		}
		v, err := kubernetes.NewForConfigOrDie(rc).Discovery().ServerVersion()
		if err != nil {
			t.Fatalf("server version through the GKE configuration: %v", err)
		}
		if v.GitVersion != "v1.37.1-gke.1" || sawToken.Load() != "Bearer ya29.runner" {
			t.Errorf("version %q, authorization %q; want the runner's token", v.GitVersion, sawToken.Load())
		}
	})
	t.Run("gke-endpoint-wrong-ca", func(t *testing.T) {
		wrong := selfSignedPEM(t)
		rc, err := kubeTarget{endpoint: apiserver.URL, caData: wrong}.restConfig(t.Context(), token, noSecrets)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kubernetes.NewForConfigOrDie(rc).Discovery().ServerVersion(); err == nil {
			t.Error("a control plane with another CA was trusted")
		}
	})
	kubeconfig := func(user string) []byte {
		return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority-data: %s}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: %s}]
current-context: c
`, apiserver.URL, base64.StdEncoding.EncodeToString(caPEM), user)
	}
	sm := fakeSecretManager(t, map[string][]byte{
		"projects/p/secrets/kc/versions/latest":   kubeconfig(`{token: ya29.runner}`),
		"projects/p/secrets/exec/versions/latest": kubeconfig(`{exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: gke-gcloud-auth-plugin}}`),
		"projects/p/secrets/junk/versions/latest": []byte("not: [a kubeconfig"),
	})
	t.Run("kubeconfig-secret", func(t *testing.T) {
		rc, err := kubeTarget{secret: "projects/p/secrets/kc/versions/latest"}.restConfig(t.Context(), token, sm.access)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kubernetes.NewForConfigOrDie(rc).Discovery().ServerVersion(); err != nil {
			t.Errorf("server version through the stored kubeconfig: %v", err)
		}
	})
	for name, want := range map[string]string{
		"exec":    "credential plugin",
		"junk":    "not a usable kubeconfig",
		"missing": "gcloud secrets versions add",
	} {
		t.Run("kubeconfig-secret-"+name, func(t *testing.T) {
			_, err := kubeTarget{secret: "projects/p/secrets/" + name + "/versions/latest"}.restConfig(t.Context(), token, sm.access)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "KGD_KUBECONFIG_SECRET") {
				t.Errorf("restConfig = %v, want an error naming KGD_KUBECONFIG_SECRET and saying %q", err, want)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	var dockerErr atomic.Pointer[string]
	h := &health{docker: func(context.Context) error {
		if msg := dockerErr.Load(); msg != nil {
			return errors.New(*msg)
		}
		return nil
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(body["problems"]), "not receiving jobs") {
		t.Errorf("before receiving: %d %v, want 503 not receiving jobs", code, body)
	}
	h.receiving.Store(true)
	if code, body := get("/healthz"); code != http.StatusOK || body["ok"] != true {
		t.Errorf("healthy: %d %v, want 200 ok", code, body)
	}
	down := "Cannot connect to the Docker daemon"
	dockerErr.Store(&down)
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(body["problems"]), "docker engine") {
		t.Errorf("engine down: %d %v, want 503 naming the docker engine", code, body)
	}
	if code, _ := get("/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics = %d, want 404", code)
	}
}

// selfSignedPEM returns a fresh self-signed CA certificate (every
// httptest TLS server shares one certificate, so it cannot stand for
// "another CA").
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
