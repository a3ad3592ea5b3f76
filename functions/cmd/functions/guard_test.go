package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// request makes one HTTP request with the given Host (empty: the URL's),
// Content-Type, Origin and more headers, and returns status and body.
func request(t *testing.T, method, u, host, contentType, origin, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
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
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serve runs both functions with getenv until the test ends.
func serve(t *testing.T, getenv func(string) string, ports ...int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, getenv) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("run did not stop")
		}
	})
	for _, port := range ports {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/healthz")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nothing answers on port %d: %v", port, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestLocalGuard: served locally, PrivateAPI and PublicAPI refuse what a
// web page could send them — a foreign Host (DNS rebinding) with 421, a
// state-changing request without JSON with 415, in their JSON error shape
// — and nothing is written; loopback JSON requests reach the handlers, and
// the webhook route still takes a signed form-encoded delivery, also at
// PUBLIC_HTTP_HOST's host.
func TestLocalGuard(t *testing.T) {
	private, public := freePort(t), freePort(t)
	base := testEnv(t, private, public)
	getenv := func(k string) string {
		if k == "PUBLIC_HTTP_HOST" {
			return "https://hooks.example.test"
		}
		return base(k)
	}
	serve(t, getenv, private, public)

	ctx := context.Background()
	fs, err := firestore.NewClient(ctx, getenv("GOOGLE_CLOUD_PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	key, err := secret.ParseKey(getenv("KGD_ENCRYPTION_KEY"))
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
	hookSecret := []byte("hook-secret")
	if err := st.TrackRepository(ctx, store.Repository{Owner: "octo", Name: "app", HookID: 1, WebhookSecret: hookSecret, TrackedBy: "octocat",
		Triggers: store.Triggers{AutoBuild: true, AutoDeploy: true, AutoSync: true}}); err != nil {
		t.Fatal(err)
	}

	privateURL := "http://127.0.0.1:" + strconv.Itoa(private) + "/"
	publicURL := "http://127.0.0.1:" + strconv.Itoa(public) + "/"
	track := privateURL + "api/v0/github/repositories/octo/new"
	untrack := privateURL + "api/v0/github/repositories/octo/app"
	hook := publicURL + "api/v0/github/repositories/octo/app/web_hook"
	page := "https://evil.example"
	for _, tc := range []struct {
		name, method, url, host, ct, origin, body string
		code                                      int
	}{
		{"private-text-plain", http.MethodPost, track, "", "text/plain;charset=UTF-8", page, "{}", 415},
		{"private-form", http.MethodPost, track, "", "application/x-www-form-urlencoded", page, "a=b", 415},
		{"private-no-body-from-page", http.MethodPost, track, "", "", page, "", 415},
		{"private-delete-text", http.MethodDelete, untrack, "", "text/plain", page, "x", 415},
		{"private-rebinding", http.MethodPost, track, "evil.example:5000", "application/json", "", "{}", 421},
		{"private-rebinding-delete", http.MethodDelete, untrack, "evil.example:5000", "", "", "", 421},
		{"private-rebinding-read", http.MethodGet, privateURL + "api/v0/github/repositories/tracked", "evil.example", "", "", "", 421},
		{"private-public-host", http.MethodGet, privateURL + "healthz", "hooks.example.test", "", "", "", 421},
		{"public-text-plain", http.MethodPost, publicURL + "healthz", "", "text/plain", page, "{}", 415},
		{"public-rebinding", http.MethodGet, publicURL + "healthz", "evil.example:5001", "", "", "", 421},
		{"webhook-rebinding", http.MethodPost, hook, "evil.example", "application/x-www-form-urlencoded", "", "payload=x", 421},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := request(t, tc.method, tc.url, tc.host, tc.ct, tc.origin, tc.body, nil)
			var e struct {
				OK    *bool  `json:"ok"`
				Error string `json:"error"`
			}
			if code != tc.code || json.Unmarshal([]byte(body), &e) != nil || e.OK == nil || *e.OK || e.Error == "" {
				t.Errorf("%s %s (Host %q, Content-Type %q): %d %s; want %d {\"ok\":false,\"error\":…}", tc.method, tc.url, tc.host, tc.ct, code, body, tc.code)
			}
		})
	}
	if _, err := st.Repository(ctx, "octo", "new"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("octo/new after refused requests: %v, want not tracked", err)
	}
	if _, err := st.Repository(ctx, "octo", "app"); err != nil {
		t.Errorf("octo/app after refused requests: %v, want still tracked", err)
	}
	if jobs, err := st.Jobs(ctx, "octo", "app", 10); err != nil || len(jobs) != 0 {
		t.Errorf("jobs after refused requests: %v %v", jobs, err)
	}

	// Loopback JSON requests reach the handlers (which then answer as
	// they do: PrivateAPI wants a signed-in user).
	for _, tc := range []struct{ method, url, host, ct, body string }{
		{http.MethodPost, track, "localhost:" + strconv.Itoa(private), "application/json", "{}"},
		{http.MethodPost, track, "[::1]:" + strconv.Itoa(private), "application/json; charset=utf-8", ""},
		{http.MethodDelete, untrack, "", "", ""}, // curl -X DELETE: no body, no Origin
		{http.MethodPost, publicURL + "healthz", "", "application/json", "{}"},
	} {
		code, body := request(t, tc.method, tc.url, tc.host, tc.ct, "", tc.body, nil)
		if code == 415 || code == 421 || strings.Contains(body, "refused") || strings.Contains(body, "not served here") {
			t.Errorf("%s %s (Host %q): %d %s, want it to reach the handler", tc.method, tc.url, tc.host, code, body)
		}
	}

	// GitHub's form-encoded deliveries (two pushes), signed, at the public
	// host and at localhost.
	for i, tc := range []struct{ host, fixture string }{{"hooks.example.test", "push_branch_created.json"}, {"", "push_tag_created.json"}} {
		host := tc.host
		payload, err := os.ReadFile("../../webhook/testdata/" + tc.fixture)
		if err != nil {
			t.Fatal(err)
		}
		form := url.Values{"payload": {string(payload)}}.Encode()
		h := http.Header{
			webhook.SignatureHeader: {webhook.SignatureValue(hookSecret, []byte(form))},
			webhook.EventHeader:     {"push"},
			webhook.DeliveryHeader:  {"form-" + strconv.Itoa(i)},
		}
		code, body := request(t, http.MethodPost, hook, host, "application/x-www-form-urlencoded", "", form, h)
		if code != http.StatusAccepted || !strings.Contains(body, `"job_id"`) {
			t.Errorf("signed form-encoded delivery (Host %q): %d %s, want 202 with a job", host, code, body)
		}
	}
	if jobs, err := st.Jobs(ctx, "octo", "app", 10); err != nil || len(jobs) != 2 {
		t.Errorf("jobs after two deliveries: %d %v", len(jobs), err)
	}
}
