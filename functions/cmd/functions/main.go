// Command functions serves kube-git-deploy's HTTP functions locally.
//
// By default it serves PrivateAPI on PRIVATE_HTTP_PORT (5000) and PublicAPI
// on PUBLIC_HTTP_PORT (5001), bound to KGD_LISTEN_HOST (127.0.0.1). With
// FUNCTION_TARGET set it follows the functions framework's convention
// instead: that one function on PORT (8080), at every path.
//
// When PUBSUB_EMULATOR_HOST is set it creates the job topic, subscription
// and dead-letter topic on the emulator if they are missing.
//
// Serving both functions locally, it guards them against web pages in the
// user's browser (loopback.Guard): a request for a host name other than
// localhost, 127.0.0.1, [::1] or the host of the function's configured
// URLs is refused with 421, and a POST, PUT, PATCH or DELETE without a
// JSON body with 415 — except PublicAPI's webhook route, which GitHub may
// send form-encoded and which its HMAC signature authenticates.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"golang.org/x/sync/errgroup"

	"github.com/kube-git-deploy/kube-git-deploy/functions/app"
	"github.com/kube-git-deploy/kube-git-deploy/functions/internal/web"
	"github.com/kube-git-deploy/kube-git-deploy/functions/registration"
	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/loopback"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		fmt.Fprintf(os.Stderr, "functions: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string) error {
	cfg, err := app.LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := logging.New(os.Stderr, logging.Options{Project: cfg.Project})
	if getenv("PUBSUB_EMULATOR_HOST") != "" {
		if err := ensureQueue(ctx, cfg); err != nil {
			return err
		}
	}

	if target := getenv("FUNCTION_TARGET"); target != "" {
		if target != registration.PrivateAPI && target != registration.PublicAPI {
			return fmt.Errorf("FUNCTION_TARGET: %q is not %s or %s", target, registration.PrivateAPI, registration.PublicAPI)
		}
		// The registered functions read the process environment.
		if _, err := registration.Default(); err != nil {
			return err
		}
		port := getenv("PORT")
		if port == "" {
			port = "8080"
		}
		log.Info("serving one function", "target", target, "port", port)
		return funcframework.StartHostPort(cfg.ListenHost, port)
	}

	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	private, public := guard(cfg)
	servers := []struct {
		name, portVar string
		port          int
		h             http.Handler
	}{
		{registration.PrivateAPI, "PRIVATE_HTTP_PORT", cfg.PrivatePort, private.Handler(a.Private)},
		{registration.PublicAPI, "PUBLIC_HTTP_PORT", cfg.PublicPort, public.Handler(a.Public)},
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range servers {
		addr := net.JoinHostPort(cfg.ListenHost, strconv.Itoa(s.port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: cannot listen on %s: %w", s.portVar, addr, err)
		}
		srv := &http.Server{
			Handler: s.h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
			WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second,
		}
		log.Info("serving", "function", s.name, "addr", "http://"+l.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

// guard returns the guards of the two local servers. Each also answers
// for the hosts of its configured URLs (PRIVATE_HTTP_HOST, PUBLIC_HTTP_HOST
// — with real GitHub the tunnel's public host — and the OAuth callback,
// which both serve).
func guard(cfg app.Config) (private, public loopback.Guard) {
	hosts := func(us ...*url.URL) []string {
		var hs []string
		for _, u := range us {
			if u != nil {
				hs = append(hs, loopback.Hostname(u.Host))
			}
		}
		return hs
	}
	webhookRoute := http.NewServeMux()
	webhookRoute.Handle(webhook.Route, http.NotFoundHandler())
	private = loopback.Guard{Hosts: hosts(cfg.PrivateURL, cfg.OAuthCallbackURL), Reject: web.Reject}
	public = loopback.Guard{
		Hosts: hosts(cfg.PublicURL, cfg.OAuthCallbackURL),
		// GitHub may send a delivery form-encoded; its signature is the guard.
		AnyContentType: func(r *http.Request) bool {
			_, pattern := webhookRoute.Handler(r)
			return pattern == webhook.Route
		},
		Reject: web.Reject,
	}
	return private, public
}

// ensureQueue creates the job queue on the Pub/Sub emulator.
func ensureQueue(ctx context.Context, cfg app.Config) error {
	ps, err := pubsub.NewClient(ctx, cfg.Project)
	if err != nil {
		return fmt.Errorf("pubsub client: %w", err)
	}
	defer ps.Close()
	names := queue.DefaultNames(cfg.Project)
	names.Topic = cfg.Topic
	if err := queue.Ensure(ctx, ps, names, queue.EnsureOptions{}); err != nil {
		return fmt.Errorf("create the job queue on the emulator: %w", err)
	}
	return nil
}
