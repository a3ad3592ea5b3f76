// Command runner pulls jobs from Pub/Sub and runs them: checkout, docker
// build and push, helm deploy and rollout check, recording Skaffold events
// and state in Firestore. It stops pulling on SIGTERM and hands running
// jobs back before it exits.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"github.com/docker/docker/client"
	"github.com/google/go-github/v60/github"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/secretmanager/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/build"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/etagcache"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/eventtopic"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/githubstatus"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/pipeline"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/redeliver"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/source"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/worker"
	"github.com/kube-git-deploy/kube-git-deploy/shared/eventlog"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		fmt.Fprintf(os.Stderr, "runner: %v\n", err)
		os.Exit(1)
	}
}

// config is the runner's configuration; README lists every variable.
type config struct {
	project, subscription, topic, githubWebURL, workDir string
	// key and previous open sealed records; keySecret, when set instead of
	// KGD_ENCRYPTION_KEY, is the Secret Manager version holding key.
	key       []byte
	keySecret string
	previous  [][]byte
	kube      kubeTarget
	// listenHost and healthPort serve GET /healthz; port 0 serves nothing.
	listenHost     string
	healthPort     int
	statusDeadline time.Duration
	concurrency    int
	// Builds: memory (bytes) and CPUs per build (0: unlimited), timeout,
	// and how many images of each image repository stay on the engine.
	buildMemory  int64
	buildCPUs    float64
	buildTimeout time.Duration
	imagesKept   int
	// builder is the engine's builder (KGD_BUILDER): auto, buildkit or
	// legacy.
	builder build.Backend
	// eventLog logs every stored event's seed-002 envelope
	// (KGD_EVENT_LOG: on, the default, or off).
	eventLog bool
	// gitCache is where repositories' git objects are kept between
	// checkouts (KGD_GIT_CACHE; "" when off).
	gitCache string
	// lease is how long a claim on a job lasts unrenewed (renewed every
	// third of it); unclaimedAfter is how long a published job may wait
	// before a sweep publishes it again.
	lease, unclaimedAfter time.Duration
	retention             time.Duration
	// githubAPIURL is GitHub's REST API (GITHUB_API_URL); redeliverEvery
	// how often failed webhook deliveries are looked for and redelivered
	// (KGD_REDELIVER_INTERVAL, 0: never).
	githubAPIURL   *url.URL
	redeliverEvery time.Duration
	// githubReports turns commit statuses and Deployments on GitHub on
	// (KGD_GITHUB_REPORTS, default on; repositories can turn theirs off);
	// apiURL is the API service's public URL, the base of the jobs' links
	// (KGD_API_URL; none when empty).
	githubReports bool
	apiURL        *url.URL
	// eventsTopic is the Pub/Sub topic every event goes to
	// (KGD_EVENTS_TOPIC; "" when off).
	eventsTopic string
	// sinks are the operator's event sinks (sinks.go).
	sinks sinkConfig
}

func loadConfig(getenv func(string) string) (config, error) {
	var errs []error
	bad := func(v string, err error) { errs = append(errs, fmt.Errorf("%s: %w", v, err)) }
	env := func(v, def string) string {
		if s := strings.TrimSpace(getenv(v)); s != "" {
			return s
		}
		return def
	}
	c := config{
		project:      env("GOOGLE_CLOUD_PROJECT", ""),
		subscription: env("KGD_JOBS_SUBSCRIPTION", queue.DefaultSubscription),
		topic:        env("KGD_JOBS_TOPIC", queue.DefaultTopic),
		githubWebURL: env("GITHUB_WEB_URL", "https://github.com/"),
		workDir:      env("KGD_WORKDIR", ""),
		listenHost:   env("KGD_LISTEN_HOST", "127.0.0.1"),
		keySecret:    env("KGD_ENCRYPTION_KEY_SECRET", ""),
		kube: kubeTarget{
			endpoint:   env("KGD_KUBE_ENDPOINT", ""),
			secret:     env("KGD_KUBECONFIG_SECRET", ""),
			kubeconfig: env("KUBECONFIG", ""),
		},
	}
	if c.project == "" {
		bad("GOOGLE_CLOUD_PROJECT", errors.New("required"))
	}
	var err error
	switch raw := getenv("KGD_ENCRYPTION_KEY"); {
	case c.keySecret != "" && raw != "":
		bad("KGD_ENCRYPTION_KEY_SECRET", errors.New("set either it or KGD_ENCRYPTION_KEY, not both"))
	case c.keySecret != "":
		if !secretVersionName.MatchString(c.keySecret) {
			bad("KGD_ENCRYPTION_KEY_SECRET", fmt.Errorf("%q is not a secret version (projects/P/secrets/S/versions/latest)", c.keySecret))
		}
	default:
		if c.key, err = secret.ParseKey(raw); err != nil {
			bad("KGD_ENCRYPTION_KEY", err)
		}
	}
	if c.previous, err = secret.ParseKeys(getenv("KGD_ENCRYPTION_KEY_PREVIOUS")); err != nil {
		bad("KGD_ENCRYPTION_KEY_PREVIOUS", err)
	}
	c.loadKube(env, bad)
	if c.statusDeadline, err = time.ParseDuration(env("KGD_STATUS_CHECK_DEADLINE", "10m")); err != nil || c.statusDeadline <= 0 {
		bad("KGD_STATUS_CHECK_DEADLINE", fmt.Errorf("%q is not a positive duration", getenv("KGD_STATUS_CHECK_DEADLINE")))
	}
	if c.concurrency, err = strconv.Atoi(env("KGD_RUNNER_CONCURRENCY", "1")); err != nil || c.concurrency < 1 {
		bad("KGD_RUNNER_CONCURRENCY", fmt.Errorf("%q is not a positive number", getenv("KGD_RUNNER_CONCURRENCY")))
	}
	if q, err := resource.ParseQuantity(env("KGD_BUILD_MEMORY", "4Gi")); err != nil || q.Sign() < 0 {
		bad("KGD_BUILD_MEMORY", fmt.Errorf("%q is not a size such as 4Gi (0: no limit)", getenv("KGD_BUILD_MEMORY")))
	} else {
		c.buildMemory = q.Value()
	}
	if c.buildCPUs, err = strconv.ParseFloat(env("KGD_BUILD_CPUS", "2"), 64); err != nil || c.buildCPUs < 0 || c.buildCPUs > 1024 {
		bad("KGD_BUILD_CPUS", fmt.Errorf("%q is not a number of CPUs such as 2 or 0.5 (0: no limit)", getenv("KGD_BUILD_CPUS")))
	}
	if c.buildTimeout, err = time.ParseDuration(env("KGD_BUILD_TIMEOUT", "30m")); err != nil || c.buildTimeout <= 0 {
		bad("KGD_BUILD_TIMEOUT", fmt.Errorf("%q is not a positive duration", getenv("KGD_BUILD_TIMEOUT")))
	}
	if c.builder, err = build.ParseBackend(env("KGD_BUILDER", string(build.BackendAuto))); err != nil {
		bad("KGD_BUILDER", err)
	}
	switch v := env("KGD_EVENT_LOG", "on"); v {
	case "on", "off":
		c.eventLog = v == "on"
	default:
		bad("KGD_EVENT_LOG", fmt.Errorf("%q is neither on nor off", v))
	}
	switch c.gitCache = env("KGD_GIT_CACHE", filepath.Join(cmp.Or(c.workDir, os.TempDir()), "kgd-git-cache")); {
	case c.gitCache == "off":
		c.gitCache = ""
	case !filepath.IsAbs(c.gitCache):
		bad("KGD_GIT_CACHE", fmt.Errorf("%q is not an absolute directory (or off)", c.gitCache))
	}
	if c.imagesKept, err = strconv.Atoi(env("KGD_IMAGES_KEPT", "3")); err != nil || c.imagesKept < 1 {
		bad("KGD_IMAGES_KEPT", fmt.Errorf("%q is not a positive number", getenv("KGD_IMAGES_KEPT")))
	}
	if c.lease, err = time.ParseDuration(env("KGD_LEASE", "2m")); err != nil || c.lease < 3*time.Second {
		bad("KGD_LEASE", fmt.Errorf("%q is not a duration of at least 3s", getenv("KGD_LEASE")))
	}
	if c.unclaimedAfter, err = time.ParseDuration(env("KGD_UNCLAIMED_AFTER", "10m")); err != nil || c.unclaimedAfter <= 0 {
		bad("KGD_UNCLAIMED_AFTER", fmt.Errorf("%q is not a positive duration", getenv("KGD_UNCLAIMED_AFTER")))
	}
	if c.retention, err = time.ParseDuration(env("KGD_RETENTION", "720h")); err != nil || c.retention < 0 {
		bad("KGD_RETENTION", fmt.Errorf("%q is not a duration (720h keeps events and jobs 30 days; 0 forever)", getenv("KGD_RETENTION")))
	}
	if u, err := url.Parse(env("GITHUB_API_URL", "https://api.github.com/")); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("GITHUB_API_URL", fmt.Errorf("%q is not an absolute http(s) URL without query", getenv("GITHUB_API_URL")))
	} else {
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		c.githubAPIURL = u
	}
	if c.redeliverEvery, err = time.ParseDuration(env("KGD_REDELIVER_INTERVAL", "5m")); err != nil || c.redeliverEvery < 0 {
		bad("KGD_REDELIVER_INTERVAL", fmt.Errorf("%q is not a duration such as 5m (0: no redelivery)", getenv("KGD_REDELIVER_INTERVAL")))
	}
	switch v := env("KGD_GITHUB_REPORTS", "on"); v {
	case "on", "off":
		c.githubReports = v == "on"
	default:
		bad("KGD_GITHUB_REPORTS", fmt.Errorf("%q is neither on nor off", v))
	}
	if v := env("KGD_API_URL", ""); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad("KGD_API_URL", fmt.Errorf("%q is not an absolute http(s) URL without query", v))
		} else {
			c.apiURL = u
		}
	}
	if c.eventsTopic = env("KGD_EVENTS_TOPIC", eventtopic.DefaultTopic); c.eventsTopic == "off" {
		c.eventsTopic = ""
	}
	c.sinks.load(env, bad)
	if c.healthPort, err = strconv.Atoi(env("KGD_HEALTH_PORT", "0")); err != nil || c.healthPort < 0 || c.healthPort > 65535 {
		bad("KGD_HEALTH_PORT", fmt.Errorf("%q is not a port (0 serves no health endpoint)", getenv("KGD_HEALTH_PORT")))
	}
	return c, errors.Join(errs...)
}

// loadKube checks the cluster settings: a GKE endpoint with its CA, a
// kubeconfig secret, or KUBECONFIG / in-cluster, never two of them.
func (c *config) loadKube(env func(v, def string) string, bad func(string, error)) {
	k := &c.kube
	ca := env("KGD_KUBE_CA_DATA", "")
	if k.endpoint != "" && k.secret != "" {
		bad("KGD_KUBECONFIG_SECRET", errors.New("set either it or KGD_KUBE_ENDPOINT, not both"))
	}
	if k.endpoint != "" {
		if u, err := url.Parse(k.endpoint); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("KGD_KUBE_ENDPOINT", fmt.Errorf("%q is not an https:// address of a cluster endpoint", k.endpoint))
		}
		if ca == "" {
			bad("KGD_KUBE_CA_DATA", errors.New("required with KGD_KUBE_ENDPOINT (the cluster's CA certificate, base64 as GKE gives it)"))
		} else if b, err := decodeCA(ca); err != nil {
			bad("KGD_KUBE_CA_DATA", err)
		} else {
			k.caData = b
		}
	} else if ca != "" {
		bad("KGD_KUBE_CA_DATA", errors.New("set only together with KGD_KUBE_ENDPOINT"))
	}
	if k.secret != "" && !secretVersionName.MatchString(k.secret) {
		bad("KGD_KUBECONFIG_SECRET", fmt.Errorf("%q is not a secret version (projects/P/secrets/S/versions/latest)", k.secret))
	}
	if k.kubeconfig != "" && (k.endpoint != "" || k.secret != "") {
		k.kubeconfig = "" // the explicit cloud settings win over an inherited KUBECONFIG
	}
}

func run(ctx context.Context, getenv func(string) string) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := logging.New(os.Stderr, logging.Options{Project: cfg.project})
	googleToken := func(ctx context.Context) (oauth2.TokenSource, error) {
		return google.DefaultTokenSource(ctx, "https://www.googleapis.com/auth/cloud-platform")
	}

	var secrets secretAccessor
	if cfg.keySecret != "" || cfg.kube.secret != "" || cfg.sinks.needsSecrets() {
		svc, err := secretmanager.NewService(ctx)
		if err != nil {
			return fmt.Errorf("secret manager client: %w", err)
		}
		secrets = secretAccessor{svc}
	}
	if cfg.keySecret != "" {
		b, err := secrets.access(ctx, cfg.keySecret)
		if err != nil {
			return fmt.Errorf("KGD_ENCRYPTION_KEY_SECRET: %w", err)
		}
		if cfg.key, err = secret.ParseKey(strings.TrimSpace(string(b))); err != nil {
			return fmt.Errorf("KGD_ENCRYPTION_KEY_SECRET %s: %w", cfg.keySecret, err)
		}
	}
	box, err := secret.NewBox(cfg.key, cfg.previous...)
	if err != nil {
		return err
	}
	kubeConfig, err := cfg.kube.restConfig(ctx, googleToken, secrets.access)
	if err != nil {
		return err
	}
	fs, err := firestore.NewClient(ctx, cfg.project)
	if err != nil {
		return fmt.Errorf("firestore client: %w", err)
	}
	defer fs.Close()
	ps, err := pubsub.NewClient(ctx, cfg.project)
	if err != nil {
		return fmt.Errorf("pubsub client: %w", err)
	}
	defer ps.Close()
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("DOCKER_HOST: %w", err)
	}
	defer docker.Close()
	if err := build.Ping(ctx, docker); err != nil {
		log.Warn("Docker daemon not reachable; builds will fail until it is", logging.KeyErr, err.Error())
	}
	kube, err := kubernetes.NewForConfig(kubeConfig)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	st, err := store.New(fs, box, store.WithRetention(cfg.retention))
	if err != nil {
		return err
	}
	var srcOpts []source.Option
	if cfg.gitCache != "" {
		srcOpts = append(srcOpts, source.WithCache(cfg.gitCache, source.DefaultCacheMaxPacks, source.DefaultCacheMaxBytes))
	}
	src, err := source.New(cfg.githubWebURL, srcOpts...)
	if err != nil {
		return fmt.Errorf("GITHUB_WEB_URL: %w", err)
	}
	dep, err := deploy.New(kubeConfig, log)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s/%d", host, os.Getpid())
	pl, err := pipeline.New(pipeline.Config{WorkDir: cfg.workDir, StatusCheckDeadline: cfg.statusDeadline,
		LockRelease: func(ctx context.Context, key string, hold time.Duration) (func(), error) {
			return st.LockRelease(ctx, key, owner, hold, time.Second)
		},
		RegistryAuth: googleRegistryAuth(googleToken),
		BuildMemory:  cfg.buildMemory, BuildCPUs: cfg.buildCPUs, BuildTimeout: cfg.buildTimeout,
		Prune: func(ctx context.Context, repository string) error {
			n, err := build.Prune(ctx, docker, repository, cfg.imagesKept)
			if err != nil {
				log.WarnContext(ctx, "could not prune old images", "image", repository, logging.KeyErr, err.Error())
			} else if n > 0 {
				log.InfoContext(ctx, "pruned old images", "image", repository, "removed", n)
			}
			return err
		}},
		src, build.New(docker, build.WithBackend(cfg.builder)), dep, rollout.New(kube), nil)
	if err != nil {
		return err
	}
	defer pl.Wait() // before the Docker client closes
	pub := queue.NewPublisher(ps, cfg.topic)
	defer pub.Stop()
	hl := &health{docker: func(ctx context.Context) error { return build.Ping(ctx, docker) }}
	wcfg := worker.Config{Owner: owner, Refs: src, Lease: cfg.lease, UnclaimedAfter: cfg.unclaimedAfter,
		Receiving: hl.receiving.Store}
	// GitHub reads are conditional (ETags): unchanged answers cost no rate
	// limit.
	githubHTTP := &http.Client{Timeout: 30 * time.Second, Transport: &etagcache.Transport{}}
	githubClient := func(token string) *github.Client {
		c := github.NewClient(githubHTTP).WithAuthToken(token)
		c.BaseURL = cfg.githubAPIURL
		return c
	}

	// Where every stored event goes besides Firestore: the runner's log
	// (seed-002 envelopes), the events topic, the operator's sinks; and
	// the jobs' reports to GitHub. All are sent in the background; at
	// shutdown, after the worker, they get the same 10 s to finish.
	var written, replayed []func(store.EventBatch)
	var drains []func(context.Context)
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, d := range drains {
			wg.Go(func() { d(dctx) })
		}
		wg.Wait()
	}()
	if cfg.eventLog {
		written = append(written, eventlog.LogTo(log))
	}
	if cfg.eventsTopic != "" {
		if os.Getenv("PUBSUB_EMULATOR_HOST") != "" {
			if err := eventtopic.Ensure(ctx, ps, cfg.project, cfg.eventsTopic); err != nil {
				return fmt.Errorf("create the events topic on the emulator: %w", err)
			}
		}
		topic := eventtopic.New(ps, cfg.eventsTopic, log)
		drains = append(drains, func(ctx context.Context) {
			if err := topic.Close(ctx); err != nil {
				log.Warn("runner stopping: events not published", logging.KeyErr, err.Error())
			}
		})
		written = append(written, topic.Send)
		replayed = append(replayed, topic.Send)
		wcfg.Flush = topic.Flush
	}
	sk, err := startSinks(ctx, cfg.sinks, secrets.access, log)
	if err != nil {
		return err
	}
	drains = append(drains, func(ctx context.Context) { sk.stop(ctx, log) })
	written, replayed = append(written, sk.send...), append(replayed, sk.send...)
	wcfg.Writer.Written = func(b store.EventBatch) {
		for _, f := range written {
			f(b)
		}
	}
	// A job taken over from a dead runner: its stored events go out again
	// (not to the log, which has them), in case the dead runner had not
	// passed its last ones on.
	wcfg.Replay = func(b store.EventBatch) {
		for _, f := range replayed {
			f(b)
		}
	}
	if cfg.githubReports {
		rep := githubstatus.New(githubstatus.Config{
			JobURL: func(j githubstatus.Job) string { return githubstatus.JobLink(cfg.apiURL, j) },
		}, githubClient, log)
		wcfg.Reporter = rep
		repCtx, repStop := context.WithCancel(context.WithoutCancel(ctx))
		repDone := make(chan struct{})
		go func() { defer close(repDone); rep.Run(repCtx) }()
		drains = append(drains, func(ctx context.Context) {
			// After the worker: the jobs handed back at shutdown are
			// reported too.
			repStop()
			<-repDone
			if n := rep.Close(ctx); n > 0 {
				log.Warn("runner stopped with GitHub reports unsent", "jobs", n)
			}
		})
	}
	w, err := worker.New(wcfg, st, pl, pub, log, nil)
	if err != nil {
		return err
	}
	if cfg.healthPort != 0 {
		stopHealth, err := serveHealth(net.JoinHostPort(cfg.listenHost, strconv.Itoa(cfg.healthPort)), hl, log)
		if err != nil {
			return fmt.Errorf("KGD_HEALTH_PORT: %w", err)
		}
		defer stopHealth()
	}
	// GitHub does not retry a delivery that failed (PublicAPI was down):
	// look for failed ones and have GitHub redeliver them.
	sweeper, err := redeliver.New(redeliver.Config{Owner: owner}, st, githubClient, log)
	if err != nil {
		return err
	}
	sweepDone := make(chan struct{})
	go func() { defer close(sweepDone); sweeper.Run(ctx, cfg.redeliverEvery) }()
	defer func() { <-sweepDone }() // before the Firestore client closes
	sub := queue.NewSubscriber(ps, cfg.subscription, queue.SubscriberOptions{MaxOutstanding: cfg.concurrency, Logger: log})
	log.Info("runner started", "subscription", cfg.subscription, "concurrency", cfg.concurrency,
		"cluster", cfg.kube.String(), "health_port", cfg.healthPort,
		"github_reports", cfg.githubReports, "events_topic", cfg.eventsTopic, "sinks", len(sk.send))
	err = w.Run(ctx, sub)
	log.Info("runner stopped")
	return err
}

// serveHealth serves h on addr until the returned function is called.
func serveHealth(addr string, h http.Handler, log *slog.Logger) (func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint stopped", logging.KeyErr, err.Error())
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// googleRegistryAuth returns push credentials for Google's registries
// (Artifact Registry *-docker.pkg.dev and gcr.io): the runner's own Google
// access token, as "oauth2accesstoken". Other registries are pushed to
// anonymously. Credentials are looked up only when such a push happens.
func googleRegistryAuth(source func(context.Context) (oauth2.TokenSource, error)) func(context.Context, string) (string, string, error) {
	return func(ctx context.Context, host string) (string, string, error) {
		if !strings.HasSuffix(host, "-docker.pkg.dev") && host != "gcr.io" && !strings.HasSuffix(host, ".gcr.io") {
			return "", "", nil
		}
		ts, err := source(ctx)
		if err != nil {
			return "", "", fmt.Errorf("google credentials for %s: %w", host, err)
		}
		tok, err := ts.Token()
		if err != nil {
			return "", "", fmt.Errorf("google access token for %s: %w", host, err)
		}
		return "oauth2accesstoken", tok.AccessToken, nil
	}
}
