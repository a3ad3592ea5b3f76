package build

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	buildtypes "github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/kube-git-deploy/kube-git-deploy/bench"
	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
)

// mustProgDockerfile returns a context directory holding testdata/prog
// as "prog", the Dockerfile df and files.
func mustProgDockerfile(tb testing.TB, df string, files map[string]string) string {
	tb.Helper()
	all := map[string]string{"Dockerfile": df}
	for k, v := range files {
		all[k] = v
	}
	dir := mustContext(tb, all)
	data, err := os.ReadFile(progPath)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prog"), data, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// needsBuildKit is a Dockerfile only BuildKit builds: a cache mount,
// and, with Target "app", stages that would fail if they were built
// (the legacy builder builds every stage before the target). %s is the
// cache mount's id.
const needsBuildKit = `FROM scratch AS base
COPY prog /prog
ARG RUNID
RUN --mount=type=cache,id=%s,target=/cache ["/prog", "count", "/cache/n"]
FROM scratch AS broken
COPY missing.txt /
FROM base AS app
LABEL stage=app
FROM app AS tests
RUN ["/prog", "cat", "/nonexistent"]
`

// TestBuildKitDockerfile builds needsBuildKit with each backend on the
// machine's engine: BuildKit (chosen or by BackendAuto) builds it, skips
// the unused stages, and keeps the cache mount from one build to the
// next; the legacy builder fails with a message naming the cause.
func TestBuildKitDockerfile(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	for _, backend := range []Backend{BackendBuildKit, BackendAuto} {
		t.Run(string(backend), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
			defer cancel()
			dir := mustProgDockerfile(t, fmt.Sprintf(needsBuildKit, "kgd-test-"+nonce()), nil)
			b := New(docker, WithBackend(backend))
			for i, want := range []string{"count=1", "count=2"} {
				var rec recorder
				_, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"),
					Target: "app", Args: map[string]string{"RUNID": nonce()}}, rec.out)
				if err != nil {
					t.Fatalf("build %d: %v\noutput:\n%s", i+1, err, strings.Join(rec.lines, "\n"))
				}
				// The cache mount outlives the build: the second run of
				// the step finds the first one's file.
				if !rec.contains(want) || rec.contains("missing.txt") || rec.contains("/nonexistent") {
					t.Errorf("build %d: want %q and no step of the unused stages in the output:\n%s", i+1, want, strings.Join(rec.lines, "\n"))
				}
			}
		})
	}
	t.Run(string(BackendLegacy), func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		dir := mustProgDockerfile(t, fmt.Sprintf(needsBuildKit, "kgd-test-"+nonce()), nil)
		var rec recorder
		_, err := New(docker, WithBackend(BackendLegacy)).Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Target: "app"}, rec.out)
		berr := wantCode(t, err, enumspb.StatusCode_BUILD_USER_ERROR)
		t.Logf("error: %v", err)
		for _, want := range []string{"--mount", "requires BuildKit", "legacy builder"} {
			if !strings.Contains(berr.Msg, want) {
				t.Errorf("message %q does not contain %q", berr.Msg, want)
			}
		}
	})
}

// TestBuildKitFallback checks BackendAuto against engines without
// BuildKit: a real engine that prefers the legacy builder
// (features.buildkit=false, the tests' own dockerd), and an engine that
// refuses BuildKit requests (the machine's engine behind a proxy that
// answers them as Docker 18.06 without experimental mode did).
func TestBuildKitFallback(t *testing.T) {
	t.Parallel()
	plain := map[string]string{"Dockerfile": "FROM scratch\nCOPY f /f\nLABEL kgd=fallback\n", "f": "plain\n"}
	t.Run("EnginePrefersLegacy", func(t *testing.T) {
		t.Parallel()
		docker := mustPrivateEngine(t)
		ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
		defer cancel()
		const why = "Building with the legacy builder: the engine prefers it (features.buildkit is false)"

		var rec recorder
		if _, err := New(docker).Build(ctx, Request{Context: mustRoot(t, mustContext(t, plain)), Tag: newTag(t, docker, "127.0.0.1:1")}, rec.out); err != nil {
			t.Fatalf("auto, plain Dockerfile: %v\n%s", err, strings.Join(rec.lines, "\n"))
		}
		if !rec.contains(why) || !rec.contains("Step 1/3 : FROM scratch") {
			t.Errorf("auto, plain Dockerfile: want %q and the legacy builder's steps in the output:\n%s", why, strings.Join(rec.lines, "\n"))
		}

		dir := mustProgDockerfile(t, fmt.Sprintf(needsBuildKit, "kgd-test-"+nonce()), nil)
		rec = recorder{}
		_, err := New(docker).Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Target: "app"}, rec.out)
		if berr := wantCode(t, err, enumspb.StatusCode_BUILD_USER_ERROR); !strings.Contains(berr.Msg, "requires BuildKit") || !rec.contains(why) {
			t.Errorf("auto, Dockerfile needing BuildKit: error %q, output %q", berr.Msg, rec.lines)
		}

		// The engine builds with BuildKit when asked to.
		rec = recorder{}
		if _, err := New(docker, WithBackend(BackendBuildKit)).Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Target: "app"}, rec.out); err != nil {
			t.Fatalf("buildkit: %v\n%s", err, strings.Join(rec.lines, "\n"))
		}
		if !rec.contains("count=1") {
			t.Errorf("buildkit: no count=1 in the output:\n%s", strings.Join(rec.lines, "\n"))
		}
	})
	t.Run("EngineRefusesBuildKit", func(t *testing.T) {
		t.Parallel()
		machine := mustDocker(t)
		docker := mustRefusingProxy(t, machine)
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()

		var rec recorder
		tag := newTag(t, machine, "127.0.0.1:1")
		if _, err := New(docker).Build(ctx, Request{Context: mustRoot(t, mustContext(t, plain)), Tag: tag}, rec.out); err != nil {
			t.Fatalf("auto: %v\n%s", err, strings.Join(rec.lines, "\n"))
		}
		if !rec.contains("The engine refused to build with BuildKit") || !rec.contains("Step 1/3 : FROM scratch") {
			t.Errorf("auto: want the fallback said and the legacy builder's steps in the output:\n%s", strings.Join(rec.lines, "\n"))
		}
		if _, err := machine.ImageInspect(ctx, tag); err != nil {
			t.Errorf("image after the fallback: %v", err)
		}

		_, err := New(docker, WithBackend(BackendBuildKit)).Build(ctx, Request{Context: mustRoot(t, mustContext(t, plain)), Tag: newTag(t, machine, "127.0.0.1:1")}, nil)
		if berr := wantCode(t, err, enumspb.StatusCode_BUILD_DOCKER_NOT_IMPLEMENTED_ERR); !strings.Contains(berr.Msg, "does not build with BuildKit") {
			t.Errorf("buildkit: message %q", berr.Msg)
		}
	})
}

// mustRefusingProxy returns a client of a proxy in front of the engine
// of docker that passes every request on, except build requests asking
// for BuildKit (version=2), which it answers with Docker 18.06's refusal.
func mustRefusingProxy(tb testing.TB, docker *client.Client) *client.Client {
	tb.Helper()
	u, err := url.Parse(docker.DaemonHost())
	if err != nil || u.Scheme != "unix" {
		tb.Fatalf("the engine's address %q is not a unix socket", docker.DaemonHost())
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", u.Path)
		}},
		FlushInterval: -1,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/build") && r.URL.Query().Get("version") == string(buildtypes.BuilderBuildKit) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"message":"buildkit is only supported with experimental mode"}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	c, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

var (
	stepHeader = regexp.MustCompile(`^#(\d+) (\[.*)$`)
	stepOutput = regexp.MustCompile(`^#(\d+) \d+\.\d{3} (.*)$`)
)

// stepIndex returns the number BuildKit's progress lines give the step
// named name, or "".
func stepIndex(lines []string, name string) string {
	for _, l := range lines {
		if m := stepHeader.FindStringSubmatch(l); m != nil && m[2] == name {
			return m[1]
		}
	}
	return ""
}

// TestBuildKitProgress checks the build-log lines of BuildKit builds:
// each step with its number, its output, how it ended (DONE, CACHED,
// ERROR), each line within MaxLineBytes, and a failing step named in the
// error.
func TestBuildKitProgress(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	const maxLine = 120
	b := New(docker, WithBackend(BackendBuildKit))
	checkLines := func(t *testing.T, lines []string) {
		t.Helper()
		for _, l := range lines {
			// The step's prefix ("#N 1.234 ") comes on top of the limit.
			if len(stepPrefix.ReplaceAllString(l, "")) > maxLine+len(truncated(1<<40)) {
				t.Errorf("line of %d bytes: %q", len(l), l)
			}
		}
	}

	t.Run("Steps", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
		defer cancel()
		long := strings.Repeat("x", 200) // a file name: the step's name is longer than maxLine
		dir := mustProgDockerfile(t, "FROM scratch\nCOPY prog /prog\nARG RUNID\nRUN [\"/prog\", \"lines\", \"3\"]\nRUN [\"/prog\", \"line\", \"500\"]\nCOPY "+long+" /f\n",
			map[string]string{long: "long\n"})
		req := Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Args: map[string]string{"RUNID": nonce()}, MaxLineBytes: maxLine}
		const run = `[2/4] RUN ["/prog", "lines", "3"]`

		var first recorder
		if _, err := b.Build(ctx, req, first.out); err != nil {
			t.Fatalf("Build: %v\n%s", err, strings.Join(first.lines, "\n"))
		}
		t.Logf("output:\n%s", strings.Join(first.lines, "\n"))
		checkLines(t, first.lines)
		n := stepIndex(first.lines, run)
		if n == "" || stepIndex(first.lines, "[1/4] COPY prog /prog") == "" {
			t.Fatalf("no step %q in the output", run)
		}
		var out []string
		for _, l := range first.lines {
			if m := stepOutput.FindStringSubmatch(l); m != nil && m[1] == n {
				out = append(out, m[2])
			}
		}
		if want := []string{"line 0", "line 1", "line 2"}; strings.Join(out, "|") != strings.Join(want, "|") {
			t.Errorf("output of step #%s = %q, want %q", n, out, want)
		}
		if end := stepEnd(first.lines, run); end != "DONE" {
			t.Errorf("step %q ended %q, want DONE", run, end)
		}
		if !first.contains("aaaa … [line truncated: 500 bytes]") || !first.contains("[4/4] COPY xxxx") || !first.contains("Successfully tagged "+req.Tag) {
			t.Errorf("want the 500-byte output line cut, the long step's name and the tag in the output")
		}

		// The same build again: every step is cached.
		req.Tag = newTag(t, docker, "127.0.0.1:1")
		var again recorder
		if _, err := b.Build(ctx, req, again.out); err != nil {
			t.Fatalf("Build again: %v\n%s", err, strings.Join(again.lines, "\n"))
		}
		checkLines(t, again.lines)
		if end := stepEnd(again.lines, run); end != "CACHED" || again.contains("line 2") {
			t.Errorf("second build: step %q ended %q, want CACHED and not run:\n%s", run, end, strings.Join(again.lines, "\n"))
		}
	})

	t.Run("FailingStep", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		dir := mustProgDockerfile(t, "FROM scratch\nCOPY prog /prog\nARG RUNID\nRUN [\"/prog\", \"cat\", \"/nonexistent\"]\n", nil)
		var rec recorder
		_, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Args: map[string]string{"RUNID": nonce()}, MaxLineBytes: maxLine}, rec.out)
		berr := wantCode(t, err, enumspb.StatusCode_BUILD_USER_ERROR)
		t.Logf("error: %v", err)
		checkLines(t, rec.lines)
		const step = `[2/2] RUN ["/prog", "cat", "/nonexistent"]`
		if !strings.HasPrefix(berr.Msg, step+": ") || !strings.Contains(berr.Msg, "exit code: 1") {
			t.Errorf("message %q: want it to name the step %q and its exit code", berr.Msg, step)
		}
		if end := stepEnd(rec.lines, step); end != "ERROR" || !rec.contains("open /nonexistent: no such file or directory") {
			t.Errorf("step ended %q, want ERROR and the step's error output in:\n%s", end, strings.Join(rec.lines, "\n"))
		}
	})
}

// TestBuildKitIgnoresLimits documents the trade-off of BuildKit: the RUN
// step's cgroup does not get Request.Memory (see TestBuildLimits for the
// legacy builder, which applies it).
func TestBuildKitIgnoresLimits(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		t.Fatalf("this host has no cgroup v1 memory controller to read: %v", err)
	}
	docker := mustDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	dir := mustProgDockerfile(t, "FROM scratch\nCOPY prog /prog\nARG RUNID\nRUN [\"/prog\", \"cat\", \"/sys/fs/cgroup/memory/memory.limit_in_bytes\"]\n", nil)
	var rec recorder
	_, err := New(docker, WithBackend(BackendBuildKit)).Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"),
		Args: map[string]string{"RUNID": nonce()}, Memory: 96 << 20, CPUs: 0.5}, rec.out)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, strings.Join(rec.lines, "\n"))
	}
	if !rec.contains("memory.limit_in_bytes=") || rec.contains("memory.limit_in_bytes=100663296") {
		t.Errorf("want the step's memory limit read and not 96 MiB (if BuildKit applies it now, update the docs):\n%s", strings.Join(rec.lines, "\n"))
	}
}

// TestRegistryCache checks that a build starts warm from the registry:
// an image built with BuildKit and pushed carries its cache inline, and
// a build on an engine with neither the image nor any build cache
// reuses its steps through Request.CacheFrom. It runs on the tests' own
// engine, whose whole build cache it prunes.
func TestRegistryCache(t *testing.T) {
	t.Parallel()
	docker := mustPrivateEngine(t)
	host := mustRegistry(t, registry.New(registry.Logger(discardLogger())))
	ctx, cancel := context.WithTimeout(t.Context(), 3*testTimeout)
	defer cancel()
	b := New(docker, WithBackend(BackendBuildKit))
	dir := mustProgDockerfile(t, "FROM scratch\nCOPY prog /prog\nARG RUNID\nRUN [\"/prog\", \"count\", \"/n\"]\nCOPY f /f\n", map[string]string{"f": nonce()})
	runID := map[string]string{"RUNID": nonce()}
	const run = `[2/3] RUN ["/prog", "count", "/n"]`
	// forget removes tag and the whole build cache from the engine.
	forget := func(tag string) {
		t.Helper()
		if _, err := docker.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Fatal(err)
		}
		report, err := docker.BuildCachePrune(ctx, buildtypes.CachePruneOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pruned %d cache records, %d bytes", len(report.CachesDeleted), report.SpaceReclaimed)
	}
	build := func(name, tag string, push bool, cacheFrom []string) []string {
		t.Helper()
		var rec recorder
		if _, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag, Args: runID, Push: push, CacheFrom: cacheFrom}, rec.out); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, strings.Join(rec.lines, "\n"))
		}
		return rec.lines
	}

	pushed := newTag(t, docker, host)
	if lines := build("first build", pushed, true, nil); stepEnd(lines, run) != "DONE" {
		t.Fatalf("first build: step %q did not run:\n%s", run, strings.Join(lines, "\n"))
	}
	forget(pushed)

	// Without CacheFrom the step runs again: the engine's cache is gone.
	control := newTag(t, docker, "127.0.0.1:1")
	if lines := build("build without CacheFrom", control, false, nil); stepEnd(lines, run) != "DONE" {
		t.Fatalf("build without CacheFrom: step %q did not run; the prune left a cache:\n%s", run, strings.Join(lines, "\n"))
	}
	forget(control)

	lines := build("build with CacheFrom", newTag(t, docker, "127.0.0.1:1"), false, []string{pushed})
	if end := stepEnd(lines, run); end != "CACHED" || strings.Contains(strings.Join(lines, "\n"), "count=") {
		t.Errorf("build with CacheFrom: step %q ended %q, want CACHED (not run):\n%s", run, end, strings.Join(lines, "\n"))
	}

	// A cache source that cannot be read does not fail the build.
	missing := []string{"127.0.0.1:1/kgd-test/nothing:tag", host + "/kgd-test/nothing:tag"}
	build("build with unreadable cache sources", newTag(t, docker, "127.0.0.1:1"), false, missing)
}

// Samples of BenchmarkBuild, after its warm-up builds.
const (
	benchWarmup  = 3
	benchSamples = 25
)

// BenchmarkBuild times a cached build of a demo-like image (a binary, a
// message.txt changed for every build, as a push of the demo app does)
// with each backend, on the machine's engine, and with BuildKit also what
// a job does: build and push to a loopback registry, with and without the
// previous image as a cache source (CacheFrom, the runner's default). One
// op is the whole series of benchWarmup + benchSamples builds per case,
// so the sample count does not depend on -benchtime; run it with
// -benchtime=1x. It reports the median, p95 and max, and records the
// series for bench/RESULTS.md.
func BenchmarkBuild(b *testing.B) {
	docker := mustDocker(b)
	host := mustRegistry(b, registry.New(registry.Logger(discardLogger())))
	for _, tc := range []struct {
		name      string
		backend   Backend
		push      bool
		cacheFrom bool
	}{
		{"BuildKit", BackendBuildKit, false, false},
		{"legacy builder", BackendLegacy, false, false},
		{"BuildKit, pushed", BackendBuildKit, true, false},
		{"BuildKit, pushed, cache from the previous image (the runner's way)", BackendBuildKit, true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			df := "FROM scratch\nCOPY prog /hello\nCOPY message.txt /message.txt\nEXPOSE 8080\nUSER 65534:65534\nENTRYPOINT [\"/hello\"]\n"
			dir := mustProgDockerfile(b, df, map[string]string{"message.txt": "hello\n"})
			builder := New(docker, WithBackend(tc.backend))
			root := mustRoot(b, dir)
			registryHost := "127.0.0.1:1" // never contacted: nothing is pushed
			if tc.push {
				registryHost = host
			}
			for b.Loop() {
				var samples []time.Duration
				previous := ""
				for i := range benchWarmup + benchSamples {
					if err := os.WriteFile(filepath.Join(dir, "message.txt"), []byte(fmt.Sprintf("hello %d %s\n", i, nonce())), 0o644); err != nil {
						b.Fatal(err)
					}
					req := Request{Context: root, Tag: newTag(b, docker, registryHost), Push: tc.push}
					if tc.cacheFrom && previous != "" {
						req.CacheFrom = []string{previous}
					}
					ctx, cancel := context.WithTimeout(b.Context(), testTimeout)
					start := time.Now()
					_, err := builder.Build(ctx, req, nil)
					d := time.Since(start)
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					previous = req.Tag
					if i >= benchWarmup {
						samples = append(samples, d)
					}
				}
				note := "build only (no push) through the Engine API; the binary's layer cached, message.txt changed each sample"
				if tc.push {
					note = "build and push to a loopback registry through the Engine API; the binary's layer cached, message.txt changed each sample"
				}
				s := bench.Series{Figure: "8", Name: "cached build of a demo-like image", Case: tc.name, Unit: "ms", Warmup: benchWarmup, Samples: bench.Millis(samples), Note: note}
				if err := bench.Record(s); err != nil {
					b.Fatal(err)
				}
				st := bench.Summarize(s.Samples)
				b.ReportMetric(st.Median, "median-ms")
				b.ReportMetric(st.P95, "p95-ms")
				b.ReportMetric(st.Max, "max-ms")
			}
		})
	}
}
