package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/client"
	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/render"
)

func (a *app) loginCmd() *cobra.Command {
	var noBrowser bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Sign in with GitHub through PrivateAPI (needed to track repositories)",
		Long: `Start a GitHub sign-in (OAuth) through PrivateAPI and print the URL to open.
On a terminal kgd also opens it in your browser and waits until you press
Enter (or the sign-in expires, after 10 minutes). GitHub then sends the browser
back to PrivateAPI's callback, whose page reports the sign-in: the GitHub
"login", the "caller" whose token it now is, the granted "scopes".

The token is stored for you (your Google identity on Cloud Run, "local" on the
local stack): whoever completes the URL gives their GitHub token to you, so
never open a login URL someone else sent you.`,
		Example: "  kgd login\n  kgd login --no-browser\n  kgd login -o json | jq -r .login_url",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clientFor(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			login, raw, err := c.LoginURL(ctx)
			if err != nil {
				return err
			}
			if a.json() {
				return writeRaw(a.env.Stdout, raw, false)
			}
			out := a.env.Stdout
			expires := ""
			if !login.ExpiresAt.IsZero() {
				expires = " (it expires at " + login.ExpiresAt.In(time.Local).Format("15:04:05") + ")"
			}
			fmt.Fprintf(out, "Sign in with GitHub: open this URL in a browser%s:\n\n  %s\n\n", expires, login.URL) // no colour: it is copied
			interactive := a.env.StdinTerminal && a.env.StdoutTerminal
			if !interactive {
				fmt.Fprintln(out, "The page it ends on reports the sign-in (\"login\", \"caller\", \"scopes\"). Never complete a login URL for someone else.")
				return nil
			}
			if !noBrowser && a.env.OpenBrowser != nil {
				if err := a.env.OpenBrowser(ctx, login.URL); err == nil {
					fmt.Fprintln(out, "Opened it in your browser.")
				}
			}
			fmt.Fprint(out, "Press Enter once the page reports your GitHub \"login\"... ")
			return a.waitForEnter(ctx, login.ExpiresAt)
		},
	}
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "only print the URL; do not open a browser")
	return cmd
}

// waitForEnter waits for a line on stdin, until expires (when set) or ctx
// ends.
func (a *app) waitForEnter(ctx context.Context, expires time.Time) error {
	if !expires.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, expires)
		defer cancel()
	}
	line := make(chan error, 1)
	go func() {
		_, err := bufio.NewReader(a.env.Stdin).ReadString('\n')
		line <- err
	}()
	select {
	case err := <-line:
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read stdin: %w", err)
		}
		fmt.Fprintln(a.env.Stdout, "Next: kgd track OWNER/NAME (it answers \"sign in with GitHub first\" if the sign-in did not complete)")
		return nil
	case <-ctx.Done():
		fmt.Fprintln(a.env.Stdout)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &client.Error{Code: codes.DeadlineExceeded, Message: "the sign-in expired: run kgd login again"}
		}
		return ctx.Err()
	}
}

func (a *app) trackCmd() *cobra.Command {
	var login, policyFile string
	cmd := &cobra.Command{
		Use:   "track OWNER/NAME",
		Short: "Track a GitHub repository: every push to it is built and deployed",
		Long: `Track a GitHub repository: PrivateAPI creates its push webhook with one of your
GitHub tokens (sign in first with kgd login; --login picks one when you signed
in as several users). --policy sets its deploy policy from a JSON file (see
kgd policy); without it the repository gets the default (its own namespace).
Tracking a repository that is already tracked changes nothing.`,
		Example: "  kgd track demo/hello\n  kgd track acme/web --policy policy.json",
		Args:    exactArgs(1, "OWNER/NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := repoArg(args[0])
			if err != nil {
				return err
			}
			var policy *client.Policy
			if policyFile != "" {
				b, err := a.readJSONFile(policyFile)
				if err != nil {
					return err
				}
				policy = &client.Policy{}
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields()
				if err := dec.Decode(policy); err != nil {
					return usageErrorf("--policy %s: %v", policyFile, err)
				}
			}
			c, err := a.clientFor(cmd)
			if err != nil {
				return err
			}
			raw, err := c.Track(cmd.Context(), repo, login, policy)
			var ce *client.Error
			if errors.As(err, &ce) && ce.Code == codes.AlreadyExists {
				if a.json() {
					return writeRaw(a.env.Stdout, fmt.Appendf(nil, `{"ok":true,"repository":%q,"already_tracked":true}`, repo.String()), false)
				}
				fmt.Fprintf(a.env.Stdout, "%s is already tracked\n", repo)
				return nil
			}
			if err != nil {
				return err
			}
			if a.json() {
				return writeRaw(a.env.Stdout, raw, false)
			}
			fmt.Fprintf(a.env.Stdout, "Tracking %s: every push to it is now built and deployed\n", a.palette().Cyan(repo.String()))
			return nil
		},
	}
	cmd.Flags().StringVar(&login, "login", "", "the GitHub user whose token creates the webhook (default: your latest sign-in)")
	cmd.Flags().StringVar(&policyFile, "policy", "", "a JSON file with the deploy policy (- for stdin)")
	return cmd
}

func (a *app) untrackCmd() *cobra.Command {
	var login string
	var force bool
	cmd := &cobra.Command{
		Use:               "untrack OWNER/NAME",
		Short:             "Stop tracking a repository (its webhook is deleted; its job history is kept)",
		Example:           "  kgd untrack demo/hello\n  kgd untrack demo/hello --force",
		Args:              exactArgs(1, "OWNER/NAME"),
		ValidArgsFunction: a.completeRepos,
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := repoArg(args[0])
			if err != nil {
				return err
			}
			c, err := a.clientFor(cmd)
			if err != nil {
				return err
			}
			raw, err := c.Untrack(cmd.Context(), repo, login, force)
			if err != nil {
				return err
			}
			if a.json() {
				return writeRaw(a.env.Stdout, raw, false)
			}
			fmt.Fprintf(a.env.Stdout, "Stopped tracking %s (its job history is kept)\n", repo)
			return nil
		},
	}
	cmd.Flags().StringVar(&login, "login", "", "the GitHub user whose token deletes the webhook")
	cmd.Flags().BoolVar(&force, "force", false, "untrack even if the webhook cannot be deleted")
	return cmd
}

func (a *app) policyCmd() *cobra.Command {
	var setFile, serviceAccount, reports string
	var namespaces, allowKinds, operators []string
	var createNamespaces, clusterScoped, adopt bool
	fieldFlags := []string{"namespace", "create-namespaces", "cluster-scoped", "allow-kind", "adopt", "service-account", "operator"}
	cmd := &cobra.Command{
		Use:   "policy OWNER/NAME [--set FILE | flags]",
		Short: "Show or set a repository's deploy policy",
		Long: `Show a repository's deploy policy, or set it: --set FILE replaces it with the
JSON object in FILE (- for stdin); the other flags change the shown policy
field by field (a list flag replaces the list; give it empty to clear it).
--reports on|off turns the runner's commit statuses and Deployments on GitHub
on or off.

A policy object is complete: {"namespaces": […], "create_namespaces": false,
"cluster_scoped": false, "allow_kinds": […], "adopt": false,
"service_account": "ns/name", "operators": […]} (docs/functions.md).`,
		Example: "  kgd policy demo/hello\n  kgd policy demo/hello --set policy.json\n" +
			"  kgd policy demo/hello --namespace web --namespace web-canary --operator alice@example.com\n" +
			"  kgd policy demo/hello --reports off",
		Args:              exactArgs(1, "OWNER/NAME"),
		ValidArgsFunction: a.completeRepos,
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := repoArg(args[0])
			if err != nil {
				return err
			}
			fields := flagSet(cmd.Flags(), fieldFlags...)
			if setFile != "" && fields {
				return usageErrorf("--set replaces the whole policy: give it or field flags (--%s), not both", strings.Join(fieldFlags, ", --"))
			}
			if reports != "" && reports != "on" && reports != "off" {
				return usageErrorf("--reports takes on or off, not %q", reports)
			}
			c, err := a.clientFor(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var answer json.RawMessage
			switch {
			case setFile != "":
				b, err := a.readJSONFile(setFile)
				if err != nil {
					return err
				}
				if answer, err = c.SetPolicy(ctx, repo, b); err != nil {
					return err
				}
			case fields:
				t, err := c.Tracked(ctx, repo)
				if err != nil {
					return err
				}
				p := t.Policy
				fl := cmd.Flags()
				for name, apply := range map[string]func(){
					"namespace":         func() { p.Namespaces = nonEmpty(namespaces) },
					"create-namespaces": func() { p.CreateNamespaces = createNamespaces },
					"cluster-scoped":    func() { p.ClusterScoped = clusterScoped },
					"allow-kind":        func() { p.AllowKinds = nonEmpty(allowKinds) },
					"adopt":             func() { p.Adopt = adopt },
					"service-account":   func() { p.ServiceAccount = serviceAccount },
					"operator":          func() { p.Operators = nonEmpty(operators) },
				} {
					if fl.Changed(name) {
						apply()
					}
				}
				b, err := json.Marshal(p)
				if err != nil {
					return fmt.Errorf("encode the policy: %w", err)
				}
				if answer, err = c.SetPolicy(ctx, repo, b); err != nil {
					return err
				}
			}
			if reports != "" {
				if answer, err = c.SetGitHubReports(ctx, repo, reports == "on"); err != nil {
					return err
				}
			}
			if a.json() && answer != nil && reports == "" {
				return writeRaw(a.env.Stdout, answer, false)
			}
			return a.showPolicy(ctx, c, repo)
		},
	}
	f := cmd.Flags()
	f.StringVar(&setFile, "set", "", "replace the policy with the JSON object in this file (- for stdin)")
	f.StringArrayVar(&namespaces, "namespace", nil, "a namespace the releases may use (repeatable; the first is the default)")
	f.BoolVar(&createNamespaces, "create-namespaces", false, "let the runner create a missing namespace")
	f.BoolVar(&clusterScoped, "cluster-scoped", false, "allow cluster-scoped objects")
	f.StringArrayVar(&allowKinds, "allow-kind", nil, "a namespaced kind (Kind or group/Kind) the runner's deny-list lets through (repeatable)")
	f.BoolVar(&adopt, "adopt", false, "let the runner take over an existing release that records no owner")
	f.StringVar(&serviceAccount, "service-account", "", "deploy impersonating this service account, namespace/name")
	f.StringArrayVar(&operators, "operator", nil, "an email that may steer the repository (repeatable)")
	f.StringVar(&reports, "reports", "", "commit statuses and Deployments on GitHub: on or off")
	return cmd
}

func nonEmpty(list []string) []string {
	out := []string{}
	for _, s := range list {
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// showPolicy prints repo's policy as the tracked list shows it.
func (a *app) showPolicy(ctx context.Context, c *client.Client, repo client.Repo) error {
	if a.json() {
		_, raw, err := c.TrackedRepositories(ctx)
		if err != nil {
			return err
		}
		var list struct {
			Repositories []json.RawMessage `json:"repositories"`
		}
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("PrivateAPI's tracked list: %w", err)
		}
		for _, r := range list.Repositories {
			var t client.Tracked
			if json.Unmarshal(r, &t) == nil && strings.EqualFold(t.FullName, repo.String()) {
				return writeRaw(a.env.Stdout, r, false)
			}
		}
		return &client.Error{Code: codes.NotFound, Message: repo.String() + " is not tracked"}
	}
	t, err := c.Tracked(ctx, repo)
	if err != nil {
		return err
	}
	p := a.palette()
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	list := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, ", ")
	}
	by := t.TrackedBy
	if t.TrackedByCaller != "" {
		by += " (for " + t.TrackedByCaller + ")"
	}
	reports := "on"
	if t.Reports.GitHub != nil && !*t.Reports.GitHub {
		reports = p.Yellow("off")
	}
	fields := []render.Field{
		{Key: "Repository", Value: p.Cyan(repo.String())},
		{Key: "Tracked by", Value: by},
		{Key: "Namespaces", Value: list(t.Policy.Namespaces)},
		{Key: "Create namespaces", Value: yes(t.Policy.CreateNamespaces)},
		{Key: "Cluster-scoped", Value: yes(t.Policy.ClusterScoped)},
		{Key: "Allowed kinds", Value: list(t.Policy.AllowKinds)},
		{Key: "Adopt releases", Value: yes(t.Policy.Adopt)},
		{Key: "Service account", Value: list(nonEmpty([]string{t.Policy.ServiceAccount}))},
		{Key: "Operators", Value: list(t.Policy.Operators)},
		{Key: "GitHub reports", Value: reports},
	}
	return a.view().Fields(fields)
}

// readJSONFile reads a JSON object from a file, or stdin for "-".
func (a *app) readJSONFile(name string) ([]byte, error) {
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(io.LimitReader(a.env.Stdin, 1<<20))
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, usageErrorf("read %s: %v", name, err)
	}
	b = bytes.TrimSpace(b)
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, usageErrorf("%s is not a JSON object: %v", name, err)
	}
	return b, nil
}
