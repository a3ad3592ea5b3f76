package loopback

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGuard(t *testing.T) {
	t.Parallel()
	g := Guard{
		Hosts:          []string{"Hooks.Example.com", "[fd00::1]"},
		AnyContentType: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/web_hook") },
	}
	for _, tc := range []struct {
		name, method, host, path, ct, origin, body string
		want                                       int
	}{
		// The Host rule (DNS rebinding), every method.
		{name: "localhost", method: "GET", host: "localhost:5000", want: 200},
		{name: "localhost-no-port", method: "GET", host: "localhost", want: 200},
		{name: "localhost-dot", method: "GET", host: "LOCALHOST.:5000", want: 200},
		{name: "ipv4", method: "GET", host: "127.0.0.1:5000", want: 200},
		{name: "ipv4-other-loopback", method: "GET", host: "127.1.2.3", want: 200},
		{name: "ipv6", method: "GET", host: "[::1]:5000", want: 200},
		{name: "ipv6-no-port", method: "GET", host: "[::1]", want: 200},
		{name: "extra-host", method: "GET", host: "hooks.example.com", want: 200},
		{name: "extra-host-port", method: "GET", host: "hooks.example.com:443", want: 200},
		{name: "extra-ipv6", method: "GET", host: "[fd00::1]:5001", want: 200},
		{name: "rebinding", method: "GET", host: "evil.example:5000", want: StatusHost},
		{name: "rebinding-post-json", method: "POST", host: "evil.example:5000", ct: "application/json", body: "{}", want: StatusHost},
		{name: "rebinding-webhook", method: "POST", host: "evil.example", path: "/x/web_hook", ct: "application/x-www-form-urlencoded", body: "payload=1", want: StatusHost},
		{name: "localhost-suffix", method: "GET", host: "localhost.evil.example", want: StatusHost},
		{name: "sub-localhost", method: "GET", host: "evil.localhost", want: StatusHost},
		{name: "lan-address", method: "GET", host: "192.168.1.5:5000", want: StatusHost},
		{name: "any-address", method: "GET", host: "0.0.0.0:5000", want: StatusHost},
		{name: "empty-host", method: "GET", host: "", want: StatusHost},
		// The JSON rule (drive-by pages), state-changing methods only.
		{name: "post-json", method: "POST", host: "localhost", ct: "application/json", body: "{}", want: 200},
		{name: "post-json-charset", method: "POST", host: "localhost", ct: "application/json; charset=utf-8", body: "{}", want: 200},
		{name: "post-json-suffix", method: "PATCH", host: "localhost", ct: "application/merge-patch+json", body: "{}", want: 200},
		{name: "put-json", method: "PUT", host: "localhost", ct: "Application/JSON", body: "{}", want: 200},
		{name: "post-text", method: "POST", host: "localhost", ct: "text/plain;charset=UTF-8", origin: "https://evil.example", body: "{}", want: StatusContentType},
		{name: "post-text-no-origin", method: "POST", host: "localhost", ct: "text/plain", body: "{}", want: StatusContentType},
		{name: "post-form", method: "POST", host: "localhost", ct: "application/x-www-form-urlencoded", body: "a=b", want: StatusContentType},
		{name: "post-multipart", method: "POST", host: "localhost", ct: "multipart/form-data; boundary=x", body: "--x--", want: StatusContentType},
		{name: "put-octet", method: "PUT", host: "localhost", ct: "application/octet-stream", body: "x", want: StatusContentType},
		{name: "delete-text", method: "DELETE", host: "localhost", ct: "text/plain", body: "x", want: StatusContentType},
		{name: "post-malformed-ct", method: "POST", host: "localhost", ct: "application/json;;;=", body: "{}", want: StatusContentType},
		{name: "post-json-lookalike", method: "POST", host: "localhost", ct: "text/json+plain", body: "{}", want: StatusContentType},
		{name: "post-body-no-ct", method: "POST", host: "localhost", body: "{}", want: StatusContentType},
		{name: "post-empty-from-page", method: "POST", host: "localhost", origin: "https://evil.example", want: StatusContentType},
		{name: "post-empty-null-origin", method: "POST", host: "localhost", origin: "null", want: StatusContentType},
		{name: "post-empty-cli", method: "POST", host: "localhost", want: 200},
		{name: "delete-empty-cli", method: "DELETE", host: "localhost", want: 200},
		{name: "get-text", method: "GET", host: "localhost", ct: "text/plain", origin: "https://evil.example", want: 200},
		{name: "options", method: "OPTIONS", host: "localhost", origin: "https://evil.example", want: 200},
		{name: "webhook-form", method: "POST", host: "hooks.example.com", path: "/x/web_hook", ct: "application/x-www-form-urlencoded", body: "payload=1", want: 200},
		{name: "webhook-json", method: "POST", host: "localhost", path: "/x/web_hook", ct: "application/json", body: "{}", want: 200},
		{name: "webhook-text", method: "POST", host: "localhost", path: "/x/web_hook", ct: "text/plain", body: "x", want: 200},
		{name: "webhook-from-page", method: "POST", host: "localhost", path: "/x/web_hook", ct: "text/plain", origin: "https://evil.example", body: "x", want: StatusOrigin},
		{name: "webhook-from-loopback-page", method: "POST", host: "localhost", path: "/x/web_hook", ct: "application/x-www-form-urlencoded", origin: "http://localhost:3000", body: "x", want: StatusOrigin},
		{name: "webhook-get-from-page", method: "GET", host: "localhost", path: "/x/web_hook", origin: "https://evil.example", want: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := tc.path
			if path == "" {
				path = "/api"
			}
			r := httptest.NewRequest(tc.method, path, strings.NewReader(tc.body))
			r.Host = tc.host
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			served := false
			rec := httptest.NewRecorder()
			g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served = true })).ServeHTTP(rec, r)
			if rec.Code != tc.want {
				t.Fatalf("%s %s Host %q Content-Type %q: %d %s, want %d", tc.method, path, tc.host, tc.ct, rec.Code, rec.Body, tc.want)
			}
			if served != (tc.want == 200) {
				t.Errorf("handler ran: %t, want %t", served, tc.want == 200)
			}
			if tc.want != 200 {
				var body struct{ Error string }
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" {
					t.Errorf("refusal %q is not {\"error\":…}", rec.Body)
				}
				if got := rec.Header().Get("Content-Type"); got != "application/json" {
					t.Errorf("refusal Content-Type %q", got)
				}
			}
		})
	}
}

// TestGuardAnyHost: behind IAM the host check is off and the JSON rule
// stays, so a page cannot post through a credential-adding proxy.
func TestGuardAnyHost(t *testing.T) {
	t.Parallel()
	g := Guard{AnyHost: true}
	for _, tc := range []struct {
		name, method, host, ct, origin string
		want                           int
	}{
		{"cloud-run-get", "GET", "kgd-api-abc-ew.a.run.app", "", "", 200},
		{"cloud-run-post-json", "POST", "kgd-api-abc-ew.a.run.app", "application/json", "", 200},
		{"proxy-post-text-from-page", "POST", "localhost:8080", "text/plain", "https://evil.example", StatusContentType},
		{"proxy-post-form", "POST", "localhost:8080", "application/x-www-form-urlencoded", "https://evil.example", StatusContentType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/kgd/v1/repositories/o/n/jobs/j:rerun", strings.NewReader("{}"))
			r.Host = tc.host
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if got, msg := g.Check(r); got != 0 && got != tc.want || got == 0 && tc.want != 200 {
				t.Errorf("Check = %d %s, want %d", got, msg, tc.want)
			}
		})
	}
}

func TestGuardChunkedBodyWithoutContentType(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest("POST", "/api", strings.NewReader("{}"))
	r.Host = "localhost"
	r.ContentLength = -1 // chunked: length unknown
	if status, _ := (Guard{}).Check(r); status != StatusContentType {
		t.Errorf("chunked body without Content-Type: %d, want %d", status, StatusContentType)
	}
}

func TestGuardReject(t *testing.T) {
	t.Parallel()
	var got struct {
		status int
		msg    string
	}
	g := Guard{Reject: func(w http.ResponseWriter, r *http.Request, status int, msg string) {
		got.status, got.msg = status, msg
		w.WriteHeader(status)
	}}
	r := httptest.NewRequest("POST", "/", strings.NewReader("x"))
	r.Host = "evil.example:5000"
	g.Handler(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), r)
	if got.status != StatusHost || !strings.Contains(got.msg, `"evil.example:5000"`) || !strings.Contains(got.msg, "localhost, 127.0.0.1 and [::1]") {
		t.Errorf("Reject got %d %q", got.status, got.msg)
	}
}

func TestParseHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want string
		bad  bool
	}{
		{in: ""},
		{in: " , "},
		{in: "a.example", want: "a.example"},
		{in: "A.example:8080, [::1]:1,b.example.", want: "a.example,::1,b.example"},
		{in: "https://a.example/", bad: true},
		{in: "user@a.example", bad: true},
	} {
		got, err := ParseHosts(tc.in)
		if (err != nil) != tc.bad || strings.Join(got, ",") != tc.want {
			t.Errorf("ParseHosts(%q) = %q, %v; want %q (error %t)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestURLHost(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://Hooks.Example.com/x": "hooks.example.com",
		"http://localhost:5001":       "localhost",
		"http://[::1]:5001/":          "::1",
		"not a url\x7f":               "",
		"":                            "",
	} {
		if got := URLHost(in); got != want {
			t.Errorf("URLHost(%q) = %q, want %q", in, got, want)
		}
	}
}
