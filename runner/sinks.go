package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/sink"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// sinkConfig is the operator's event sinks (README, docs/exports.md).
// Addresses come only from the runner's environment, never from a
// repository: a repository's own configuration must not make the runner
// call anything.
type sinkConfig struct {
	// webhookURL receives every batch's envelopes, signed with webhookKey
	// (KGD_SINK_WEBHOOK_URL, KGD_SINK_WEBHOOK_KEY or the Secret Manager
	// version KGD_SINK_WEBHOOK_KEY_SECRET).
	webhookURL       *url.URL
	webhookKey       []byte
	webhookKeySecret string
	// grpcTarget receives every job's v2 events (KGD_SINK_GRPC_TARGET),
	// over TLS unless it is a loopback address and KGD_SINK_GRPC_INSECURE
	// is true, with grpcToken as a bearer token (KGD_SINK_GRPC_TOKEN or
	// the Secret Manager version KGD_SINK_GRPC_TOKEN_SECRET).
	grpcTarget      string
	grpcInsecure    bool
	grpcToken       string
	grpcTokenSecret string
}

// load checks the sink settings.
func (c *sinkConfig) load(env func(v, def string) string, bad func(string, error)) {
	if v := env("KGD_SINK_WEBHOOK_URL", ""); v != "" {
		u, err := url.Parse(v)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.Fragment != "":
			bad("KGD_SINK_WEBHOOK_URL", fmt.Errorf("%q is not an absolute https:// URL", v))
		case u.Scheme == "http" && !loopbackHost(u.Hostname()):
			bad("KGD_SINK_WEBHOOK_URL", fmt.Errorf("%q: events leave only over https (http is allowed to loopback addresses only)", v))
		default:
			c.webhookURL = u
		}
		c.webhookKey = []byte(env("KGD_SINK_WEBHOOK_KEY", ""))
		c.webhookKeySecret = env("KGD_SINK_WEBHOOK_KEY_SECRET", "")
		switch {
		case len(c.webhookKey) > 0 && c.webhookKeySecret != "":
			bad("KGD_SINK_WEBHOOK_KEY_SECRET", errors.New("set either it or KGD_SINK_WEBHOOK_KEY, not both"))
		case c.webhookKeySecret != "" && !secretVersionName.MatchString(c.webhookKeySecret):
			bad("KGD_SINK_WEBHOOK_KEY_SECRET", fmt.Errorf("%q is not a secret version (projects/P/secrets/S/versions/latest)", c.webhookKeySecret))
		case c.webhookKeySecret == "" && len(c.webhookKey) < sink.MinSecretBytes:
			bad("KGD_SINK_WEBHOOK_KEY", fmt.Errorf("required with KGD_SINK_WEBHOOK_URL: the HMAC key, at least %d bytes", sink.MinSecretBytes))
		}
	} else if env("KGD_SINK_WEBHOOK_KEY", "") != "" || env("KGD_SINK_WEBHOOK_KEY_SECRET", "") != "" {
		bad("KGD_SINK_WEBHOOK_KEY", errors.New("set only together with KGD_SINK_WEBHOOK_URL"))
	}

	if c.grpcTarget = env("KGD_SINK_GRPC_TARGET", ""); c.grpcTarget != "" {
		host, port, err := net.SplitHostPort(c.grpcTarget)
		if err != nil || host == "" || port == "" {
			bad("KGD_SINK_GRPC_TARGET", fmt.Errorf("%q is not host:port", c.grpcTarget))
		}
		switch v := env("KGD_SINK_GRPC_INSECURE", "false"); v {
		case "true", "false":
			c.grpcInsecure = v == "true"
		default:
			bad("KGD_SINK_GRPC_INSECURE", fmt.Errorf("%q is neither true nor false", v))
		}
		if c.grpcInsecure && err == nil && !loopbackHost(host) {
			bad("KGD_SINK_GRPC_INSECURE", fmt.Errorf("events leave only over TLS (plaintext is allowed to loopback addresses only, not %s)", host))
		}
		c.grpcToken = env("KGD_SINK_GRPC_TOKEN", "")
		c.grpcTokenSecret = env("KGD_SINK_GRPC_TOKEN_SECRET", "")
		if c.grpcToken != "" && c.grpcTokenSecret != "" {
			bad("KGD_SINK_GRPC_TOKEN_SECRET", errors.New("set either it or KGD_SINK_GRPC_TOKEN, not both"))
		} else if c.grpcTokenSecret != "" && !secretVersionName.MatchString(c.grpcTokenSecret) {
			bad("KGD_SINK_GRPC_TOKEN_SECRET", fmt.Errorf("%q is not a secret version (projects/P/secrets/S/versions/latest)", c.grpcTokenSecret))
		}
	} else if env("KGD_SINK_GRPC_TOKEN", "") != "" || env("KGD_SINK_GRPC_TOKEN_SECRET", "") != "" || env("KGD_SINK_GRPC_INSECURE", "") != "" {
		bad("KGD_SINK_GRPC_TARGET", errors.New("required with KGD_SINK_GRPC_TOKEN, KGD_SINK_GRPC_TOKEN_SECRET or KGD_SINK_GRPC_INSECURE"))
	}
}

// needsSecrets reports whether a sink's key or token is in Secret Manager.
func (c *sinkConfig) needsSecrets() bool { return c.webhookKeySecret != "" || c.grpcTokenSecret != "" }

// loopbackHost reports whether host is localhost or a loopback address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sinks are the running sinks.
type sinks struct {
	send  []func(store.EventBatch)
	close []func(context.Context) error
}

// startSinks starts the configured sinks, reading their secrets with
// access.
func startSinks(ctx context.Context, c sinkConfig, access func(context.Context, string) ([]byte, error), log *slog.Logger) (*sinks, error) {
	s := &sinks{}
	if c.webhookURL != nil {
		key := c.webhookKey
		if c.webhookKeySecret != "" {
			b, err := access(ctx, c.webhookKeySecret)
			if err != nil {
				return nil, fmt.Errorf("KGD_SINK_WEBHOOK_KEY_SECRET: %w", err)
			}
			key = []byte(strings.TrimSpace(string(b)))
		}
		client := &http.Client{Timeout: sink.DefaultTimeout,
			// A redirect could send events elsewhere than the operator said.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		w, err := sink.NewWebhook(sink.WebhookConfig{URL: c.webhookURL.String(), AllowHTTP: c.webhookURL.Scheme == "http", Secret: key}, client, log)
		if err != nil {
			return nil, fmt.Errorf("KGD_SINK_WEBHOOK_URL: %w", err)
		}
		s.send, s.close = append(s.send, w.Send), append(s.close, w.Close)
	}
	if c.grpcTarget != "" {
		token := c.grpcToken
		if c.grpcTokenSecret != "" {
			b, err := access(ctx, c.grpcTokenSecret)
			if err != nil {
				s.stop(ctx, log)
				return nil, fmt.Errorf("KGD_SINK_GRPC_TOKEN_SECRET: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		g, err := sink.NewGRPC(sink.GRPCConfig{Target: c.grpcTarget, Insecure: c.grpcInsecure, Token: token}, log)
		if err != nil {
			s.stop(ctx, log)
			return nil, fmt.Errorf("KGD_SINK_GRPC_TARGET: %w", err)
		}
		s.send, s.close = append(s.send, g.Send), append(s.close, g.Close)
	}
	return s, nil
}

// stop delivers what the sinks hold until ctx ends, and stops them.
func (s *sinks) stop(ctx context.Context, log *slog.Logger) {
	for _, c := range s.close {
		if err := c(ctx); err != nil {
			log.Warn("runner stopping: an event sink was not sent everything", logging.KeyErr, err.Error())
		}
	}
}
