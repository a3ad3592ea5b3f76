package build

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/registry"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/workspace"
)

// progPath is the static test helper built by TestMain from
// testdata/prog, for RUN steps of images built FROM scratch.
var progPath string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kgd-build-prog-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	progPath = filepath.Join(dir, "prog")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "go not on PATH: needed to build testdata/prog")
		return 1
	}
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", progPath, "./testdata/prog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build testdata/prog: %v\n%s", err, out)
		return 1
	}
	defer stopPrivateEngine()
	return m.Run()
}

// mustProgContext returns a context directory holding prog and a
// Dockerfile that copies it and runs it with args (exec form).
func mustProgContext(tb testing.TB, args ...string) string {
	tb.Helper()
	run := `"/prog"`
	for _, a := range args {
		run += `, "` + a + `"`
	}
	dir := mustContext(tb, map[string]string{"Dockerfile": "FROM scratch\nCOPY prog /prog\nRUN [" + run + "]\n"})
	data, err := os.ReadFile(progPath)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prog"), data, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// osRelease returns the lines of /etc/os-release, which no context may
// carry.
func osRelease(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if len(l) >= 6 {
			lines = append(lines, l)
		}
	}
	return lines
}

type tarEntry struct {
	Type byte
	Link string
	Data string
}

func readTar(t *testing.T, b []byte) map[string]tarEntry {
	t.Helper()
	entries := map[string]tarEntry{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		entries[hdr.Name] = tarEntry{Type: hdr.Typeflag, Link: hdr.Linkname, Data: string(data)}
	}
}

func TestWriteContext(t *testing.T) {
	t.Parallel()
	dir := mustContext(t, map[string]string{
		"Dockerfile":    "FROM scratch\n",
		".dockerignore": "ignored*\n",
		"a.txt":         "a\n",
		"sub/b.txt":     "b\n",
		"ignored.txt":   "not sent\n",
	})
	for name, target := range map[string]string{
		"os-release": "/etc/os-release",
		"etc":        "/etc",
		"environ":    "/proc/self/environ",
		"zero":       "/dev/zero",
		"up":         "../../outside",
		"a-link":     "a.txt",
		"sub-link":   "sub",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "ignored-pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if err := writeContext(ctx, &buf, mustRoot(t, dir), "Dockerfile", 1<<20); err != nil {
		t.Fatalf("writeContext: %v", err)
	}
	got := readTar(t, buf.Bytes())
	want := map[string]tarEntry{
		".dockerignore": {Type: tar.TypeReg, Data: "ignored*\n"},
		"Dockerfile":    {Type: tar.TypeReg, Data: "FROM scratch\n"},
		"a.txt":         {Type: tar.TypeReg, Data: "a\n"},
		"sub/":          {Type: tar.TypeDir},
		"sub/b.txt":     {Type: tar.TypeReg, Data: "b\n"},
		"os-release":    {Type: tar.TypeSymlink, Link: "/etc/os-release"},
		"etc":           {Type: tar.TypeSymlink, Link: "/etc"},
		"environ":       {Type: tar.TypeSymlink, Link: "/proc/self/environ"},
		"zero":          {Type: tar.TypeSymlink, Link: "/dev/zero"},
		"up":            {Type: tar.TypeSymlink, Link: "../../outside"},
		"a-link":        {Type: tar.TypeSymlink, Link: "a.txt"},
		"sub-link":      {Type: tar.TypeSymlink, Link: "sub"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tar entries (-want +got):\n%s", diff)
	}
	for _, l := range append(osRelease(t), "root:x:0:0") {
		if bytes.Contains(buf.Bytes(), []byte(l)) {
			t.Errorf("the context holds %q from outside it", l)
		}
	}
}

func TestWriteContextRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		links   map[string]string
		fifo    string
		max     int64
		cancel  bool
		wantErr error
		wantMsg string
	}{
		{name: "FIFO", fifo: "pipe", wantErr: workspace.ErrNotRegular, wantMsg: `"pipe" is not a regular file (FIFO)`},
		{name: "FIFOInDirectory", fifo: "sub/pipe", files: map[string]string{"sub/x": "x"}, wantErr: workspace.ErrNotRegular, wantMsg: `"sub/pipe"`},
		{name: "OverCap", files: map[string]string{"big": strings.Repeat("x", 100)}, max: 64, wantErr: errContextTooLarge, wantMsg: "more than 64 bytes"},
		{name: "DockerignoreOutside", links: map[string]string{".dockerignore": "/etc/os-release"}, wantErr: workspace.ErrEscapes,
			wantMsg: `".dockerignore" is a symlink that leaves the build context`},
		{name: "DockerignoreTooLarge", files: map[string]string{".dockerignore": strings.Repeat("#\n", 1<<20)}, wantErr: workspace.ErrTooLarge},
		{name: "Cancelled", cancel: true, wantErr: context.Canceled},
	}
	lines := osRelease(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files := map[string]string{"Dockerfile": "FROM scratch\n"}
			for k, v := range tt.files {
				files[k] = v
			}
			dir := mustContext(t, files)
			for name, target := range tt.links {
				if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.fifo != "" {
				if err := syscall.Mkfifo(filepath.Join(dir, tt.fifo), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			max := tt.max
			if max == 0 {
				max = 1 << 30
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if tt.cancel {
				cancel()
			}
			start := time.Now()
			err := writeContext(ctx, io.Discard, mustRoot(t, dir), "Dockerfile", max)
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("writeContext took %v", elapsed)
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(fmt.Sprint(err), tt.wantMsg) {
				t.Fatalf("writeContext = %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			for _, l := range lines {
				if strings.Contains(err.Error(), l) {
					t.Errorf("error %q shows %q", err, l)
				}
			}
		})
	}
}

// TestBuildContextSafety builds hostile contexts with the daemon: a link
// to /etc/os-release goes in as a link, a FIFO or an oversized context
// fails the build at once with BUILD_USER_ERROR, and the next build works.
func TestBuildContextSafety(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	b := New(docker)

	t.Run("SymlinkOutside", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		dir := mustContext(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY . /ctx/\n"})
		if err := os.Symlink("/etc/os-release", filepath.Join(dir, "os-release")); err != nil {
			t.Fatal(err)
		}
		tag := newTag(t, docker, "127.0.0.1:1")
		if _, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag}, nil); err != nil {
			t.Fatalf("Build: %v", err)
		}
	})
	refused := map[string]struct {
		prepare func(t *testing.T, dir string)
		max     int64
		wantMsg string
	}{
		"FIFO": {prepare: func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, wantMsg: `build context: "pipe" is not a regular file (FIFO)`},
		"OverCap": {prepare: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 4096), 0o644); err != nil {
				t.Fatal(err)
			}
		}, max: 1024, wantMsg: "build context: build context is too large: its files hold more than 1024 bytes"},
		"DockerignoreOutside": {prepare: func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/os-release", filepath.Join(dir, ".dockerignore")); err != nil {
				t.Fatal(err)
			}
		}, wantMsg: `".dockerignore" is a symlink that leaves the build context`},
	}
	for name, tt := range refused {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			dir := mustContext(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY . /ctx/\n"})
			tt.prepare(t, dir)
			tag := newTag(t, docker, "127.0.0.1:1")
			start := time.Now()
			_, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag, MaxContextBytes: tt.max}, nil)
			elapsed := time.Since(start)
			berr := wantCode(t, err, enumspb.StatusCode_BUILD_USER_ERROR)
			if !strings.Contains(berr.Msg, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", berr.Msg, tt.wantMsg)
			}
			if elapsed > 10*time.Second {
				t.Errorf("refusing the context took %v", elapsed)
			}
			if _, err := docker.ImageInspect(ctx, tag); !cerrdefs.IsNotFound(err) {
				t.Errorf("image %s exists after a refused context (%v)", tag, err)
			}
			// The runner is still healthy: the next build works.
			ok := mustContext(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY . /ctx/\n", "f": name})
			if _, err := b.Build(ctx, Request{Context: mustRoot(t, ok), Tag: newTag(t, docker, "127.0.0.1:1")}, nil); err != nil {
				t.Errorf("next build: %v", err)
			}
		})
	}
}

// heapPeak samples the heap while f runs and returns the highest
// HeapAlloc above the level before f.
func heapPeak(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak {
				peak = ms.HeapAlloc - base
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	f()
	close(stop)
	wg.Wait()
	return peak
}

var truncatedRE = regexp.MustCompile(` … \[line truncated: (\d+) bytes\]$`)

// TestReadStreamHugeMessage feeds readStream one 50 MB "stream" message
// without a newline, as a hostile daemon could: it must never be held
// whole.
func TestReadStreamHugeMessage(t *testing.T) {
	const size = 50_000_000
	stream := io.MultiReader(
		strings.NewReader(`{"stream":"Step 1/1 : RUN x\n`),
		io.LimitReader(repeatReader('a'), size),
		strings.NewReader(`"}{"stream":"\nafter\n"}{"aux":{"ID":"sha256:1"}}`),
	)
	var lines []string
	var aux int
	var err error
	peak := heapPeak(func() {
		err = readStream(stream, DefaultMaxLineBytes, func(l string) { lines = append(lines, l) }, func(string, json.RawMessage) { aux++ })
	})
	t.Logf("a %d-byte message: heap peak %.1f MiB, %d lines", size, float64(peak)/(1<<20), len(lines))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || lines[0] != "Step 1/1 : RUN x" || lines[2] != "after" || aux != 1 {
		t.Fatalf("lines = %d %.60q, aux = %d", len(lines), lines, aux)
	}
	m := truncatedRE.FindStringSubmatch(lines[1])
	if m == nil || !strings.HasPrefix(lines[1], strings.Repeat("a", DefaultMaxLineBytes)+" … ") {
		t.Fatalf("line %.80q… does not hold %d bytes and the marker", lines[1], DefaultMaxLineBytes)
	}
	if n, _ := strconv.Atoi(m[1]); n < size || n > size+64 {
		t.Errorf("marker says %s bytes, want about %d", m[1], size)
	}
	if peak > 8<<20 {
		t.Errorf("heap grew by %d bytes for a %d-byte message, want < 8 MiB", peak, size)
	}

	// Any other oversized message is an error, not a silent drop.
	huge := io.MultiReader(strings.NewReader(`{"status":"`), io.LimitReader(repeatReader('b'), 2*maxMessageBytes), strings.NewReader(`"}`))
	if err := readStream(huge, DefaultMaxLineBytes, func(string) {}, func(string, json.RawMessage) {}); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("readStream(oversized status) = %v, want an error", err)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestLineLimits(t *testing.T) {
	t.Parallel()
	var lines []string
	s := &lineSplitter{max: 10, out: func(l string) { lines = append(lines, l) }}
	s.write("short\n0123456789")
	s.write("ABCDEF\nnext")
	s.write("\n\n" + strings.Repeat("é", 8) + "\n") // 16 bytes: cut inside a character
	s.flush()
	want := []string{"short", "0123456789 … [line truncated: 16 bytes]", "next", "ééééé … [line truncated: 16 bytes]"}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}

	lines = nil
	l := &logLimit{max: 12, out: func(s string) { lines = append(lines, s) }}
	for _, s := range []string{"aaaa", "bbbb", "cccc", "dddd", "eeee"} {
		l.line(s)
	}
	want = []string{"aaaa", "bbbb", "cccc", "… [build log truncated after 12 bytes; the build goes on]"}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
}

// TestBuildHugeLine runs a RUN step printing one 20 MB line with no
// newline, with each backend: the lines passed on are cut, and the
// runner's heap stays small. It does not run in parallel, to measure the
// heap alone. BuildKit clips a step's output itself (at about 200 KiB in
// Docker 20.10) and says so in a line of its own.
func TestBuildHugeLine(t *testing.T) {
	const size = 20_000_000
	docker := mustDocker(t)
	for _, backend := range backends {
		t.Run(string(backend), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
			defer cancel()
			// RUNID: BuildKit's cache outlives the image removed after
			// the last run.
			dir := mustProgDockerfile(t, "FROM scratch\nCOPY prog /prog\nARG RUNID\nRUN [\"/prog\", \"line\", \""+strconv.Itoa(size)+"\"]\n", nil)
			tag := newTag(t, docker, "127.0.0.1:1")
			var lines []string
			var err error
			start := time.Now()
			peak := heapPeak(func() {
				_, err = New(docker, WithBackend(backend)).Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag, Args: map[string]string{"RUNID": nonce()}, MaxLogBytes: 64 << 20}, func(l string) { lines = append(lines, l) })
			})
			t.Logf("a %d-byte line: build in %v, heap peak %.1f MiB, %d lines", size, time.Since(start).Round(time.Millisecond), float64(peak)/(1<<20), len(lines))
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			wantAtLeast := size
			if backend == BackendBuildKit {
				wantAtLeast = DefaultMaxLineBytes + 1
			}
			var found bool
			for _, l := range lines {
				if len(l) > DefaultMaxLineBytes+64 {
					t.Errorf("line of %d bytes passed on", len(l))
				}
				if backend == BackendBuildKit {
					l = stepPrefix.ReplaceAllString(l, "")
				}
				if m := truncatedRE.FindStringSubmatch(l); m != nil && strings.HasPrefix(l, "aaaa") {
					found = true
					if n, _ := strconv.Atoi(m[1]); n < wantAtLeast {
						t.Errorf("marker says %s bytes, want at least %d", m[1], wantAtLeast)
					}
				}
			}
			if !found {
				t.Errorf("no truncated line of a's in the output:\n%.2000q", lines)
			}
			if peak > 16<<20 {
				t.Errorf("heap grew by %d bytes during the build, want < 16 MiB", peak)
			}
		})
	}
}

// stepPrefix matches the "#N <seconds> " before a BuildKit step's output
// ("#N " if the step's start is unknown), which comes on top of
// Request.MaxLineBytes.
var stepPrefix = regexp.MustCompile(`^#\d+ (\d+\.\d{3} )?`)

// TestBuildLogCap checks that output beyond MaxLogBytes is dropped with
// one marker while the build goes on and succeeds.
func TestBuildLogCap(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	// RUNID: BuildKit's cache outlives the image of the last run.
	dir := mustProgDockerfile(t, "FROM scratch\nCOPY prog /prog\nARG RUNID\nRUN [\"/prog\", \"lines\", \"100000\"]\n", nil)
	tag := newTag(t, docker, "127.0.0.1:1")
	var rec recorder
	const max = 16 << 10
	res, err := New(docker).Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag, Args: map[string]string{"RUNID": nonce()}, MaxLogBytes: max}, rec.out)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	total := 0
	for _, l := range rec.lines[:len(rec.lines)-1] {
		total += len(l)
	}
	last := rec.lines[len(rec.lines)-1]
	if !regexp.MustCompile(`^… \[build log truncated after \d+ bytes; the build goes on\]$`).MatchString(last) || total > max {
		t.Errorf("%d lines of %d bytes, last %q; want at most %d bytes and the marker last", len(rec.lines), total, last, max)
	}
	if countPrefix(rec.lines, "build log truncated") != 1 {
		t.Errorf("the marker appears %d times", countPrefix(rec.lines, "build log truncated"))
	}
	if inspect, err := docker.ImageInspect(ctx, tag); err != nil || inspect.ID != res.ImageID {
		t.Errorf("image after a truncated log: %v", err)
	}
}

// TestBuildLimits checks that Memory and CPUs reach the RUN steps of the
// legacy builder: the cgroup limits as seen inside the step, and a step
// allocating more than Memory is killed. BuildKit ignores both (see
// TestBuildKitIgnoresLimits).
func TestBuildLimits(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	b := New(docker, WithBackend(BackendLegacy))
	t.Run("CgroupValues", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		dir := mustProgContext(t, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
		df := "FROM scratch\nCOPY prog /prog\n" +
			`RUN ["/prog", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]` + "\n" +
			`RUN ["/prog", "cat", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"]` + "\n" +
			`RUN ["/prog", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"]` + "\n" +
			`RUN ["/prog", "cat", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"]` + "\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			t.Fatal(err)
		}
		var rec recorder
		_, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Memory: 96 << 20, CPUs: 0.5}, rec.out)
		if err != nil {
			if _, statErr := os.Stat("/sys/fs/cgroup/memory"); statErr != nil {
				// Fail, never skip: CI must not count an unchecked limit
				// as a pass. A cgroup v2 host needs this test to read
				// memory.max and cpu.max instead.
				t.Fatalf("this host has no cgroup v1 memory controller, which this test reads: %v", err)
			}
			t.Fatalf("Build: %v\n%s", err, strings.Join(rec.lines, "\n"))
		}
		for _, want := range []string{
			"memory.limit_in_bytes=100663296",
			"memory.memsw.limit_in_bytes=100663296",
			"cpu.cfs_quota_us=50000",
			"cpu.cfs_period_us=100000",
		} {
			if !rec.contains(want) {
				t.Errorf("no line %q in the output:\n%s", want, strings.Join(rec.lines, "\n"))
			}
		}
	})
	t.Run("MemoryExceeded", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		dir := mustProgContext(t, "alloc", "512")
		var rec recorder
		_, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Memory: 64 << 20}, rec.out)
		berr := wantCode(t, err, enumspb.StatusCode_BUILD_USER_ERROR)
		t.Logf("error: %v", err)
		if !strings.Contains(berr.Msg, "137") || rec.contains("allocated") {
			t.Errorf("message %q, output %q: want the step killed (code 137)", berr.Msg, rec.lines)
		}
	})
}

// TestBuildTimeout checks that Timeout stops a build with
// BUILD_DOCKER_DEADLINE, and that the next build works.
func TestBuildTimeout(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	dir := mustProgContext(t, "sleep", "300")
	b := New(docker)
	start := time.Now()
	_, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: newTag(t, docker, "127.0.0.1:1"), Timeout: 3 * time.Second}, nil)
	elapsed := time.Since(start)
	berr := wantCode(t, err, enumspb.StatusCode_BUILD_DOCKER_DEADLINE)
	t.Logf("stopped after %v: %v", elapsed.Round(time.Millisecond), err)
	if !strings.Contains(berr.Msg, "did not finish within 3s") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q does not say the build took longer than 3s", err)
	}
	if elapsed > 15*time.Second {
		t.Errorf("Build returned after %v, want about 3s", elapsed)
	}
	ok := mustContext(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY f /\n", "f": "after timeout"})
	if _, err := b.Build(ctx, Request{Context: mustRoot(t, ok), Tag: newTag(t, docker, "127.0.0.1:1")}, nil); err != nil {
		t.Errorf("next build: %v", err)
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	docker := mustDocker(t)
	host := mustRegistry(t, registry.New(registry.Logger(discardLogger())))
	ctx, cancel := context.WithTimeout(t.Context(), 2*testTimeout)
	defer cancel()
	b := New(docker)
	id := time.Now().UnixNano()
	repo := fmt.Sprintf("%s/kgd-test/prune%d", host, id)
	other := fmt.Sprintf("%s/kgd-test/other%d", host, id)
	refs := []string{}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, ref := range refs {
			docker.ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	build := func(tag, content string, push bool) string {
		t.Helper()
		refs = append(refs, tag)
		dir := mustContext(t, map[string]string{"Dockerfile": "FROM scratch\nCOPY f /\n", "f": content})
		res, err := b.Build(ctx, Request{Context: mustRoot(t, dir), Tag: tag, Push: push}, nil)
		if err != nil {
			t.Fatalf("Build %s: %v", tag, err)
		}
		refs = append(refs, res.ImageID)
		return res.ImageID
	}
	// v0 is pushed, then rebuilt: the first image keeps only its digest.
	leftover := build(repo+":v0", fmt.Sprint("v0 first ", id), true)
	v0 := build(repo+":v0", fmt.Sprint("v0 second ", id), false)
	v1 := build(repo+":v1", fmt.Sprint("v1 ", id), false)
	v2 := build(repo+":v2", fmt.Sprint("v2 ", id), false)
	v3 := build(repo+":v3", fmt.Sprint("v3 ", id), false)
	v4 := build(repo+":v4", fmt.Sprint("v4 ", id), false)
	otherID := build(other+":x", fmt.Sprint("other ", id), false)
	// v2 is also tagged in another repository: it only loses its tag.
	if err := docker.ImageTag(ctx, repo+":v2", other+":v2"); err != nil {
		t.Fatal(err)
	}
	refs = append(refs, other+":v2")

	removed, err := Prune(ctx, docker, repo, 2)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if removed != 4 {
		t.Errorf("Prune removed %d images, want 4 (v0, v1, v2 untagged, the v0 leftover)", removed)
	}
	exists := func(ref string) bool {
		_, err := docker.ImageInspect(ctx, ref)
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	for ref, want := range map[string]bool{
		repo + ":v4": true, repo + ":v3": true, v4: true, v3: true,
		repo + ":v2": false, v2: true, other + ":v2": true,
		repo + ":v1": false, v1: false,
		repo + ":v0": false, v0: false, leftover: false,
		other + ":x": true, otherID: true,
	} {
		if got := exists(ref); got != want {
			t.Errorf("after Prune, %s exists = %v, want %v", ref, got, want)
		}
	}

	// Nothing more to remove; bad arguments are refused.
	if removed, err := Prune(ctx, docker, repo, 2); err != nil || removed != 0 {
		t.Errorf("second Prune = %d, %v; want 0, nil", removed, err)
	}
	for _, bad := range []string{repo + ":v4", repo + "*", ""} {
		if _, err := Prune(ctx, docker, bad, 1); err == nil {
			t.Errorf("Prune(%q) = nil error, want one", bad)
		}
	}
	if _, err := Prune(ctx, docker, repo, -1); err == nil {
		t.Errorf("Prune(keep -1) = nil error")
	}
}

func TestIsCacheRace(t *testing.T) {
	race := errors.New(`build 127.0.0.1:1/kgd-test/build:t1: unable to find image "sha256:2fc61a786ffa6e565c912f46bc89c48bad60835c4520c1e16dc3bcd5b2722e99"`)
	if !isCacheRace(race) {
		t.Errorf("isCacheRace(%v) = false", race)
	}
	for _, err := range []error{errors.New("unable to find image 'alpine:latest' locally"), errors.New("COPY failed: file not found")} {
		if isCacheRace(err) {
			t.Errorf("isCacheRace(%v) = true: a user's build error would be retried", err)
		}
	}
}
