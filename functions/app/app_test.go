package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/kube-git-deploy/kube-git-deploy/functions/app"
	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/githubfake"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

const testKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

type env struct {
	ctx             context.Context
	gh              *githubfake.Server
	private, public *httptest.Server
	client          *http.Client
	project         string
}

// newEnv runs both functions, built by app.New exactly as in production,
// against the emulators (a project of the test's own) and a fake GitHub.
func newEnv(t *testing.T) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv with more variables, computed from the servers'
// base URLs.
func newEnvWith(t *testing.T, more func(private, public string) map[string]string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	gh := githubfake.New("client-id", "client-secret")
	t.Cleanup(gh.Close)
	project := emulatortest.ProjectID(t)

	ps, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if err := queue.Ensure(ctx, ps, queue.DefaultNames(project), queue.EnsureOptions{}); err != nil {
		t.Fatal(err)
	}

	// The servers' URLs must be known before the config is read.
	private, public := httptest.NewUnstartedServer(nil), httptest.NewUnstartedServer(nil)
	vars := map[string]string{
		"GOOGLE_CLOUD_PROJECT": project, "PUBLIC_HTTP_HOST": "http://deploy.example.test:5001",
		"PRIVATE_HTTP_HOST": "http://" + private.Listener.Addr().String(),
		"GITHUB_CLIENT_ID":  "client-id", "GITHUB_CLIENT_SECRET": "client-secret",
		"GITHUB_API_URL": gh.APIURL, "GITHUB_WEB_URL": gh.URL, "KGD_ENCRYPTION_KEY": testKey,
	}
	if more != nil {
		for k, v := range more("http://"+private.Listener.Addr().String(), "http://"+public.Listener.Addr().String()) {
			vars[k] = v
		}
	}
	cfg, err := app.LoadConfig(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	private.Config.Handler, public.Config.Handler = a.Private, a.Public
	private.Start()
	t.Cleanup(private.Close)
	public.Start()
	t.Cleanup(public.Close)
	return &env{ctx: ctx, gh: gh, private: private, public: public, client: &http.Client{Timeout: 20 * time.Second}, project: project}
}

func (e *env) call(t *testing.T, method, u string) (int, map[string]any) {
	t.Helper()
	return e.do(t, method, u, "", "")
}

// do sends a request with an Authorization header (if auth is set) and a
// body (if body is set) and decodes the JSON answer.
func (e *env) do(t *testing.T, method, u, auth, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v", method, u, err)
	}
	if _, ok := out["ok"]; !ok {
		t.Errorf("%s %s: body %v lacks ok", method, u, out)
	}
	return resp.StatusCode, out
}

// signIn runs the OAuth web flow through the fake GitHub, which approves
// at once and redirects back to the callback.
func (e *env) signIn(t *testing.T, login string) map[string]any {
	t.Helper()
	e.gh.SignInAs(login, "admin:repo_hook")
	code, body := e.call(t, "GET", e.private.URL+"/api/v0/github/login_url")
	if code != http.StatusOK {
		t.Fatalf("login_url = %d %v", code, body)
	}
	code, body = e.call(t, "GET", body["login_url"].(string))
	if code != http.StatusOK || body["login"] != login {
		t.Fatalf("sign-in callback = %d %v, want 200 as %s", code, body, login)
	}
	return body
}

// TestMissingScopes tells a user who grants less than asked (or whose
// grant GitHub normalised: repo includes repo:status and repo_deployment)
// what the runner will lack.
func TestMissingScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for granted, want := range map[string]string{
		"admin:repo_hook": "[repo:status repo_deployment]",
		"admin:repo_hook,repo:status,repo_deployment": "[]",
		"admin:repo_hook,repo":                        "[]",
		"repo":                                        "[admin:repo_hook]",
	} {
		e.gh.SignInAs("octo", granted)
		_, lb := e.call(t, "GET", e.private.URL+"/api/v0/github/login_url")
		code, body := e.call(t, "GET", lb["login_url"].(string))
		if got := fmt.Sprint(body["missing_scopes"]); code != http.StatusOK || got != want {
			t.Errorf("granted %s: %d, missing_scopes = %s, want %s", granted, code, got, want)
		}
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for srv, want := range map[string]string{e.private.URL: "private", e.public.URL: "public"} {
		code, body := e.call(t, "GET", srv+"/healthz")
		if code != http.StatusOK || body["ok"] != true || body["server"] != want {
			t.Errorf("healthz = %d %v, want ok server %s", code, body, want)
		}
	}
	code, body := e.call(t, "GET", e.private.URL+"/nope")
	if code != http.StatusNotFound || body["ok"] != false {
		t.Errorf("unknown path = %d %v, want JSON 404", code, body)
	}
	code, body = e.call(t, "PUT", e.private.URL+"/healthz")
	if code != http.StatusMethodNotAllowed || body["ok"] != false {
		t.Errorf("wrong method = %d %v, want JSON 405", code, body)
	}
}

func TestOAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	code, body := e.call(t, "GET", e.private.URL+"/api/v0/github/login_url")
	if code != http.StatusOK {
		t.Fatalf("login_url = %d %v", code, body)
	}
	u, err := url.Parse(body["login_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	checks := map[string]string{
		"client_id": "client-id", "redirect_uri": e.private.URL + "/api/v0/github/oauth_callback",
		"scope": "admin:repo_hook repo:status repo_deployment", "code_challenge_method": "S256", "response_type": "code",
	}
	for k, want := range checks {
		if got := q.Get(k); got != want {
			t.Errorf("login_url %s = %q, want %q", k, got, want)
		}
	}
	if u.Path != "/login/oauth/authorize" || len(q.Get("code_challenge")) != 43 || !regexp.MustCompile(`^[A-Z2-7]{26}\.\d+\.[A-Za-z0-9_-]{43}$`).MatchString(q.Get("state")) {
		t.Errorf("login_url %s: want authorize path, a PKCE challenge and a signed state", u)
	}

	// Complete this flow by hand, so the test holds the callback URL.
	e.gh.SignInAs("octo", "admin:repo_hook,repo:status,repo_deployment")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	code, body = e.call(t, "GET", callback)
	if code != http.StatusOK || body["login"] != "octo" {
		t.Fatalf("callback = %d %v", code, body)
	}
	if got := body["missing_scopes"].([]any); len(got) != 0 {
		t.Errorf("missing_scopes = %v, want none", got)
	}

	cb, _ := url.Parse(callback)
	state := cb.Query().Get("state")
	forge := func(s string) string {
		return s[:len(s)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(s, "AA")]
	}
	tests := []struct {
		name, query string
	}{
		{"replayed", cb.RawQuery},
		{"forged-state", url.Values{"code": {"x"}, "state": {forge(state)}}.Encode()},
		{"garbage-state", url.Values{"code": {"x"}, "state": {"not.a.state"}}.Encode()},
		{"missing-state", url.Values{"code": {"x"}}.Encode()},
		{"missing-code", url.Values{"state": {state}}.Encode()},
		{"denied", url.Values{"error": {"access_denied"}, "state": {state}}.Encode()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.call(t, "GET", e.private.URL+"/api/v0/github/oauth_callback?"+tt.query)
			if code != http.StatusBadRequest || body["ok"] != false {
				t.Errorf("callback = %d %v, want 400", code, body)
			}
		})
	}
	if n := e.gh.Exchanges(); n != 1 {
		t.Errorf("GitHub saw %d token exchanges, want 1 (rejected states must not reach GitHub)", n)
	}

	t.Run("a-fresh-state-with-a-wrong-code", func(t *testing.T) {
		_, body := e.call(t, "GET", e.private.URL+"/api/v0/github/login_url")
		lu, _ := url.Parse(body["login_url"].(string))
		code, body := e.call(t, "GET", e.private.URL+"/api/v0/github/oauth_callback?"+url.Values{"code": {"wrong"}, "state": {lu.Query().Get("state")}}.Encode())
		if code != http.StatusBadRequest || !strings.Contains(body["error"].(string), "GitHub refused the code") {
			t.Errorf("callback with a wrong code = %d %v", code, body)
		}
	})
}

// TestOAuthCallbackOnPublicAPI is the cloud set-up: GitHub sends the
// browser to PublicAPI, the only function reachable without a Google
// identity. Only a state PrivateAPI's login_url issued is accepted there.
func TestOAuthCallbackOnPublicAPI(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(_, public string) map[string]string {
		return map[string]string{"KGD_OAUTH_CALLBACK_URL": public + "/api/v0/github/oauth_callback"}
	})
	_, body := e.call(t, "GET", e.private.URL+"/api/v0/github/login_url")
	u, _ := url.Parse(body["login_url"].(string))
	if got, want := u.Query().Get("redirect_uri"), e.public.URL+"/api/v0/github/oauth_callback"; got != want {
		t.Fatalf("redirect_uri = %q, want PublicAPI's callback %q", got, want)
	}

	// An attacker holds a real code of their own GitHub account but no
	// state from login_url: forged, foreign-key, made-up or missing states
	// all fail before GitHub is asked, and no token is stored.
	e.gh.SignInAs("mallory", "admin:repo_hook")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	attackerURL := *u
	q := attackerURL.Query()
	q.Set("state", "mallory")
	attackerURL.RawQuery = q.Encode()
	resp, err := noFollow.Get(attackerURL.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("fake GitHub gave no code: %s", loc)
	}
	issued := u.Query().Get("state")
	parts := strings.Split(issued, ".")
	for name, state := range map[string]string{
		"made-up":          "mallory",
		"unsigned":         parts[0] + "." + parts[1] + ".",
		"other-flow-id":    "AAAAAAAAAAAAAAAAAAAAAAAAAA." + parts[1] + "." + parts[2],
		"later-expiry":     parts[0] + ".9999999999." + parts[2],
		"missing":          "",
		"signed-elsewhere": parts[0] + "." + parts[1] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	} {
		t.Run(name, func(t *testing.T) {
			status, body := e.call(t, "GET", e.public.URL+"/api/v0/github/oauth_callback?"+url.Values{"code": {code}, "state": {state}}.Encode())
			if status != http.StatusBadRequest || body["ok"] != false {
				t.Errorf("callback = %d %v, want 400", status, body)
			}
		})
	}
	if n := e.gh.Exchanges(); n != 0 {
		t.Errorf("GitHub saw %d token exchanges, want 0", n)
	}
	e.gh.AddRepo("mallory", "app", "mallory")
	if status, body := e.call(t, "POST", e.private.URL+"/api/v0/github/repositories/mallory/app?login=mallory"); status != http.StatusUnauthorized {
		t.Errorf("track with the attacker's login = %d %v, want 401 (no token stored)", status, body)
	}

	// The real flow, through PublicAPI's callback, signs in once.
	e.gh.SignInAs("octo", "admin:repo_hook")
	resp, err = noFollow.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	if !strings.HasPrefix(callback, e.public.URL+"/") {
		t.Fatalf("GitHub redirected to %q, want PublicAPI", callback)
	}
	if status, body := e.call(t, "GET", callback); status != http.StatusOK || body["login"] != "octo" {
		t.Fatalf("callback on PublicAPI = %d %v, want 200 as octo", status, body)
	}
	if status, _ := e.call(t, "GET", callback); status != http.StatusBadRequest {
		t.Errorf("replayed callback = %d, want 400", status)
	}
	if n := e.gh.Exchanges(); n != 1 {
		t.Errorf("GitHub saw %d token exchanges, want 1", n)
	}
	// PublicAPI never starts a sign-in: login_url stays private.
	if status, _ := e.call(t, "GET", e.public.URL+"/api/v0/github/login_url"); status != http.StatusNotFound {
		t.Errorf("PublicAPI login_url = %d, want 404", status)
	}
}

func TestTrackWebhookUntrack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	repoURL := e.private.URL + "/api/v0/github/repositories/Octo/App"

	code, body := e.call(t, "POST", repoURL)
	if code != http.StatusUnauthorized {
		t.Fatalf("track before sign-in = %d %v, want 401", code, body)
	}
	e.signIn(t, "octo")
	e.gh.AddRepo("Octo", "App", "octo")
	e.gh.AddRepo("other", "private") // octo cannot see it

	code, body = e.call(t, "POST", repoURL)
	if code != http.StatusCreated {
		t.Fatalf("track = %d %v, want 201", code, body)
	}
	hooks := e.gh.Hooks("Octo", "App")
	if len(hooks) != 1 {
		t.Fatalf("GitHub has %d hooks, want 1", len(hooks))
	}
	h := hooks[0]
	if h.URL != "http://deploy.example.test:5001/api/v0/github/repositories/Octo/App/web_hook" || h.ContentType != "json" ||
		h.InsecureSSL != "1" || strings.Join(h.Events, ",") != "push" || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(h.Secret) {
		t.Errorf("created hook = %+v", h)
	}
	repo := body["repository"].(map[string]any)
	if repo["full_name"] != "Octo/App" || repo["web_hook_id"] != float64(h.ID) || repo["tracked_by"] != "octo" || repo["tracked_by_caller"] != "local" {
		t.Errorf("track response repository = %v", repo)
	}
	// Tracked without a body: the default policy, the repository's own namespace.
	wantPolicy := map[string]any{
		"namespaces": []any{store.DefaultNamespace("Octo", "App")}, "create_namespaces": true, "cluster_scoped": false,
		"allow_kinds": []any{}, "adopt": false, "service_account": "", "operators": []any{},
	}
	if diff := cmp.Diff(wantPolicy, repo["policy"]); diff != "" {
		t.Errorf("default policy (-want +got):\n%s", diff)
	}

	code, body = e.call(t, "POST", repoURL)
	if code != http.StatusConflict {
		t.Errorf("track twice = %d %v, want 409", code, body)
	}
	if n := len(e.gh.Hooks("Octo", "App")); n != 1 {
		t.Errorf("GitHub has %d hooks after a second track, want 1", n)
	}
	code, body = e.call(t, "POST", e.private.URL+"/api/v0/github/repositories/other/private")
	if code != http.StatusNotFound {
		t.Errorf("track an invisible repository = %d %v, want 404", code, body)
	}
	code, body = e.call(t, "POST", e.private.URL+"/api/v0/github/repositories/-bad-/x")
	if code != http.StatusBadRequest {
		t.Errorf("track an invalid name = %d %v, want 400", code, body)
	}

	code, body = e.call(t, "GET", e.private.URL+"/api/v0/github/repositories/tracked")
	list := body["repositories"].([]any)
	if code != http.StatusOK || len(list) != 1 || list[0].(map[string]any)["full_name"] != "Octo/App" {
		t.Errorf("tracked = %d %v", code, body)
	}
	if raw, _ := json.Marshal(body); strings.Contains(string(raw), h.Secret) {
		t.Errorf("tracked list leaks the webhook secret")
	}

	// GitHub delivers with the secret it was given: the stored secret matches.
	deliver := func() int {
		payload := []byte(`{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"fd489864e7642b48eaad6e3f155c10e46810ec72","created":true}`)
		req, _ := http.NewRequestWithContext(e.ctx, "POST", e.public.URL+"/api/v0/github/repositories/Octo/App/web_hook", strings.NewReader(string(payload)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(webhook.EventHeader, "push")
		req.Header.Set(webhook.DeliveryHeader, "d-"+time.Now().Format("150405.000000"))
		req.Header.Set(webhook.SignatureHeader, webhook.SignatureValue([]byte(h.Secret), payload))
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := deliver(); code != http.StatusAccepted {
		t.Errorf("delivery signed with GitHub's hook secret = %d, want 202", code)
	}

	code, body = e.call(t, "DELETE", repoURL)
	if code != http.StatusOK || body["web_hook_deleted"] != true {
		t.Errorf("untrack = %d %v", code, body)
	}
	if n := len(e.gh.Hooks("Octo", "App")); n != 0 {
		t.Errorf("GitHub still has %d hooks after untrack", n)
	}
	if code := deliver(); code != http.StatusNotFound {
		t.Errorf("delivery after untrack = %d, want 404", code)
	}
	code, body = e.call(t, "DELETE", repoURL)
	if code != http.StatusNotFound {
		t.Errorf("untrack twice = %d %v, want 404", code, body)
	}

	// A hook already deleted on GitHub does not block untracking.
	if code, body := e.call(t, "POST", repoURL); code != http.StatusCreated {
		t.Fatalf("track again = %d %v", code, body)
	}
	id := e.gh.Hooks("Octo", "App")[0].ID
	delReq, _ := http.NewRequest("DELETE", e.gh.APIURL+"repos/Octo/App/hooks/"+strconv.FormatInt(id, 10), nil)
	delReq.Header.Set("Authorization", "Bearer "+e.gh.AddUser("octo"))
	if resp, err := http.DefaultClient.Do(delReq); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete hook on GitHub directly: %v %v", err, resp)
	}
	code, body = e.call(t, "DELETE", repoURL)
	if code != http.StatusOK {
		t.Errorf("untrack with the hook gone = %d %v, want 200", code, body)
	}
}

func TestLoadConfig(t *testing.T) {
	base := map[string]string{
		"GOOGLE_CLOUD_PROJECT": "p", "PUBLIC_HTTP_HOST": "https://deploy.example.com",
		"GITHUB_CLIENT_ID": "id", "GITHUB_CLIENT_SECRET": "s", "KGD_ENCRYPTION_KEY": testKey,
	}
	cfg, err := app.LoadConfig(func(k string) string { return base[k] })
	if err != nil {
		t.Fatalf("LoadConfig(minimal) = %v", err)
	}
	if cfg.PrivatePort != 5000 || cfg.PublicPort != 5001 || cfg.ListenHost != "127.0.0.1" || cfg.Topic != "kgd-jobs" ||
		cfg.GitHubAPIURL.String() != "https://api.github.com/" || cfg.GitHubWebURL.String() != "https://github.com/" ||
		cfg.PrivateURL.String() != "http://localhost:5000/" ||
		cfg.OAuthCallbackURL.String() != "http://localhost:5000/api/v0/github/oauth_callback" {
		t.Errorf("defaults = %+v", cfg)
	}
	for _, tt := range []struct {
		env  map[string]string
		want caller.Mode
	}{
		{map[string]string{}, caller.ModeLocal},
		{map[string]string{"KGD_LISTEN_HOST": "::1"}, caller.ModeLocal},
		{map[string]string{"KGD_LISTEN_HOST": "localhost"}, caller.ModeLocal},
		{map[string]string{"KGD_AUTH": "iam"}, caller.ModeIAM},
		{map[string]string{"K_SERVICE": "private-api", "KGD_LISTEN_HOST": "0.0.0.0"}, caller.ModeIAM},
		{map[string]string{"KGD_AUTH": "iam", "KGD_LISTEN_HOST": "0.0.0.0"}, caller.ModeIAM},
	} {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range tt.env {
			env[k] = v
		}
		cfg, err := app.LoadConfig(func(k string) string { return env[k] })
		if err != nil || cfg.AuthMode != tt.want {
			t.Errorf("LoadConfig(%v): AuthMode = %q, %v; want %q", tt.env, cfg.AuthMode, err, tt.want)
		}
	}
	tests := []struct {
		name, key, value string
	}{
		{"missing-project", "GOOGLE_CLOUD_PROJECT", ""},
		{"missing-public-host", "PUBLIC_HTTP_HOST", ""},
		{"relative-public-host", "PUBLIC_HTTP_HOST", "deploy.example.com"},
		{"ftp-public-host", "PUBLIC_HTTP_HOST", "ftp://x"},
		{"bad-port", "PRIVATE_HTTP_PORT", "http"},
		{"port-out-of-range", "PUBLIC_HTTP_PORT", "70000"},
		{"ssl-contradicts-host", "PUBLIC_HTTP_SSL_ENABLED", "false"},
		{"bad-bool", "GITHUB_PRIVATE_REPOS", "yes please"},
		{"missing-client-id", "GITHUB_CLIENT_ID", ""},
		{"missing-client-secret", "GITHUB_CLIENT_SECRET", ""},
		{"short-key", "KGD_ENCRYPTION_KEY", "c2hvcnQ="},
		{"missing-key", "KGD_ENCRYPTION_KEY", ""},
		{"bad-previous-key", "KGD_ENCRYPTION_KEY_PREVIOUS", "nope"},
		{"bad-api-url", "GITHUB_API_URL", "://x"},
		{"callback-elsewhere", "KGD_OAUTH_CALLBACK_URL", "https://deploy.example.com/login"},
		{"relative-callback", "KGD_OAUTH_CALLBACK_URL", "/api/v0/github/oauth_callback"},
		{"bad-auth-mode", "KGD_AUTH", "none"},
		{"local-mode-on-all-interfaces", "KGD_LISTEN_HOST", "0.0.0.0"},
		{"local-mode-on-a-lan-address", "KGD_LISTEN_HOST", "192.168.1.10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			env[tt.key] = tt.value
			_, err := app.LoadConfig(func(k string) string { return env[k] })
			var ce *app.ConfigError
			if !errors.As(err, &ce) || ce.Var != tt.key {
				t.Fatalf("LoadConfig with %s=%q: err = %v, want a ConfigError naming %s", tt.key, tt.value, err, tt.key)
			}
			if tt.value != "" && strings.Contains(err.Error(), tt.value) && strings.Contains(tt.key, "KEY") {
				t.Errorf("error %q echoes the key", err)
			}
		})
	}
}

// idToken is the Authorization header of a caller whose Google identity
// token Cloud Run IAM verified: it hands the token on, and the functions
// read its claims without verifying the signature again (shared/caller).
func idToken(email string) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"email":%q,"email_verified":true,"exp":%d}`, email, time.Now().Add(time.Hour).Unix())
	return "Bearer " + enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "." + enc([]byte("signature"))
}

// newIAMEnv runs the functions as in the cloud: callers identified by
// their Google identity (KGD_AUTH=iam), GitHub sending the browser to
// PublicAPI's callback.
func newIAMEnv(t *testing.T) *env {
	return newEnvWith(t, func(_, public string) map[string]string {
		return map[string]string{"KGD_AUTH": "iam", "KGD_OAUTH_CALLBACK_URL": public + "/api/v0/github/oauth_callback"}
	})
}

// signInWith runs the OAuth web flow as the caller auth: login_url on
// PrivateAPI with the caller's identity, then GitHub's redirect to the
// callback, which the browser follows without any identity.
func (e *env) signInWith(t *testing.T, auth, login string) map[string]any {
	t.Helper()
	e.gh.SignInAs(login, "admin:repo_hook")
	code, body := e.do(t, "GET", e.private.URL+"/api/v0/github/login_url", auth, "")
	if code != http.StatusOK {
		t.Fatalf("login_url = %d %v", code, body)
	}
	code, body = e.call(t, "GET", body["login_url"].(string))
	if code != http.StatusOK || body["login"] != login {
		t.Fatalf("sign-in callback = %d %v, want 200 as %s", code, body, login)
	}
	return body
}

// store opens the functions' Firestore data as the runner does.
func (e *env) store(t *testing.T) *store.Store {
	t.Helper()
	fs, err := firestore.NewClient(e.ctx, e.project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	key, err := secret.ParseKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	box, err := secret.NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(fs, box)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// tracked returns the tracked list as full name → repository.
func (e *env) tracked(t *testing.T, auth string) map[string]map[string]any {
	t.Helper()
	code, body := e.do(t, "GET", e.private.URL+"/api/v0/github/repositories/tracked", auth, "")
	if code != http.StatusOK {
		t.Fatalf("tracked = %d %v", code, body)
	}
	out := map[string]map[string]any{}
	for _, r := range body["repositories"].([]any) {
		r := r.(map[string]any)
		out[r["full_name"].(string)] = r
	}
	return out
}

// TestCallersUseOwnTokens: two callers in IAM mode each act on GitHub only
// with the tokens they obtained themselves.
func TestCallersUseOwnTokens(t *testing.T) {
	t.Parallel()
	e := newIAMEnv(t)
	alice, bob := idToken("alice@example.com"), idToken("Bob@Example.com")
	repos := e.private.URL + "/api/v0/github/repositories/"
	e.gh.AddRepo("alice", "app", "alice")
	e.gh.AddRepo("bob", "app", "bob")

	t.Run("no-identity", func(t *testing.T) {
		enc := base64.RawURLEncoding.EncodeToString
		expired := "Bearer " + enc([]byte(`{}`)) + "." + enc([]byte(`{"email":"bob@example.com","email_verified":true,"exp":1000}`)) + ".s"
		unverified := "Bearer " + enc([]byte(`{}`)) + "." + enc([]byte(`{"email":"bob@example.com"}`)) + ".s"
		for _, auth := range []string{"", "Basic Ym9iOmJvYg==", expired, unverified} {
			for _, rt := range []struct{ method, path, body string }{
				{"GET", "/api/v0/github/login_url", ""},
				{"GET", "/api/v0/github/repositories/tracked", ""},
				{"POST", "/api/v0/github/repositories/bob/app", ""},
				{"POST", "/api/v0/github/repositories/bob/app", `{"policy":{"namespaces":["x"]}}`},
				{"PUT", "/api/v0/github/repositories/bob/app/policy", `{"namespaces":["x"]}`},
				{"DELETE", "/api/v0/github/repositories/bob/app", ""},
				{"GET", "/no/such/route", ""},
			} {
				code, body := e.do(t, rt.method, e.private.URL+rt.path, auth, rt.body)
				if code != http.StatusUnauthorized || body["ok"] != false || !strings.Contains(body["error"].(string), "Google identity") {
					t.Errorf("%s %s with Authorization %.20q = %d %v, want 401", rt.method, rt.path, auth, code, body)
				}
			}
		}
		if code, body := e.call(t, "GET", e.private.URL+"/healthz"); code != http.StatusOK {
			t.Errorf("healthz without identity = %d %v, want 200", code, body)
		}
	})

	// bob signs in first, alice last: her token is the newest of all,
	// which the old "latest signed-in user" rule would have handed to bob.
	if body := e.signInWith(t, bob, "bob"); body["caller"] != "bob@example.com" {
		t.Errorf("bob's sign-in stored the token for %v", body["caller"])
	}
	if body := e.signInWith(t, alice, "alice"); body["caller"] != "alice@example.com" {
		t.Errorf("alice's sign-in stored the token for %v", body["caller"])
	}

	code, body := e.do(t, "POST", repos+"alice/app?login=alice", bob, "")
	if code != http.StatusUnauthorized || !strings.Contains(body["error"].(string), "sign in as alice first") {
		t.Errorf("bob tracking with ?login=alice = %d %v, want 401 sign in as alice first", code, body)
	}
	// Without login bob acts with his own token, for which GitHub does not
	// show alice's repository.
	code, body = e.do(t, "POST", repos+"alice/app", bob, "")
	if code != http.StatusNotFound || !strings.Contains(body["error"].(string), "GitHub could not") {
		t.Errorf("bob tracking alice/app with his own token = %d %v, want GitHub's 404", code, body)
	}
	if n := len(e.gh.Hooks("alice", "app")); n != 0 {
		t.Fatalf("GitHub has %d hooks on alice/app, want none", n)
	}

	code, body = e.do(t, "POST", repos+"bob/app", bob, "")
	if code != http.StatusCreated {
		t.Fatalf("bob tracking bob/app = %d %v", code, body)
	}
	if n := len(e.gh.Hooks("bob", "app")); n != 1 {
		t.Errorf("GitHub has %d hooks on bob/app, want 1", n)
	}
	if code, body = e.do(t, "POST", repos+"alice/app?login=alice", alice, ""); code != http.StatusCreated {
		t.Fatalf("alice tracking alice/app = %d %v", code, body)
	}
	list := e.tracked(t, alice)
	for name, want := range map[string][2]string{"bob/app": {"bob", "bob@example.com"}, "alice/app": {"alice", "alice@example.com"}} {
		if r := list[name]; r == nil || r["tracked_by"] != want[0] || r["tracked_by_caller"] != want[1] {
			t.Errorf("tracked %s = %v, want tracked_by %s, tracked_by_caller %s", name, r, want[0], want[1])
		}
	}

	// The runner clones with the token the repository was tracked with.
	st := e.store(t)
	for owner, login := range map[string]string{"bob": "bob", "alice": "alice"} {
		r, err := st.Repository(e.ctx, owner, "app")
		if err != nil {
			t.Fatal(err)
		}
		tok, err := st.RepositoryToken(e.ctx, r)
		if err != nil {
			t.Fatalf("RepositoryToken(%s/app): %v", owner, err)
		}
		if got, _ := e.gh.TokenLogin(tok.AccessToken); got != login {
			t.Errorf("RepositoryToken(%s/app) is a token of %q, want %q", owner, got, login)
		}
	}

	// Only the tracker (or an operator of its policy) may untrack.
	if code, body := e.do(t, "DELETE", repos+"bob/app", alice, ""); code != http.StatusForbidden {
		t.Errorf("alice untracking bob's repository = %d %v, want 403", code, body)
	}
	if code, body := e.do(t, "DELETE", repos+"bob/app?force=true", alice, ""); code != http.StatusForbidden {
		t.Errorf("alice force-untracking bob's repository = %d %v, want 403", code, body)
	}
	if n := len(e.gh.Hooks("bob", "app")); n != 1 {
		t.Errorf("GitHub has %d hooks on bob/app after refused untracks, want 1", n)
	}
	if code, body := e.do(t, "DELETE", repos+"bob/app", bob, ""); code != http.StatusOK || body["web_hook_deleted"] != true {
		t.Errorf("bob untracking his repository = %d %v", code, body)
	}
	if n := len(e.gh.Hooks("bob", "app")); n != 0 {
		t.Errorf("GitHub has %d hooks on bob/app after untrack, want none", n)
	}
}

// TestCallbackStoresTokenForFlowCaller: the callback runs on PublicAPI,
// without a Google identity (or with any header a browser might send); the
// token goes to the caller who asked for login_url.
func TestCallbackStoresTokenForFlowCaller(t *testing.T) {
	t.Parallel()
	e := newIAMEnv(t)
	alice, bob := idToken("alice@example.com"), idToken("bob@example.com")
	e.gh.SignInAs("alice", "admin:repo_hook")
	_, body := e.do(t, "GET", e.private.URL+"/api/v0/github/login_url", alice, "")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(body["login_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	if !strings.HasPrefix(callback, e.public.URL+"/") {
		t.Fatalf("GitHub redirected to %q, want PublicAPI", callback)
	}
	// Whatever identity the callback request claims is ignored.
	code, body := e.do(t, "GET", callback, bob, "")
	if code != http.StatusOK || body["login"] != "alice" || body["caller"] != "alice@example.com" {
		t.Fatalf("callback = %d %v, want alice's token stored for alice@example.com", code, body)
	}
	st := e.store(t)
	tok, err := st.Token(e.ctx, "alice@example.com", "alice")
	if err != nil {
		t.Fatalf("alice's token: %v", err)
	}
	if login, _ := e.gh.TokenLogin(tok.AccessToken); login != "alice" {
		t.Errorf("stored token belongs to %q, want alice", login)
	}
	for _, c := range []string{"bob@example.com", "local"} {
		if _, err := st.Token(e.ctx, c, "alice"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token of alice for %s = %v, want ErrNotFound", c, err)
		}
	}
	if _, err := st.LatestToken(e.ctx, "bob@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob has a token: %v", err)
	}
	e.gh.AddRepo("alice", "app", "alice")
	if code, body := e.do(t, "POST", e.private.URL+"/api/v0/github/repositories/alice/app", bob, ""); code != http.StatusUnauthorized {
		t.Errorf("bob tracking without a token of his own = %d %v, want 401", code, body)
	}
	if n := len(e.gh.Hooks("alice", "app")); n != 0 {
		t.Errorf("GitHub has %d hooks, want none", n)
	}
}

func TestTrackWithPolicy(t *testing.T) {
	t.Parallel()
	e := newIAMEnv(t)
	alice, bob, carol := idToken("alice@example.com"), idToken("bob@example.com"), idToken("carol@example.com")
	e.signInWith(t, alice, "alice")
	e.signInWith(t, carol, "carol")
	for _, name := range []string{"app", "web", "other"} {
		e.gh.AddRepo("alice", name, "alice")
	}
	repos := e.private.URL + "/api/v0/github/repositories/"

	bad := []struct{ name, body, want string }{
		{"bad-namespace", `{"policy":{"namespaces":["Prod_1"]}}`, `deploy policy: namespaces: "Prod_1" is not a DNS label`},
		{"no-namespace", `{"policy":{"create_namespaces":true}}`, "deploy policy: namespaces: at least one is required"},
		{"bad-service-account", `{"policy":{"namespaces":["web"],"service_account":"nope"}}`, "service_account"},
		{"bad-operator", `{"policy":{"namespaces":["web"],"operators":["not an email"]}}`, "operators"},
		{"unknown-field", `{"policy":{"namespaces":["web"],"namespace":"web"}}`, `unknown field "namespace"`},
		{"unknown-top-field", `{"polcy":{}}`, `unknown field "polcy"`},
		{"not-json", `namespaces=web`, "not valid JSON"},
		{"truncated", `{"policy":{"namespaces":["web"]`, "not valid JSON"},
		{"wrong-type", `{"policy":{"namespaces":"web"}}`, "policy.namespaces"},
		{"two-values", `{} {}`, "more than one JSON value"},
		{"array", `[]`, "want a JSON object"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.do(t, "POST", repos+"alice/app", alice, tt.body)
			if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body["error"]), tt.want) {
				t.Errorf("track with %s = %d %v, want 400 naming %q", tt.body, code, body, tt.want)
			}
		})
	}
	t.Run("oversize", func(t *testing.T) {
		big := `{"policy":{"namespaces":["web"],"allow_kinds":["` + strings.Repeat("A", 70<<10) + `"]}}`
		if code, body := e.do(t, "POST", repos+"alice/app", alice, big); code != http.StatusRequestEntityTooLarge {
			t.Errorf("track with a %d-byte body = %d %v, want 413", len(big), code, body)
		}
	})
	if n := len(e.gh.Hooks("alice", "app")); n != 0 {
		t.Fatalf("GitHub has %d hooks after invalid bodies, want none", n)
	}
	if list := e.tracked(t, alice); len(list) != 0 {
		t.Fatalf("tracked after invalid bodies = %v, want none", list)
	}

	policy := map[string]any{
		"namespaces": []any{"web", "web-canary"}, "create_namespaces": false, "cluster_scoped": true,
		"allow_kinds": []any{"Role", "rbac.authorization.k8s.io/RoleBinding"}, "adopt": true,
		"service_account": "web/deployer", "operators": []any{"bob@example.com"},
	}
	raw, _ := json.Marshal(map[string]any{"policy": policy})
	code, body := e.do(t, "POST", repos+"alice/app", alice, string(raw))
	if code != http.StatusCreated {
		t.Fatalf("track with a policy = %d %v", code, body)
	}
	if diff := cmp.Diff(policy, body["repository"].(map[string]any)["policy"]); diff != "" {
		t.Errorf("track response policy (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(policy, e.tracked(t, bob)["alice/app"]["policy"]); diff != "" {
		t.Errorf("tracked list policy (-want +got):\n%s", diff)
	}
	// Empty bodies and a null policy mean the default policy.
	for name, b := range map[string]string{"web": "   ", "other": `{"policy":null}`} {
		if code, body := e.do(t, "POST", repos+"alice/"+name, alice, b); code != http.StatusCreated {
			t.Fatalf("track alice/%s with body %q = %d %v", name, b, code, body)
		}
		got := e.tracked(t, alice)["alice/"+name]["policy"].(map[string]any)
		if got["namespaces"].([]any)[0] != store.DefaultNamespace("alice", name) || got["create_namespaces"] != true {
			t.Errorf("policy of alice/%s tracked with body %q = %v, want the default", name, b, got)
		}
	}

	setURL := repos + "alice/app/policy"
	t.Run("put-by-tracker", func(t *testing.T) {
		code, body := e.do(t, "PUT", setURL, alice, `{"namespaces":["web"],"create_namespaces":true}`)
		want := map[string]any{
			"namespaces": []any{"web"}, "create_namespaces": true, "cluster_scoped": false,
			"allow_kinds": []any{}, "adopt": false, "service_account": "", "operators": []any{},
		}
		if code != http.StatusOK || body["ok"] != true {
			t.Fatalf("PUT policy by the tracker = %d %v", code, body)
		}
		if diff := cmp.Diff(want, body["policy"]); diff != "" {
			t.Errorf("PUT response policy (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, e.tracked(t, alice)["alice/app"]["policy"]); diff != "" {
			t.Errorf("stored policy after PUT (-want +got):\n%s", diff)
		}
	})
	t.Run("put-by-stranger", func(t *testing.T) {
		// bob was an operator of the first policy, which the tracker replaced.
		for _, who := range []string{bob, carol} {
			if code, body := e.do(t, "PUT", setURL, who, `{"namespaces":["kube-system"],"cluster_scoped":true}`); code != http.StatusForbidden {
				t.Errorf("PUT policy by a stranger = %d %v, want 403", code, body)
			}
			if code, body := e.do(t, "DELETE", repos+"alice/app?force=true", who, ""); code != http.StatusForbidden {
				t.Errorf("untrack by a stranger = %d %v, want 403", code, body)
			}
		}
		if got := e.tracked(t, alice)["alice/app"]["policy"].(map[string]any)["namespaces"]; fmt.Sprint(got) != "[web]" {
			t.Errorf("namespaces after a refused PUT = %v", got)
		}
	})
	t.Run("put-by-operator", func(t *testing.T) {
		if code, body := e.do(t, "PUT", setURL, alice, `{"namespaces":["web"],"operators":["Carol@example.com"]}`); code != http.StatusOK {
			t.Fatalf("PUT policy by the tracker = %d %v", code, body)
		}
		if code, body := e.do(t, "PUT", setURL, carol, `{"namespaces":["web","web-2"],"operators":["carol@example.com"]}`); code != http.StatusOK {
			t.Errorf("PUT policy by an operator = %d %v, want 200", code, body)
		}
	})
	t.Run("put-invalid", func(t *testing.T) {
		for _, b := range []string{``, `{}`, `{"namespaces":["UPPER"]}`, `{"policy":{"namespaces":["web"]}}`, `nope`} {
			if code, body := e.do(t, "PUT", setURL, alice, b); code != http.StatusBadRequest {
				t.Errorf("PUT policy %q = %d %v, want 400", b, code, body)
			}
		}
		if got := e.tracked(t, alice)["alice/app"]["policy"].(map[string]any)["namespaces"]; fmt.Sprint(got) != "[web web-2]" {
			t.Errorf("namespaces after invalid PUTs = %v", got)
		}
	})
	t.Run("put-untracked", func(t *testing.T) {
		if code, body := e.do(t, "PUT", repos+"alice/nothing/policy", alice, `{"namespaces":["web"]}`); code != http.StatusNotFound {
			t.Errorf("PUT policy of an untracked repository = %d %v, want 404", code, body)
		}
	})
	t.Run("reports", func(t *testing.T) {
		reportsURL := repos + "alice/app/reports"
		githubOn := func() any {
			return e.tracked(t, alice)["alice/app"]["reports"].(map[string]any)["github"]
		}
		if got := githubOn(); got != true {
			t.Fatalf("reports.github of a tracked repository = %v, want true (the default)", got)
		}
		if code, body := e.do(t, "PUT", reportsURL, bob, `{"github":false}`); code != http.StatusForbidden {
			t.Errorf("PUT reports by a stranger = %d %v, want 403", code, body)
		}
		for _, b := range []string{``, `{}`, `{"github":"no"}`, `{"slack":true}`, `nope`} {
			if code, body := e.do(t, "PUT", reportsURL, alice, b); code != http.StatusBadRequest {
				t.Errorf("PUT reports %q = %d %v, want 400", b, code, body)
			}
		}
		if got := githubOn(); got != true {
			t.Fatalf("reports.github after refused PUTs = %v, want true", got)
		}
		// carol is an operator of the policy.
		if code, body := e.do(t, "PUT", reportsURL, carol, `{"github":false}`); code != http.StatusOK || body["ok"] != true {
			t.Fatalf("PUT reports off by an operator = %d %v", code, body)
		}
		if got := githubOn(); got != false {
			t.Errorf("reports.github after turning it off = %v", got)
		}
		if code, body := e.do(t, "PUT", reportsURL, alice, `{"github":true}`); code != http.StatusOK {
			t.Fatalf("PUT reports on by the tracker = %d %v", code, body)
		}
		if got := githubOn(); got != true {
			t.Errorf("reports.github after turning it on again = %v", got)
		}
		if code, body := e.do(t, "PUT", repos+"alice/nothing/reports", alice, `{"github":true}`); code != http.StatusNotFound {
			t.Errorf("PUT reports of an untracked repository = %d %v, want 404", code, body)
		}
	})
	t.Run("operator-untracks", func(t *testing.T) {
		// carol, an operator, has no token of alice: she deletes the hook
		// with her own (GitHub does not show her the repository) or forces.
		if code, body := e.do(t, "DELETE", repos+"alice/app", carol, ""); code != http.StatusNotFound || !strings.Contains(body["error"].(string), "GitHub could not") {
			t.Errorf("operator untracking with her own token = %d %v, want GitHub's 404", code, body)
		}
		if n := len(e.gh.Hooks("alice", "app")); n != 1 {
			t.Errorf("GitHub has %d hooks on alice/app, want 1", n)
		}
		if code, body := e.do(t, "DELETE", repos+"alice/app?force=true", carol, ""); code != http.StatusOK || body["web_hook_deleted"] != false {
			t.Errorf("operator force-untracking = %d %v, want 200 with the hook left", code, body)
		}
	})
}
