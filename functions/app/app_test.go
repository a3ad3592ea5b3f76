package app_test

import (
	"context"
	"encoding/json"
	"errors"
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

	"cloud.google.com/go/pubsub/v2"

	"github.com/kube-git-deploy/kube-git-deploy/functions/app"
	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/githubfake"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

const testKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

type env struct {
	ctx             context.Context
	gh              *githubfake.Server
	private, public *httptest.Server
	client          *http.Client
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
	return &env{ctx: ctx, gh: gh, private: private, public: public, client: &http.Client{Timeout: 20 * time.Second}}
}

func (e *env) call(t *testing.T, method, u string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v", method, u, err)
	}
	if _, ok := body["ok"]; !ok {
		t.Errorf("%s %s: body %v lacks ok", method, u, body)
	}
	return resp.StatusCode, body
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
		"scope": "admin:repo_hook", "code_challenge_method": "S256", "response_type": "code",
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
	e.gh.SignInAs("octo", "admin:repo_hook")
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
	if repo["full_name"] != "Octo/App" || repo["web_hook_id"] != float64(h.ID) || repo["tracked_by"] != "octo" {
		t.Errorf("track response repository = %v", repo)
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
