// Command localstack runs the whole of kube-git-deploy locally, in the
// foreground, on loopback only: the Firestore and Pub/Sub emulators, the
// functions (PrivateAPI, PublicAPI), the runner, the API service, a
// container registry, a local Kubernetes control plane (unless KUBECONFIG
// is set) and a GitHub stand-in. Ctrl-C or SIGTERM stops everything; a
// second Ctrl-C kills what is left at once.
//
// It runs the functions, runner and api binaries from its own directory
// (make run builds them all into .bin/). Every setting is an environment
// variable; README lists them.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stop, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "localstack: %v\n", err)
		os.Exit(1)
	}
}

// run starts the stack and waits for a signal (ctx) or a part's failure.
// stopSignals restores the default signal handling once stopping begins,
// so that a second Ctrl-C kills at once.
func run(ctx context.Context, stopSignals func(), getenv func(string) string, out io.Writer) error {
	// Nothing in this process may look for Google credentials either.
	os.Setenv(emulator.MetadataHostEnv, emulator.MetadataHostLoopback)
	cfg, err := localstack.LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the binaries: %w", err)
	}
	cfg.BinDir = filepath.Dir(exe)
	st, err := localstack.Start(ctx, cfg, out)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(out, "[localstack] interrupted while starting; everything started is stopped")
			return nil
		}
		return err
	}
	err = st.Wait(ctx)
	stopSignals()
	if err == nil {
		fmt.Fprintln(out, "[localstack] stopping (Ctrl-C again to kill at once)")
	}
	st.Stop()
	return err
}
