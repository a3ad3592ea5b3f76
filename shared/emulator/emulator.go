// Package emulator starts and stops the Google Cloud Firestore and Pub/Sub
// emulators that ship with the Google Cloud SDK, so tests and local runs use
// the real emulators rather than fakes.
//
// The emulators are started directly with java (not through gcloud, which
// probes the cloud metadata server and orphans the JVM when stopped), each in
// its own process group on a free loopback port, and are stopped by killing
// that group. Firestore runs with a bounded heap (-Xmx512m): without it the
// JVM grows to more than a gigabyte.
package emulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables the Google client libraries read. Setting
// GCE_METADATA_HOST to a closed loopback port guarantees no library ever
// probes the real metadata address while looking for credentials.
const (
	FirestoreHostEnv = "FIRESTORE_EMULATOR_HOST"
	PubSubHostEnv    = "PUBSUB_EMULATOR_HOST"
	MetadataHostEnv  = "GCE_METADATA_HOST"

	// MetadataHostLoopback is a loopback address on which nothing listens.
	MetadataHostLoopback = "127.0.0.1:1"
)

// Service names one emulator.
type Service string

// The emulators this package can run.
const (
	Firestore Service = "firestore"
	PubSub    Service = "pubsub"
)

// ErrSDKMissing reports that the Google Cloud SDK or one of its emulator
// components is not installed. Callers (tests included) must treat it as a
// hard failure: the emulators cannot be installed from any registry here.
var ErrSDKMissing = errors.New("google cloud sdk emulator not installed")

// Options configures Start. The zero value starts both emulators.
type Options struct {
	// Services to start; empty means both.
	Services []Service
	// SDKRoot is the Google Cloud SDK installation directory. Empty means
	// $CLOUDSDK_ROOT, else the directory of the gcloud on PATH, else
	// /usr/lib/google-cloud-sdk.
	SDKRoot string
	// Java is the java binary; empty means "java" from PATH.
	Java string
	// Ports to listen on; 0 picks a free port.
	FirestorePort, PubSubPort int
	// Log receives both emulators' output. Nil discards it (the last lines
	// are still kept for error messages).
	Log io.Writer
	// ReadyTimeout bounds the wait for readiness; 0 means 60 s.
	ReadyTimeout time.Duration
}

// Emulators is a running set of emulators. Stop must be called.
type Emulators struct {
	// FirestoreHost and PubSubHost are "127.0.0.1:port", empty if the
	// emulator was not started.
	FirestoreHost string
	PubSubHost    string

	procs []*process

	// What StartService needs to start an emulator again.
	java    string
	specs   map[Service]spec
	log     io.Writer
	timeout time.Duration
}

// Start launches the requested emulators in parallel and waits until each
// answers on its port. On error every process already started is stopped.
func Start(ctx context.Context, opts Options) (*Emulators, error) {
	services := opts.Services
	if len(services) == 0 {
		services = []Service{Firestore, PubSub}
	}
	root := sdkRoot(opts.SDKRoot)
	java := opts.Java
	if java == "" {
		java = "java"
	}
	if _, err := exec.LookPath(java); err != nil {
		return nil, fmt.Errorf("%w: java not found on PATH (the emulators need Java 17): %v", ErrSDKMissing, err)
	}
	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}

	var specs []spec
	for _, s := range services {
		sp, err := newSpec(s, root, opts)
		if err != nil {
			return nil, err
		}
		specs = append(specs, sp)
	}

	e := &Emulators{java: java, specs: map[Service]spec{}, log: opts.Log, timeout: timeout}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for _, sp := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := launch(ctx, java, sp, opts.Log, timeout)
			mu.Lock()
			defer mu.Unlock()
			if p != nil {
				e.procs = append(e.procs, p)
			}
			if err != nil {
				errs = append(errs, err)
				return
			}
			switch sp.service {
			case Firestore:
				e.FirestoreHost = p.addr
			case PubSub:
				e.PubSubHost = p.addr
			}
			sp.port = p.port()
			e.specs[sp.service] = sp
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// Env returns the environment assignments that point Google client
// libraries at these emulators, including GCE_METADATA_HOST.
func (e *Emulators) Env() []string {
	env := []string{MetadataHostEnv + "=" + MetadataHostLoopback}
	if e.FirestoreHost != "" {
		env = append(env, FirestoreHostEnv+"="+e.FirestoreHost)
	}
	if e.PubSubHost != "" {
		env = append(env, PubSubHostEnv+"="+e.PubSubHost)
	}
	return env
}

// Setenv applies Env to the current process.
func (e *Emulators) Setenv() error {
	for _, kv := range e.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("set %s: %w", k, err)
		}
	}
	return nil
}

// Stop terminates every emulator process group: SIGTERM first, SIGKILL after
// 10 s. It is safe to call more than once.
func (e *Emulators) Stop() error {
	var wg sync.WaitGroup
	for _, p := range e.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(10 * time.Second)
		}()
	}
	wg.Wait()
	e.procs = nil
	return nil
}

// StopService stops one emulator as a crash or a restart would (SIGTERM,
// SIGKILL after 10 s); its address stays reserved for StartService in
// FirestoreHost or PubSubHost. Stopping a stopped emulator does nothing.
func (e *Emulators) StopService(s Service) error {
	if _, ok := e.specs[s]; !ok {
		return fmt.Errorf("stop the %s emulator: not started by these Emulators", s)
	}
	procs := e.procs[:0]
	for _, p := range e.procs {
		if p.service == s {
			p.stop(10 * time.Second)
			continue
		}
		procs = append(procs, p)
	}
	e.procs = procs
	return nil
}

// RestartOptions configures StartService.
type RestartOptions struct {
	// FirestoreImport, for the Firestore emulator, is an export to load
	// at start: the .overall_export_metadata file ExportFirestore
	// returns.
	FirestoreImport string
}

// StartService starts an emulator stopped by StopService again, on the
// same address, and waits until it answers. The emulators keep no data
// across a restart (the Pub/Sub emulator has no topics, the Firestore
// emulator no documents) unless opts.FirestoreImport loads an export.
func (e *Emulators) StartService(ctx context.Context, s Service, opts RestartOptions) error {
	sp, ok := e.specs[s]
	if !ok {
		return fmt.Errorf("start the %s emulator: not started by these Emulators", s)
	}
	for _, p := range e.procs {
		if p.service == s {
			return fmt.Errorf("start the %s emulator: it is running", s)
		}
	}
	if opts.FirestoreImport != "" {
		if s != Firestore {
			return fmt.Errorf("start the %s emulator: only the Firestore emulator imports data", s)
		}
		sp.args = append(slices.Clone(sp.args), "--import-data="+opts.FirestoreImport)
	}
	p, err := launch(ctx, e.java, sp, e.log, e.timeout)
	if p != nil {
		e.procs = append(e.procs, p)
	}
	return err
}

// ExportFirestore exports the documents of project in the Firestore
// emulator at host into a new directory under dir, and returns the export's
// .overall_export_metadata file for RestartOptions.FirestoreImport. An
// export taken while clients write may miss their last writes.
func ExportFirestore(ctx context.Context, host, project, dir string) (string, error) {
	body := fmt.Sprintf(`{"database":"projects/%s/databases/(default)","export_directory":%q}`, project, dir)
	u := fmt.Sprintf("http://%s/emulator/v1/projects/%s:export", host, project)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("export firestore project %s: %w", project, err)
	}
	req.Header.Set("Content-Type", "application/json")
	before, _ := filepath.Glob(filepath.Join(dir, "*", "*.overall_export_metadata"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("export firestore project %s: %w", project, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("export firestore project %s: emulator answered %s: %s", project, resp.Status, bytes.TrimSpace(msg))
	}
	after, _ := filepath.Glob(filepath.Join(dir, "*", "*.overall_export_metadata"))
	for _, f := range after {
		if !slices.Contains(before, f) {
			return f, nil
		}
	}
	return "", fmt.Errorf("export firestore project %s: no new export in %s", project, dir)
}

// ClearFirestore deletes every document of one project in the Firestore
// emulator, leaving other projects untouched.
func ClearFirestore(ctx context.Context, host, project string) error {
	u := fmt.Sprintf("http://%s/emulator/v1/projects/%s/databases/(default)/documents", host, project)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return fmt.Errorf("clear firestore project %s: %w", project, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("clear firestore project %s: %w", project, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("clear firestore project %s: emulator answered %s", project, resp.Status)
	}
	return nil
}

type spec struct {
	service Service
	port    int
	args    []string // after "java"; "{port}" is replaced by the port
}

func newSpec(s Service, root string, opts Options) (spec, error) {
	platform := filepath.Join(root, "platform")
	switch s {
	case Firestore:
		jar := filepath.Join(platform, "cloud-firestore-emulator", "cloud-firestore-emulator.jar")
		if _, err := os.Stat(jar); err != nil {
			return spec{}, fmt.Errorf("%w: firestore emulator jar %s: install the google-cloud-cli-firestore-emulator package", ErrSDKMissing, jar)
		}
		args := []string{"-Xmx512m", "-Duser.language=en", "-cp", jar,
			"com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start",
			"--host=127.0.0.1", "--port={port}", "--database-mode=firestore-native"}
		return spec{service: s, port: opts.FirestorePort, args: args}, nil
	case PubSub:
		jars, _ := filepath.Glob(filepath.Join(platform, "pubsub-emulator", "lib", "cloud-pubsub-emulator-*-all.jar"))
		if len(jars) == 0 {
			return spec{}, fmt.Errorf("%w: no pubsub emulator jar under %s: install the google-cloud-cli-pubsub-emulator package", ErrSDKMissing, filepath.Join(platform, "pubsub-emulator", "lib"))
		}
		args := []string{"-Xmx256m", "-jar", jars[len(jars)-1], "--host=127.0.0.1", "--port={port}"}
		return spec{service: s, port: opts.PubSubPort, args: args}, nil
	default:
		return spec{}, fmt.Errorf("unknown emulator %q", s)
	}
}

func sdkRoot(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if r := os.Getenv("CLOUDSDK_ROOT"); r != "" {
		return r
	}
	if p, err := exec.LookPath("gcloud"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(filepath.Dir(real))
		}
	}
	return "/usr/lib/google-cloud-sdk"
}

// port returns the port p listens on.
func (p *process) port() int {
	_, port, _ := net.SplitHostPort(p.addr)
	n, _ := strconv.Atoi(port)
	return n
}

// process is one emulator JVM in its own process group.
type process struct {
	service Service
	addr    string
	cmd     *exec.Cmd
	done    chan struct{}
	tail    *tailBuffer
	once    sync.Once
}

func launch(ctx context.Context, java string, sp spec, log io.Writer, timeout time.Duration) (*process, error) {
	port := sp.port
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, fmt.Errorf("start %s emulator: %w", sp.service, err)
		}
	} else if err := portFree(port); err != nil {
		return nil, fmt.Errorf("start %s emulator: port %d: %w", sp.service, port, err)
	}
	args := make([]string, len(sp.args))
	for i, a := range sp.args {
		args[i] = strings.ReplaceAll(a, "{port}", strconv.Itoa(port))
	}
	tail := &tailBuffer{max: 8 << 10}
	var out io.Writer = tail
	if log != nil {
		out = io.MultiWriter(tail, &prefixWriter{prefix: "[" + string(sp.service) + "-emulator] ", w: log})
	}
	cmd := exec.Command(java, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s emulator: %w", sp.service, err)
	}
	p := &process{service: sp.service, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, done: make(chan struct{}), tail: tail}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(ctx, timeout); err != nil {
		return p, err
	}
	return p, nil
}

// waitReady polls GET / until the emulator answers 200 (both emulators
// serve HTTP/1 and gRPC on one port), the process exits, or time runs out.
func (p *process) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s emulator exited before it was ready; its last output:\n%s", p.service, p.tail.String())
		case <-ctx.Done():
			return fmt.Errorf("%s emulator not ready on %s after %s; its last output:\n%s", p.service, p.addr, timeout, p.tail.String())
		case <-tick.C:
		}
	}
}

func (p *process) stop(grace time.Duration) {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		// The JVM may leave helper processes in the group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("already in use: %w", err)
	}
	return l.Close()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// prefixWriter prefixes every line it forwards, for readable combined logs.
type prefixWriter struct {
	mu      sync.Mutex
	prefix  string
	w       io.Writer
	midLine bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, c := range b {
		if !p.midLine {
			out = append(out, p.prefix...)
			p.midLine = true
		}
		out = append(out, c)
		if c == '\n' {
			p.midLine = false
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}
