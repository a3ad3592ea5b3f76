// Command emulators runs the Firestore and Pub/Sub emulators on loopback.
//
//	emulators [flags]              start both, print the environment to use, wait for Ctrl-C
//	emulators [flags] -- CMD ARGS  start both, run CMD with the environment set, stop both
//
// Data lives in the emulators' memory and is gone when they stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "emulators: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("emulators", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fsPort := fs.Int("firestore-port", 0, "Firestore emulator port (0: a free port)")
	psPort := fs.Int("pubsub-port", 0, "Pub/Sub emulator port (0: a free port)")
	quiet := fs.Bool("quiet", false, "do not copy the emulators' own output")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	opts := emulator.Options{FirestorePort: *fsPort, PubSubPort: *psPort}
	if !*quiet {
		opts.Log = stderr
	}

	e, err := emulator.Start(ctx, opts)
	if err != nil {
		return 1, err
	}
	defer e.Stop()

	if cmdArgs := fs.Args(); len(cmdArgs) > 0 {
		cmd := exec.CommandContext(ctx, cmdArgs[0], cmdArgs[1:]...)
		cmd.Env = append(os.Environ(), e.Env()...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
		// On Ctrl-C or SIGTERM, ask the command to stop and give it time
		// to shut down cleanly before the emulators go.
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 20 * time.Second
		err := cmd.Run()
		if ctx.Err() != nil {
			return 0, nil // stopped on request
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), nil
		}
		return 0, err
	}

	for _, kv := range e.Env() {
		fmt.Fprintf(stdout, "export %s\n", kv)
	}
	fmt.Fprintln(stderr, "emulators: running; press Ctrl-C to stop")
	<-ctx.Done()
	return 0, nil
}
