package client

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, ExitOK},
		{"not-found", &Error{Code: codes.NotFound}, ExitNotFound},
		{"permission-denied", &Error{Code: codes.PermissionDenied}, ExitDenied},
		{"unauthenticated", &Error{Code: codes.Unauthenticated}, ExitDenied},
		{"invalid-argument", &Error{Code: codes.InvalidArgument}, ExitUsage},
		{"failed-precondition", &Error{Code: codes.FailedPrecondition}, ExitUsage},
		{"already-exists", &Error{Code: codes.AlreadyExists}, ExitUsage},
		{"out-of-range", &Error{Code: codes.OutOfRange}, ExitUsage},
		{"unavailable", &Error{Code: codes.Unavailable}, ExitServer},
		{"internal", &Error{Code: codes.Internal}, ExitServer},
		{"resource-exhausted", &Error{Code: codes.ResourceExhausted}, ExitServer},
		{"wrapped", fmt.Errorf("rerun: %w", &Error{Code: codes.NotFound}), ExitNotFound},
		{"interrupted", fmt.Errorf("follow: %w", context.Canceled), ExitInterrupted},
		{"anything-else", errors.New("boom"), ExitServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.err); got != tt.want {
				t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// TestErrorAnswers sends requests to a server answering errors in each
// shape the API service and PrivateAPI use, and checks the error, its
// exit code and hint.
func TestErrorAnswers(t *testing.T) {
	tests := []struct {
		name      string
		private   bool
		status    int
		body      string
		wantCode  codes.Code
		wantMsg   string
		wantExit  int
		wantHint  string
		wantNoMsg bool
	}{
		{name: "rpc-status-not-found", status: 404, body: `{"code":5,"message":"job nope of demo/hello not found","details":[]}`,
			wantCode: codes.NotFound, wantMsg: "job nope of demo/hello not found", wantExit: ExitNotFound},
		{name: "rpc-status-denied", status: 403, body: `{"code":7,"message":"alice@example.com may not steer demo/hello","details":[]}`,
			wantCode: codes.PermissionDenied, wantMsg: "alice@example.com may not steer demo/hello", wantExit: ExitDenied, wantHint: "operators"},
		{name: "rpc-status-unauthenticated", status: 401, body: `{"code":16,"message":"no identity token","details":[]}`,
			wantCode: codes.Unauthenticated, wantMsg: "no identity token", wantExit: ExitDenied, wantHint: "gcloud auth login"},
		{name: "rpc-status-already-exists", status: 409, body: `{"code":6,"message":"auto build is already set to true","details":[]}`,
			wantCode: codes.AlreadyExists, wantMsg: "auto build is already set to true", wantExit: ExitUsage},
		{name: "rpc-status-code-wins-over-http-status", status: 400, body: `{"code":9,"message":"job p-1 failed: nothing to roll back to"}`,
			wantCode: codes.FailedPrecondition, wantMsg: "job p-1 failed: nothing to roll back to", wantExit: ExitUsage},
		{name: "rpc-status-unavailable", status: 503, body: `{"code":14,"message":"the server is shutting down"}`,
			wantCode: codes.Unavailable, wantMsg: "the server is shutting down", wantExit: ExitServer},
		{name: "private-api-unauthorized", private: true, status: 401,
			body:     `{"ok":false,"error":"sign in with GitHub first; start at /api/v0/github/login_url"}`,
			wantCode: codes.Unauthenticated, wantMsg: "sign in with GitHub first; start at /api/v0/github/login_url", wantExit: ExitDenied, wantHint: "kgd login"},
		{name: "private-api-conflict", private: true, status: 409, body: `{"ok":false,"error":"demo/hello is already tracked"}`,
			wantCode: codes.AlreadyExists, wantMsg: "demo/hello is already tracked", wantExit: ExitUsage},
		{name: "private-api-forbidden", private: true, status: 403, body: `{"ok":false,"error":"only the caller who tracked demo/hello may change it"}`,
			wantCode: codes.PermissionDenied, wantMsg: "only the caller who tracked demo/hello may change it", wantExit: ExitDenied, wantHint: "operators"},
		{name: "proxy-html", status: 502, body: "<html><body>Bad Gateway</body></html>",
			wantCode: codes.Unavailable, wantMsg: "502 Bad Gateway: <html><body>Bad Gateway</body></html>", wantExit: ExitServer},
		{name: "empty-500", status: 500, wantCode: codes.Internal, wantMsg: "500 Internal Server Error", wantExit: ExitServer},
		{name: "route-not-found", status: 404, body: `{"code":5,"message":"Not Found","details":[]}`,
			wantCode: codes.NotFound, wantMsg: "Not Found", wantExit: ExitNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c := newClient(t, srv.URL, srv.URL)
			var err error
			if tt.private {
				_, err = c.Untrack(t.Context(), Repo{"demo", "hello"}, "", false)
			} else {
				_, err = c.GetJob(t.Context(), Repo{"demo", "hello"}, "nope")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want an *Error", err, err)
			}
			if e.Code != tt.wantCode || e.Message != tt.wantMsg || e.HTTPStatus != tt.status {
				t.Errorf("error = {%v %q %d}, want {%v %q %d}", e.Code, e.Message, e.HTTPStatus, tt.wantCode, tt.wantMsg, tt.status)
			}
			if got := ExitCode(err); got != tt.wantExit {
				t.Errorf("exit code %d, want %d", got, tt.wantExit)
			}
			if !strings.Contains(e.Hint, tt.wantHint) || (tt.wantHint == "" && e.Hint != "") {
				t.Errorf("hint %q, want one mentioning %q", e.Hint, tt.wantHint)
			}
		})
	}
}

func TestNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close() // nothing listens there any more
	c := newClient(t, u, u)
	_, err := c.ListRepositories(t.Context())
	if got := ExitCode(err); got != ExitServer || !strings.HasPrefix(err.Error(), "cannot reach "+u+"/") {
		t.Errorf("ListRepositories of a closed server: %v (exit %d), want exit %d", err, got, ExitServer)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.ListRepositories(ctx); ExitCode(err) != ExitInterrupted {
		t.Errorf("ListRepositories canceled: %v (exit %d), want %d", err, ExitCode(err), ExitInterrupted)
	}
}

func TestNeedsToken(t *testing.T) {
	tests := []struct {
		url     string
		want    bool
		wantErr bool
	}{
		{"http://localhost:50052", false, false},
		{"http://LOCALHOST:5000/", false, false},
		{"http://127.0.0.1:50052", false, false},
		{"http://127.8.9.10", false, false},
		{"http://[::1]:5000", false, false},
		{"https://localhost:8443", false, false},
		{"https://kgd-api-3nq5xq-ew.a.run.app", true, false},
		{"https://deploy.example.com:8443/api", true, false},
		{"http://kgd-api-3nq5xq-ew.a.run.app", false, true},
		{"http://localhost.example.com", false, true},
		{"http://0.0.0.0:50052", false, true},
		{"http://192.168.1.10:50052", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			got, err := NeedsToken(u)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("NeedsToken(%s) = %v, %v; want %v, error %v", tt.url, got, err, tt.want, tt.wantErr)
			}
			if err != nil && ExitCode(err) != ExitUsage {
				t.Errorf("refusal exits %d, want %d", ExitCode(err), ExitUsage)
			}
		})
	}
}

// fakeTokens is a TokenSource that records the audiences asked for.
type fakeTokens struct {
	mu        sync.Mutex
	audiences []string
	err       error
}

func (f *fakeTokens) Token(_ context.Context, audience string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.audiences = append(f.audiences, audience)
	if f.err != nil {
		return "", f.err
	}
	return "token-for-" + audience, nil
}

var _ TokenSource = (*fakeTokens)(nil)
var _ TokenSource = (*Tokens)(nil)

// recorder is a server that records the requests it gets and answers {}.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path, Query, Auth, ContentType, Body string
}

func newRecorder(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, recorded{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		rec.mu.Unlock()
		if answer != nil {
			answer(w, r)
			return
		}
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (r *recorder) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

func newClient(t *testing.T, api, private string) *Client {
	t.Helper()
	c, err := New(Config{APIURL: api, PrivateAPIURL: private, Tokens: &fakeTokens{}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAuthorizationHeader checks that a URL that needs a token gets the
// token source's token for its origin, and a loopback one none. The
// server is on loopback, so the test makes the client treat it as remote.
func TestAuthorizationHeader(t *testing.T) {
	rec := newRecorder(t, nil)
	tokens := &fakeTokens{}
	c, err := New(Config{APIURL: rec.URL + "/base", PrivateAPIURL: rec.URL, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListRepositories(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.needsToken = func(*url.URL) (bool, error) { return true, nil }
	if _, err := c.ListRepositories(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Untrack(t.Context(), Repo{"demo", "hello"}, "", true); err != nil {
		t.Fatal(err)
	}
	want := []recorded{
		{Method: "GET", Path: "/base/kgd/v1/repositories"},
		{Method: "GET", Path: "/base/kgd/v1/repositories", Auth: "Bearer token-for-" + rec.URL},
		{Method: "DELETE", Path: "/api/v0/github/repositories/demo/hello", Query: "force=true", Auth: "Bearer token-for-" + rec.URL},
	}
	if diff := cmp.Diff(want, rec.requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{rec.URL, rec.URL}, tokens.audiences); diff != "" {
		t.Errorf("audiences (-want +got):\n%s", diff)
	}

	// No token: nothing is sent, and the error says what to do.
	tokens.err = &Error{Code: codes.Unauthenticated, Message: "no Google identity token", Hint: "run `gcloud auth login`"}
	_, err = c.ListRepositories(t.Context())
	if ExitCode(err) != ExitDenied || len(rec.requests()) != 3 {
		t.Errorf("without a token: %v (exit %d), %d requests", err, ExitCode(err), len(rec.requests()))
	}
}

// TestPlainHTTPRefused checks nothing is sent to a plain-http URL that is
// not loopback: the request fails before it is made.
func TestPlainHTTPRefused(t *testing.T) {
	tokens := &fakeTokens{}
	c, err := New(Config{APIURL: "http://kgd.example.com", PrivateAPIURL: "http://localhost:5000", Tokens: tokens,
		HTTPClient: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			t.Errorf("request sent to %s", r.URL)
			return nil, errors.New("no network in tests")
		})}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListRepositories(t.Context())
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "over plain http") || len(tokens.audiences) != 0 {
		t.Errorf("ListRepositories over plain http: %v (exit %d), tokens asked %v", err, ExitCode(err), tokens.audiences)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRequests checks the routes, bodies and content types of the calls
// that start jobs and change settings.
func TestRequests(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/execute") {
			w.Header().Add("Grpc-Metadata-X-Kgd-Jobs", "demo/hello=p-42")
			w.Header().Add("Grpc-Metadata-X-Kgd-Jobs", "other/repo=p-43")
		}
		if strings.HasPrefix(r.URL.Path, "/api/") {
			io.WriteString(w, `{"ok":true}`)
			return
		}
		io.WriteString(w, `{"id":"p-new","status":"queued"}`)
	})
	c := newClient(t, rec.URL, rec.URL)
	ctx := t.Context()
	r := Repo{"demo", "hello"}
	calls := []func() error{
		func() error { _, err := c.RerunJob(ctx, r, "p-1"); return err },
		func() error { _, err := c.DeployCommit(ctx, r, "main", "1a2b3c4"); return err },
		func() error { _, err := c.Rollback(ctx, r, "p-1", nil); return err },
		func() error { _, err := c.Rollback(ctx, r, "p-1", []string{"web"}); return err },
		func() error { _, err := c.ListJobs(ctx, r, 5, "tok/en"); return err },
		func() error {
			jobs, err := c.Execute(ctx, r, false, true)
			if err == nil && !cmp.Equal(jobs, []string{"p-42"}) {
				err = fmt.Errorf("Execute started %v, want [p-42]", jobs)
			}
			return err
		},
		func() error { return c.SetAuto(ctx, r, PhaseBuild, false) },
		func() error { _, err := c.State(ctx, r); return err },
		func() error { _, err := c.Track(ctx, r, "octocat", nil); return err },
		func() error { _, err := c.Track(ctx, r, "", &Policy{Namespaces: []string{"web"}}); return err },
		func() error { _, err := c.SetPolicy(ctx, r, json.RawMessage(`{"namespaces":["web"]}`)); return err },
		func() error { _, err := c.SetGitHubReports(ctx, r, false); return err },
	}
	for i, call := range calls {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	const js = "application/json"
	want := []recorded{
		{Method: "POST", Path: "/kgd/v1/repositories/demo/hello/jobs/p-1:rerun", ContentType: js, Body: `{}`},
		{Method: "POST", Path: "/kgd/v1/repositories/demo/hello/deploys", ContentType: js, Body: `{"branch":"main","commit":"1a2b3c4"}`},
		{Method: "POST", Path: "/kgd/v1/repositories/demo/hello/jobs/p-1:rollback", ContentType: js, Body: `{"units":[]}`},
		{Method: "POST", Path: "/kgd/v1/repositories/demo/hello/jobs/p-1:rollback", ContentType: js, Body: `{"units":["web"]}`},
		{Method: "GET", Path: "/kgd/v1/repositories/demo/hello/jobs", Query: "page_size=5&page_token=tok%2Fen"},
		{Method: "POST", Path: "/v2/execute", Query: "repository=demo%2Fhello", ContentType: js, Body: `{"deploy":true}`},
		{Method: "PUT", Path: "/v2/build/auto_execute", Query: "repository=demo%2Fhello", ContentType: js, Body: `{"enabled":false}`},
		{Method: "GET", Path: "/v2/state", Query: "repository=demo%2Fhello"},
		{Method: "POST", Path: "/api/v0/github/repositories/demo/hello", Query: "login=octocat"},
		{Method: "POST", Path: "/api/v0/github/repositories/demo/hello", ContentType: js,
			Body: `{"policy":{"namespaces":["web"],"create_namespaces":false,"cluster_scoped":false,"allow_kinds":null,"adopt":false,"service_account":"","operators":null}}`},
		{Method: "PUT", Path: "/api/v0/github/repositories/demo/hello/policy", ContentType: js, Body: `{"namespaces":["web"]}`},
		{Method: "PUT", Path: "/api/v0/github/repositories/demo/hello/reports", ContentType: js, Body: `{"github":false}`},
	}
	if diff := cmp.Diff(want, rec.requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestStream checks a server stream's results, a clean end and an error
// frame.
func TestStream(t *testing.T) {
	rec := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"result":{"phase":"build","text":"Step 1/2","sequence":"41"}}`+"\n")
		io.WriteString(w, "\n")
		io.WriteString(w, `{"result":{"phase":"build","text":"Step 2/2","sequence":"42"}}`+"\n")
		if r.URL.Query().Get("follow") == "true" {
			io.WriteString(w, `{"error":{"code":14,"message":"log: the server is shutting down; ask again","details":[]}}`+"\n")
		}
	})
	c := newClient(t, rec.URL, rec.URL)
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprintf("follow=%v", follow), func(t *testing.T) {
			var texts []string
			var last error
			for l, err := range c.JobLog(t.Context(), Repo{"demo", "hello"}, "p-1", follow) {
				if err != nil {
					last = err
					continue
				}
				texts = append(texts, fmt.Sprintf("%d %s", l.GetSequence(), l.GetText()))
			}
			if diff := cmp.Diff([]string{"41 Step 1/2", "42 Step 2/2"}, texts); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
			switch {
			case !follow && last != nil:
				t.Errorf("a stream that ended cleanly yielded %v", last)
			case follow && (ExitCode(last) != ExitServer || last.Error() != "log: the server is shutting down; ask again"):
				t.Errorf("error frame: %v", last)
			}
		})
	}
}

// TestTokens checks kgd's token source: KGD_ID_TOKEN first, then gcloud,
// then a service account key through Application Default Credentials
// (its token endpoint is a loopback server), and the error without any.
func TestTokens(t *testing.T) {
	const audience = "https://kgd-api-3nq5xq-ew.a.run.app"
	t.Run("env", func(t *testing.T) {
		tok := &Tokens{Env: "from-env", LookPath: func(string) (string, error) {
			t.Error("gcloud looked up though KGD_ID_TOKEN is set")
			return "", errors.New("no")
		}}
		if got, err := tok.Token(t.Context(), audience); got != "from-env" || err != nil {
			t.Errorf("Token = %q, %v", got, err)
		}
	})
	t.Run("gcloud", func(t *testing.T) {
		dir := t.TempDir()
		count := filepath.Join(dir, "count")
		gcloud := filepath.Join(dir, "gcloud")
		script := "#!/bin/sh\necho run >> " + count + "\n[ \"$1 $2\" = 'auth print-identity-token' ] || exit 3\necho ' gcloud-token '\n"
		if err := os.WriteFile(gcloud, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		tok := &Tokens{LookPath: func(string) (string, error) { return gcloud, nil }}
		for range 2 {
			if got, err := tok.Token(t.Context(), audience); got != "gcloud-token" || err != nil {
				t.Errorf("Token = %q, %v", got, err)
			}
		}
		if b, _ := os.ReadFile(count); strings.Count(string(b), "run") != 1 {
			t.Errorf("gcloud ran %d times, want once (cached)", strings.Count(string(b), "run"))
		}
	})
	t.Run("service-account", func(t *testing.T) {
		var gotAudience string
		// The identity token Google would answer: a JWT whose expiry the
		// library reads (its signature is for Cloud Run to check).
		seg := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
		idToken := seg(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." +
			seg(map[string]any{"aud": audience, "exp": time.Now().Add(time.Hour).Unix(), "email": "deployer@kgd-test.iam.gserviceaccount.com"}) + ".c2ln"
		tokenServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm()
			gotAudience = targetAudience(t, r.PostForm.Get("assertion"))
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"id_token": idToken})
		}))
		defer tokenServer.Close()
		t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", serviceAccountKey(t, tokenServer.URL))
		tok := &Tokens{LookPath: func(string) (string, error) { return "", errors.New("not found") }}
		got, err := tok.Token(t.Context(), audience)
		if got != idToken || err != nil || gotAudience != audience {
			t.Errorf("Token = %q, %v (target_audience %q)", got, err, gotAudience)
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing.json"))
		dir := t.TempDir()
		gcloud := filepath.Join(dir, "gcloud")
		script := "#!/bin/sh\necho 'ERROR: (gcloud.auth.print-identity-token) You do not currently have an active account selected.' >&2\nexit 1\n"
		if err := os.WriteFile(gcloud, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		tok := &Tokens{LookPath: func(string) (string, error) { return gcloud, nil }}
		_, err := tok.Token(t.Context(), audience)
		var e *Error
		if !errors.As(err, &e) || ExitCode(err) != ExitDenied || !strings.Contains(err.Error(), "You do not currently have an active account selected") ||
			!strings.Contains(e.Hint, "gcloud auth login") || !strings.Contains(e.Hint, "KGD_ID_TOKEN") || !strings.Contains(e.Hint, "GOOGLE_APPLICATION_CREDENTIALS") {
			t.Errorf("Token without credentials: %v (exit %d)", err, ExitCode(err))
		}
	})
}

// serviceAccountKey writes a service account key file whose token
// endpoint is tokenURL.
func serviceAccountKey(t *testing.T, tokenURL string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "kgd-test", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "deployer@kgd-test.iam.gserviceaccount.com", "client_id": "1", "token_uri": tokenURL,
	})
	path := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// targetAudience returns the target_audience claim of a JWT assertion
// (its signature is not checked: the test only reads what was asked).
func targetAudience(t *testing.T, assertion string) string {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		t.Errorf("assertion %q is not a JWT", assertion)
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Error(err)
		return ""
	}
	var claims struct {
		TargetAudience string `json:"target_audience"`
	}
	json.Unmarshal(b, &claims)
	return claims.TargetAudience
}

func TestParseRepo(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Repo
		ok   bool
	}{
		{"demo/hello", Repo{"demo", "hello"}, true},
		{" acme/web.site-2 ", Repo{"acme", "web.site-2"}, true},
		{"demo", Repo{}, false},
		{"demo/", Repo{}, false},
		{"/hello", Repo{}, false},
		{"demo/hello/extra", Repo{}, false},
		{"-demo/hello", Repo{}, false},
		{"demo/..", Repo{}, false},
	} {
		got, err := ParseRepo(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseRepo(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && ExitCode(err) != ExitUsage {
			t.Errorf("ParseRepo(%q) error exits %d", tt.in, ExitCode(err))
		}
	}
}
