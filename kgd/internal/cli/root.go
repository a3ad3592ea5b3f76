// Package cli is kgd's command line: one cobra command per verb over the
// API service (job history, Skaffold v2 state, events and control) and
// PrivateAPI (sign-in, tracking, deploy policy).
//
// Main runs one command line and returns the process's exit code; every
// error is printed as one line, "kgd: <message>", on stderr.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/client"
	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/render"
)

// Defaults of the global settings: the local stack's addresses.
const (
	DefaultAPIURL        = "http://localhost:50052"
	DefaultPrivateAPIURL = "http://localhost:5000"
)

// Environment variables kgd reads.
const (
	EnvAPIURL        = "KGD_API_URL"
	EnvPrivateAPIURL = "KGD_PRIVATE_API_URL"
	EnvRepository    = "KGD_REPOSITORY"
	EnvIDToken       = "KGD_ID_TOKEN"
)

// Env is what a command line runs with.
type Env struct {
	Getenv         func(string) string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// StdinTerminal and StdoutTerminal say whether they are terminals:
	// colours need one on stdout; login opens a browser and waits only
	// with both.
	StdinTerminal, StdoutTerminal bool
	// Now is the clock ages are measured with.
	Now func() time.Time
	// LookPath finds gcloud (exec.LookPath).
	LookPath func(string) (string, error)
	// OpenBrowser opens a URL in the user's browser.
	OpenBrowser func(ctx context.Context, url string) error
	// Tokens, when set, replaces the identity token source (tests).
	Tokens client.TokenSource
	// PollEvery is how often a followed job's status is checked, to end
	// the wait for a job that ends without starting; 0 means 5 seconds.
	PollEvery time.Duration
}

// System returns the Env of this process.
func System() Env {
	return Env{
		Getenv: os.Getenv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		StdinTerminal:  term.IsTerminal(int(os.Stdin.Fd())),
		StdoutTerminal: term.IsTerminal(int(os.Stdout.Fd())),
		Now:            time.Now, LookPath: exec.LookPath, OpenBrowser: openBrowser,
	}
}

// exitError ends a command with a given exit code; msg, when not empty,
// is printed as the error line.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageErrorf reports a usage error (exit code 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: client.ExitUsage, msg: fmt.Sprintf(format, args...)}
}

const rootHelp = `kgd shows and steers kube-git-deploy: the tracked repositories, their jobs
(each push is a job: build with docker, deploy with Helm), the jobs' logs and
Skaffold events, and starts jobs on purpose (rerun, deploy a commit, rollback).

It talks to the API service's HTTP gateway (--api, KGD_API_URL) and to
PrivateAPI (--private-api, KGD_PRIVATE_API_URL); the defaults are the local
stack of make run. Commands about one repository take -r OWNER/NAME or
KGD_REPOSITORY. --output json (-o json) prints the API's JSON instead of
tables: one object, or one object per line for streams (logs, events).

On Cloud Run (any URL but localhost) every request carries a Google identity
token: KGD_ID_TOKEN if set, else ` + "`gcloud auth print-identity-token`" + `, else
Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS naming a
service account key). A plain-http URL other than localhost is refused.

Colours are used on a terminal only, never with NO_COLOR set or --no-color.

Exit codes:
  0  success
  1  the job shown or followed failed or was canceled
  2  usage error: bad arguments or flags, or a request the server refused as invalid
  3  not found: no such repository, job or route (HTTP 404, NOT_FOUND)
  4  permission denied or not signed in (HTTP 403/401), with a hint
  5  server or network error
  130  interrupted (Ctrl-C)`

// app is one run of kgd: its settings and its client.
type app struct {
	env Env

	apiURL, privateURL string
	output             string
	noColor            bool

	client *client.Client
}

// Main runs kgd with args (without the program name) and returns the exit
// code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.PollEvery == 0 {
		env.PollEvery = 5 * time.Second
	}
	a := &app{env: env}
	root := a.command()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	ran := false
	for _, c := range allCommands(root) {
		if c.RunE != nil {
			run := c.RunE
			c.RunE = func(cmd *cobra.Command, args []string) error {
				ran = true
				return run(cmd, args)
			}
		}
	}
	err := root.ExecuteContext(ctx)
	if err == nil {
		return client.ExitOK
	}
	code := client.ExitCode(err)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case !ran:
		// Cobra refused the command line before running anything:
		// unknown command or flag, wrong number of arguments.
		code = client.ExitUsage
		err = fmt.Errorf("%w (see kgd %s--help)", err, commandPath(root, args))
	}
	if msg := err.Error(); msg != "" {
		if code == client.ExitInterrupted && errors.Is(err, context.Canceled) {
			msg = "interrupted"
		}
		fmt.Fprintln(env.Stderr, "kgd: "+oneLine(msg))
	}
	return code
}

// commandPath is the subcommand args name, followed by a space, for a
// help hint ("jobs "); empty for the root.
func commandPath(root *cobra.Command, args []string) string {
	c, _, err := root.Find(args)
	if err != nil || c == root {
		return ""
	}
	return strings.TrimPrefix(c.CommandPath(), root.Name()+" ") + " "
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, allCommands(sub)...)
	}
	return out
}

func (a *app) command() *cobra.Command {
	root := &cobra.Command{
		Use:           "kgd",
		Short:         "kgd shows and steers kube-git-deploy: repositories, jobs, logs, events",
		Long:          rootHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output != "text" && a.output != "json" {
				return usageErrorf("--output must be text or json, not %q", a.output)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageErrorf("%v (see %s --help)", err, cmd.CommandPath())
	})
	f := root.PersistentFlags()
	f.StringVar(&a.apiURL, "api", DefaultAPIURL, "the API service's HTTP gateway (env "+EnvAPIURL+")")
	f.StringVar(&a.privateURL, "private-api", DefaultPrivateAPIURL, "PrivateAPI, for login, track, untrack and policy (env "+EnvPrivateAPIURL+")")
	f.StringVarP(&a.output, "output", "o", "text", "output format: text or json (the API's JSON; one object per line for streams)")
	f.BoolVar(&a.noColor, "no-color", false, "never use colours (also: NO_COLOR set to anything)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddGroup(&cobra.Group{ID: "jobs", Title: "Jobs:"}, &cobra.Group{ID: "repos", Title: "Repositories and sign-in:"},
		&cobra.Group{ID: "control", Title: "Control:"})
	for _, c := range []*cobra.Command{a.jobsCmd(), a.jobCmd(), a.logsCmd(), a.eventsCmd(), a.stateCmd()} {
		c.GroupID = "jobs"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.loginCmd(), a.reposCmd(), a.trackCmd(), a.untrackCmd(), a.policyCmd()} {
		c.GroupID = "repos"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.rerunCmd(), a.deployCmd(), a.rollbackCmd(), a.executeCmd(), a.autoCmd()} {
		c.GroupID = "control"
		root.AddCommand(c)
	}
	return root
}

// setting returns a flag's value if it was given, else the environment
// variable's if set, else the flag's default.
func (a *app) setting(cmd *cobra.Command, flag, env string) string {
	fl := cmd.Flag(flag)
	if fl == nil {
		return a.env.Getenv(env)
	}
	if !fl.Changed {
		if v := a.env.Getenv(env); v != "" {
			return v
		}
	}
	return fl.Value.String()
}

// clientFor returns the client, built on first use from the settings.
func (a *app) clientFor(cmd *cobra.Command) (*client.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	tokens := a.env.Tokens
	if tokens == nil {
		tokens = &client.Tokens{Env: a.env.Getenv(EnvIDToken), LookPath: a.env.LookPath}
	}
	c, err := client.New(client.Config{
		APIURL:        a.setting(cmd, "api", EnvAPIURL),
		PrivateAPIURL: a.setting(cmd, "private-api", EnvPrivateAPIURL),
		Tokens:        tokens,
		UserAgent:     "kgd",
	})
	if err != nil {
		return nil, err
	}
	a.client = c
	return c, nil
}

// json reports whether --output json was asked for.
func (a *app) json() bool { return a.output == "json" }

// palette returns the colours for stdout.
func (a *app) palette() render.Palette {
	return render.NewPalette(render.ColorEnabled(a.env.StdoutTerminal, a.noColor, a.env.Getenv))
}

// view returns the human output's writer.
func (a *app) view() render.View {
	return render.View{W: a.env.Stdout, P: a.palette(), Now: a.env.Now(), Loc: time.Local}
}

// addRepoFlag adds -r/--repository to cmd.
func (a *app) addRepoFlag(cmd *cobra.Command) {
	cmd.Flags().StringP("repository", "r", "", "the repository, OWNER/NAME (env "+EnvRepository+")")
	_ = cmd.RegisterFlagCompletionFunc("repository", a.completeRepos)
}

// repo returns the repository of -r or KGD_REPOSITORY.
func (a *app) repo(cmd *cobra.Command) (client.Repo, error) {
	s := a.setting(cmd, "repository", EnvRepository)
	if s == "" {
		return client.Repo{}, usageErrorf("no repository: pass -r OWNER/NAME or set %s", EnvRepository)
	}
	r, err := client.ParseRepo(s)
	if err != nil {
		return client.Repo{}, usageErrorf("%v", err)
	}
	return r, nil
}

// repoClient returns the repository of -r or KGD_REPOSITORY and the
// client of the command's API.
func (a *app) repoClient(cmd *cobra.Command) (client.Repo, *client.Client, error) {
	repo, err := a.repo(cmd)
	if err != nil {
		return client.Repo{}, nil, err
	}
	c, err := a.clientFor(cmd)
	if err != nil {
		return client.Repo{}, nil, err
	}
	return repo, c, nil
}

// repoArg parses a command's OWNER/NAME argument.
func repoArg(s string) (client.Repo, error) {
	r, err := client.ParseRepo(s)
	if err != nil {
		return client.Repo{}, usageErrorf("%v", err)
	}
	return r, nil
}

// exactArgs is cobra.ExactArgs naming what the arguments are.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %s (got %d arguments; see %s --help)", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

// flagSet reports whether any of the named flags was given.
func flagSet(fs *pflag.FlagSet, names ...string) bool {
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Changed {
			return true
		}
	}
	return false
}
