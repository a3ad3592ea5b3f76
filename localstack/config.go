package localstack

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
)

// Config is the local stack's configuration. LoadConfig reads it from the
// environment; tests may fill it in directly.
type Config struct {
	// Project is the Google Cloud project id used on the emulators
	// (GOOGLE_CLOUD_PROJECT, default demo-local).
	Project string
	// Ports of everything the stack serves; 0 picks a free port at Start.
	Ports Ports
	// GitHubClientID and GitHubClientSecret are the OAuth App credentials
	// the functions use and the GitHub stand-in accepts
	// (GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET; defaults local-dev-client,
	// local-dev-secret).
	GitHubClientID, GitHubClientSecret string
	// PublicURL, when set (PUBLIC_HTTP_HOST), is a public https URL that
	// reaches PublicAPI's port, e.g. a tunnel: the stack then works with
	// real GitHub instead of the stand-in. GitHub delivers webhooks there,
	// the functions use the OAuth App of GitHubClientID/GitHubClientSecret
	// (both required then) and the runner clones from GitHubWebURL.
	PublicURL string
	// GitHubWebURL and GitHubAPIURL are real GitHub's (GITHUB_WEB_URL,
	// default https://github.com/; GITHUB_API_URL, default
	// https://api.github.com/); used only with PublicURL.
	GitHubWebURL, GitHubAPIURL string
	// EncryptionKey is KGD_ENCRYPTION_KEY for the functions, runner and API
	// (base64 of 32 bytes); default a random key per run, which is fine
	// because the data lives only as long as the emulators.
	EncryptionKey string
	// Kubeconfig is a cluster to deploy to (KUBECONFIG); empty starts a
	// local control plane.
	Kubeconfig string
	// K8sBinDir holds the control plane binaries (KGD_K8S_BIN, default
	// ~/.cache/kgd/k8s-bin, built by make k8s-bin).
	K8sBinDir string
	// BinDir holds the functions, runner and api binaries. Not read from
	// the environment: the command passes its own directory.
	BinDir string
	// LogDir receives the control plane's and dockerd's logs, which are too
	// chatty for the terminal (default <user cache dir>/kgd/localstack).
	LogDir string
	// FirestoreHost and PubSubHost, when set, are emulators already running
	// (host:port) that the stack uses instead of starting its own; their
	// ports are then ignored. Not read from the environment: for tests,
	// which start the emulators once per package.
	FirestoreHost, PubSubHost string
	// Env holds extra KEY=VALUE settings for the binaries (functions,
	// runner, API), applied over the stack's own: tests shorten the
	// runner's lease (KGD_LEASE) or give it a Docker Engine of its own
	// (DOCKER_HOST). Not read from the environment.
	Env []string
}

// Ports are the loopback ports of the stack's parts.
type Ports struct {
	Private, Public  int // the functions: PrivateAPI, PublicAPI
	RPC, RPCHTTP     int // the API service: gRPC, HTTP gateway
	Registry, GitHub int // the container registry, the GitHub stand-in
	Firestore        int // the Firestore emulator
	PubSub           int // the Pub/Sub emulator
}

// PortVar describes one port setting.
type PortVar struct {
	// Env is the environment variable; Default its default.
	Env     string
	Default int
	// What the port serves, for messages.
	What  string
	field func(*Ports) *int
}

// PortVars lists every port setting, in start-up order.
var PortVars = []PortVar{
	{"PRIVATE_HTTP_PORT", 5000, "PrivateAPI", func(p *Ports) *int { return &p.Private }},
	{"PUBLIC_HTTP_PORT", 5001, "PublicAPI", func(p *Ports) *int { return &p.Public }},
	{"KGD_RPC_PORT", 50051, "the API's gRPC server", func(p *Ports) *int { return &p.RPC }},
	{"KGD_RPC_HTTP_PORT", 50052, "the API's HTTP gateway", func(p *Ports) *int { return &p.RPCHTTP }},
	{"KGD_REGISTRY_PORT", 5005, "the container registry", func(p *Ports) *int { return &p.Registry }},
	{"KGD_GITHUB_PORT", 5080, "the GitHub stand-in", func(p *Ports) *int { return &p.GitHub }},
	{"KGD_FIRESTORE_PORT", 5010, "the Firestore emulator", func(p *Ports) *int { return &p.Firestore }},
	{"KGD_PUBSUB_PORT", 5011, "the Pub/Sub emulator", func(p *Ports) *int { return &p.PubSub }},
}

// Port returns the port v configures in p.
func (v PortVar) Port(p *Ports) *int { return v.field(p) }

// Defaults of the other settings.
const (
	DefaultProject      = "demo-local"
	DefaultClientID     = "local-dev-client"
	DefaultClientSecret = "local-dev-secret"
)

// ConfigError names the variable whose value is wrong.
type ConfigError struct {
	Var string
	Err error
}

// Error implements error.
func (e *ConfigError) Error() string { return e.Var + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// LoadConfig reads the configuration with getenv (os.Getenv in main),
// fills in defaults and validates it; every problem is reported, each as a
// *ConfigError naming its variable. BinDir is left empty.
func LoadConfig(getenv func(string) string) (Config, error) {
	var errs []error
	env := func(v, def string) string {
		if s := strings.TrimSpace(getenv(v)); s != "" {
			return s
		}
		return def
	}
	c := Config{
		Project:            env("GOOGLE_CLOUD_PROJECT", DefaultProject),
		GitHubClientID:     env("GITHUB_CLIENT_ID", DefaultClientID),
		GitHubClientSecret: env("GITHUB_CLIENT_SECRET", DefaultClientSecret),
		EncryptionKey:      env("KGD_ENCRYPTION_KEY", ""),
		Kubeconfig:         env("KUBECONFIG", ""),
		K8sBinDir:          env("KGD_K8S_BIN", ""),
		PublicURL:          env("PUBLIC_HTTP_HOST", ""),
		GitHubWebURL:       env("GITHUB_WEB_URL", "https://github.com/"),
		GitHubAPIURL:       env("GITHUB_API_URL", "https://api.github.com/"),
	}
	for _, v := range PortVars {
		s := env(v.Env, strconv.Itoa(v.Default))
		p, err := strconv.Atoi(s)
		if err != nil || p < 0 || p > 65535 {
			errs = append(errs, &ConfigError{v.Env, fmt.Errorf("%q is not a port number (0 picks a free port)", s)})
			continue
		}
		*v.Port(&c.Ports) = p
	}
	if c.EncryptionKey == "" {
		key := make([]byte, 32)
		rand.Read(key)
		c.EncryptionKey = base64.StdEncoding.EncodeToString(key)
	}
	if dir, err := os.UserCacheDir(); err == nil {
		c.LogDir = filepath.Join(dir, "kgd", "localstack")
	} else {
		c.LogDir = filepath.Join(os.TempDir(), "kgd-localstack")
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// validProject is Google Cloud's project id syntax.
var validProject = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)

// Validate checks the configuration; every problem is a *ConfigError
// naming its variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(v string, err error) { errs = append(errs, &ConfigError{v, err}) }
	if !validProject.MatchString(c.Project) {
		bad("GOOGLE_CLOUD_PROJECT", fmt.Errorf("%q is not a project id (6–30 lowercase letters, digits and hyphens, starting with a letter)", c.Project))
	}
	if c.GitHubClientID == "" {
		bad("GITHUB_CLIENT_ID", errors.New("required"))
	}
	if c.GitHubClientSecret == "" {
		bad("GITHUB_CLIENT_SECRET", errors.New("required"))
	}
	if c.RealGitHub() {
		if u, err := url.Parse(c.PublicURL); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" {
			bad("PUBLIC_HTTP_HOST", fmt.Errorf("%q is not an https URL: with real GitHub it is the public address of a tunnel to PublicAPI (GitHub delivers webhooks there)", c.PublicURL))
		}
		if c.GitHubClientID == DefaultClientID || c.GitHubClientSecret == DefaultClientSecret {
			bad("GITHUB_CLIENT_ID", errors.New("with PUBLIC_HTTP_HOST set (real GitHub), set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET to your GitHub OAuth App's"))
		}
		for _, v := range [][2]string{{"GITHUB_WEB_URL", c.GitHubWebURL}, {"GITHUB_API_URL", c.GitHubAPIURL}} {
			if u, err := url.Parse(v[1]); err != nil || u.Scheme != "https" || u.Host == "" {
				bad(v[0], fmt.Errorf("%q is not an https URL", v[1]))
			}
		}
	}
	if _, err := secret.ParseKey(c.EncryptionKey); err != nil {
		bad("KGD_ENCRYPTION_KEY", fmt.Errorf("base64 of 32 random bytes (e.g. openssl rand -base64 32): %w", err))
	}
	if c.Kubeconfig != "" {
		for _, f := range filepath.SplitList(c.Kubeconfig) {
			if _, err := os.Stat(f); err != nil {
				bad("KUBECONFIG", fmt.Errorf("%w (unset it to start a local control plane)", err))
			}
		}
	}
	seen := map[int]string{}
	for _, v := range PortVars {
		p := *v.Port(&c.Ports)
		if p < 0 || p > 65535 {
			bad(v.Env, fmt.Errorf("%d is not a port number", p))
			continue
		}
		if p == 0 {
			continue
		}
		if other, ok := seen[p]; ok {
			bad(v.Env, fmt.Errorf("port %d is also %s", p, other))
		}
		seen[p] = v.Env
	}
	return errors.Join(errs...)
}

// PortInUseError reports a port something else already listens on.
type PortInUseError struct {
	Port int
	Var  PortVar
	Err  error
}

// Error implements error.
func (e *PortInUseError) Error() string {
	return fmt.Sprintf("port %d (%s, %s) is already in use: stop what listens there or set %s to another port: %v",
		e.Port, e.Var.Env, e.Var.What, e.Var.Env, e.Err)
}

// Unwrap returns the cause.
func (e *PortInUseError) Unwrap() error { return e.Err }

// CheckPorts reports every configured port (other than 0) that cannot be
// listened on at 127.0.0.1, each as a *PortInUseError, so a busy port is
// a clear error before anything heavy starts.
func (c Config) CheckPorts() error {
	ls, err := c.listen(c.unused())
	for _, l := range ls {
		l.Close()
	}
	return err
}

// RealGitHub reports whether the stack works with real GitHub (PublicURL
// set) rather than the stand-in.
func (c Config) RealGitHub() bool { return c.PublicURL != "" }

// unused returns the port variables of parts the stack does not start.
func (c Config) unused() map[string]bool {
	return map[string]bool{"KGD_FIRESTORE_PORT": c.FirestoreHost != "", "KGD_PUBSUB_PORT": c.PubSubHost != "", "KGD_GITHUB_PORT": c.RealGitHub()}
}

// listen opens a loopback listener on each configured port other than 0
// and those in skip, by variable name.
func (c Config) listen(skip map[string]bool) (map[string]net.Listener, error) {
	var errs []error
	ls := map[string]net.Listener{}
	for _, v := range PortVars {
		p := *v.Port(&c.Ports)
		if p == 0 || skip[v.Env] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			errs = append(errs, &PortInUseError{Port: p, Var: v, Err: err})
			continue
		}
		ls[v.Env] = l
	}
	return ls, errors.Join(errs...)
}
