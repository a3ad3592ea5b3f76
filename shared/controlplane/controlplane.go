//go:build unix

// Package controlplane runs a real, local Kubernetes control plane on
// 127.0.0.1 for tests: etcd and kube-apiserver (through controller-runtime's
// envtest), kube-controller-manager, kube-scheduler and kwok, which fakes
// the kubelet of one Ready node so that pods run without containers.
//
// The binaries are built by tools/k8s/build.sh.
package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// ErrBinariesMissing is returned by Start when a control plane binary is not
// in the binary directory.
var ErrBinariesMissing = errors.New("kubernetes control plane binaries missing: run tools/k8s/build.sh (it prints the directory; set KGD_K8S_BIN if it is not ~/.cache/kgd/k8s-bin)")

// NodeName is the name of the kwok-managed fake node.
const NodeName = "kwok-node-0"

// binaries are the files Start needs in Options.BinDir.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml"}

// readyTimeout bounds how long Start waits for the node to become Ready.
const readyTimeout = 3 * time.Minute

// Options configures Start.
type Options struct {
	// BinDir holds the binaries. Default: $KGD_K8S_BIN, else ~/.cache/kgd/k8s-bin.
	BinDir string
	// Log receives the output of every process. Nil discards it, but the
	// last lines are kept and included in errors.
	Log io.Writer
}

// ControlPlane is a running control plane. Stop it with Stop.
type ControlPlane struct {
	// Kubeconfig is the path of an admin kubeconfig file.
	Kubeconfig string
	// Config is the admin client configuration.
	Config *rest.Config

	env      *envtest.Environment
	dir      string
	children []*child
	tail     *tailWriter
	out      io.Writer

	// kube-apiserver once StopAPIServer stopped envtest's: its command
	// line and environment, and the process StartAPIServer started.
	apiMu      sync.Mutex
	apiArgv    []string
	apiEnv     []string
	api        *child
	apiStopped bool

	stopOnce sync.Once
	stopErr  error
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// DefaultBinDir returns $KGD_K8S_BIN, else ~/.cache/kgd/k8s-bin.
func DefaultBinDir() string {
	if d := os.Getenv("KGD_K8S_BIN"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".cache", "kgd", "k8s-bin")
}

// CheckBinaries reports ErrBinariesMissing (wrapped, naming the file) if a
// needed file is not in dir.
func CheckBinaries(dir string) error {
	if dir == "" {
		return fmt.Errorf("%w (no binary directory)", ErrBinariesMissing)
	}
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return fmt.Errorf("%w: %s not found in %s", ErrBinariesMissing, b, dir)
		}
	}
	return nil
}

var setLoggerOnce sync.Once

// Start starts the control plane and returns once the fake node is Ready and
// the default namespace's ServiceAccount exists. On error everything started
// so far is stopped.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir()
	}
	if err := CheckBinaries(opts.BinDir); err != nil {
		return nil, err
	}
	tail := &tailWriter{max: 64 << 10}
	var out io.Writer = tail
	if opts.Log != nil {
		out = io.MultiWriter(opts.Log, tail)
	}
	// envtest logs a few start-up lines through controller-runtime's
	// global logger, which prints a stack trace to stderr when nobody set
	// one. The processes' own output (out) is what matters; drop those.
	setLoggerOnce.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	dir, err := os.MkdirTemp("", "kgd-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	c := &ControlPlane{dir: dir, tail: tail, out: out}
	if err := c.start(ctx, opts.BinDir, out); err != nil {
		_ = c.Stop()
		if t := tail.String(); t != "" {
			return nil, fmt.Errorf("start control plane: %w\nlast output:\n%s", err, t)
		}
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	return c, nil
}

func (c *ControlPlane) start(ctx context.Context, binDir string, out io.Writer) error {
	env := &envtest.Environment{
		BinaryAssetsDirectory: binDir,
		// Generous: on a busy machine (two test runs at once) etcd and
		// kube-apiserver took longer than envtest's default 20 s to
		// register the default namespace. It only bounds a hang.
		ControlPlaneStartTimeout: 3 * time.Minute,
		ControlPlaneStopTimeout:  20 * time.Second,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{Out: out, Err: out}
	env.ControlPlane.APIServer = &envtest.APIServer{Out: out, Err: out}
	c.env = env
	cfg, err := env.Start()
	if err != nil {
		c.env = nil
		_ = env.Stop()
		return fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	c.Config = cfg
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	caFile := filepath.Join(c.dir, "ca.crt")
	if err := os.WriteFile(caFile, cfg.CAData, 0o600); err != nil {
		return fmt.Errorf("write ca: %w", err)
	}
	saKey := filepath.Join(env.ControlPlane.APIServer.CertDir, "sa-signer.key")

	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	// Create the node before kwok starts so it is managed at once.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        NodeName,
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		Labels: map[string]string{
			"kubernetes.io/hostname": NodeName,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     "amd64",
			"type":                   "kwok",
		},
	}}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node: %w", err)
	}

	kc := "--kubeconfig=" + c.Kubeconfig
	procs := []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", []string{kc, "--leader-elect=false", "--secure-port=0",
			"--service-account-private-key-file=" + saKey, "--root-ca-file=" + caFile}},
		{"kube-scheduler", []string{kc, "--leader-elect=false", "--secure-port=0"}},
		{"kwok", []string{kc, "--config=" + filepath.Join(binDir, "kwok-stages.yaml"),
			"--manage-all-nodes=true", "--node-lease-duration-seconds=40",
			"--cidr=10.244.0.0/16", "--node-ip=10.0.0.2"}},
	}
	for _, p := range procs {
		if err := c.spawn(filepath.Join(binDir, p.name), p.name, p.args, out); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, ch := range c.children {
			select {
			case <-ch.done:
				return false, fmt.Errorf("%s exited: %v", ch.name, ch.err)
			default:
			}
		}
		n, err := client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if !nodeReady(n) {
			return false, nil
		}
		for _, t := range n.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady {
				return false, nil
			}
		}
		_, err = client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("wait for node %s to be ready: %w", NodeName, err)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *ControlPlane) spawn(path, name string, args []string, out io.Writer) error {
	cmd := exec.Command(path, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	c.children = append(c.children, ch)
	return nil
}

// Pids returns the process IDs of the children Start launched itself
// (kube-controller-manager, kube-scheduler, kwok), for tests.
func (c *ControlPlane) Pids() []int {
	var pids []int
	for _, ch := range c.children {
		pids = append(pids, ch.cmd.Process.Pid)
	}
	return pids
}

// Stop stops kube-controller-manager, kube-scheduler and kwok, then
// kube-apiserver, then etcd, and removes the temporary files. It is
// idempotent.
func (c *ControlPlane) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		for _, ch := range c.children {
			stopChild(ch)
		}
		c.apiMu.Lock()
		if c.api != nil {
			stopChild(c.api)
			c.api = nil
		}
		c.apiMu.Unlock()
		if c.env != nil {
			// envtest stops the apiserver before etcd.
			if err := c.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop etcd and kube-apiserver: %w", err))
			}
		}
		if c.dir != "" {
			if err := os.RemoveAll(c.dir); err != nil {
				errs = append(errs, err)
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// apiStopTimeout bounds how long StopAPIServer waits for kube-apiserver to
// exit after SIGTERM before it kills it, and apiReadyTimeout how long
// StartAPIServer waits for it to be ready.
const (
	apiStopTimeout  = 30 * time.Second
	apiReadyTimeout = 3 * time.Minute
)

// StopAPIServer stops kube-apiserver as an outage or an upgrade does
// (SIGTERM), leaving etcd and the other processes running: clients see
// the cluster's address refuse connections until StartAPIServer. It
// needs Linux's /proc to find the process envtest started.
func (c *ControlPlane) StopAPIServer() error {
	c.apiMu.Lock()
	defer c.apiMu.Unlock()
	if c.apiStopped {
		return errors.New("stop kube-apiserver: it is stopped")
	}
	if c.api != nil {
		stopChild(c.api)
		c.api = nil
		c.apiStopped = true
		return nil
	}
	if c.env == nil || c.env.ControlPlane.APIServer == nil {
		return errors.New("stop kube-apiserver: the control plane is not running")
	}
	pid, argv, env, err := findAPIServer(c.env.ControlPlane.APIServer.CertDir)
	if err != nil {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop kube-apiserver (pid %d): %w", pid, err)
	}
	// envtest waits for its process, so it is gone once reaped.
	gone := func(context.Context) (bool, error) { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH), nil }
	if wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, apiStopTimeout, true, gone) != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, apiStopTimeout, true, gone); err != nil {
			return fmt.Errorf("stop kube-apiserver (pid %d): it does not exit: %w", pid, err)
		}
	}
	c.apiArgv, c.apiEnv, c.apiStopped = argv, env, true
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the
// same command line: the same address, certificates and etcd, so clients
// and the other processes reconnect as they would after an outage. It
// returns once the server is ready.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	c.apiMu.Lock()
	defer c.apiMu.Unlock()
	if !c.apiStopped {
		return errors.New("start kube-apiserver: it is running")
	}
	cmd := exec.Command(c.apiArgv[0], c.apiArgv[1:]...)
	cmd.Env = c.apiEnv
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	ch := &child{name: "kube-apiserver", cmd: cmd, done: make(chan struct{})}
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	c.api, c.apiStopped = ch, false
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, apiReadyTimeout)
	defer cancel()
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		select {
		case <-ch.done:
			return false, fmt.Errorf("kube-apiserver exited: %v", ch.err)
		default:
		}
		return client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error() == nil, nil
	})
	if err != nil {
		return fmt.Errorf("start kube-apiserver: wait until ready: %w\nlast output:\n%s", err, c.tail.String())
	}
	return nil
}

// findAPIServer returns the process id, command line and environment of
// the kube-apiserver whose certificate directory is certDir, from /proc.
func findAPIServer(certDir string) (int, []string, []string, error) {
	if certDir == "" {
		return 0, nil, nil, errors.New("no certificate directory to find it by")
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, nil, fmt.Errorf("list processes: %w", err)
	}
	split := func(b []byte) []string {
		return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := split(raw)
		if filepath.Base(argv[0]) != "kube-apiserver" {
			continue
		}
		for i, a := range argv {
			if a == "--cert-dir="+certDir || (a == "--cert-dir" && i+1 < len(argv) && argv[i+1] == certDir) {
				rawEnv, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
				if err != nil {
					return 0, nil, nil, fmt.Errorf("read the environment of pid %d: %w", pid, err)
				}
				return pid, argv, split(rawEnv), nil
			}
		}
	}
	return 0, nil, nil, fmt.Errorf("no kube-apiserver process with --cert-dir=%s", certDir)
}

// stopChild sends SIGTERM to the child's process group and SIGKILL if it
// has not exited after 5 s.
func stopChild(ch *child) {
	pgid := ch.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-ch.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-ch.done
	}
	// Anything left in the group (none expected) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = append([]byte(nil), w.buf[len(w.buf)-w.max:]...)
	}
	return len(p), nil
}

// String returns the kept output, starting at a line boundary, limited to
// the last 40 lines.
func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := bytes.Split(bytes.TrimRight(w.buf, "\n"), []byte("\n"))
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
