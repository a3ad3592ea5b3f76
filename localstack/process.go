package localstack

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// child is one of the stack's processes, in its own process group so that
// stopping it stops everything it started, and so that the terminal's
// Ctrl-C reaches only the stack, which then stops its parts in order.
type child struct {
	name  string
	cmd   *exec.Cmd
	out   *lineWriter
	grace time.Duration // between SIGTERM and SIGKILL
	done  chan struct{}
	err   error // of Wait, once done is closed
}

// startChild starts path with args and env, its output going to out.
func startChild(name, path string, args, env []string, out *lineWriter, grace time.Duration) (*child, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, out: out, grace: grace, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		out.Flush()
		close(c.done)
	}()
	return c, nil
}

// exited returns an error describing the child's exit and its last output.
func (c *child) exited() error {
	return fmt.Errorf("%s exited (%v); its last output:\n%s", c.name, c.err, indent(c.out.tail.String()))
}

func indent(s string) string {
	if s == "" {
		return "  (none)"
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// stop sends SIGTERM to the child's process group, and SIGKILL if it has
// not exited after its grace period; anything left in the group is killed.
func (c *child) stop() {
	pgid := c.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(c.grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// running reports whether the child has not exited.
func (c *child) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// waitHTTP polls url until it answers 200, the child exits or ctx ends.
func (c *child) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.done:
			return c.exited()
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %s within %s; its last output:\n%s", c.name, url, timeout, indent(c.out.tail.String()))
		case <-tick.C:
		}
	}
}

// waitLine waits until the child writes a line containing s, exits, or
// ctx ends.
func (c *child) waitLine(ctx context.Context, s string, timeout time.Duration) error {
	seen := make(chan struct{})
	var once bool
	c.out.setWatch(func(line string) {
		if !once && strings.Contains(line, s) {
			once = true
			close(seen)
		}
	})
	defer c.out.setWatch(nil)
	if strings.Contains(c.out.tail.String(), s) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-seen:
		return nil
	case <-c.done:
		return c.exited()
	case <-ctx.Done():
		return fmt.Errorf("%s did not report %q within %s; its last output:\n%s", c.name, s, timeout, indent(c.out.tail.String()))
	}
}

// Process is one of the binaries the stack runs, for tests that break it
// as production would: kill it as a crash does (SIGKILL), or stop it as a
// shutdown does (SIGTERM). Stack.Stop still stops whatever is running.
type Process struct{ c *child }

// Name is the process's name in the stack's log: "functions", "runner",
// "api", or the name given to Stack.StartRunner.
func (p *Process) Name() string { return p.c.name }

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.c.cmd.Process.Pid }

// Signal sends sig to the process's group (the process and anything it
// started).
func (p *Process) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.Pid(), sig); err != nil {
		return fmt.Errorf("signal %s (pid %d): %w", p.c.name, p.Pid(), err)
	}
	return nil
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.c.done }

// Err is how the process exited (exec.Cmd.Wait's error); call it once
// Done is closed.
func (p *Process) Err() error {
	<-p.c.done
	return p.c.err
}

// WaitLine waits until the process writes a log line containing s (lines
// as the stack's log renders them), it exits, ctx ends or timeout passes.
// Lines written before the call count if they are still among the last
// few kept.
func (p *Process) WaitLine(ctx context.Context, s string, timeout time.Duration) error {
	return p.c.waitLine(ctx, s, timeout)
}
