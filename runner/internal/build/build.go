// Package build builds a unit's container image through the Docker Engine API,
// streams the daemon's output as log lines, optionally pushes the image and
// reports the digest of the pushed manifest.
//
// # Builders
//
// The daemon has two builders, chosen per Builder with WithBackend:
// BuildKit, which modern Dockerfiles need (RUN --mount=type=cache,
// parallel stages, --target skipping unused stages) and which can start
// warm from a registry (Request.CacheFrom, with the cache exported inline
// in every image it builds), and the deprecated legacy builder. The
// default, BackendAuto, uses BuildKit when the engine offers it and falls
// back to the legacy builder, once and saying so in the output, when the
// engine refuses a BuildKit build.
//
// The trade-off: BuildKit ignores Request.Memory and Request.CPUs
// (Docker 20.10's builder-next, tested: the RUN steps' cgroups have no
// limit), while the legacy builder enforces them. An operator who needs
// hard limits per build selects BackendLegacy, or limits the daemon's own
// cgroup. BuildKit runs here without a session, so base images and cache
// sources are pulled anonymously (BuildKit ignores the X-Registry-Config
// credentials of the build request): private base images are not
// supported.
//
// BuildKit reports its progress as protobuf messages; they are decoded
// here (see decodeTrace) without depending on BuildKit's module, and
// turned into lines like the docker CLI's plain progress output (see
// progressPrinter), under the same limits as the legacy builder's output.
package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	buildtypes "github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/name"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/workspace"
)

// Builder builds and pushes images with one Docker Engine API client.
// It holds no per-build state and is safe for concurrent use.
type Builder struct {
	docker  *client.Client
	backend Backend
}

// Backend names the daemon's builder a Builder uses.
type Backend string

// The backends.
const (
	// BackendAuto builds with BuildKit when the engine offers it (see
	// Builder.Build) and falls back to the legacy builder when the engine
	// refuses a BuildKit build.
	BackendAuto Backend = "auto"
	// BackendBuildKit always builds with BuildKit; an engine that refuses
	// fails the build with BUILD_DOCKER_NOT_IMPLEMENTED_ERR.
	BackendBuildKit Backend = "buildkit"
	// BackendLegacy always builds with the legacy builder, which enforces
	// Request.Memory and Request.CPUs.
	BackendLegacy Backend = "legacy"
)

// ParseBackend returns the Backend named s: "auto", "buildkit" or
// "legacy".
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case BackendAuto, BackendBuildKit, BackendLegacy:
		return b, nil
	}
	return "", fmt.Errorf("unknown builder %q: want auto, buildkit or legacy", s)
}

// Option configures a Builder.
type Option func(*Builder)

// WithBackend selects the daemon's builder; the default is BackendAuto.
func WithBackend(b Backend) Option {
	return func(bl *Builder) { bl.backend = b }
}

// New returns a Builder that talks to the daemon behind docker. Callers
// usually create docker with client.FromEnv and
// client.WithAPIVersionNegotiation so that DOCKER_HOST is honoured and
// older daemons (API 1.41) are supported.
func New(docker *client.Client, opts ...Option) *Builder {
	b := &Builder{docker: docker, backend: BackendAuto}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Defaults of the limits in Request.
const (
	// DefaultMaxContextBytes is the default limit of the build context's
	// file content (2 GiB).
	DefaultMaxContextBytes = 2 << 30
	// DefaultTimeout is the default bound of a build and its push.
	DefaultTimeout = 30 * time.Minute
	// DefaultMaxLineBytes is the default length limit of one output line
	// (8 KiB).
	DefaultMaxLineBytes = 8 << 10
	// DefaultMaxLogBytes is the default limit of a build's output passed
	// on (2 MiB).
	DefaultMaxLogBytes = 2 << 20
)

// Request describes one image build.
type Request struct {
	// Context is the build context directory, opened as a root of its own
	// (workspace.Tree.Sub). It is read only through this root, so nothing
	// outside it is sent to the daemon: see writeContext. Patterns in its
	// .dockerignore are honoured (see parseIgnore for the supported
	// subset). Build does not close it.
	Context *os.Root
	// Dockerfile is the Dockerfile's slash-separated path relative to
	// Context; it must stay inside Context. Empty means "Dockerfile".
	Dockerfile string
	// Tag is the full image reference with tag, e.g.
	// 127.0.0.1:5000/app:abc1234.
	Tag string
	// Args are the build args (Dockerfile ARG values).
	Args map[string]string
	// Target is the multi-stage build target; empty builds the last stage.
	Target string
	// CacheFrom lists image references (e.g. the unit's previous image,
	// tag@digest) whose build cache BuildKit may reuse: each is looked up
	// in its registry, and the steps whose cache it carries are not run
	// again (reported "CACHED"). It lets a build on a new runner, with an
	// empty local cache, start warm. A reference that cannot be read
	// (missing, registry down) is skipped without failing the build.
	// Images built with BuildKit carry their cache inline
	// (BUILDKIT_INLINE_CACHE=1), so each can serve the next build.
	// The legacy builder ignores CacheFrom: it could only use local
	// images, and only them instead of its local cache.
	CacheFrom []string
	// Push pushes Tag to its registry after a successful build.
	Push bool
	// Auth returns the credentials for registryHost (e.g.
	// "europe-west1-docker.pkg.dev"); they are sent to the daemon as the
	// X-Registry-Auth header of the push. Nil pushes anonymously. In the
	// cloud the runner passes a func returning ("oauth2accesstoken", <Google
	// access token>) for *-docker.pkg.dev hosts. Docker credential helpers
	// are never consulted.
	Auth func(ctx context.Context, registryHost string) (user, password string, err error)

	// MaxContextBytes limits the size of the context's files together;
	// zero means DefaultMaxContextBytes. A larger context fails the build
	// with BUILD_USER_ERROR before the daemon builds anything.
	MaxContextBytes int64
	// Memory limits the memory of each RUN step's container, in bytes,
	// swap included (MemorySwap = Memory); zero means no limit. A step
	// over it is killed and the build fails with BUILD_USER_ERROR.
	//
	// Memory and CPUs are applied by the daemon's legacy builder only
	// (tested with Docker 20.10: the RUN step's cgroup gets them, and a
	// step over Memory is killed with code 137). BuildKit ignores both
	// (moby builder-next; tested): with BackendAuto or BackendBuildKit
	// they must be enforced some other way, e.g. on the daemon's cgroup.
	Memory int64
	// CPUs limits each RUN step's container to this many CPUs
	// (CPUQuota/CPUPeriod, with a period of 100 ms); zero means no limit.
	CPUs float64
	// Timeout bounds the build and the push together; zero means
	// DefaultTimeout. When it expires the build is stopped and Build
	// fails with BUILD_DOCKER_DEADLINE.
	Timeout time.Duration
	// MaxLineBytes limits each line passed to out; a longer line is cut
	// and ends with " … [line truncated: N bytes]", N being its full
	// length. The "#N 1.234 " that starts a line of a BuildKit step's
	// output comes on top. Zero means DefaultMaxLineBytes.
	MaxLineBytes int
	// MaxLogBytes limits the output passed to out for the whole Build;
	// after it, one line "… [build log truncated after N bytes; the build
	// goes on]" is passed and the rest dropped, while the build goes on.
	// Zero means DefaultMaxLogBytes.
	MaxLogBytes int64
}

// withDefaults returns r with zero limits replaced by their defaults.
func (r Request) withDefaults() Request {
	if r.MaxContextBytes <= 0 {
		r.MaxContextBytes = DefaultMaxContextBytes
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	if r.MaxLineBytes <= 0 {
		r.MaxLineBytes = DefaultMaxLineBytes
	}
	if r.MaxLogBytes <= 0 {
		r.MaxLogBytes = DefaultMaxLogBytes
	}
	return r
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

// CPU quota of build steps, in microseconds per period.
const (
	cpuPeriod   = 100_000
	minCPUQuota = 1_000 // the kernel's minimum
)

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

// errRequestEnded stops the writer of a build context the daemon no
// longer reads.
var errRequestEnded = errors.New("build request ended")

// errTimeout is the cause of a context ended by Request.Timeout.
var errTimeout = errors.New("build timeout")

// Build builds req.Tag from req.Context with the Builder's backend and,
// if req.Push is set, pushes it. It calls out with each human-readable
// line of the daemon's build and push output as soon as it arrives
// (BuildKit's progress in the docker CLI's plain format, push progress
// reduced to one line per layer and status), within the limits of
// req.MaxLineBytes and req.MaxLogBytes. out may be nil; it is called from
// Build's goroutine only.
//
// With BackendAuto, Build asks the engine first (GET /_ping): it builds
// with the legacy builder, saying why in the output, if the engine
// prefers it (its features.buildkit is false), runs Windows containers,
// or has an API older than 1.39 (Docker 18.09, the first to offer
// BuildKit without experimental mode); otherwise with BuildKit, and
// again with the legacy builder if the engine refuses the BuildKit
// request.
//
// Errors are *Error values wrapped as "build <tag>: ...". Cancelling ctx
// aborts the build or push and yields BUILD_DOCKER_CANCELLED; req.Timeout
// expiring yields BUILD_DOCKER_DEADLINE. The image is left in the
// daemon's store; callers remove it if they wish (see Prune).
func (b *Builder) Build(ctx context.Context, req Request, out func(line string)) (Result, error) {
	if out == nil {
		out = func(string) {}
	}
	req = req.withDefaults()
	limit := &logLimit{max: req.MaxLogBytes, out: out}
	bctx, cancel := context.WithTimeoutCause(ctx, req.Timeout, errTimeout)
	defer cancel()
	res, err := b.build(bctx, req, limit.line)
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(bctx), errTimeout) {
			err = &Error{Code: enumspb.StatusCode_BUILD_DOCKER_DEADLINE,
				Msg: fmt.Sprintf("the build and push did not finish within %v and were stopped", req.Timeout),
				Err: context.DeadlineExceeded}
		}
		return res, fmt.Errorf("build %s: %w", req.Tag, err)
	}
	return res, nil
}

// maxCacheRaceTries bounds how often a build that lost the engine's cache
// race (isCacheRace) is run.
const maxCacheRaceTries = 3

// isCacheRace reports the legacy builder's error when an image it was
// looking at in its cache disappeared mid-lookup.
func isCacheRace(err error) bool {
	return strings.Contains(err.Error(), `unable to find image "sha256:`)
}

func (b *Builder) build(ctx context.Context, req Request, out func(string)) (Result, error) {
	res := Result{Tag: req.Tag}
	ref, err := name.NewTag(req.Tag)
	if err != nil {
		return res, &Error{Code: enumspb.StatusCode_BUILD_DOCKER_INVALID_PARAM_ERR, Msg: "invalid image tag", Err: err}
	}
	if req.Context == nil {
		return res, &Error{Code: enumspb.StatusCode_BUILD_DOCKER_INVALID_PARAM_ERR, Msg: "no build context"}
	}
	for _, ref := range req.CacheFrom {
		if _, err := name.ParseReference(ref); err != nil {
			return res, &Error{Code: enumspb.StatusCode_BUILD_DOCKER_INVALID_PARAM_ERR, Msg: "invalid cache source " + strconv.Quote(ref), Err: err}
		}
	}
	if _, err := ParseBackend(string(b.backend)); err != nil {
		return res, &Error{Code: enumspb.StatusCode_BUILD_DOCKER_INVALID_PARAM_ERR, Msg: "builder", Err: err}
	}
	dockerfile, err := checkDockerfile(req.Context, req.Dockerfile)
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

	buildkit, err := b.useBuildKit(ctx, out)
	if err != nil {
		return res, err
	}
	res.ImageID, err = b.runBuild(ctx, req, dockerfile, buildkit, out)
	if buildkit && b.backend == BackendAuto && isNoBuildKit(err) && ctx.Err() == nil {
		out(fmt.Sprintf("The engine refused to build with BuildKit (%v); building with the legacy builder", errors.Unwrap(err)))
		buildkit = false
		res.ImageID, err = b.runBuild(ctx, req, dockerfile, buildkit, out)
	}
	for try := 1; !buildkit && err != nil && try < maxCacheRaceTries && isCacheRace(err) && ctx.Err() == nil; try++ {
		// Docker's legacy builder looks its cache up among all images
		// with the same parent and fails if one of them is removed
		// meanwhile (by Prune, another build's cleanup, an operator):
		// a race of the engine, not of the build. Run it again.
		out(fmt.Sprintf("Image removed during the cache lookup; building again (%s)", err))
		res.ImageID, err = b.runBuild(ctx, req, dockerfile, buildkit, out)
	}
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
	res.Digest, err = b.push(ctx, req.Tag, registryAuth, req.MaxLineBytes, out)
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

// checkDockerfile returns the clean slash-separated Dockerfile path after
// checking that it leads, inside root, to a regular file (symbolic links
// included).
func checkDockerfile(root *os.Root, dockerfile string) (string, error) {
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	notFound := func(err error) error {
		msg := fmt.Sprintf("Dockerfile %q not found in the build context", dockerfile)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			msg += ": " + err.Error()
		}
		return &Error{Code: enumspb.StatusCode_BUILD_DOCKERFILE_NOT_FOUND, Msg: msg, Err: err}
	}
	if !filepath.IsLocal(filepath.FromSlash(dockerfile)) {
		return "", notFound(errors.New("the Dockerfile path must stay inside the build context"))
	}
	fi, err := workspace.NewTree(root, "the build context").Stat(dockerfile)
	if err != nil {
		return "", notFound(err)
	}
	if !fi.Mode().IsRegular() {
		return "", notFound(errors.New("not a regular file"))
	}
	return path.Clean(filepath.ToSlash(dockerfile)), nil
}

// contextError classifies an error writing the build context.
func contextError(ctx context.Context, err error) error {
	var werr *workspace.Error
	switch {
	case ctx.Err() != nil:
		return classify(ctx, "send build context", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	case errors.As(err, &werr) && !errors.Is(err, fs.ErrNotExist), errors.Is(err, errContextTooLarge):
		return &Error{Code: enumspb.StatusCode_BUILD_USER_ERROR, Msg: "build context: " + err.Error(), Err: err}
	default:
		return &Error{Code: enumspb.StatusCode_BUILD_DOCKER_UNKNOWN, Msg: "read build context: " + err.Error(), Err: err}
	}
}

// minBuildKitAPI is the first Engine API version whose daemons build
// with BuildKit outside experimental mode (Docker 18.09).
const minBuildKitAPI = "1.39"

// useBuildKit reports whether to build with BuildKit. For BackendAuto it
// asks the engine, and says in out why it builds with the legacy
// builder, if it does.
func (b *Builder) useBuildKit(ctx context.Context, out func(string)) (bool, error) {
	switch b.backend {
	case BackendBuildKit:
		return true, nil
	case BackendLegacy:
		return false, nil
	}
	ping, err := b.docker.Ping(ctx)
	if err != nil {
		return false, classify(ctx, "ping docker daemon", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	var why string
	switch {
	case ping.BuilderVersion == buildtypes.BuilderBuildKit:
		return true, nil
	case ping.BuilderVersion == buildtypes.BuilderV1:
		why = "the engine prefers it (features.buildkit is false)"
	case ping.OSType == "windows":
		why = "the engine runs Windows containers"
	case ping.APIVersion == "" || versions.LessThan(ping.APIVersion, minBuildKitAPI):
		why = fmt.Sprintf("the engine's API version %q is older than %s (Docker 18.09)", ping.APIVersion, minBuildKitAPI)
	default:
		return true, nil
	}
	out("Building with the legacy builder: " + why)
	return false, nil
}

// isNoBuildKit reports whether err is the engine refusing a BuildKit
// build (see runBuild).
func isNoBuildKit(err error) bool {
	var berr *Error
	return errors.As(err, &berr) && berr.Code == enumspb.StatusCode_BUILD_DOCKER_NOT_IMPLEMENTED_ERR
}

// refusesBuildKit reports whether the engine's answer to a BuildKit build
// request, before any output, says it does not build with BuildKit:
// Docker 18.06 answers 400 "buildkit is only supported with experimental
// mode", engines that do not know the builder version 400 "invalid
// version", others may answer 501.
func refusesBuildKit(err error) bool {
	if cerrdefs.IsNotImplemented(err) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return cerrdefs.IsInvalidArgument(err) && (strings.Contains(msg, "buildkit") || strings.Contains(msg, "invalid version"))
}

// inlineCacheArg makes BuildKit export the build cache inline, into the
// image's config, where Request.CacheFrom finds it. It is the only cache
// export the Engine API offers.
const inlineCacheArg = "BUILDKIT_INLINE_CACHE"

// runBuild sends the context, streams the build output and returns the
// image ID from the aux message (empty if the daemon sent none). An
// engine refusing a BuildKit build yields an *Error with code
// BUILD_DOCKER_NOT_IMPLEMENTED_ERR (see isNoBuildKit).
func (b *Builder) runBuild(ctx context.Context, req Request, dockerfile string, buildkit bool, out func(string)) (string, error) {
	pr, pw := io.Pipe()
	// The writer goroutine ends when the tar is complete or when the reader
	// side is closed below, whichever comes first.
	done := make(chan struct{})
	var writeErr error
	go func() {
		defer close(done)
		writeErr = writeContext(ctx, pw, req.Context, dockerfile, req.MaxContextBytes)
		pw.CloseWithError(writeErr)
	}()
	// contextErr waits for the writer and returns its error, if any: a
	// refused context explains a failed request better than the
	// request's own error.
	contextErr := func() error {
		pr.CloseWithError(errRequestEnded)
		<-done
		// The client closing the request body, or us, stops the writer
		// with these: they are not the context's fault.
		if writeErr != nil && !errors.Is(writeErr, errRequestEnded) && !errors.Is(writeErr, io.ErrClosedPipe) {
			return contextError(ctx, writeErr)
		}
		return nil
	}
	defer contextErr()

	args := make(map[string]*string, len(req.Args)+1)
	for k, v := range req.Args {
		args[k] = &v
	}
	opts := buildtypes.ImageBuildOptions{
		Tags:        []string{req.Tag},
		Dockerfile:  dockerfile,
		BuildArgs:   args,
		Target:      req.Target,
		Remove:      true,
		ForceRemove: true,
		Version:     buildtypes.BuilderV1,
	}
	if buildkit {
		opts.Version = buildtypes.BuilderBuildKit
		opts.CacheFrom = req.CacheFrom
		if _, ok := args[inlineCacheArg]; !ok {
			one := "1"
			args[inlineCacheArg] = &one
		}
	}
	if req.Memory > 0 {
		opts.Memory, opts.MemorySwap = req.Memory, req.Memory
	}
	if req.CPUs > 0 {
		opts.CPUPeriod = cpuPeriod
		opts.CPUQuota = max(int64(req.CPUs*cpuPeriod), minCPUQuota)
	}
	resp, err := b.docker.ImageBuild(ctx, pr, opts)
	if err != nil {
		if cerr := contextErr(); cerr != nil {
			return "", cerr
		}
		switch {
		case ctx.Err() != nil:
		case buildkit && refusesBuildKit(err):
			return "", &Error{Code: enumspb.StatusCode_BUILD_DOCKER_NOT_IMPLEMENTED_ERR,
				Msg: "the Docker engine does not build with BuildKit; select the legacy builder", Err: err}
		case !buildkit && cerrdefs.IsInvalidArgument(err):
			// The legacy builder rejects unparsable Dockerfiles (unknown
			// instruction, bad syntax) with 400 before streaming;
			// BuildKit reports them in the stream.
			return "", &Error{Code: enumspb.StatusCode_BUILD_USER_ERROR, Msg: "invalid Dockerfile", Err: err}
		}
		return "", classify(ctx, "start build", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	defer resp.Body.Close()

	var imageID string
	progress := newProgressPrinter(req.MaxLineBytes, out)
	badTrace := false
	err = readStream(resp.Body, req.MaxLineBytes, out, func(id string, aux json.RawMessage) {
		if id == traceID {
			var data []byte
			err := json.Unmarshal(aux, &data)
			var status solveStatus
			if err == nil {
				status, err = decodeTrace(data)
			}
			if err != nil {
				// Progress is for people: an unreadable message is
				// noted once, and the build goes on.
				if !badTrace {
					out(cutLine(fmt.Sprintf("… [unreadable BuildKit progress: %v]", err), req.MaxLineBytes))
				}
				badTrace = true
				return
			}
			progress.print(status)
			return
		}
		// The legacy builder's aux has no id; BuildKit's is
		// "moby.image.id".
		var img struct{ ID string }
		if json.Unmarshal(aux, &img) == nil && img.ID != "" {
			imageID = img.ID
		}
	})
	progress.flush()
	if cerr := contextErr(); cerr != nil {
		return "", cerr
	}
	if err != nil {
		var jerr *jsonmessage.JSONError
		if errors.As(err, &jerr) && ctx.Err() == nil {
			msg := jerr.Message
			if !buildkit && strings.Contains(msg, "requires BuildKit") {
				// "the --mount option requires BuildKit": say why this
				// build had none.
				msg = cutLine(msg+" (this build ran on the legacy builder: the runner is set to use it, or the engine offers no BuildKit)", req.MaxLineBytes)
			}
			if step := progress.failedStep(msg); step != "" && !strings.Contains(msg, step) {
				// BuildKit's error does not say which step failed.
				msg = cutLine(step+": "+msg, req.MaxLineBytes)
			}
			return "", &Error{Code: enumspb.StatusCode_BUILD_USER_ERROR, Msg: msg}
		}
		return "", classify(ctx, "read build output", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	return imageID, nil
}

// push pushes tag and returns the manifest digest from the aux message
// (empty if the daemon sent none).
func (b *Builder) push(ctx context.Context, tag, registryAuth string, maxLine int, out func(string)) (string, error) {
	body, err := b.docker.ImagePush(ctx, tag, image.PushOptions{RegistryAuth: registryAuth})
	if err != nil {
		if cerrdefs.IsUnauthorized(err) || cerrdefs.IsPermissionDenied(err) {
			return "", &Error{Code: enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED, Msg: "push denied", Err: err}
		}
		return "", classify(ctx, "start push", err, enumspb.StatusCode_BUILD_DOCKER_UNKNOWN)
	}
	defer body.Close()

	var digest string
	err = readStream(body, maxLine, out, func(_ string, aux json.RawMessage) {
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
	for _, s := range []string{"unauthorized", "denied", "authentication required", "no basic auth credentials", "forbidden"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	// A status code on its own, not digits of a port or an address:
	// "dial tcp 127.0.0.1:35403: connection refused" is no 403.
	return httpDenialCode.MatchString(msg)
}

// httpDenialCode matches 401 or 403 standing alone in a message.
var httpDenialCode = regexp.MustCompile(`(^|[^0-9:.])40[13]([^0-9]|$)`)

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
