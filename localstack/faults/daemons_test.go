//go:build linux

package faults_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
	dockerdtb "github.com/kube-git-deploy/kube-git-deploy/testbed/dockerd"
)

// testDockerEngineStopped stops the runner's Docker Engine (a dockerd of
// the scenario's own, so the machine's engine, which other tests use,
// is left alone) while a build runs: the job ends Failed with
// BUILD_DOCKER_DAEMON_NOT_RUNNING and a message that says what to do, the
// runner's /healthz reports the engine, and once dockerd runs again the
// next push succeeds.
func testDockerEngineStopped(t *testing.T, e *env) {
	d := startDockerd(t)
	port := freePort(t)
	s := start(t, e, "dockerd", options{dockerHost: d.host, env: []string{"KGD_HEALTH_PORT=" + strconv.Itoa(port)}})
	healthz := "http://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	s.waitFor("the runner healthy", stepTimeout, health(healthz, http.StatusOK, ""))

	gate := token()
	p := s.pushJob(commit{gate: gate})
	s.waitBuilding(p.JobID)
	s.atGate(p.JobID, gate, 1)
	stopped := time.Now()
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	j := s.finished(p.JobID)
	it := s.iteration(p.JobID)
	recovery(t, "job ended after the engine stopped", stopped)
	if j.Status != store.StatusFailed || it.Err.GetErrCode() != enumspb.StatusCode_BUILD_DOCKER_DAEMON_NOT_RUNNING {
		t.Errorf("job: %s %q, %s; want failed with BUILD_DOCKER_DAEMON_NOT_RUNNING", j.Status, j.Error, it)
	}
	checkActionable(t, it.Err, "DOCKER_HOST", enumspb.SuggestionCode_CHECK_DOCKER_RUNNING)
	s.waitFor("/healthz to report the Docker Engine", stepTimeout, health(healthz, http.StatusServiceUnavailable, "docker engine"))

	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	s.waitFor("the runner healthy again", stepTimeout, health(healthz, http.StatusOK, ""))
	recovery(t, "runner healthy after dockerd started again", stopped)
	next := s.pushJob(commit{})
	s.succeeded(next.JobID)
	fault(t, "Docker Engine stopped (SIGTERM) mid-build; job Failed with BUILD_DOCKER_DAEMON_NOT_RUNNING "+
		"(suggestion CHECK_DOCKER_RUNNING), runner /healthz 503 naming the engine until it ran again; the next push deployed", stopped)
}

// testRegistryDown stops the registry while the image builds, so that the
// push finds it down: the job ends Failed with a push error that names the
// registry, and once the registry is back the next push succeeds.
func testRegistryDown(t *testing.T, e *env) {
	s := start(t, e, "registry", options{})
	gate := token()
	p := s.pushJob(commit{gate: gate})
	s.waitBuilding(p.JobID)
	s.atGate(p.JobID, gate, 1)
	if err := s.st.StopRegistry(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	s.env.gates.open(gate) // the build ends, the push starts: the registry is down

	j := s.finished(p.JobID)
	it := s.iteration(p.JobID)
	recovery(t, "job ended after the registry stopped", stopped)
	// The push fails for a reason other than access (which would be
	// BUILD_PUSH_ACCESS_DENIED): Skaffold's code for a failed docker push
	// is BUILD_DOCKER_UNKNOWN; the message names the registry.
	if j.Status != store.StatusFailed || it.Err.GetErrCode() != enumspb.StatusCode_BUILD_DOCKER_UNKNOWN {
		t.Errorf("job: %s %q, %s; want failed with BUILD_DOCKER_UNKNOWN", j.Status, j.Error, it)
	}
	checkActionable(t, it.Err, s.st.URLs.Registry, -1)

	if err := s.st.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	next := s.pushJob(commit{})
	s.succeeded(next.JobID)
	fault(t, "registry down when the image was pushed; job Failed with BUILD_DOCKER_UNKNOWN naming the registry "+
		"(connection refused); the next push deployed once it was back", stopped)
}

// testAPIServerDown stops kube-apiserver (of a control plane of the
// scenario's own; etcd and the rest keep running) while the image builds,
// so that the deploy finds it down: the job ends Failed with
// DEPLOY_CLUSTER_CONNECTION_ERR, and once the apiserver runs again the
// next push succeeds.
func testAPIServerDown(t *testing.T, e *env) {
	cp := startControlPlane(t)
	s := start(t, e, "apiserver", options{kubeconfig: cp.Kubeconfig})
	gate := token()
	p := s.pushJob(commit{gate: gate})
	s.waitBuilding(p.JobID)
	s.atGate(p.JobID, gate, 1)
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	s.env.gates.open(gate)

	j := s.finished(p.JobID)
	it := s.iteration(p.JobID)
	recovery(t, "job ended after kube-apiserver stopped", stopped)
	if j.Status != store.StatusFailed || it.Err.GetErrCode() != enumspb.StatusCode_DEPLOY_CLUSTER_CONNECTION_ERR {
		t.Errorf("job: %s %q, %s; want failed with DEPLOY_CLUSTER_CONNECTION_ERR", j.Status, j.Error, it)
	}
	checkActionable(t, it.Err, strings.TrimSuffix(strings.TrimPrefix(cp.Config.Host, "https://"), "/"), enumspb.SuggestionCode_CHECK_CLUSTER_CONNECTION)
	if n := s.deploys(p.JobID); n != 0 {
		t.Errorf("deploy events: %d Complete", n)
	}

	if err := cp.StartAPIServer(s.ctx); err != nil {
		t.Fatal(err)
	}
	recovery(t, "kube-apiserver ready again", stopped)
	next := s.pushJob(commit{})
	it = s.succeeded(next.JobID)
	if img := s.image("app"); img != builtImage(it) {
		t.Errorf("deployment runs %s, the next push built %s", img, builtImage(it))
	}
	fault(t, "kube-apiserver stopped before the deploy; job Failed with DEPLOY_CLUSTER_CONNECTION_ERR naming the "+
		"API server (suggestion CHECK_CLUSTER_CONNECTION), nothing deployed; the next push deployed once it was back", stopped)
}

// checkActionable checks that a failure's message names what (the
// daemon's setting, the registry, the cluster) and, unless suggestion is
// negative, that it suggests the fix.
func checkActionable(t *testing.T, err *v1pb.ActionableErr, what string, suggestion enumspb.SuggestionCode) {
	t.Helper()
	if !strings.Contains(err.GetMessage(), what) {
		t.Errorf("error message %q does not name %s", err.GetMessage(), what)
	}
	if suggestion < 0 {
		return
	}
	if !slices.ContainsFunc(err.GetSuggestions(), func(s *v1pb.Suggestion) bool { return s.GetSuggestionCode() == suggestion }) {
		t.Errorf("error suggestions %v lack %s", err.GetSuggestions(), suggestion)
	}
}

// health returns a condition: GET url answers status with a body
// containing want.
func health(url string, status int, want string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != status || !strings.Contains(string(b), want) {
			return false, fmt.Errorf("%s: %s %s", url, resp.Status, b)
		}
		return true, nil
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startControlPlane starts a control plane of the scenario's own.
func startControlPlane(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "controlplane.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{Log: f})
	if err != nil {
		t.Fatalf("start a control plane: %v", err)
	}
	t.Cleanup(func() {
		cp.Stop()
		f.Close()
	})
	return cp
}

// dockerd is a Docker Engine of the tests' own (testbed/dockerd: its own
// socket, data, state, pid file and bridge, no iptables rules), so it
// leaves the machine's engine alone.
type dockerd struct {
	*dockerdtb.Engine
	host string // DOCKER_HOST
}

// startDockerd starts a dockerd that stops with the test.
func startDockerd(t *testing.T) *dockerd {
	t.Helper()
	d, err := newDockerd(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.close(); err != nil {
			t.Error(err)
		}
	})
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	return d
}

// newDockerd prepares a dockerd logging into logDir; start starts it.
// What it needs (root, dockerd, ip) is checked here: the scenarios fail
// rather than skip (CI: .ci/run installs docker.io and runs as root).
func newDockerd(logDir string) (*dockerd, error) {
	e, err := dockerdtb.New(dockerdtb.Options{LogDir: logDir})
	if err != nil {
		return nil, fmt.Errorf("the fault tests start Docker Engines of their own: %w", err)
	}
	return &dockerd{Engine: e, host: e.Host()}, nil
}

// start starts dockerd and waits until it answers.
func (d *dockerd) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		return fmt.Errorf("%w; its log ends:\n%s", err, logTail(d.LogPath()))
	}
	return nil
}

// stop stops dockerd as an administrator does (SIGTERM: it stops its
// containers and exits).
func (d *dockerd) stop() error { return d.Stop() }

// close stops dockerd and removes its bridge and files.
func (d *dockerd) close() error { return d.Close() }

// logTail returns the last lines of the file at path, for an error.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
