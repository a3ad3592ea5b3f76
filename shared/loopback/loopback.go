// Package loopback guards the HTTP servers kube-git-deploy serves on
// loopback only (locally: the functions, the API service's gateway, and the
// local stack's container registry and GitHub stand-in) against web pages
// open in the user's browser, which can send requests to
// http://localhost:PORT too:
//
//   - DNS rebinding: a page on evil.example makes its own name resolve to
//     127.0.0.1 and then talks to the server as its own origin, reading
//     the answers. The browser still sends "Host: evil.example", so a
//     request whose Host is not a loopback name (localhost, 127.0.0.1,
//     [::1], any port) or one of Guard.Hosts is refused with 421
//     Misdirected Request.
//   - Drive-by requests: any page can POST a form, a text/plain body or no
//     body at all to a loopback port without a CORS preflight. A
//     state-changing request (POST, PUT, PATCH, DELETE) must therefore
//     carry a JSON Content-Type (application/json or a "+json" type),
//     which a page can only send after a preflight these servers never
//     approve; otherwise 415 Unsupported Media Type. A request with
//     neither a body nor a Content-Type passes only without an Origin
//     header: browsers send Origin on every request but GET and HEAD,
//     while curl, git, Docker and Go clients send none.
//
// Routes whose clients cannot send JSON (a GitHub webhook, git's smart
// HTTP, registry uploads) are exempted from the second rule with
// Guard.AnyContentType. For them the Host check is the guard, and their
// own protocol (an HMAC signature, a content type a page cannot send
// without a preflight, credentials) does the rest; a state-changing
// request with an Origin header — a browser's; GitHub, git and Docker send
// none — is still refused there, with 403.
package loopback

import (
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Status codes of a refused request.
const (
	// StatusHost refuses a request for a host name the server does not
	// answer for (DNS rebinding).
	StatusHost = http.StatusMisdirectedRequest
	// StatusContentType refuses a state-changing request without a JSON
	// body.
	StatusContentType = http.StatusUnsupportedMediaType
	// StatusOrigin refuses a browser's state-changing request to a route
	// exempt from the JSON rule.
	StatusOrigin = http.StatusForbidden
)

// Guard refuses the requests a loopback-only server must not serve. The
// zero value accepts loopback host names only and applies the JSON rule
// to every state-changing request.
type Guard struct {
	// Hosts are host names (no port; "[::1]" or "::1" alike) accepted in
	// the Host header besides the loopback ones, e.g. the public host of a
	// tunnel that forwards GitHub's webhooks.
	Hosts []string
	// AnyHost skips the host check, for a server behind a front that
	// checks who calls (Cloud Run IAM): only the JSON rule applies, so a
	// web page cannot post through a proxy that adds its user's
	// credentials (gcloud run services proxy).
	AnyHost bool
	// AnyContentType reports the requests that may carry any content type
	// because they are authenticated by other means; nil means none.
	AnyContentType func(r *http.Request) bool
	// Reject writes a refusal in the server's own error shape; nil writes
	// {"error": msg}.
	Reject func(w http.ResponseWriter, r *http.Request, status int, msg string)
}

// Handler returns next guarded by g.
func (g Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := g.Check(r); status != 0 {
			if g.Reject != nil {
				g.Reject(w, r, status, msg)
			} else {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("X-Content-Type-Options", "nosniff")
				w.WriteHeader(status)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Check returns 0 and "" when r may be served, or the status and the
// message to refuse it with.
func (g Guard) Check(r *http.Request) (status int, msg string) {
	if h := Hostname(r.Host); !g.AnyHost && !IsLoopback(h) && !slices.ContainsFunc(g.Hosts, func(x string) bool { return h != "" && Hostname(x) == h }) {
		names := "localhost, 127.0.0.1 and [::1]"
		if len(g.Hosts) > 0 {
			names += ", " + strings.Join(g.Hosts, ", ")
		}
		return StatusHost, fmt.Sprintf("host %q is not served here: this local server answers only for %s", truncate(r.Host), names)
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return 0, ""
	}
	if g.AnyContentType != nil && g.AnyContentType(r) {
		if o := r.Header.Get("Origin"); o != "" {
			return StatusOrigin, fmt.Sprintf("%s from a web page (Origin %q) refused: this route takes no requests from browsers", r.Method, truncate(o))
		}
		return 0, ""
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		if r.ContentLength == 0 && r.Header.Get("Origin") == "" {
			return 0, ""
		}
		return StatusContentType, fmt.Sprintf("%s without Content-Type refused: send Content-Type: application/json", r.Method)
	}
	if !IsJSON(ct) {
		return StatusContentType, fmt.Sprintf("%s with Content-Type %q refused: send Content-Type: application/json", r.Method, truncate(ct))
	}
	return 0, ""
}

// IsJSON reports whether the Content-Type value ct is application/json or
// another JSON media type ("application/…+json"), parameters allowed.
func IsJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// Hostname returns the host name of a Host header value, a host:port or
// a bare host, in lower case, without port, brackets or a trailing dot.
func Hostname(host string) string {
	h := strings.TrimSpace(host)
	if name, _, err := net.SplitHostPort(h); err == nil {
		h = name
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// IsLoopback reports whether the host name (see Hostname) always means
// this machine: localhost or a loopback address.
func IsLoopback(name string) bool {
	if name == "localhost" {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && ip.IsLoopback()
}

// URLHost returns the host name of an absolute URL, or "" if it has none.
func URLHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return Hostname(u.Host)
}

// ParseHosts parses a comma-separated list of host names (a setting such
// as KGD_ALLOWED_HOSTS); blanks are skipped.
func ParseHosts(s string) ([]string, error) {
	var hosts []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		h := Hostname(f)
		if h == "" || strings.ContainsAny(f, "/@ ?#\\") {
			return nil, fmt.Errorf("%q is not a host name", f)
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
