// Command demo pushes a sample app through the local stack that make run
// started: it creates the repository demo/hello in the GitHub stand-in,
// signs in through PrivateAPI's OAuth flow, tracks the repository, pushes a
// new commit (the stand-in delivers the webhook to PublicAPI), prints
// where to watch the job on the Skaffold API and follows its events until
// it ends. It can be run again and again: each run pushes a new commit.
//
// It finds the stack with the same environment variables as make run
// (PRIVATE_HTTP_PORT, KGD_GITHUB_PORT, KGD_REGISTRY_PORT, KGD_RPC_HTTP_PORT,
// ...).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("demo", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var opts demo.Options
	fl.StringVar(&opts.Owner, "owner", demo.Owner, "owner of the sample repository, and the user who signs in")
	fl.StringVar(&opts.Name, "name", demo.Name, "name of the sample repository")
	fl.StringVar(&opts.Message, "message", "", "what the deployed app says (default: one with the time)")
	fl.BoolVar(&opts.Wait, "wait", true, "follow the job's events until it ends")
	fl.DurationVar(&opts.Timeout, "timeout", 5*time.Minute, "how long to follow the job")
	if err := fl.Parse(args); err != nil {
		return err
	}
	cfg, err := localstack.LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if cfg.RealGitHub() {
		return errors.New("make demo drives the GitHub stand-in, and PUBLIC_HTTP_HOST says the stack uses real GitHub: sign in, track one of your repositories and push to it instead (make run prints how)")
	}
	_, err = demo.New(cfg.URLs()).Run(ctx, stdout, opts)
	return err
}
