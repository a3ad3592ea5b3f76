//go:build unix

// Package localstack runs the whole of kube-git-deploy on one machine, on
// loopback only, for make run, demos and end-to-end tests: the Firestore
// and Pub/Sub emulators, the functions (PrivateAPI and PublicAPI), the
// runner, the API service, a container registry, a local Kubernetes
// control plane (unless KUBECONFIG names a cluster), a Docker Engine when
// one can be found or started, and a stand-in for GitHub
// (localstack/githubstandin) that the functions and the runner use
// instead of github.com.
//
// The functions, runner and API are the real binaries, started as child
// processes in their own process groups with readable, prefixed logs; the
// registry and the GitHub stand-in run in this process. Everything keeps
// its data in memory for the life of the stack.
//
// Every server listens on loopback and refuses what a web page in the
// user's browser could send it (loopback.Guard): the binaries guard
// their own ports; the registry and the stand-in are wrapped here.
package localstack

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/sync/errgroup"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/githubfake"
	"github.com/kube-git-deploy/kube-git-deploy/shared/loopback"
)

// Binaries the stack runs from Config.BinDir.
const (
	FunctionsBinary = "functions"
	RunnerBinary    = "runner"
	APIBinary       = "api"
)

// BuildCommand is how the binaries are built (make run does it).
const BuildCommand = "go build -o .bin/ ./functions/cmd/functions ./runner ./api"

// Time limits of the start-up steps.
const (
	readyTimeout     = 90 * time.Second // each part
	runnerStopGrace  = 30 * time.Second // hands its running job back first
	serviceStopGrace = 10 * time.Second
)

// URLs are where the stack's parts answer.
type URLs struct {
	// PrivateAPI and PublicAPI are the functions' base URLs.
	PrivateAPI, PublicAPI string
	// APIGRPC is the API service's gRPC address; APIHTTP its HTTP gateway's
	// base URL.
	APIGRPC, APIHTTP string
	// Registry is the container registry's host:port, for image
	// references (localhost:PORT, which Docker pushes to over plain HTTP).
	Registry string
	// GitHub and GitHubAPI are the stand-in's web and REST base URLs
	// (GITHUB_WEB_URL, GITHUB_API_URL), or real GitHub's.
	GitHub, GitHubAPI string
	// FirestoreHost and PubSubHost are the emulators' host:port.
	FirestoreHost, PubSubHost string
}

// URLs returns where the parts answer once started with these ports.
func (c Config) URLs() URLs {
	p := c.Ports
	gitHub, gitHubAPI := fmt.Sprintf("http://localhost:%d/", p.GitHub), fmt.Sprintf("http://localhost:%d/api/v3/", p.GitHub)
	if c.RealGitHub() {
		gitHub, gitHubAPI = c.GitHubWebURL, c.GitHubAPIURL
	}
	return URLs{
		PrivateAPI:    fmt.Sprintf("http://localhost:%d/", p.Private),
		PublicAPI:     fmt.Sprintf("http://localhost:%d/", p.Public),
		APIGRPC:       fmt.Sprintf("localhost:%d", p.RPC),
		APIHTTP:       fmt.Sprintf("http://localhost:%d/", p.RPCHTTP),
		Registry:      fmt.Sprintf("localhost:%d", p.Registry),
		GitHub:        gitHub,
		GitHubAPI:     gitHubAPI,
		FirestoreHost: fmt.Sprintf("127.0.0.1:%d", p.Firestore),
		PubSubHost:    fmt.Sprintf("127.0.0.1:%d", p.PubSub),
	}
}

// Stack is a running local stack. Stop it with Stop.
type Stack struct {
	// Config is the configuration with every port chosen.
	Config Config
	// URLs are where the parts answer.
	URLs URLs
	// Kubeconfig is the cluster deployed to: the local control plane's
	// admin kubeconfig, or Config.Kubeconfig.
	Kubeconfig string
	// GitHub is the GitHub stand-in, for tests that drive it directly.
	GitHub *githubstandin.Server
	// DockerWarning is set when no Docker Engine answers: the stack runs
	// but builds fail.
	DockerWarning string

	console   *console
	log       *lineWriter
	listeners map[string]net.Listener
	registry  *http.Server
	regServe  http.Handler // the registry's, kept across StopRegistry
	gitHubSrv *http.Server
	emulators []*emulator.Emulators
	cp        *controlplane.ControlPlane
	cpLog     *os.File
	dockerd   *dockerd
	workDir   string // the runners' KGD_WORKDIR: job workspaces and git cache
	children  []*child
	failed    chan error

	mu       sync.Mutex
	stopping bool
	stopOnce sync.Once
}

// Start brings the stack up and returns once every part answers; out
// receives every part's log lines, prefixed with its name. On error
// everything started is stopped again. ctx bounds the start only.
//
// Start sets GCE_METADATA_HOST=127.0.0.1:1 in this process's environment
// when it is unset, so that the processes other packages start for it
// (emulators, control plane, dockerd), which inherit this environment,
// never probe the cloud metadata address either.
func Start(ctx context.Context, cfg Config, out io.Writer) (*Stack, error) {
	began := time.Now()
	if os.Getenv(emulator.MetadataHostEnv) == "" {
		if err := os.Setenv(emulator.MetadataHostEnv, emulator.MetadataHostLoopback); err != nil {
			return nil, fmt.Errorf("set %s: %w", emulator.MetadataHostEnv, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if err := checkBinaries(cfg); err != nil {
		return nil, err
	}
	if cfg.Kubeconfig == "" {
		if cfg.K8sBinDir == "" {
			cfg.K8sBinDir = controlplane.DefaultBinDir()
		}
		if err := controlplane.CheckBinaries(cfg.K8sBinDir); err != nil {
			return nil, fmt.Errorf("%w (or set KUBECONFIG to deploy to a cluster of yours)", err)
		}
	}
	skip := cfg.unused()
	listeners, err := cfg.listen(skip)
	if err != nil {
		for _, l := range listeners {
			l.Close()
		}
		return nil, err
	}
	// Port 0: a free port, chosen now so every part knows every address.
	for _, v := range PortVars {
		if p := v.Port(&cfg.Ports); *p == 0 && !skip[v.Env] {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				for _, l := range listeners {
					l.Close()
				}
				return nil, fmt.Errorf("%s: pick a free port: %w", v.Env, err)
			}
			listeners[v.Env] = l
			*p = l.Addr().(*net.TCPAddr).Port
		}
	}

	con := &console{w: out}
	s := &Stack{Config: cfg, URLs: cfg.URLs(), console: con, log: con.source("localstack", ""),
		listeners: listeners, failed: make(chan error, 8)}
	if cfg.FirestoreHost != "" {
		s.URLs.FirestoreHost = cfg.FirestoreHost
	}
	if cfg.PubSubHost != "" {
		s.URLs.PubSubHost = cfg.PubSubHost
	}
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	s.printSummary(time.Since(began))
	return s, nil
}

// checkBinaries reports a missing binary with the command that builds it.
func checkBinaries(cfg Config) error {
	for _, n := range []string{FunctionsBinary, RunnerBinary, APIBinary} {
		p := filepath.Join(cfg.BinDir, n)
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return fmt.Errorf("binary %s missing: build it with %s (make run does)", p, BuildCommand)
		}
	}
	return nil
}

// takeListener returns (and forgets) the listener reserved for v; the
// port of a child process is freed just before the child starts.
func (s *Stack) takeListener(env string) net.Listener {
	l := s.listeners[env]
	delete(s.listeners, env)
	return l
}

func (s *Stack) freePort(env string) {
	if l := s.takeListener(env); l != nil {
		l.Close()
	}
}

func (s *Stack) logf(format string, args ...any) { fmt.Fprintf(s.log, format+"\n", args...) }

func (s *Stack) start(ctx context.Context) error {
	cfg := s.Config
	// The runners' work directory (job workspaces, the git cache) lives
	// as long as the stack, like its other data.
	workDir, err := os.MkdirTemp("", "kgd-localstack-")
	if err != nil {
		return fmt.Errorf("runner work directory: %w", err)
	}
	s.workDir = workDir
	// In this process: the registry and the GitHub stand-in.
	regOut := s.console.source("registry", "")
	regOut.drop = registryNoise
	s.regServe = registryHandler(regOut)
	s.registry = &http.Server{Handler: s.regServe, ReadHeaderTimeout: 10 * time.Second}
	go s.registry.Serve(s.takeListener("KGD_REGISTRY_PORT"))
	s.logf("container registry at %s (in memory)", s.URLs.Registry)

	if cfg.RealGitHub() {
		s.logf("real GitHub (%s): webhooks arrive at %s, which must reach PublicAPI on port %d", s.URLs.GitHub, cfg.PublicURL, cfg.Ports.Public)
	} else if err := s.startGitHubStandIn(); err != nil {
		return err
	}

	// The slow parts, together: emulators, control plane, Docker.
	g, gctx := errgroup.WithContext(ctx)
	var emuMu sync.Mutex
	for _, svc := range []struct {
		service  emulator.Service
		env      string
		name     string
		existing string
	}{{emulator.Firestore, "KGD_FIRESTORE_PORT", "firestore", cfg.FirestoreHost}, {emulator.PubSub, "KGD_PUBSUB_PORT", "pubsub", cfg.PubSubHost}} {
		if svc.existing != "" {
			s.logf("using the %s emulator at %s", svc.name, svc.existing)
			continue
		}
		s.freePort(svc.env)
		g.Go(func() error {
			t := time.Now()
			out := s.console.source(svc.name, "["+svc.name+"-emulator] ")
			out.drop = emulatorNoise
			opts := emulator.Options{Services: []emulator.Service{svc.service}, Log: out,
				ReadyTimeout: readyTimeout, FirestorePort: cfg.Ports.Firestore, PubSubPort: cfg.Ports.PubSub}
			e, err := emulator.Start(gctx, opts)
			if err != nil {
				return fmt.Errorf("%s emulator: %w", svc.name, err)
			}
			emuMu.Lock()
			s.emulators = append(s.emulators, e)
			emuMu.Unlock()
			s.logf("%s emulator ready in %s", svc.name, stamp(time.Since(t)))
			return nil
		})
	}
	if cfg.Kubeconfig == "" {
		g.Go(func() error {
			t := time.Now()
			if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
				return fmt.Errorf("control plane log: %w", err)
			}
			logPath := filepath.Join(cfg.LogDir, "controlplane.log")
			f, err := os.Create(logPath)
			if err != nil {
				return fmt.Errorf("control plane log: %w", err)
			}
			// Open until the control plane stops: its processes write to
			// it through pipes, and a closed file would kill them (SIGPIPE).
			s.cpLog = f
			s.logf("starting the local Kubernetes control plane (log: %s)", logPath)
			cp, err := controlplane.Start(gctx, controlplane.Options{BinDir: cfg.K8sBinDir, Log: f})
			if err != nil {
				return err
			}
			s.cp = cp
			s.Kubeconfig = cp.Kubeconfig
			s.logf("Kubernetes control plane ready in %s (one fake kwok node)", stamp(time.Since(t)))
			return nil
		})
	} else {
		s.Kubeconfig = cfg.Kubeconfig
		s.logf("deploying to the cluster of KUBECONFIG=%s", cfg.Kubeconfig)
	}
	g.Go(func() error {
		d, version, warning, err := docker(gctx, cfg.LogDir)
		if err != nil {
			return err
		}
		s.dockerd = d
		switch {
		case warning != "":
			s.DockerWarning = warning
			s.logf("WARNING: %s", warning)
		case d != nil:
			s.logf("started dockerd %s (log: %s); it stops with the stack", version, d.log)
		default:
			s.logf("Docker Engine %s answers", version)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	for _, e := range s.emulators {
		if e.FirestoreHost != "" {
			s.URLs.FirestoreHost = e.FirestoreHost
		}
		if e.PubSubHost != "" {
			s.URLs.PubSubHost = e.PubSubHost
		}
	}

	// The functions first: they create the job topic and subscription.
	env := s.childEnv()
	t := time.Now()
	s.freePort("PRIVATE_HTTP_PORT")
	s.freePort("PUBLIC_HTTP_PORT")
	fn, err := s.startChild("functions", FunctionsBinary, nil, env, serviceStopGrace)
	if err != nil {
		return err
	}
	for _, u := range []string{s.URLs.PrivateAPI, s.URLs.PublicAPI} {
		if err := fn.waitHTTP(ctx, u+"healthz", readyTimeout); err != nil {
			return err
		}
	}
	s.logf("functions ready in %s: PrivateAPI %s, PublicAPI %s", stamp(time.Since(t)), s.URLs.PrivateAPI, s.URLs.PublicAPI)

	g, gctx = errgroup.WithContext(ctx)
	t = time.Now()
	runner, err := s.startChild("runner", RunnerBinary, nil, env, runnerStopGrace)
	if err != nil {
		return err
	}
	g.Go(func() error {
		if err := runner.waitLine(gctx, "runner started", readyTimeout); err != nil {
			return err
		}
		s.logf("runner ready in %s", stamp(time.Since(t)))
		return nil
	})
	s.freePort("KGD_RPC_PORT")
	s.freePort("KGD_RPC_HTTP_PORT")
	api, err := s.startChild("api", APIBinary, []string{"--rpc-port", strconv.Itoa(cfg.Ports.RPC),
		"--rpc-http-port", strconv.Itoa(cfg.Ports.RPCHTTP)}, env, serviceStopGrace)
	if err != nil {
		return err
	}
	g.Go(func() error {
		if err := api.waitHTTP(gctx, s.URLs.APIHTTP+"healthz", readyTimeout); err != nil {
			return err
		}
		s.logf("API ready in %s: gRPC %s, HTTP %s", stamp(time.Since(t)), s.URLs.APIGRPC, s.URLs.APIHTTP)
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	for _, c := range s.children {
		go s.watch(c)
	}
	return nil
}

// startChild starts one of the binaries.
func (s *Stack) startChild(name, binary string, args, env []string, grace time.Duration) (*child, error) {
	c, err := startChild(name, filepath.Join(s.Config.BinDir, binary), args, env, s.console.source(name, ""), grace)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	return c, nil
}

// watch reports a child that exits while the stack runs (the first few:
// Wait returns at the first).
func (s *Stack) watch(c *child) {
	<-c.done
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if !stopping {
		select {
		case s.failed <- c.exited():
		default:
		}
	}
}

// Process returns the running or exited binary called name ("functions",
// "runner", "api", or a name given to StartRunner), or nil.
func (s *Stack) Process(name string) *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.children {
		if c.name == name {
			return &Process{c}
		}
	}
	return nil
}

// StartRunner starts another runner process called name (a name no other
// process of the stack has), with the stack's environment and env
// (KEY=VALUE, applied over it), and returns once it reports that it
// started. Like the stack's own runner it receives jobs of the same
// subscription; Stop stops it.
func (s *Stack) StartRunner(ctx context.Context, name string, env []string) (*Process, error) {
	if s.Process(name) != nil {
		return nil, fmt.Errorf("start runner %s: the stack already has a process of that name", name)
	}
	c, err := s.startChild(name, RunnerBinary, nil, append(s.childEnv(), env...), runnerStopGrace)
	if err != nil {
		return nil, err
	}
	go s.watch(c)
	if err := c.waitLine(ctx, "runner started", readyTimeout); err != nil {
		return nil, err
	}
	return &Process{c}, nil
}

// StopRegistry stops the container registry as a crash would: its
// connections are closed and its port refuses new ones. The images it
// holds stay (in this process's memory) for StartRegistry.
func (s *Stack) StopRegistry() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.registry == nil {
		return errors.New("stop the registry: it is not running")
	}
	err := s.registry.Close()
	s.registry = nil
	if err != nil {
		return fmt.Errorf("stop the registry: %w", err)
	}
	s.logf("container registry stopped")
	return nil
}

// StartRegistry serves the registry again, with the images it held, on
// its port, after StopRegistry.
func (s *Stack) StartRegistry() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.registry != nil {
		return errors.New("start the registry: it is running")
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Config.Ports.Registry)))
	if err != nil {
		return fmt.Errorf("start the registry again: %w", err)
	}
	s.registry = &http.Server{Handler: s.regServe, ReadHeaderTimeout: 10 * time.Second}
	go s.registry.Serve(l)
	s.logf("container registry at %s again", s.URLs.Registry)
	return nil
}

// startGitHubStandIn serves the GitHub stand-in in this process.
func (s *Stack) startGitHubStandIn() error {
	gh, err := githubstandin.New(githubstandin.Config{ClientID: s.Config.GitHubClientID, ClientSecret: s.Config.GitHubClientSecret,
		Log: logger(s.console.source("github-standin", ""))})
	if err != nil {
		return err
	}
	s.GitHub = gh
	l := s.takeListener("KGD_GITHUB_PORT")
	if l == nil {
		return fmt.Errorf("KGD_GITHUB_PORT: no listener for the GitHub stand-in")
	}
	s.gitHubSrv = &http.Server{Handler: gitHubHandler(gh), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go s.gitHubSrv.Serve(l)
	gh.SetBaseURL(s.URLs.GitHub)
	s.logf("GitHub stand-in (local development and tests only; not GitHub) at %s, signing in %q", s.URLs.GitHub, gh.SignedIn())
	return nil
}

// registryHandler is the in-memory container registry, logging to logTo,
// guarded against web pages by its Host header only: Docker uploads blobs
// as application/octet-stream and manifests with their own media types,
// which a page cannot send without a CORS preflight either.
func registryHandler(logTo io.Writer) http.Handler {
	g := loopback.Guard{
		AnyContentType: func(*http.Request) bool { return true },
		Reject: func(w http.ResponseWriter, _ *http.Request, status int, msg string) {
			// The registry's error shape (OCI distribution spec).
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "DENIED", "message": msg}}})
		},
	}
	return g.Handler(registry.New(registry.Logger(log.New(logTo, "", 0))))
}

// gitHubHandler is the GitHub stand-in guarded against web pages: the
// Host check everywhere; the JSON rule for its admin endpoints and its
// REST API, but not for git's smart HTTP (application/x-git-*-request
// bodies, and pushes need the repository admin's token) nor the OAuth
// token exchange (form-encoded, as GitHub's, and it needs the client
// secret).
func gitHubHandler(gh http.Handler) http.Handler {
	g := loopback.Guard{
		AnyContentType: func(r *http.Request) bool {
			return !strings.HasPrefix(r.URL.Path, githubstandin.AdminPrefix) && !strings.HasPrefix(r.URL.Path, githubfake.APIPrefix)
		},
		Reject: func(w http.ResponseWriter, _ *http.Request, status int, msg string) {
			// The admin endpoints' shape ("error") and GitHub's ("message").
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": msg, "message": msg})
		},
	}
	return g.Handler(gh)
}

// childEnv is the environment of the binaries: this process's, with every
// setting of the stack, loopback addresses only, and no variable that
// would switch a binary into its Cloud Functions or Cloud Run mode.
func (s *Stack) childEnv() []string {
	cfg, u := s.Config, s.URLs
	set := map[string]string{
		emulator.MetadataHostEnv:           emulator.MetadataHostLoopback,
		"CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
		"GOOGLE_CLOUD_PROJECT":             cfg.Project,
		emulator.FirestoreHostEnv:          u.FirestoreHost,
		emulator.PubSubHostEnv:             u.PubSubHost,
		"KGD_ENCRYPTION_KEY":               cfg.EncryptionKey,
		"KGD_LISTEN_HOST":                  "127.0.0.1",
		"KGD_AUTH":                         "local", // loopback only: every caller is the user
		"PRIVATE_HTTP_PORT":                strconv.Itoa(cfg.Ports.Private),
		"PUBLIC_HTTP_PORT":                 strconv.Itoa(cfg.Ports.Public),
		"PRIVATE_HTTP_HOST":                strings.TrimSuffix(u.PrivateAPI, "/"),
		"PUBLIC_HTTP_HOST":                 strings.TrimSuffix(cmp.Or(cfg.PublicURL, u.PublicAPI), "/"),
		"GITHUB_CLIENT_ID":                 cfg.GitHubClientID,
		"GITHUB_CLIENT_SECRET":             cfg.GitHubClientSecret,
		"GITHUB_WEB_URL":                   u.GitHub,
		"GITHUB_API_URL":                   u.GitHubAPI,
		"KGD_API_URL":                      u.APIHTTP, // the runner's links to jobs on GitHub
		"KUBECONFIG":                       s.Kubeconfig,
		"KGD_WORKDIR":                      s.workDir,
	}
	for _, kv := range cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			set[k] = v
		}
	}
	drop := map[string]bool{"PORT": true, "FUNCTION_TARGET": true, "PUBLIC_HTTP_SSL_ENABLED": true, "K_SERVICE": true}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok && !drop[k] {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// Wait returns nil when ctx ends, or an error as soon as one of the
// binaries exits on its own.
func (s *Stack) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.failed:
		return err
	}
}

// Stop stops every part, in order: the API, the runner (which hands its
// running job back to the queue), the functions, then the GitHub
// stand-in, the registry, the emulators, the control plane and a dockerd
// the stack started. It is safe to call more than once.
func (s *Stack) Stop() error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		children := slices.Clone(s.children)
		reg := s.registry
		s.mu.Unlock()
		began := time.Now()
		for i := len(children) - 1; i >= 0; i-- {
			if children[i].running() {
				children[i].stop()
			}
		}
		if s.gitHubSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.gitHubSrv.Shutdown(ctx)
			cancel()
		}
		if s.GitHub != nil {
			s.GitHub.Close()
		}
		if reg != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			reg.Shutdown(ctx)
			cancel()
		}
		for _, l := range s.listeners {
			l.Close()
		}
		var wg sync.WaitGroup
		for _, e := range s.emulators {
			wg.Go(func() { e.Stop() })
		}
		if s.cp != nil {
			wg.Go(func() {
				if err := s.cp.Stop(); err != nil {
					s.logf("stop the control plane: %v", err)
				}
			})
		}
		wg.Wait()
		if s.cpLog != nil {
			s.cpLog.Close()
		}
		s.dockerd.stop()
		if s.workDir != "" {
			os.RemoveAll(s.workDir)
		}
		s.logf("stopped in %s", stamp(time.Since(began)))
	})
	return nil
}

// gitHubSummary is the summary's GitHub line.
func (s *Stack) gitHubSummary() string {
	u := s.URLs
	if s.Config.RealGitHub() {
		return fmt.Sprintf("  GitHub           %s  (real; OAuth App callback URL: %sapi/v0/github/oauth_callback; webhooks to %s)", u.GitHub, u.PrivateAPI, s.Config.PublicURL)
	}
	return fmt.Sprintf("  GitHub stand-in  %s  (dev/test only; its own endpoints: curl %s_standin/)", u.GitHub, u.GitHub)
}

// printSummary tells the user where everything is.
func (s *Stack) printSummary(took time.Duration) {
	u := s.URLs
	lines := []string{
		fmt.Sprintf("kube-git-deploy is up (in %s). Ctrl-C stops everything.", stamp(took)),
		fmt.Sprintf("  PrivateAPI       %s  (sign-in, tracking: curl %sapi/v0/github/repositories/tracked)", u.PrivateAPI, u.PrivateAPI),
		fmt.Sprintf("  PublicAPI        %s  (GitHub webhooks)", u.PublicAPI),
	}
	lines = append(lines,
		fmt.Sprintf("  Skaffold API     gRPC %s, HTTP %s  (curl -N %sv1/events)", u.APIGRPC, u.APIHTTP, u.APIHTTP),
		fmt.Sprintf("  dashboard        %s/ui/  (jobs, live pipelines; CLI: KGD_API_URL=%s .bin/kgd jobs -r demo/hello)", strings.TrimSuffix(u.APIHTTP, "/"), strings.TrimSuffix(u.APIHTTP, "/")),
		fmt.Sprintf("  registry         %s  (in memory)", u.Registry),
		s.gitHubSummary(),
		fmt.Sprintf("  emulators        FIRESTORE_EMULATOR_HOST=%s PUBSUB_EMULATOR_HOST=%s GOOGLE_CLOUD_PROJECT=%s", u.FirestoreHost, u.PubSubHost, s.Config.Project),
		fmt.Sprintf("  Kubernetes       KUBECONFIG=%s", s.Kubeconfig),
	)
	if s.DockerWarning != "" {
		lines = append(lines, "  Docker           NONE: "+s.DockerWarning)
	}
	if s.Config.RealGitHub() {
		lines = append(lines, fmt.Sprintf("Next: sign in (open the login_url of curl %sapi/v0/github/login_url in a browser), then track a repository (curl -X POST %sapi/v0/github/repositories/OWNER/NAME) and push to it", u.PrivateAPI, u.PrivateAPI))
	} else {
		lines = append(lines, "Next: make demo (pushes a sample app through the whole system)")
	}
	for _, l := range lines {
		s.logf("%s", l)
	}
}
