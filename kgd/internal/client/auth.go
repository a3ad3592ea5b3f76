package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/idtoken"
	"google.golang.org/grpc/codes"
)

// TokenSource gives Google identity tokens, which Cloud Run IAM checks in
// the Authorization header.
type TokenSource interface {
	// Token returns an identity token for audience, the base URL of the
	// service called ("https://kgd-api-xyz.a.run.app").
	Token(ctx context.Context, audience string) (string, error)
}

// NeedsToken reports whether requests to u carry an identity token:
// every URL but a loopback one (localhost, 127.0.0.0/8, [::1]), where the
// local stack answers without one. A plain-http URL of any other host is
// an error: a token sent there could be read on the way.
func NeedsToken(u *url.URL) (bool, error) {
	if isLoopback(u.Hostname()) {
		return false, nil
	}
	if u.Scheme != "https" {
		return false, &Error{Code: codes.InvalidArgument, Message: fmt.Sprintf(
			"refusing to send an identity token to %s over plain http: use an https URL (only localhost may be plain http)", u.Redacted())}
	}
	return true, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Tokens is kgd's TokenSource: KGD_ID_TOKEN if set, else `gcloud auth
// print-identity-token` if gcloud is on PATH, else Application Default
// Credentials (a service account key in GOOGLE_APPLICATION_CREDENTIALS, or
// the metadata server). Tokens are cached per audience for the life of the
// process (one command).
type Tokens struct {
	// Env is KGD_ID_TOKEN's value; empty when unset.
	Env string
	// LookPath finds gcloud (exec.LookPath); nil skips gcloud.
	LookPath func(file string) (string, error)

	mu    sync.Mutex
	cache map[string]string
}

// gcloudTimeout bounds `gcloud auth print-identity-token`, which may
// refresh credentials over the network.
const gcloudTimeout = 30 * time.Second

// Token implements TokenSource.
func (t *Tokens) Token(ctx context.Context, audience string) (string, error) {
	if t.Env != "" {
		return t.Env, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tok, ok := t.cache[audience]; ok {
		return tok, nil
	}
	var problems []string
	if t.LookPath != nil {
		if path, err := t.LookPath("gcloud"); err == nil {
			tok, err := gcloudToken(ctx, path)
			if err == nil {
				return t.keep(audience, tok), nil
			}
			problems = append(problems, err.Error())
		}
	}
	ts, err := idtoken.NewTokenSource(ctx, audience)
	if err == nil {
		var tok *oauth2.Token
		if tok, err = ts.Token(); err == nil && tok.AccessToken != "" {
			return t.keep(audience, tok.AccessToken), nil
		}
		if err == nil {
			err = errors.New("empty token")
		}
	}
	problems = append(problems, "application default credentials: "+err.Error())
	return "", &Error{Code: codes.Unauthenticated, Message: fmt.Sprintf("no Google identity token for %s (%s)", audience, strings.Join(problems, "; ")),
		Hint: "run `gcloud auth login`, or set KGD_ID_TOKEN, or GOOGLE_APPLICATION_CREDENTIALS to a service account key"}
}

func (t *Tokens) keep(audience, tok string) string {
	if t.cache == nil {
		t.cache = map[string]string{}
	}
	t.cache[audience] = tok
	return tok
}

// gcloudToken runs `gcloud auth print-identity-token`.
func gcloudToken(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, gcloudTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "auth", "print-identity-token", "--quiet")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return "", fmt.Errorf("gcloud auth print-identity-token: %v: %s", err, msg)
	}
	tok := strings.TrimSpace(stdout.String())
	if tok == "" {
		return "", errors.New("gcloud auth print-identity-token printed nothing")
	}
	return tok, nil
}
