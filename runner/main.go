// Command runner pulls jobs from Pub/Sub and runs them: checkout, docker
// build and push, helm deploy and rollout check, recording Skaffold events
// and state in Firestore. It stops pulling on SIGTERM and hands running
// jobs back before it exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"github.com/docker/docker/client"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/build"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/pipeline"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/source"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/worker"
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
	project, subscription, topic, githubWebURL, kubeconfig, workDir string
	key                                                             []byte
	previous                                                        [][]byte
	statusDeadline                                                  time.Duration
	concurrency                                                     int
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
		kubeconfig:   env("KUBECONFIG", ""),
		workDir:      env("KGD_WORKDIR", ""),
	}
	if c.project == "" {
		bad("GOOGLE_CLOUD_PROJECT", errors.New("required"))
	}
	k, err := secret.ParseKey(getenv("KGD_ENCRYPTION_KEY"))
	if err != nil {
		bad("KGD_ENCRYPTION_KEY", err)
	}
	c.key = k
	if c.previous, err = secret.ParseKeys(getenv("KGD_ENCRYPTION_KEY_PREVIOUS")); err != nil {
		bad("KGD_ENCRYPTION_KEY_PREVIOUS", err)
	}
	if c.statusDeadline, err = time.ParseDuration(env("KGD_STATUS_CHECK_DEADLINE", "10m")); err != nil || c.statusDeadline <= 0 {
		bad("KGD_STATUS_CHECK_DEADLINE", fmt.Errorf("%q is not a positive duration", getenv("KGD_STATUS_CHECK_DEADLINE")))
	}
	if c.concurrency, err = strconv.Atoi(env("KGD_RUNNER_CONCURRENCY", "1")); err != nil || c.concurrency < 1 {
		bad("KGD_RUNNER_CONCURRENCY", fmt.Errorf("%q is not a positive number", getenv("KGD_RUNNER_CONCURRENCY")))
	}
	return c, errors.Join(errs...)
}

func run(ctx context.Context, getenv func(string) string) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := logging.New(os.Stderr, logging.Options{Project: cfg.project})

	box, err := secret.NewBox(cfg.key, cfg.previous...)
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
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if cfg.kubeconfig != "" {
		rules.ExplicitPath = cfg.kubeconfig
	}
	rest, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return fmt.Errorf("KUBECONFIG: %w", err)
	}
	kube, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	st, err := store.New(fs, box)
	if err != nil {
		return err
	}
	src, err := source.New(cfg.githubWebURL)
	if err != nil {
		return fmt.Errorf("GITHUB_WEB_URL: %w", err)
	}
	dep, err := deploy.New(cfg.kubeconfig, log)
	if err != nil {
		return fmt.Errorf("KUBECONFIG: %w", err)
	}
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s/%d", host, os.Getpid())
	pl, err := pipeline.New(pipeline.Config{WorkDir: cfg.workDir, StatusCheckDeadline: cfg.statusDeadline,
		LockRelease: func(ctx context.Context, key string, hold time.Duration) (func(), error) {
			return st.LockRelease(ctx, key, owner, hold, time.Second)
		},
		RegistryAuth: googleRegistryAuth(func(ctx context.Context) (oauth2.TokenSource, error) {
			return google.DefaultTokenSource(ctx, "https://www.googleapis.com/auth/cloud-platform")
		})},
		src, build.New(docker), dep, rollout.New(kube), nil)
	if err != nil {
		return err
	}
	pub := queue.NewPublisher(ps, cfg.topic)
	defer pub.Stop()
	w, err := worker.New(worker.Config{Owner: owner}, st, pl, pub, log, nil)
	if err != nil {
		return err
	}
	sub := queue.NewSubscriber(ps, cfg.subscription, queue.SubscriberOptions{MaxOutstanding: cfg.concurrency, Logger: log})
	log.Info("runner started", "subscription", cfg.subscription, "concurrency", cfg.concurrency)
	err = w.Run(ctx, sub)
	log.Info("runner stopped")
	return err
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
