package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
)

// Config is the functions' configuration, read from the environment by
// LoadConfig. README lists every variable.
type Config struct {
	// PrivatePort and PublicPort serve PrivateAPI and PublicAPI locally
	// (PRIVATE_HTTP_PORT, default 5000; PUBLIC_HTTP_PORT, default 5001).
	PrivatePort, PublicPort int
	// ListenHost is the local bind address (KGD_LISTEN_HOST, default
	// 127.0.0.1: PrivateAPI must only be reachable by trusted callers).
	ListenHost string
	// PublicURL is the base URL GitHub reaches PublicAPI at
	// (PUBLIC_HTTP_HOST, required).
	PublicURL *url.URL
	// PrivateURL is the base URL of PrivateAPI (PRIVATE_HTTP_HOST, default
	// http://localhost:<PrivatePort>).
	PrivateURL *url.URL
	// OAuthCallbackURL is where GitHub sends the browser back after sign-in,
	// the OAuth App's callback URL (KGD_OAUTH_CALLBACK_URL, default
	// PrivateURL + api/v0/github/oauth_callback). Both functions serve the
	// route; in the cloud it is PublicAPI's, because a browser cannot pass
	// PrivateAPI's IAM check.
	OAuthCallbackURL *url.URL
	// GitHubClientID and GitHubClientSecret are the OAuth App's
	// (GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET; required).
	GitHubClientID, GitHubClientSecret string
	// GitHubAPIURL and GitHubWebURL point at GitHub or a GitHub Enterprise
	// Server (GITHUB_API_URL, default https://api.github.com/;
	// GITHUB_WEB_URL, default https://github.com/).
	GitHubAPIURL, GitHubWebURL *url.URL
	// PrivateRepos requests the repo scope (GITHUB_PRIVATE_REPOS, default false).
	PrivateRepos bool
	// Project is the Google Cloud project (GOOGLE_CLOUD_PROJECT, required).
	Project string
	// Topic is the Pub/Sub topic jobs are published to (KGD_JOBS_TOPIC,
	// default kgd-jobs).
	Topic string
	// EncryptionKey seals secrets and tokens at rest (KGD_ENCRYPTION_KEY,
	// base64 of 32 bytes, required); PreviousKeys only open old ones
	// (KGD_ENCRYPTION_KEY_PREVIOUS, comma separated).
	EncryptionKey []byte
	PreviousKeys  [][]byte
	// AuthMode is how PrivateAPI tells its callers apart (KGD_AUTH: "iam"
	// trusts the Google identity token Cloud Run IAM verified, "local"
	// makes every caller caller.Local; unset means iam on Cloud Run and
	// Cloud Functions, local elsewhere). Local mode needs a loopback
	// ListenHost.
	AuthMode caller.Mode
	// Retention is how long recorded jobs are kept before Firestore's TTL
	// policy deletes them (KGD_RETENTION, default 720h; 0 forever).
	Retention time.Duration
}

// CallbackPath is the OAuth callback route (without its leading slash).
const CallbackPath = "api/v0/github/oauth_callback"

// callbackURL parses KGD_OAUTH_CALLBACK_URL: an absolute http(s) URL
// ending in the route both functions serve.
func callbackURL(s string, bad func(string, error)) *url.URL {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		!strings.HasSuffix(u.Path, "/"+CallbackPath) {
		bad("KGD_OAUTH_CALLBACK_URL", fmt.Errorf("%q is not an absolute http(s) URL ending in /%s", s, CallbackPath))
		return nil
	}
	return u
}

// ConfigError names the variable whose value is wrong.
type ConfigError struct {
	Var string
	Err error
}

// Error implements error.
func (e *ConfigError) Error() string { return e.Var + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// LoadConfig reads the configuration with getenv (os.Getenv in main) and
// validates it; every problem is reported, each naming its variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	var (
		c    Config
		errs []error
	)
	bad := func(v string, err error) { errs = append(errs, &ConfigError{Var: v, Err: err}) }
	env := func(v, def string) string {
		if s := strings.TrimSpace(getenv(v)); s != "" {
			return s
		}
		return def
	}
	port := func(v string, def int) int {
		p, err := strconv.Atoi(env(v, strconv.Itoa(def)))
		if err != nil || p < 1 || p > 65535 {
			bad(v, fmt.Errorf("%q is not a port number", getenv(v)))
		}
		return p
	}
	baseURL := func(v, def string, required bool) *url.URL {
		s := env(v, def)
		if s == "" {
			if required {
				bad(v, errors.New("required (the absolute base URL, e.g. https://deploy.example.com)"))
			}
			return nil
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad(v, fmt.Errorf("%q is not an absolute http(s) URL without query", s))
			return nil
		}
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		return u
	}
	boolean := func(v string, def bool) bool {
		s := env(v, strconv.FormatBool(def))
		b, err := strconv.ParseBool(s)
		if err != nil {
			bad(v, fmt.Errorf("%q is not true or false", s))
		}
		return b
	}

	c.PrivatePort = port("PRIVATE_HTTP_PORT", 5000)
	c.PublicPort = port("PUBLIC_HTTP_PORT", 5001)
	c.ListenHost = env("KGD_LISTEN_HOST", "127.0.0.1")
	c.PublicURL = baseURL("PUBLIC_HTTP_HOST", "", true)
	c.PrivateURL = baseURL("PRIVATE_HTTP_HOST", fmt.Sprintf("http://localhost:%d/", c.PrivatePort), false)
	if c.PrivateURL != nil {
		c.OAuthCallbackURL = callbackURL(env("KGD_OAUTH_CALLBACK_URL", c.PrivateURL.JoinPath(CallbackPath).String()), bad)
	}
	if s := getenv("PUBLIC_HTTP_SSL_ENABLED"); s != "" && c.PublicURL != nil {
		ssl := boolean("PUBLIC_HTTP_SSL_ENABLED", false)
		if ssl != (c.PublicURL.Scheme == "https") {
			bad("PUBLIC_HTTP_SSL_ENABLED", fmt.Errorf("%s contradicts PUBLIC_HTTP_HOST %s (the scheme decides)", s, c.PublicURL))
		}
	}
	c.GitHubClientID = env("GITHUB_CLIENT_ID", "")
	if c.GitHubClientID == "" {
		bad("GITHUB_CLIENT_ID", errors.New("required (the GitHub OAuth App's client id)"))
	}
	c.GitHubClientSecret = env("GITHUB_CLIENT_SECRET", "")
	if c.GitHubClientSecret == "" {
		bad("GITHUB_CLIENT_SECRET", errors.New("required (the GitHub OAuth App's client secret)"))
	}
	c.GitHubAPIURL = baseURL("GITHUB_API_URL", "https://api.github.com/", false)
	c.GitHubWebURL = baseURL("GITHUB_WEB_URL", "https://github.com/", false)
	c.PrivateRepos = boolean("GITHUB_PRIVATE_REPOS", false)
	c.Project = env("GOOGLE_CLOUD_PROJECT", "")
	if c.Project == "" {
		bad("GOOGLE_CLOUD_PROJECT", errors.New("required (the Google Cloud project id)"))
	}
	c.Topic = env("KGD_JOBS_TOPIC", "kgd-jobs")
	if k, err := secret.ParseKey(getenv("KGD_ENCRYPTION_KEY")); err != nil {
		bad("KGD_ENCRYPTION_KEY", fmt.Errorf("required: base64 of 32 random bytes (e.g. openssl rand -base64 32): %w", err))
	} else {
		c.EncryptionKey = k
	}
	prev, err := secret.ParseKeys(getenv("KGD_ENCRYPTION_KEY_PREVIOUS"))
	c.PreviousKeys = prev
	if err != nil {
		bad("KGD_ENCRYPTION_KEY_PREVIOUS", err)
	}
	if m, err := caller.ModeFromEnv(getenv); err != nil {
		bad("KGD_AUTH", errors.New(strings.TrimPrefix(err.Error(), "KGD_AUTH: ")))
	} else {
		c.AuthMode = m
	}
	if d, err := time.ParseDuration(env("KGD_RETENTION", "720h")); err != nil || d < 0 {
		bad("KGD_RETENTION", fmt.Errorf("%q is not a duration such as 720h (0 keeps jobs forever)", getenv("KGD_RETENTION")))
	} else {
		c.Retention = d
	}
	// In local mode every caller may do everything, as the machine's user:
	// only loopback may reach the functions then.
	if c.AuthMode == caller.ModeLocal && !isLoopback(c.ListenHost) {
		bad("KGD_LISTEN_HOST", fmt.Errorf("%q is not a loopback address, but KGD_AUTH is local (every caller trusted); bind to 127.0.0.1 or run behind Cloud Run IAM with KGD_AUTH=iam", c.ListenHost))
	}
	return c, errors.Join(errs...)
}

// isLoopback reports whether host (a bind address) is loopback only.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
