// Command kgd is kube-git-deploy's command line: it lists the tracked
// repositories and their jobs, shows a job, its log and its Skaffold
// events (following them live the way skaffold dev prints an iteration),
// and starts jobs on purpose: rerun, deploy a commit, rollback, Execute.
//
// Install it with
//
//	go install github.com/kube-git-deploy/kube-git-deploy/kgd@latest
//
// and see kgd --help, or docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.System())
	stop()
	os.Exit(code)
}
