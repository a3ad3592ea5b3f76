// Package dockerd runs Docker Engines of the tests' own, for tests that
// must stop an engine, prune its whole build cache or configure it
// differently from the machine's: each has its own socket, data root,
// exec root, pid file and network bridge, and no iptables rules, so it
// leaves the machine's engine (and the other tests using it) alone.
//
// It is a test harness: nothing that ships imports it (testbed/ holds
// what only tests and make run use).
//
// Each engine gets a bridge of its own rather than --bridge=none: a dockerd
// started with --bridge=none deletes the host's docker0 (moby removes the
// default bridge it is told not to use), which the machine's engine needs
// for every RUN step of every build.
//
// Starting an engine needs root, the dockerd binary on PATH (Debian:
// docker.io) and ip (iproute2); New fails with a message naming what is
// missing, so a test fails loudly rather than skip.
package dockerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docker/docker/client"
)

// Options configure an Engine.
type Options struct {
	// LogDir is where dockerd.log is written; empty: the engine's own
	// directory (removed by Close).
	LogDir string
	// LegacyBuilderPreferred sets features.buildkit=false in the
	// engine's daemon.json: it then answers /_ping with Builder-Version 1
	// like an engine that prefers the legacy builder (Docker 20.10 still
	// builds with BuildKit when a request asks for it).
	LegacyBuilderPreferred bool
}

// Engine is one dockerd of the tests' own. Start and Stop may be called
// again and again (a test stops the engine and starts it again); Close
// stops it for good and removes its bridge and files.
type Engine struct {
	dir     string
	bridge  string
	host    string
	logPath string
	config  string
	cmd     *exec.Cmd
	done    chan struct{}
	log     *os.File
}

// engines numbers the engines of this process, for unique bridges.
var engines atomic.Int32

// New prepares an engine: its directory, daemon.json and bridge. Start
// starts it.
func New(opts Options) (*Engine, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a Docker Engine of the tests' own (dockerd) needs root: run the tests as root")
	}
	if _, err := exec.LookPath("dockerd"); err != nil {
		return nil, fmt.Errorf("a Docker Engine of the tests' own needs the dockerd binary on PATH (Debian: apt-get install docker.io): %w", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("a Docker Engine of the tests' own needs ip for its bridge (Debian: apt-get install iproute2): %w", err)
	}
	// A short directory: a unix socket's path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "kgd-dockerd-")
	if err != nil {
		return nil, err
	}
	e := &Engine{dir: dir, host: "unix://" + filepath.Join(dir, "docker.sock")}
	e.logPath = filepath.Join(dir, "dockerd.log")
	if opts.LogDir != "" {
		e.logPath = filepath.Join(opts.LogDir, "dockerd.log")
	}
	// At most 15 bytes (IFNAMSIZ), unique per process and engine; a /24
	// of 10.200.0.0/13 unlikely to be in use.
	n, pid := int(engines.Add(1)), os.Getpid()
	e.bridge = fmt.Sprintf("kgd%d-%d", pid%1_000_000, n%1000)
	cidr := fmt.Sprintf("10.%d.%d.1/24", 200+(pid+n)%8, (pid/8+n)%250+1)
	_ = exec.Command("ip", "link", "del", e.bridge).Run() // left by a killed run with the same pid
	for _, args := range [][]string{
		{"link", "add", "name", e.bridge, "type", "bridge"},
		{"addr", "add", cidr, "dev", e.bridge},
		{"link", "set", e.bridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			e.Close()
			return nil, fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	config := `{}`
	if opts.LegacyBuilderPreferred {
		config = `{"features":{"buildkit":false}}`
	}
	e.config = filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(e.config, []byte(config), 0o644); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Host is the engine's DOCKER_HOST.
func (e *Engine) Host() string { return e.host }

// LogPath is the engine's log file.
func (e *Engine) LogPath() string { return e.logPath }

// Client returns a client of the engine; the caller closes it.
func (e *Engine) Client() (*client.Client, error) {
	return client.NewClientWithOpts(client.WithHost(e.host), client.WithAPIVersionNegotiation())
}

// startAttempts bounds Start's tries: dockerd gives the containerd it
// starts 15 seconds, and exits ("timeout waiting for containerd to
// start") when a busy machine needs longer (moby/moby#42747); a CI run
// alongside another test run hit it. Only that exit is retried.
const startAttempts = 3

// Start starts dockerd and waits until it answers, until ctx ends. A
// start that failed because containerd was slow to start is tried again
// (startAttempts in all); any other failure is returned with the end of
// dockerd's log.
func (e *Engine) Start(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := e.start(ctx)
		if err == nil || !errors.Is(err, errExited) || attempt == startAttempts || !e.logContains("timeout waiting for containerd") {
			return err
		}
	}
}

// errExited marks a dockerd that exited before it answered.
var errExited = errors.New("dockerd exited at start")

// logContains reports whether dockerd's log holds s.
func (e *Engine) logContains(s string) bool {
	b, err := os.ReadFile(e.logPath)
	return err == nil && strings.Contains(string(b), s)
}

// logTail returns the last lines of dockerd's log, for an error message.
func (e *Engine) logTail() string {
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

func (e *Engine) start(ctx context.Context) error {
	if e.running() {
		return errors.New("dockerd is running already")
	}
	var err error
	if e.log, err = os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return err
	}
	e.cmd = exec.Command("dockerd", "--config-file", e.config, "--host", e.host,
		"--data-root", filepath.Join(e.dir, "data"), "--exec-root", filepath.Join(e.dir, "exec"),
		"--pidfile", filepath.Join(e.dir, "docker.pid"), "--bridge", e.bridge,
		"--iptables=false", "--ip6tables=false", "--log-level=warn")
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	// Its own process group, and killed if the test process dies.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		e.log.Close()
		return fmt.Errorf("start dockerd: %w", err)
	}
	done := make(chan struct{})
	e.done = done
	go func() {
		e.cmd.Wait()
		e.log.Close()
		close(done)
	}()
	c, err := e.Client()
	if err != nil {
		e.Stop()
		return err
	}
	defer c.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%w (%v); its log %s ends:\n%s", errExited, e.cmd.ProcessState, e.logPath, e.logTail())
		case <-ctx.Done():
			e.Stop()
			return fmt.Errorf("dockerd did not answer (%v): %w; see its log %s", err, ctx.Err(), e.logPath)
		case <-tick.C:
		}
	}
}

func (e *Engine) running() bool {
	if e.done == nil {
		return false
	}
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// Stop stops dockerd as an administrator does (SIGTERM: it stops its
// containers and exits), and kills its process group if it has not exited
// after a minute. Stopping a stopped engine does nothing.
func (e *Engine) Stop() error {
	if !e.running() {
		return nil
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
		return nil
	case <-time.After(time.Minute):
		syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
		return errors.New("dockerd did not stop within a minute of SIGTERM: killed")
	}
}

// Close stops the engine and removes its bridge and directory.
func (e *Engine) Close() error {
	err := e.Stop()
	if out, lerr := exec.Command("ip", "link", "del", e.bridge).CombinedOutput(); lerr != nil && err == nil {
		err = fmt.Errorf("remove bridge %s: %v: %s", e.bridge, lerr, out)
	}
	if rerr := os.RemoveAll(e.dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}
