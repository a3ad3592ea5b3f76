// Package build builds a unit's container image through the Docker Engine API,
// streams the daemon's output as log lines, optionally pushes the image and
// reports the digest of the pushed manifest.
package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	buildtypes "github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/name"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
)

// Builder builds and pushes images with one Docker Engine API client.
// It holds no per-build state and is safe for concurrent use.
type Builder struct {
	docker *client.Client
}

// New returns a Builder that talks to the daemon behind docker. Callers
// usually create docker with client.FromEnv and
// client.WithAPIVersionNegotiation so that DOCKER_HOST is honoured and
// older daemons (API 1.41) are supported.
func New(docker *client.Client) *Builder {
	return &Builder{docker: docker}
}

// Request describes one image build.
type Request struct {
	// ContextDir is the absolute directory sent to the daemon as build
	// context. Patterns in its .dockerignore are honoured (see matchIgnore
	// for the supported subset).
	ContextDir string
	// Dockerfile is the Dockerfile's path relative to ContextDir; it must
	// stay inside ContextDir. Empty means "Dockerfile".
	Dockerfile string
	// Tag is the full image reference with tag, e.g.
	// 127.0.0.1:5000/app:abc1234.
	Tag string
	// Args are the build args (Dockerfile ARG values).
	Args map[string]string
	// Target is the multi-stage build target; empty builds the last stage.
	Target string
	// Push pushes Tag to its registry after a successful build.
	Push bool
	// Auth returns the credentials for registryHost (e.g.
	// "europe-west1-docker.pkg.dev"); they are sent to the daemon as the
	// X-Registry-Auth header of the push. Nil pushes anonymously. In the
	// cloud the runner passes a func returning ("oauth2accesstoken", <Google
	// access token>) for *-docker.pkg.dev hosts. Docker credential helpers
	// are never consulted.
	Auth func(ctx context.Context, registryHost string) (user, password string, err error)
}

// Result describes a built (and possibly pushed) image.
type Result struct {
	// Tag is the image reference that was built.
	Tag string
	// Digest is the "sha256:..." digest of the pushed manifest; empty
	// unless Request.Push was set.
	Digest string
	// ImageID is the daemon's local image ID ("sha256:...").
	ImageID string
}

// Error is a build failure classified with a Skaffold-compatible status
// code. Build returns it wrapped; use errors.As to get it.
type Error struct {
	// Code classifies the failure, e.g. BUILD_USER_ERROR when a Dockerfile
	// step failed.
	Code enumspb.StatusCode
	// Msg is a human-readable description fit for the user.
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

// Error returns Msg followed by the cause, if any.
func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Msg
	case e.Msg == "":
		return e.Err.Error()
	default:
		return e.Msg + ": " + e.Err.Error()
	}
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// notRunningMsg tells the user how to make the daemon reachable.
const notRunningMsg = "cannot reach the Docker daemon: start it (e.g. `sudo systemctl start docker` or `dockerd`) or set DOCKER_HOST to a reachable daemon"

// Ping checks that the Docker daemon answers. It returns an *Error with
// code BUILD_DOCKER_DAEMON_NOT_RUNNING (or BUILD_DOCKER_CANCELLED when ctx
// ends) if it does not.
func Ping(ctx context.Context, docker *client.Client) error {
	if _, err := docker.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			return &Error{Code: enumspb.StatusCode_BUILD_DOCKER_CANCELLED, Msg: "ping docker daemon", Err: err}
		}
		return &Error{Code: enumspb.StatusCode_BUILD_DOCKER_DAEMON_NOT_RUNNING, Msg: notRunningMsg, Err: err}
	}
	return nil
}

// Build builds req.Tag from req.ContextDir with the daemon's legacy builder
// and, if req.Push is set, pushes it. It calls out with each human-readable
// line of the daemon's build and push output as soon as it arrives (push
// progress is reduced to one line per layer and status). out may be nil; it
// is called from Build's goroutine only.
//
// Errors are *Error values wrapped as "build <tag>: ...". Cancelling ctx
// aborts the build or push and yields BUILD_DOCKER_CANCELLED. The image is
// left in the daemon's store; callers remove it if they wish.
func (b *Builder) Build(ctx context.Context, req Request, out func(line string)) (Result, error) {
	if out == nil {
		out = func(string) {}
	}
	res, err := b.build(ctx, req, out)
	if err != nil {
		return res, fmt.Errorf("build %s: %w", req.Tag, err)
	}
	return res, nil
}

func (b *Builder) build(ctx context.Context, req Request, out func(string)) (Result, error) {
	res := Result{Tag: req.Tag}
	ref, err := name.NewTag(req.Tag)
	if err != nil {
		return res, &Error{Code: enumspb.StatusCode_BUILD_DOCKER_INVALID_PARAM_ERR, Msg: "invalid image tag", Err: err}
	}
	dockerfile, err := checkDockerfile(req.ContextDir, req.Dockerfile)
	if err != nil {
		return res, err
	}

	// Encode credentials before building so a bad Auth fails fast.
	var registryAuth string
	if req.Push && req.Auth != nil {
		host := ref.Context().RegistryStr()
		user, password, err := req.Auth(ctx, host)
		if err != nil {
			return res, &Error{Code: enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED, Msg: "get credentials for " + host, Err: err}
		}
		registryAuth, err = registry.EncodeAuthConfig(registry.AuthConfig{Username: user, Password: password, ServerAddress: host})
		if err != nil {
			return res, &Error{Code: enumspb.StatusCode_BUILD_DOCKER_UNKNOWN, Msg: "encode registry credentials", Err: err}
		}
	}

	res.ImageID, err = b.runBuild(ctx, req, dockerfile, out)
	if err != nil {
		return res, err
	}
	if res.ImageID == "" {
		inspect, err := b.docker.ImageInspect(ctx, req.Tag)
		if err != nil {
			return res, classify(ctx, "inspect built image", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
		}
		res.ImageID = inspect.ID
	}
	if !req.Push {
		return res, nil
	}
	res.Digest, err = b.push(ctx, req.Tag, registryAuth, out)
	if err != nil {
		return res, err
	}
	if res.Digest == "" {
		res.Digest, err = b.repoDigest(ctx, ref)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// checkDockerfile returns the slash-separated Dockerfile path relative to
// contextDir after checking that it is a regular file inside contextDir
// (symlinks included, via os.Root).
func checkDockerfile(contextDir, dockerfile string) (string, error) {
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	notFound := func(err error) error {
		return &Error{
			Code: enumspb.StatusCode_BUILD_DOCKERFILE_NOT_FOUND,
			Msg:  fmt.Sprintf("Dockerfile %q not found in build context %q", dockerfile, contextDir),
			Err:  err,
		}
	}
	if !filepath.IsAbs(contextDir) {
		return "", notFound(errors.New("build context directory must be absolute"))
	}
	if !filepath.IsLocal(dockerfile) {
		return "", notFound(errors.New("the Dockerfile path must stay inside the build context"))
	}
	root, err := os.OpenRoot(contextDir)
	if err != nil {
		return "", notFound(err)
	}
	defer root.Close()
	fi, err := root.Stat(dockerfile)
	if err != nil {
		return "", notFound(err)
	}
	if !fi.Mode().IsRegular() {
		return "", notFound(errors.New("not a regular file"))
	}
	return filepath.ToSlash(filepath.Clean(dockerfile)), nil
}

// runBuild sends the context, streams the build output and returns the
// image ID from the aux message (empty if the daemon sent none).
func (b *Builder) runBuild(ctx context.Context, req Request, dockerfile string, out func(string)) (string, error) {
	pr, pw := io.Pipe()
	// The writer goroutine ends when the tar is complete or when the reader
	// side is closed below, whichever comes first.
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(writeContext(pw, req.ContextDir, dockerfile))
	}()
	defer func() {
		pr.Close()
		<-done
	}()

	args := make(map[string]*string, len(req.Args))
	for k, v := range req.Args {
		args[k] = &v
	}
	resp, err := b.docker.ImageBuild(ctx, pr, buildtypes.ImageBuildOptions{
		Tags:        []string{req.Tag},
		Dockerfile:  dockerfile,
		BuildArgs:   args,
		Target:      req.Target,
		Remove:      true,
		ForceRemove: true,
		Version:     buildtypes.BuilderV1,
	})
	if err != nil {
		if ctx.Err() == nil && cerrdefs.IsInvalidArgument(err) {
			// The legacy builder rejects unparsable Dockerfiles (unknown
			// instruction, bad syntax) with 400 before streaming.
			return "", &Error{Code: enumspb.StatusCode_BUILD_USER_ERROR, Msg: "invalid Dockerfile", Err: err}
		}
		return "", classify(ctx, "start build", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	defer resp.Body.Close()

	var imageID string
	err = readStream(resp.Body, out, func(aux json.RawMessage) {
		var id struct{ ID string }
		if json.Unmarshal(aux, &id) == nil && id.ID != "" {
			imageID = id.ID
		}
	})
	if err != nil {
		var jerr *jsonmessage.JSONError
		if errors.As(err, &jerr) {
			return "", &Error{Code: enumspb.StatusCode_BUILD_USER_ERROR, Msg: jerr.Message}
		}
		return "", classify(ctx, "read build output", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	return imageID, nil
}

// push pushes tag and returns the manifest digest from the aux message
// (empty if the daemon sent none).
func (b *Builder) push(ctx context.Context, tag, registryAuth string, out func(string)) (string, error) {
	body, err := b.docker.ImagePush(ctx, tag, image.PushOptions{RegistryAuth: registryAuth})
	if err != nil {
		if cerrdefs.IsUnauthorized(err) || cerrdefs.IsPermissionDenied(err) {
			return "", &Error{Code: enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED, Msg: "push denied", Err: err}
		}
		return "", classify(ctx, "start push", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	defer body.Close()

	var digest string
	err = readStream(body, out, func(aux json.RawMessage) {
		var d struct{ Digest string }
		if json.Unmarshal(aux, &d) == nil && d.Digest != "" {
			digest = d.Digest
		}
	})
	if err != nil {
		var jerr *jsonmessage.JSONError
		if errors.As(err, &jerr) {
			code := enumspb.StatusCode_BUILD_DOCKER_UNKNOWN
			if isAccessDenied(jerr) {
				code = enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED
			}
			return "", &Error{Code: code, Msg: jerr.Message}
		}
		return "", classify(ctx, "read push output", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	return digest, nil
}

// isAccessDenied reports whether a push error from the daemon's stream is
// an authentication or authorization failure. The daemon (API 1.41) sends
// no structured code for these, so its wording is matched; this is the
// only place the package inspects message text.
func isAccessDenied(jerr *jsonmessage.JSONError) bool {
	if jerr.Code == 401 || jerr.Code == 403 {
		return true
	}
	msg := strings.ToLower(jerr.Message)
	for _, s := range []string{"unauthorized", "denied", "authentication required", "no basic auth credentials", "401", "403", "forbidden"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// repoDigest returns the digest the daemon recorded for ref's repository.
func (b *Builder) repoDigest(ctx context.Context, ref name.Tag) (string, error) {
	inspect, err := b.docker.ImageInspect(ctx, ref.String())
	if err != nil {
		return "", classify(ctx, "inspect pushed image", err, enumspb.StatusCode_BUILD_DOCKER_GET_DIGEST_ERR)
	}
	repo := ref.Context().Name()
	for _, rd := range inspect.RepoDigests {
		r, d, ok := strings.Cut(rd, "@")
		if !ok {
			continue
		}
		if parsed, err := name.NewRepository(r); err == nil && parsed.Name() == repo {
			return d, nil
		}
	}
	return "", &Error{Code: enumspb.StatusCode_BUILD_DOCKER_GET_DIGEST_ERR, Msg: "no digest for " + repo + " after push"}
}

// classify turns a Docker client error into an *Error: cancellation,
// unreachable daemon, or fallback.
func classify(ctx context.Context, doing string, err error, fallback enumspb.StatusCode) error {
	switch {
	case ctx.Err() != nil:
		return &Error{Code: enumspb.StatusCode_BUILD_DOCKER_CANCELLED, Msg: doing, Err: ctx.Err()}
	case client.IsErrConnectionFailed(err):
		return &Error{Code: enumspb.StatusCode_BUILD_DOCKER_DAEMON_NOT_RUNNING, Msg: notRunningMsg, Err: err}
	default:
		return &Error{Code: fallback, Msg: doing, Err: err}
	}
}

// isRetryTick reports whether status continues the daemon's once-a-second
// "Retrying in N seconds" countdown that last started.
func isRetryTick(last, status string) bool {
	var lastN, n int
	if _, err := fmt.Sscanf(last, "Retrying in %d", &lastN); err != nil {
		return false
	}
	if _, err := fmt.Sscanf(status, "Retrying in %d", &n); err != nil {
		return false
	}
	return n < lastN
}

// readStream decodes the daemon's JSON message stream, calling out with each
// complete line as it arrives and aux with each aux payload. It returns the
// stream's errorDetail as a *jsonmessage.JSONError.
func readStream(r io.Reader, out func(string), aux func(json.RawMessage)) error {
	dec := json.NewDecoder(r)
	var partial strings.Builder // stream text not yet terminated by '\n'
	flush := func() {
		if line := strings.TrimRight(partial.String(), "\r\n"); strings.TrimSpace(line) != "" {
			out(line)
		}
		partial.Reset()
	}
	defer flush()
	lastStatus := map[string]string{} // layer ID → last status reported
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if m.Error != nil {
			return m.Error
		}
		//lint:ignore SA1019 a daemon may still send only the legacy error field
		if m.ErrorMessage != "" {
			//lint:ignore SA1019 see above
			return &jsonmessage.JSONError{Message: m.ErrorMessage}
		}
		if m.Aux != nil {
			aux(*m.Aux)
		}
		if m.Stream != "" {
			text := m.Stream
			for {
				i := strings.IndexByte(text, '\n')
				if i < 0 {
					partial.WriteString(text)
					break
				}
				partial.WriteString(text[:i])
				flush()
				text = text[i+1:]
			}
		}
		if m.Status != "" {
			// Progress ticks repeat the same status for a layer; report
			// each layer's status once per change.
			if m.ID != "" {
				last := lastStatus[m.ID]
				lastStatus[m.ID] = m.Status
				if last == m.Status || isRetryTick(last, m.Status) {
					continue
				}
				out(m.ID + ": " + m.Status)
				continue
			}
			out(strings.TrimRight(m.Status, "\r\n"))
		}
	}
}
