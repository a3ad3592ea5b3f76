package build

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
)

// testTimeout bounds every test that talks to the daemon.
const testTimeout = 60 * time.Second

var tagSeq atomic.Int64

// mustDocker returns a client for the local daemon and fails the test
// (never skips) when no daemon answers.
func mustDocker(tb testing.TB) *client.Client {
	tb.Helper()
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatalf("no Docker daemon: start dockerd or set DOCKER_HOST: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Ping(ctx, c); err != nil {
		tb.Fatalf("no Docker daemon: start dockerd or set DOCKER_HOST: %v", err)
	}
	return c
}

// mustRegistry serves h on loopback and returns its host:port.
func mustRegistry(tb testing.TB, h http.Handler) string {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// mustContext writes files into a new temporary directory.
func mustContext(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// mustRoot opens dir as a build context root, closed when the test ends.
func mustRoot(tb testing.TB, dir string) *os.Root {
	tb.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { root.Close() })
	return root
}

// newTag returns a unique tag in host's "kgd-test" repository and removes
// the image from the daemon when the test ends.
func newTag(tb testing.TB, docker *client.Client, host string) string {
	tb.Helper()
	tag := fmt.Sprintf("%s/kgd-test/build:t%d-%d", host, time.Now().UnixNano(), tagSeq.Add(1))
	tb.Cleanup(func() {
		// The test's context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := docker.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !strings.Contains(err.Error(), "No such image") {
			tb.Logf("remove %s: %v", tag, err)
		}
	})
	return tag
}

// backends are the daemon's builders the tests run with.
var backends = []Backend{BackendBuildKit, BackendLegacy}

// nonce returns a string unique to the call. Dockerfiles put it in an
// ENV before the steps that must run: BuildKit's cache outlives the
// images the tests remove, and would skip them.
func nonce() string {
	return fmt.Sprintf("n%d-%d", time.Now().UnixNano(), tagSeq.Add(1))
}

var stepLine = regexp.MustCompile(`^#(\d+) (.*)$`)

// stepEnd returns how BuildKit's progress lines report the end of the
// first step whose name contains name: "CACHED", "DONE", "ERROR", or ""
// if the step or its end is not in lines.
func stepEnd(lines []string, name string) string {
	index := ""
	for _, l := range lines {
		m := stepLine.FindStringSubmatch(l)
		switch {
		case m == nil:
		case index == "" && strings.Contains(m[2], name):
			index = m[1]
		case m[1] == index && m[2] == "CACHED":
			return "CACHED"
		case m[1] == index && strings.HasPrefix(m[2], "DONE"):
			return "DONE"
		case m[1] == index && strings.HasPrefix(m[2], "ERROR"):
			return "ERROR"
		}
	}
	return ""
}

// recorder collects out lines with the time each arrived.
type recorder struct {
	mu    sync.Mutex
	lines []string
	times []time.Time
}

func (r *recorder) out(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.times = append(r.times, time.Now())
}

func (r *recorder) contains(sub string) bool {
	for _, l := range r.lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func wantCode(t *testing.T, err error, want enumspb.StatusCode) *Error {
	t.Helper()
	var berr *Error
	if !errors.As(err, &berr) {
		t.Fatalf("error = %v (%T), want *build.Error with code %v", err, err, want)
	}
	if berr.Code != want {
		t.Fatalf("error code = %v, want %v; error: %v", berr.Code, want, err)
	}
	return berr
}

func TestBuildPush(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	host := mustRegistry(t, registry.New(registry.Logger(discardLogger())))
	for _, backend := range backends {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			testBuildPush(t, docker, host, backend)
		})
	}
}

func testBuildPush(t *testing.T, docker *client.Client, host string, backend Backend) {
	tag := newTag(t, docker, host)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	dir := mustContext(t, map[string]string{
		"Dockerfile":    "FROM scratch\nCOPY . /ctx/\n",
		".dockerignore": "# comment\nsecret.txt\nbuild/\n",
		"hello.txt":     "hello\n",
		"secret.txt":    "do not send\n",
		"build/out.bin": "artefact\n",
		"sub/keep.txt":  "kept\n",
	})

	var rec recorder
	res, err := New(docker, WithBackend(backend)).Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag, Push: true}, rec.out)
	returned := time.Now()
	if err != nil {
		t.Fatalf("Build: %v\noutput:\n%s", err, strings.Join(rec.lines, "\n"))
	}

	if res.Tag != tag {
		t.Errorf("Result.Tag = %q, want %q", res.Tag, tag)
	}
	ref, err := name.ParseReference(tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("registry HEAD %s: %v", tag, err)
	}
	if res.Digest != desc.Digest.String() {
		t.Errorf("Result.Digest = %q, registry serves %q", res.Digest, desc.Digest)
	}
	// The fallback used when the push stream has no aux digest agrees.
	tagRef, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := New(docker).repoDigest(ctx, tagRef); err != nil || got != res.Digest {
		t.Errorf("repoDigest = %q, %v; want %q", got, err, res.Digest)
	}
	inspect, err := docker.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if res.ImageID != inspect.ID {
		t.Errorf("Result.ImageID = %q, daemon has %q", res.ImageID, inspect.ID)
	}

	want := []string{"Step 1/2 : FROM scratch", "Step 2/2 : COPY . /ctx/", "Successfully tagged", "digest: " + res.Digest}
	if backend == BackendBuildKit {
		want = []string{"[1/1] COPY . /ctx/", "exporting to image", "Successfully tagged", "digest: " + res.Digest}
	}
	for _, want := range want {
		if !rec.contains(want) {
			t.Errorf("output has no line containing %q; output:\n%s", want, strings.Join(rec.lines, "\n"))
		}
	}
	if len(rec.lines) < 2 || !rec.times[0].Before(returned) {
		t.Errorf("got %d lines, want several delivered before Build returned", len(rec.lines))
	}
	for _, l := range rec.lines {
		if strings.HasSuffix(l, "\n") || strings.TrimSpace(l) == "" {
			t.Errorf("line %q is blank or ends in a newline", l)
		}
	}

	// The pushed layer holds exactly the files .dockerignore lets through.
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want 1", len(layers), err)
	}
	got := layerFiles(t, layers[0])
	want = []string{"ctx/.dockerignore", "ctx/Dockerfile", "ctx/hello.txt", "ctx/sub/keep.txt"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files in pushed layer (-want +got):\n%s", diff)
	}
	// BuildKit exports its cache inline, for Request.CacheFrom.
	config, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if inline := bytes.Contains(config, []byte(`"moby.buildkit.cache.v0"`)); inline != (backend == BackendBuildKit) {
		t.Errorf("image config has inline cache = %v, want %v", inline, backend == BackendBuildKit)
	}
}

// layerFiles lists the regular files in a layer.
func layerFiles(t *testing.T, l interface{ Uncompressed() (io.ReadCloser, error) }) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var files []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			files = append(files, strings.TrimPrefix(hdr.Name, "/"))
		}
	}
}

func TestBuildArgsAndTarget(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	for _, backend := range backends {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			testBuildArgsAndTarget(t, docker, backend)
		})
	}
}

func testBuildArgsAndTarget(t *testing.T, docker *client.Client, backend Backend) {
	tag := newTag(t, docker, "127.0.0.1:1") // never pushed
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	dir := mustContext(t, map[string]string{
		"docker/app.Dockerfile": "FROM scratch AS first\nARG GREETING=unset\nLABEL greeting=$GREETING stage=first\n" +
			"FROM scratch AS second\nLABEL stage=second\n",
	})

	res, err := New(docker, WithBackend(backend)).Build(ctx, Request{
		Context:    mustRoot(t, dir),
		Dockerfile: "docker/app.Dockerfile",
		Tag:        tag,
		Args:       map[string]string{"GREETING": "hello"},
		Target:     "first",
	}, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if res.Digest != "" {
		t.Errorf("Result.Digest = %q without Push, want empty", res.Digest)
	}
	inspect, err := docker.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"greeting": "hello", "stage": "first"}
	if diff := cmp.Diff(want, inspect.Config.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
}

func TestBuildErrors(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	unreachable, err := client.NewClientWithOpts(client.WithHost("unix:///nonexistent.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unreachable.Close() })
	outside := mustContext(t, map[string]string{"Dockerfile": "FROM scratch\n"})

	tests := []struct {
		name       string
		files      map[string]string
		dockerfile string
		symlink    string // if set, Dockerfile is a symlink to this path
		docker     *client.Client
		cancel     bool
		wantCode   enumspb.StatusCode
		wantMsg    string // substring of the error
	}{
		{
			name:     "RUNWithoutShell",
			files:    map[string]string{"Dockerfile": "FROM scratch\nRUN true\n"},
			wantCode: enumspb.StatusCode_BUILD_USER_ERROR,
			wantMsg:  "/bin/sh",
		},
		{
			name:     "UnknownInstruction",
			files:    map[string]string{"Dockerfile": "FROM scratch\nFROBNICATE x\n"},
			wantCode: enumspb.StatusCode_BUILD_USER_ERROR,
			wantMsg:  "unknown instruction",
		},
		{
			name:     "CopyMissingFile",
			files:    map[string]string{"Dockerfile": "FROM scratch\nCOPY missing.txt /\n"},
			wantCode: enumspb.StatusCode_BUILD_USER_ERROR,
			wantMsg:  "missing.txt",
		},
		{
			name:     "NoDockerfile",
			files:    map[string]string{"main.go": "package main\n"},
			wantCode: enumspb.StatusCode_BUILD_DOCKERFILE_NOT_FOUND,
			wantMsg:  `"Dockerfile" not found`,
		},
		{
			name:       "DockerfileOutsideContext",
			files:      map[string]string{"main.go": "package main\n"},
			dockerfile: "../Dockerfile",
			wantCode:   enumspb.StatusCode_BUILD_DOCKERFILE_NOT_FOUND,
			wantMsg:    "inside the build context",
		},
		{
			name:     "DockerfileSymlinkOutsideContext",
			files:    map[string]string{"main.go": "package main\n"},
			symlink:  filepath.Join(outside, "Dockerfile"),
			wantCode: enumspb.StatusCode_BUILD_DOCKERFILE_NOT_FOUND,
		},
		{
			name:     "DockerfileIsDirectory",
			files:    map[string]string{"Dockerfile/x": "FROM scratch\n"},
			wantCode: enumspb.StatusCode_BUILD_DOCKERFILE_NOT_FOUND,
		},
		{
			name:     "DaemonUnreachable",
			files:    map[string]string{"Dockerfile": "FROM scratch\n"},
			docker:   unreachable,
			wantCode: enumspb.StatusCode_BUILD_DOCKER_DAEMON_NOT_RUNNING,
			wantMsg:  "DOCKER_HOST",
		},
		{
			name:     "Cancelled",
			files:    map[string]string{"Dockerfile": "FROM scratch\n"},
			cancel:   true,
			wantCode: enumspb.StatusCode_BUILD_DOCKER_CANCELLED,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			if tt.cancel {
				cancel()
			}
			dir := mustContext(t, tt.files)
			if tt.symlink != "" {
				if err := os.Symlink(tt.symlink, filepath.Join(dir, "Dockerfile")); err != nil {
					t.Fatal(err)
				}
			}
			d := docker
			if tt.docker != nil {
				d = tt.docker
			}
			tag := newTag(t, docker, "127.0.0.1:1")
			var rec recorder
			_, err := New(d).Build(ctx, Request{Context: mustRoot(t, dir), Dockerfile: tt.dockerfile, Tag: tag}, rec.out)
			berr := wantCode(t, err, tt.wantCode)
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			if !strings.HasPrefix(err.Error(), "build "+tag+": ") {
				t.Errorf("error %q does not start with %q", err, "build "+tag+": ")
			}
			if tt.wantCode == enumspb.StatusCode_BUILD_USER_ERROR && berr.Msg == "" {
				t.Errorf("user error has no daemon message")
			}
		})
	}
}

// authRegistry wraps a registry with HTTP basic auth for user/password.
func authRegistry(user, password string) http.Handler {
	reg := registry.New(registry.Logger(discardLogger()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="kgd-test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	})
}

// forbidRegistry answers every request with 403.
func forbidRegistry() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return // let the daemon's ping succeed anonymously
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
	})
}

func TestPushAuth(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	creds := func(user, password string) func(context.Context, string) (string, string, error) {
		return func(context.Context, string) (string, string, error) { return user, password, nil }
	}
	tests := []struct {
		name     string
		handler  http.Handler
		auth     func(context.Context, string) (string, string, error)
		wantCode enumspb.StatusCode // 0: success
		// slow: dockerd 20.10 retries a layer upload refused with 401/403
		// for ~50 s (5+10+15+20 s back-off) before reporting the error.
		slow bool
	}{
		{"Anonymous401", authRegistry("oauth2accesstoken", "tok"), nil, enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED, false},
		{"WrongPassword401", authRegistry("oauth2accesstoken", "tok"), creds("oauth2accesstoken", "wrong"), enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED, true},
		{"Forbidden403", forbidRegistry(), nil, enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED, true},
		{"AuthFuncFails", authRegistry("u", "p"), func(context.Context, string) (string, string, error) {
			return "", "", errors.New("token source broken")
		}, enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED, false},
		{"Authorized", authRegistry("oauth2accesstoken", "tok"), creds("oauth2accesstoken", "tok"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			timeout := testTimeout
			if tt.slow {
				timeout = 2 * testTimeout
			}
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			host := mustRegistry(t, tt.handler)
			tag := newTag(t, docker, host)
			dir := mustContext(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY f /\n", "f": tt.name})
			var gotHost string
			auth := tt.auth
			if auth != nil {
				auth = func(ctx context.Context, h string) (string, string, error) {
					gotHost = h
					return tt.auth(ctx, h)
				}
			}
			var rec recorder
			res, err := New(docker).Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag, Push: true, Auth: auth}, rec.out)
			if auth != nil && gotHost != host {
				t.Errorf("Auth called with host %q, want %q", gotHost, host)
			}
			if tt.wantCode != 0 {
				wantCode(t, err, tt.wantCode)
				if n := countPrefix(rec.lines, "Retrying in"); n > 5 {
					t.Errorf("%d retry lines, want at most one per retry round:\n%s", n, strings.Join(rec.lines, "\n"))
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v\noutput:\n%s", err, strings.Join(rec.lines, "\n"))
			}
			if !strings.HasPrefix(res.Digest, "sha256:") {
				t.Errorf("Result.Digest = %q, want sha256:...", res.Digest)
			}
		})
	}
}

func countPrefix(lines []string, sub string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func TestPing(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	unreachable, err := client.NewClientWithOpts(client.WithHost("unix:///nonexistent.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unreachable.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	if err := Ping(ctx, docker); err != nil {
		t.Errorf("Ping(local daemon) = %v, want nil", err)
	}
	err = Ping(ctx, unreachable)
	berr := wantCode(t, err, enumspb.StatusCode_BUILD_DOCKER_DAEMON_NOT_RUNNING)
	if !strings.Contains(berr.Msg, "DOCKER_HOST") || !strings.Contains(berr.Msg, "start") {
		t.Errorf("message %q does not say how to start the daemon or set DOCKER_HOST", berr.Msg)
	}
}

func BenchmarkBuildPush(b *testing.B) {
	docker := mustDocker(b)
	host := mustRegistry(b, registry.New(registry.Logger(discardLogger())))
	tag := newTag(b, docker, host)
	dir := mustContext(b, map[string]string{"Dockerfile": "FROM scratch\nCOPY f /\n", "f": "benchmark\n"})
	builder := New(docker)
	root := mustRoot(b, dir)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(b.Context(), testTimeout)
		_, err := builder.Build(ctx, Request{Context: root, Tag: tag, Push: true}, nil)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
}
