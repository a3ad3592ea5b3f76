package localstack

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/docker/docker/client"
)

// dockerReadyTimeout bounds the wait for a dockerd the stack started.
const dockerReadyTimeout = 60 * time.Second

// dockerd is a Docker daemon the stack started itself (and so stops).
type dockerd struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// docker makes sure a Docker Engine answers, for the runner's builds. One
// that answers (DOCKER_HOST or the default socket) is used as it is. If
// none does, DOCKER_HOST is unset, dockerd is installed and we are root,
// dockerd is started in its own session, logging to logDir/dockerd.log,
// and returned so that it is stopped at exit. Otherwise the returned
// warning says what to do; the stack runs without builds.
func docker(ctx context.Context, logDir string) (started *dockerd, version, warning string, err error) {
	ping := func(timeout time.Duration) (string, error) {
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return "", err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if _, err := cli.Ping(ctx); err != nil {
			return "", err
		}
		v, err := cli.ServerVersion(ctx)
		if err != nil {
			return "", err
		}
		return v.Version, nil
	}
	v, pingErr := ping(3 * time.Second)
	if pingErr != nil && ctx.Err() == nil && os.Getenv("DOCKER_HOST") == "" && engineListening() {
		// An engine listens but answers slowly (a busy machine; a CI run
		// beside another test run took more than 3 s): wait for it.
		// Starting another dockerd would only fail on its socket and pid
		// file.
		v, pingErr = ping(dockerReadyTimeout)
	}
	if pingErr == nil {
		return nil, v, "", nil
	}
	path, lookErr := exec.LookPath("dockerd")
	switch {
	case os.Getenv("DOCKER_HOST") != "":
		return nil, "", fmt.Sprintf("no Docker Engine answers at DOCKER_HOST=%s (%v): builds will fail until one does", os.Getenv("DOCKER_HOST"), pingErr), nil
	case lookErr != nil:
		return nil, "", fmt.Sprintf("no Docker Engine answers (%v) and dockerd is not installed: builds will fail. Install Docker Engine (Debian: apt-get install docker.io) and start it, or set DOCKER_HOST", pingErr), nil
	case os.Geteuid() != 0:
		return nil, "", fmt.Sprintf("no Docker Engine answers (%v): builds will fail. Start it (sudo systemctl start docker, or sudo dockerd &) or set DOCKER_HOST", pingErr), nil
	}

	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, "", "", fmt.Errorf("docker: %w", err)
	}
	logPath := filepath.Join(logDir, "dockerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, "", "", fmt.Errorf("docker: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: the terminal's Ctrl-C must not reach it, the stack
	// stops it after the runner.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, "", "", fmt.Errorf("start dockerd: %w", err)
	}
	d := &dockerd{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	deadline := time.Now().Add(dockerReadyTimeout)
	for {
		if v, err := ping(time.Second); err == nil {
			return d, v, "", nil
		}
		select {
		case <-d.done:
			return nil, "", "", fmt.Errorf("dockerd exited at start; see %s", logPath)
		case <-ctx.Done():
			d.stop()
			return nil, "", "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, "", "", fmt.Errorf("dockerd did not answer within %s; see %s", dockerReadyTimeout, logPath)
		}
	}
}

// defaultEngineSocket is where the machine's Docker Engine listens
// without DOCKER_HOST.
const defaultEngineSocket = "/var/run/docker.sock"

// engineListening reports whether something accepts connections on the
// default engine socket: an engine is there, answering or not.
func engineListening() bool {
	c, err := net.DialTimeout("unix", defaultEngineSocket, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stop stops a dockerd the stack started: SIGTERM, SIGKILL after 20 s.
func (d *dockerd) stop() {
	if d == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}
