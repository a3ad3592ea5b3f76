// Package client is kgd's typed HTTP client of the API service's gateway
// (the job history API kgd.jobs.v1 and the Skaffold v2 API) and of
// PrivateAPI (GitHub sign-in, tracking, deploy policy).
//
// Errors are *Error values carrying the canonical code of the answer
// (google.rpc.Status from the API service, {"ok":false,"error"} from
// PrivateAPI, or Unavailable when the server was not reached); ExitCode
// turns any error into kgd's exit code.
//
// Requests to a non-loopback URL carry a Google identity token (Cloud Run
// IAM) from the configured TokenSource; a plain-http non-loopback URL is
// refused before anything is sent.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Config configures a Client.
type Config struct {
	// APIURL is the API service's HTTP gateway ("http://localhost:50052",
	// or the Cloud Run service's https URL).
	APIURL string
	// PrivateAPIURL is PrivateAPI's base URL ("http://localhost:5000").
	PrivateAPIURL string
	// Tokens gives identity tokens for non-loopback URLs; nil makes every
	// request to one fail with UNAUTHENTICATED.
	Tokens TokenSource
	// HTTPClient makes the requests; nil means a client without a
	// timeout (unary calls get RequestTimeout; streams run until their
	// context ends).
	HTTPClient *http.Client
	// UserAgent is sent with every request.
	UserAgent string
	// RequestTimeout bounds each unary request; 0 means 60 seconds.
	RequestTimeout time.Duration
}

// Client calls the API service and PrivateAPI.
type Client struct {
	api, private *url.URL
	tokens       TokenSource
	http         *http.Client
	userAgent    string
	timeout      time.Duration
	// needsToken decides whether a URL gets a token (NeedsToken; tests
	// replace it to check the header against a loopback server).
	needsToken func(*url.URL) (bool, error)
}

// New returns a Client for cfg; both URLs must be absolute http(s) URLs.
func New(cfg Config) (*Client, error) {
	api, err := baseURL("API URL", cfg.APIURL)
	if err != nil {
		return nil, err
	}
	private, err := baseURL("PrivateAPI URL", cfg.PrivateAPIURL)
	if err != nil {
		return nil, err
	}
	c := &Client{api: api, private: private, tokens: cfg.Tokens, http: cfg.HTTPClient, userAgent: cfg.UserAgent,
		timeout: cfg.RequestTimeout, needsToken: NeedsToken}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.timeout == 0 {
		c.timeout = time.Minute
	}
	return c, nil
}

// baseURL parses a base URL, which must be http or https with a host; the
// path is kept with a trailing slash so relative paths resolve under it.
func baseURL(what, s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, &Error{Code: codes.InvalidArgument, Message: fmt.Sprintf("%s %q is not an http(s) URL like http://localhost:50052", what, s)}
	}
	u.RawQuery, u.Fragment = "", ""
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u, nil
}

// APIURL returns the API service's base URL.
func (c *Client) APIURL() string { return c.api.String() }

// PrivateAPIURL returns PrivateAPI's base URL.
func (c *Client) PrivateAPIURL() string { return c.private.String() }

// Repo is a repository's owner and name.
type Repo struct {
	Owner, Name string
}

func (r Repo) String() string { return r.Owner + "/" + r.Name }

// GitHub's rules for owner and repository names.
var (
	validOwner = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)
	validName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// ParseRepo parses "owner/name".
func ParseRepo(s string) (Repo, error) {
	owner, name, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || !validOwner.MatchString(owner) || !validName.MatchString(name) || name == "." || name == ".." {
		return Repo{}, &Error{Code: codes.InvalidArgument, Message: fmt.Sprintf("%q is not a repository: want OWNER/NAME, e.g. demo/hello", s)}
	}
	return Repo{Owner: owner, Name: name}, nil
}

// path returns "owner/name" escaped for a URL path.
func (r Repo) path() string { return url.PathEscape(r.Owner) + "/" + url.PathEscape(r.Name) }

// request is one HTTP request to a service.
type request struct {
	svc    service
	method string
	path   string // relative to the service's base URL, already escaped
	query  url.Values
	body   []byte // JSON; nil for none
	header http.Header
}

func (c *Client) base(svc service) *url.URL {
	if svc == servicePrivate {
		return c.private
	}
	return c.api
}

// send sends req and returns the response if it is 2xx; any other answer
// is an *Error read from its body. The caller closes the body.
func (c *Client) send(ctx context.Context, req request) (*http.Response, error) {
	base := c.base(req.svc)
	rel, err := url.Parse(req.path)
	if err != nil {
		return nil, fmt.Errorf("request path %q: %w", req.path, err)
	}
	u := base.ResolveReference(rel)
	if req.query != nil {
		u.RawQuery = req.query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.method, u.Redacted(), err)
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	if req.body != nil {
		// The local guard refuses POST and PUT bodies of other types.
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		hr.Header.Set("User-Agent", c.userAgent)
	}
	need, err := c.needsToken(base)
	if err != nil {
		return nil, err
	}
	if need {
		if c.tokens == nil {
			return nil, &Error{Code: codes.Unauthenticated, Message: "no identity token for " + base.Redacted(), Hint: hint(serviceAPI, codes.Unauthenticated)}
		}
		audience := (&url.URL{Scheme: base.Scheme, Host: base.Host}).String()
		tok, err := c.tokens.Token(ctx, audience)
		if err != nil {
			return nil, err
		}
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, context.Cause(ctx)
		}
		if ctx.Err() != nil {
			return nil, &Error{Code: codes.Unavailable, Message: fmt.Sprintf("no answer from %s in time", base.Redacted()), Err: err}
		}
		return nil, &Error{Code: codes.Unavailable, Message: fmt.Sprintf("cannot reach %s: %v", base.Redacted(), unwrapURLError(err)), Err: err}
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, errorOf(req.svc, resp.StatusCode, b)
	}
	return resp, nil
}

// unwrapURLError drops url.Error's "Get "…":" prefix, which repeats the
// URL the message already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// do sends a unary request and returns the answer's body.
func (c *Client) do(ctx context.Context, req request) ([]byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, &Error{Code: codes.Unavailable, Message: fmt.Sprintf("read the answer of %s: %v", c.base(req.svc).Redacted(), err), Err: err}
	}
	return b, resp.Header, nil
}

// maxBody bounds a unary answer: 32 MiB is far more than a page of jobs.
const maxBody = 32 << 20

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// getProto sends a unary request to the API service and decodes its
// protobuf JSON answer into m.
func (c *Client) getProto(ctx context.Context, req request, m proto.Message) (http.Header, error) {
	b, h, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := unmarshal.Unmarshal(b, m); err != nil {
		return nil, &Error{Code: codes.Internal, Message: fmt.Sprintf("the API answered %s %s with what is not a %s: %v",
			req.method, req.path, m.ProtoReflect().Descriptor().Name(), err)}
	}
	return h, nil
}

// maxLine bounds one line of a stream (one event).
const maxLine = 16 << 20

// stream sends a request whose answer is a grpc-gateway server stream, one
// {"result":…} or {"error":{…}} JSON object per line, and yields each
// result until the stream ends (the sequence then just ends), fails (an
// error is yielded last) or the consumer stops.
func (c *Client) stream(ctx context.Context, req request) iter.Seq2[json.RawMessage, error] {
	return func(yield func(json.RawMessage, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := c.send(ctx, req)
		if err != nil {
			yield(nil, err)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			var frame struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(line, &frame); err != nil {
				yield(nil, &Error{Code: codes.Internal, Message: fmt.Sprintf("the stream of %s sent what is not JSON: %.200s", req.path, line)})
				return
			}
			if frame.Error != nil && string(frame.Error) != "null" {
				yield(nil, errorOf(req.svc, 0, frame.Error))
				return
			}
			if !yield(frame.Result, nil) {
				return
			}
		}
		if ctx.Err() != nil {
			yield(nil, context.Cause(ctx))
			return
		}
		if err := sc.Err(); err != nil {
			yield(nil, &Error{Code: codes.Unavailable, Message: fmt.Sprintf("the stream of %s broke: %v", req.path, err), Err: err})
		}
	}
}

// streamOf decodes each result of a stream into a new message from newMsg.
func streamOf[M proto.Message](c *Client, ctx context.Context, req request, newMsg func() M) iter.Seq2[M, error] {
	return func(yield func(M, error) bool) {
		var zero M
		for raw, err := range c.stream(ctx, req) {
			if err != nil {
				yield(zero, err)
				return
			}
			m := newMsg()
			if err := unmarshal.Unmarshal(raw, m); err != nil {
				yield(zero, &Error{Code: codes.Internal, Message: fmt.Sprintf("the stream of %s sent what is not a %s: %v",
					req.path, m.ProtoReflect().Descriptor().Name(), err)})
				return
			}
			if !yield(m, nil) {
				return
			}
		}
	}
}

// jsonBody encodes v as a request body.
func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode request body %T: %v", v, err)) // only fixed shapes are encoded
	}
	return b
}
