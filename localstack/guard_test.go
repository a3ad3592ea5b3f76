//go:build unix

package localstack

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
)

// call makes one request to srv with the given Host (empty: srv's),
// Content-Type and Origin, and returns status and body.
func call(t *testing.T, srv *httptest.Server, method, path, host, contentType, origin, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGuardRegistry: the registry refuses a foreign Host and a web page's
// upload, in its own error shape, and stores nothing; Docker's requests
// (loopback Host, no Origin, any content type) work.
func TestGuardRegistry(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(registryHandler(io.Discard))
	defer srv.Close()
	blob := "layer"
	sum := sha256.Sum256([]byte(blob))
	digest := "sha256:" + hex.EncodeToString(sum[:])
	upload := "/v2/demo/app/blobs/uploads/?digest=" + digest
	for _, tc := range []struct {
		name, host, ct, origin string
		want                   int
	}{
		{"rebinding", "evil.example:5000", "application/octet-stream", "", 421},
		{"rebinding-page", "evil.example:5000", "text/plain", "http://evil.example:5000", 421},
		{"page-text-plain", "", "text/plain", "https://evil.example", 403},
		{"page-form", "", "application/x-www-form-urlencoded", "null", 403},
	} {
		code, body := call(t, srv, http.MethodPost, upload, tc.host, tc.ct, tc.origin, blob)
		var e struct {
			Errors []struct{ Code, Message string }
		}
		if code != tc.want || json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != "DENIED" {
			t.Errorf("%s: POST %s: %d %s, want %d with an OCI error", tc.name, upload, code, body, tc.want)
		}
	}
	if code, _ := call(t, srv, http.MethodHead, "/v2/demo/app/blobs/"+digest, "", "", "", ""); code != http.StatusNotFound {
		t.Errorf("blob after refused uploads: %d, want 404", code)
	}
	if code, body := call(t, srv, http.MethodGet, "/v2/", "evil.example", "", "", ""); code != 421 {
		t.Errorf("GET /v2/ for a foreign host: %d %s", code, body)
	}
	// Docker: loopback Host, no Origin, octet-stream.
	for _, host := range []string{"", "localhost:5000"} {
		if code, body := call(t, srv, http.MethodGet, "/v2/", host, "", "", ""); code != 200 {
			t.Errorf("GET /v2/ (Host %q): %d %s", host, code, body)
		}
	}
	if code, body := call(t, srv, http.MethodPost, upload, "localhost:5000", "application/octet-stream", "", blob); code != http.StatusCreated {
		t.Fatalf("monolithic upload: %d %s", code, body)
	}
	if code, _ := call(t, srv, http.MethodHead, "/v2/demo/app/blobs/"+digest, "", "", "", ""); code != 200 {
		t.Errorf("blob after the upload: %d, want 200", code)
	}
}

// TestGuardStandin: the GitHub stand-in refuses a foreign Host everywhere
// and a non-JSON request to its admin endpoints and REST API, and creates
// nothing; JSON from a loopback client, git and the OAuth token exchange
// work.
func TestGuardStandin(t *testing.T) {
	t.Parallel()
	gh, err := githubstandin.New(githubstandin.Config{ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer gh.Close()
	srv := httptest.NewServer(gitHubHandler(gh))
	defer srv.Close()
	gh.SetBaseURL(srv.URL)

	create := `{"owner":"demo","name":"app"}`
	for _, tc := range []struct {
		name, method, path, host, ct, origin, body string
		want                                       int
	}{
		{"admin-text-plain", http.MethodPost, "/_standin/repos", "", "text/plain;charset=UTF-8", "https://evil.example", create, 415},
		{"admin-form", http.MethodPost, "/_standin/repos", "", "application/x-www-form-urlencoded", "", create, 415},
		{"admin-sign-in-text", http.MethodPut, "/_standin/sign-in", "", "text/plain", "https://evil.example", `{"login":"mallory"}`, 415},
		{"admin-rebinding", http.MethodPost, "/_standin/repos", "evil.example:5080", "application/json", "", create, 421},
		{"api-text-plain", http.MethodPost, "/api/v3/repos/demo/app/hooks", "", "text/plain", "https://evil.example", `{}`, 415},
		{"api-rebinding", http.MethodGet, "/api/v3/user", "evil.example", "", "", "", 421},
		{"git-rebinding", http.MethodGet, "/demo/app.git/info/refs?service=git-upload-pack", "evil.example:5080", "", "", "", 421},
		{"git-page", http.MethodPost, "/demo/app.git/git-upload-pack", "", "text/plain", "https://evil.example", "0000", 403},
		{"oauth-page", http.MethodPost, "/login/oauth/access_token", "", "application/x-www-form-urlencoded", "https://evil.example", "code=x", 403},
	} {
		code, body := call(t, srv, tc.method, tc.path, tc.host, tc.ct, tc.origin, tc.body)
		var e struct {
			OK      *bool
			Error   string
			Message string
		}
		if code != tc.want || json.Unmarshal([]byte(body), &e) != nil || e.OK == nil || *e.OK || e.Error == "" || e.Message == "" {
			t.Errorf("%s: %s %s: %d %s, want %d with the stand-in's error shape", tc.name, tc.method, tc.path, code, body, tc.want)
		}
	}
	if _, err := gh.Repo("demo", "app"); err == nil {
		t.Fatal("refused requests created demo/app")
	}
	if gh.SignedIn() != githubstandin.DefaultUser {
		t.Errorf("refused requests changed the signed-in user to %q", gh.SignedIn())
	}

	// A loopback client with JSON, then git over smart HTTP and the OAuth
	// token exchange (form-encoded, as GitHub's), which the JSON rule
	// leaves alone.
	if code, body := call(t, srv, http.MethodPost, "/_standin/repos", "localhost:5080", "application/json", "", create); code != http.StatusCreated {
		t.Fatalf("create demo/app: %d %s", code, body)
	}
	if code, body := call(t, srv, http.MethodGet, "/demo/app.git/info/refs?service=git-upload-pack", "127.0.0.1:5080", "", "", ""); code != 200 {
		t.Errorf("git info/refs: %d %s", code, body)
	}
	if code, body := call(t, srv, http.MethodPost, "/demo/app.git/git-upload-pack", "", "application/x-git-upload-pack-request", "", "0000"); code != 200 {
		t.Errorf("git upload-pack: %d %s", code, body)
	}
	if code, body := call(t, srv, http.MethodPost, "/login/oauth/access_token", "", "application/x-www-form-urlencoded", "", "client_id=id&client_secret=secret&code=nope"); code == 415 || code == 421 || code == 403 {
		t.Errorf("OAuth token exchange refused by the guard: %d %s", code, body)
	}
}
