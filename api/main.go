// Command api serves the Skaffold API (proto.SkaffoldService and
// proto.v2.SkaffoldV2Service, gRPC plus the HTTP gateway) over the events
// and state that runners record in Firestore, the job history API
// (kgd.jobs.v1.Jobs) and the web dashboard under /ui/.
//
// Locally it serves gRPC on --rpc-port (default 50051) and HTTP on
// --rpc-http-port (default 50052), bound to KGD_LISTEN_HOST (127.0.0.1). A
// busy port is a start-up error. On Cloud Run (PORT set) it serves both on
// $PORT: requests with a gRPC content type over HTTP/2 (h2c) go to the gRPC
// server, everything else to the gateway. SIGTERM ends the event streams
// with UNAVAILABLE (clients reconnect and replay) and stops gracefully.
//
// Callers are identified as KGD_AUTH says (caller.ModeFromEnv: IAM on
// Cloud Run, local elsewhere). In local mode the service listens on
// loopback only, every caller is an operator, and the gateway refuses
// requests a web page could send (loopback.Guard); gRPC needs no such
// guard, browsers cannot speak it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/dashboard"
	"github.com/kube-git-deploy/kube-git-deploy/api/internal/feed"
	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/loopback"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "api: %v\n", err)
		os.Exit(1)
	}
}

// config is the service's configuration; README lists every setting.
type config struct {
	project, topic, host, cloudRunPort string
	rpcPort, httpPort                  int
	key                                []byte
	previous                           [][]byte
	maxLag, maxHistory                 int
	maxStreams, replayIterations       int
	replayWindow, trackCheck           time.Duration
	writeTimeout                       time.Duration
	retention                          time.Duration
	auth                               caller.Mode
	operators                          []string
	handle                             bool
	allowedHosts                       []string
}

func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fl := flag.NewFlagSet("api", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.IntVar(&c.rpcPort, "rpc-port", 50051, "gRPC port (both API versions)")
	fl.IntVar(&c.httpPort, "rpc-http-port", 50052, "HTTP gateway port (both API versions)")
	if err := fl.Parse(args); err != nil {
		return c, err
	}
	if fl.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	var errs []error
	bad := func(v string, err error) { errs = append(errs, fmt.Errorf("%s: %w", v, err)) }
	env := func(v, def string) string {
		if s := strings.TrimSpace(getenv(v)); s != "" {
			return s
		}
		return def
	}
	for _, p := range []struct {
		flag string
		v    int
	}{{"--rpc-port", c.rpcPort}, {"--rpc-http-port", c.httpPort}} {
		if p.v < 1 || p.v > 65535 {
			bad(p.flag, fmt.Errorf("%d is not a port", p.v))
		}
	}
	if c.rpcPort == c.httpPort {
		bad("--rpc-http-port", fmt.Errorf("%d is also the --rpc-port", c.httpPort))
	}
	c.project = env("GOOGLE_CLOUD_PROJECT", "")
	if c.project == "" {
		bad("GOOGLE_CLOUD_PROJECT", errors.New("required"))
	}
	c.topic = env("KGD_JOBS_TOPIC", queue.DefaultTopic)
	c.host = env("KGD_LISTEN_HOST", "127.0.0.1")
	if c.cloudRunPort = env("PORT", ""); c.cloudRunPort != "" {
		if n, err := strconv.Atoi(c.cloudRunPort); err != nil || n < 1 || n > 65535 {
			bad("PORT", fmt.Errorf("%q is not a port", c.cloudRunPort))
		}
	}
	var err error
	if c.key, err = secret.ParseKey(getenv("KGD_ENCRYPTION_KEY")); err != nil {
		bad("KGD_ENCRYPTION_KEY", err)
	}
	if c.previous, err = secret.ParseKeys(getenv("KGD_ENCRYPTION_KEY_PREVIOUS")); err != nil {
		bad("KGD_ENCRYPTION_KEY_PREVIOUS", err)
	}
	if c.maxLag, err = strconv.Atoi(env("KGD_STREAM_MAX_LAG", "10000")); err != nil || c.maxLag < 1 {
		bad("KGD_STREAM_MAX_LAG", fmt.Errorf("%q is not a positive number of events", getenv("KGD_STREAM_MAX_LAG")))
	}
	if c.retention, err = time.ParseDuration(env("KGD_RETENTION", "720h")); err != nil || c.retention < 0 {
		bad("KGD_RETENTION", fmt.Errorf("%q is not a duration such as 720h (0 keeps events forever)", getenv("KGD_RETENTION")))
	}
	if c.maxHistory, err = strconv.Atoi(env("KGD_STREAM_MAX_HISTORY", "500000")); err != nil || c.maxHistory < 1 {
		bad("KGD_STREAM_MAX_HISTORY", fmt.Errorf("%q is not a positive number of events", getenv("KGD_STREAM_MAX_HISTORY")))
	}
	if c.maxStreams, err = strconv.Atoi(env("KGD_STREAM_MAX", "2000")); err != nil || c.maxStreams < 1 {
		bad("KGD_STREAM_MAX", fmt.Errorf("%q is not a positive number of streams", getenv("KGD_STREAM_MAX")))
	}
	if c.replayIterations, err = strconv.Atoi(env("KGD_STREAM_REPLAY_ITERATIONS", "5")); err != nil || c.replayIterations < 1 {
		bad("KGD_STREAM_REPLAY_ITERATIONS", fmt.Errorf("%q is not a positive number of iterations", getenv("KGD_STREAM_REPLAY_ITERATIONS")))
	}
	if c.replayWindow, err = time.ParseDuration(env("KGD_STREAM_REPLAY_WINDOW", "1h")); err != nil || c.replayWindow <= 0 {
		bad("KGD_STREAM_REPLAY_WINDOW", fmt.Errorf("%q is not a positive duration such as 1h", getenv("KGD_STREAM_REPLAY_WINDOW")))
	}
	if c.trackCheck, err = time.ParseDuration(env("KGD_STREAM_TRACK_CHECK", "1m")); err != nil || c.trackCheck <= 0 {
		bad("KGD_STREAM_TRACK_CHECK", fmt.Errorf("%q is not a positive duration such as 1m", getenv("KGD_STREAM_TRACK_CHECK")))
	}
	if c.writeTimeout, err = time.ParseDuration(env("KGD_STREAM_WRITE_TIMEOUT", "30s")); err != nil || c.writeTimeout <= 0 {
		bad("KGD_STREAM_WRITE_TIMEOUT", fmt.Errorf("%q is not a positive duration", getenv("KGD_STREAM_WRITE_TIMEOUT")))
	}
	if c.auth, err = caller.ModeFromEnv(getenv); err != nil {
		errs = append(errs, err) // names KGD_AUTH
	}
	if c.auth == caller.ModeLocal && !loopback.IsLoopback(loopback.Hostname(c.host)) {
		bad("KGD_LISTEN_HOST", fmt.Errorf("%s is not a loopback address: in local mode every caller is an operator, so the API listens on loopback only (behind Cloud Run IAM set KGD_AUTH=iam)", c.host))
	}
	if c.operators, err = parseOperators(getenv("KGD_OPERATORS")); err != nil {
		bad("KGD_OPERATORS", err)
	}
	if c.handle, err = strconv.ParseBool(env("KGD_HANDLE_ENABLED", "false")); err != nil {
		bad("KGD_HANDLE_ENABLED", fmt.Errorf("%q is not true or false", getenv("KGD_HANDLE_ENABLED")))
	}
	if c.allowedHosts, err = loopback.ParseHosts(getenv("KGD_ALLOWED_HOSTS")); err != nil {
		bad("KGD_ALLOWED_HOSTS", err)
	}
	return c, errors.Join(errs...)
}

// parseOperators parses KGD_OPERATORS: comma-separated emails.
func parseOperators(s string) ([]string, error) {
	var ops []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		local, domain, ok := strings.Cut(f, "@")
		if !ok || local == "" || domain == "" || strings.ContainsAny(f, " \t\"<>()[]:;") || strings.Contains(domain, "@") {
			return nil, fmt.Errorf("%q is not an email address", f)
		}
		ops = append(ops, strings.ToLower(f))
	}
	return ops, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := logging.New(stderr, logging.Options{Project: cfg.project})

	// Listen first: a busy port fails before anything else starts.
	var grpcLis, httpLis net.Listener
	if cfg.cloudRunPort != "" {
		host := "" // Cloud Run: every interface
		if cfg.auth == caller.ModeLocal {
			host = cfg.host
		}
		if httpLis, err = net.Listen("tcp", net.JoinHostPort(host, cfg.cloudRunPort)); err != nil {
			return fmt.Errorf("PORT %s: %w", cfg.cloudRunPort, err)
		}
		// The gateway reaches the gRPC server on a private loopback port.
		if grpcLis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("internal gRPC listener: %w", err)
		}
	} else {
		if grpcLis, err = net.Listen("tcp", net.JoinHostPort(cfg.host, strconv.Itoa(cfg.rpcPort))); err != nil {
			return fmt.Errorf("--rpc-port %d: %w", cfg.rpcPort, err)
		}
		if httpLis, err = net.Listen("tcp", net.JoinHostPort(cfg.host, strconv.Itoa(cfg.httpPort))); err != nil {
			grpcLis.Close()
			return fmt.Errorf("--rpc-http-port %d: %w", cfg.httpPort, err)
		}
	}

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
	if getenv("PUBSUB_EMULATOR_HOST") != "" {
		names := queue.DefaultNames(cfg.project)
		names.Topic = cfg.topic
		if err := queue.Ensure(ctx, ps, names, queue.EnsureOptions{}); err != nil {
			return fmt.Errorf("create the job queue on the emulator: %w", err)
		}
	}
	st, err := store.New(fs, box, store.WithRetention(cfg.retention))
	if err != nil {
		return err
	}
	pub := queue.NewPublisher(ps, cfg.topic)
	defer pub.Stop()
	events := feed.New(st, feed.Options{MaxLag: cfg.maxLag, MaxHistory: cfg.maxHistory, Window: cfg.replayWindow}, log)
	defer events.Close()
	svc, err := skaffold.New(st, pub, events, log, skaffold.Options{Auth: cfg.auth, Operators: cfg.operators, HandleEnabled: cfg.handle,
		ReplayIterations: cfg.replayIterations, ReplayWindow: cfg.replayWindow, MaxStreams: cfg.maxStreams, TrackCheck: cfg.trackCheck})
	if err != nil {
		return err
	}

	gs := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	svc.Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)

	conn, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("gateway connection: %w", err)
	}
	defer conn.Close()
	ready := func(ctx context.Context) error {
		_, err := fs.Collection(store.RepositoriesCollection).Limit(1).Documents(ctx).GetAll()
		return err
	}
	// The dashboard calls the job API through the same gRPC server, with
	// the caller's identity token: it shows what the caller may see.
	ui, err := dashboard.New(jobspb.NewJobsClient(conn), dashboard.Options{Log: log})
	if err != nil {
		return err
	}
	hopts := skaffold.HTTPOptions{Ready: ready, StreamWriteTimeout: cfg.writeTimeout, Export: svc.ExportHandler(), Dashboard: ui}
	if cfg.auth == caller.ModeLocal {
		hopts.Guard = &loopback.Guard{Hosts: cfg.allowedHosts}
	} else {
		// Behind IAM any host is fine, but a web page must still not
		// post through a proxy that adds its user's token (gcloud run
		// services proxy, the way to the dashboard).
		hopts.Guard = &loopback.Guard{AnyHost: true}
	}
	httpH, err := skaffold.NewHTTPHandler(ctx, conn, hopts)
	if err != nil {
		return err
	}
	hsrv := &http.Server{Handler: httpH, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	if cfg.cloudRunPort != "" {
		hsrv.Handler = skaffold.Mixed(gs, httpH)
		hsrv.Protocols = new(http.Protocols)
		hsrv.Protocols.SetHTTP1(true)
		hsrv.Protocols.SetUnencryptedHTTP2(true)
	}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- hsrv.Serve(httpLis) }()
	log.Info("api started", "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(),
		"auth", string(cfg.auth), "operators", len(cfg.operators), "handle", cfg.handle)

	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("server stopped: %w", err)
	}
	log.Info("api stopping")
	hs.Shutdown()
	svc.StopStreams()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := hsrv.Shutdown(sctx); serr != nil {
		hsrv.Close()
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-sctx.Done():
		gs.Stop()
	}
	log.Info("api stopped")
	return err
}
