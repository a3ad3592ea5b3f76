package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/client"
	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/render"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
)

// started prints a job kgd started, then with wait follows it.
func (a *app) started(ctx context.Context, c *client.Client, repo client.Repo, job *jobspb.Job, wait bool) error {
	if a.json() && !wait {
		return writeProto(a.env.Stdout, job, false)
	}
	if !a.json() {
		p := a.palette()
		what := job.GetTrigger()
		if s := job.GetSourceJob(); s != "" {
			what += " of " + s
		}
		on := render.ShortSHA(job.GetCommit())
		if b := job.GetBranch(); b != "" {
			on += " on " + b
		}
		if u := job.GetUnits(); len(u) > 0 {
			on += ", units " + strings.Join(u, ", ")
		}
		fmt.Fprintf(a.env.Stdout, "Started job %s of %s: %s, %s (%s)\n", p.Cyan(job.GetId()), repo, what, on, p.Status(job.GetStatus()))
		if !wait {
			fmt.Fprintln(a.env.Stdout, p.Faint(fmt.Sprintf("Follow it with: kgd events -f -r %s --job %s", repo, job.GetId())))
			return nil
		}
	}
	return a.waitFor(ctx, c, repo, job)
}

func addWaitFlag(cmd *cobra.Command, wait *bool) {
	cmd.Flags().BoolVarP(wait, "wait", "w", false, "follow the new job until it ends, like kgd events -f; exit 1 if it fails")
}

func (a *app) rerunCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:               "rerun JOB -r OWNER/NAME [-w]",
		Short:             "Start a new job that builds and deploys the same commit as JOB",
		Example:           "  kgd rerun p-3f2a… -r demo/hello\n  kgd rerun p-3f2a… -r demo/hello --wait",
		Args:              exactArgs(1, "one job id"),
		ValidArgsFunction: a.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			job, err := c.RerunJob(cmd.Context(), repo, args[0])
			if err != nil {
				return err
			}
			return a.started(cmd.Context(), c, repo, job, wait)
		},
	}
	a.addRepoFlag(cmd)
	addWaitFlag(cmd, &wait)
	return cmd
}

func (a *app) deployCmd() *cobra.Command {
	var wait bool
	var branch, commit string
	cmd := &cobra.Command{
		Use:   "deploy -r OWNER/NAME --branch BRANCH --commit SHA [-w]",
		Short: "Start a new job that builds and deploys a chosen commit",
		Long: `Start a new job that builds and deploys a chosen commit of a branch: one an
earlier job of the repository built on that branch, named by its full SHA or
an unambiguous prefix of at least 7 hex digits.`,
		Example: "  kgd deploy -r demo/hello --branch main --commit 1a2b3c4 --wait",
		Args:    exactArgs(0, "no arguments (use --branch and --commit)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if branch == "" || commit == "" {
				return usageErrorf("kgd deploy needs --branch and --commit")
			}
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			job, err := c.DeployCommit(cmd.Context(), repo, branch, commit)
			if err != nil {
				return err
			}
			return a.started(cmd.Context(), c, repo, job, wait)
		},
	}
	a.addRepoFlag(cmd)
	addWaitFlag(cmd, &wait)
	cmd.Flags().StringVar(&branch, "branch", "", "the branch the commit belongs to (names the job's ref)")
	cmd.Flags().StringVar(&commit, "commit", "", "the commit: a full SHA, or a prefix (7+ hex digits) of one an earlier job built")
	return cmd
}

func (a *app) rollbackCmd() *cobra.Command {
	var wait bool
	var units []string
	cmd := &cobra.Command{
		Use:   "rollback JOB -r OWNER/NAME [--unit UNIT]... [-w]",
		Short: "Deploy again, without building, the images an earlier successful job deployed",
		Long: `Start a new deploy-only job that deploys, without building, the images (same
digests) an earlier successful job deployed, with that job's charts: every
unit, or only those named with --unit.`,
		Example:           "  kgd rollback p-3f2a… -r demo/hello --wait\n  kgd rollback p-3f2a… -r demo/hello --unit web --unit worker",
		Args:              exactArgs(1, "one job id"),
		ValidArgsFunction: a.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			job, err := c.Rollback(cmd.Context(), repo, args[0], units)
			if err != nil {
				return err
			}
			return a.started(cmd.Context(), c, repo, job, wait)
		},
	}
	a.addRepoFlag(cmd)
	addWaitFlag(cmd, &wait)
	cmd.Flags().StringArrayVar(&units, "unit", nil, "roll back only this unit (repeatable; default: every unit)")
	return cmd
}

func (a *app) executeCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "execute build|deploy -r OWNER/NAME [-w]",
		Short: "Run the pending build or deploy (when automatic builds or deploys are off)",
		Long: `Run what waits because an automatic trigger is off (Skaffold's Execute):
"build" builds and deploys the newest pending push; "deploy" deploys the images
the last build left waiting. Nothing pending is not an error.`,
		Example:   "  kgd execute build -r demo/hello\n  kgd execute deploy -r demo/hello --wait",
		Args:      exactArgs(1, "build or deploy"),
		ValidArgs: []string{"build", "deploy"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var build, deploy bool
			switch args[0] {
			case "build":
				build = true
			case "deploy":
				deploy = true
			default:
				return usageErrorf("kgd execute takes build or deploy, not %q", args[0])
			}
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			jobs, err := c.Execute(ctx, repo, build, deploy)
			if err != nil {
				return err
			}
			if a.json() && !wait {
				ids := jobs
				if ids == nil {
					ids = []string{}
				}
				return writeRaw(a.env.Stdout, fmt.Appendf(nil, `{"repository":%q,"jobs":%s}`, repo.String(), quoteAll(ids)), false)
			}
			if len(jobs) == 0 {
				if !a.json() {
					fmt.Fprintf(a.env.Stdout, "Nothing was pending for %s\n", repo)
				}
				return nil
			}
			job, err := c.GetJob(ctx, repo, jobs[0])
			if err != nil {
				return err
			}
			return a.started(ctx, c, repo, job, wait)
		},
	}
	a.addRepoFlag(cmd)
	addWaitFlag(cmd, &wait)
	return cmd
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return "[" + strings.Join(q, ",") + "]"
}

func (a *app) autoCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auto build|deploy on|off -r OWNER/NAME",
		Short: "Switch automatic builds (on push) or deploys (after a build) on or off",
		Long: `Switch a repository's automatic trigger: with builds off a push is recorded
and waits (the newest wins) for kgd execute build; with deploys off a job
builds and pushes its images and leaves the deploy for kgd execute deploy.`,
		Example: "  kgd auto deploy off -r demo/hello\n  kgd auto build on -r demo/hello",
		Args:    exactArgs(2, "build or deploy, then on or off"),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch len(args) {
			case 0:
				return []cobra.Completion{"build", "deploy"}, cobra.ShellCompDirectiveNoFileComp
			case 1:
				return []cobra.Completion{"on", "off"}, cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var phase client.Phase
			switch args[0] {
			case "build":
				phase = client.PhaseBuild
			case "deploy":
				phase = client.PhaseDeploy
			default:
				return usageErrorf("kgd auto takes build or deploy, not %q", args[0])
			}
			var on bool
			switch args[1] {
			case "on", "true":
				on = true
			case "off", "false":
			default:
				return usageErrorf("kgd auto %s takes on or off, not %q", args[0], args[1])
			}
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			word := map[bool]string{true: "on", false: "off"}[on]
			already := false
			if err := c.SetAuto(cmd.Context(), repo, phase, on); err != nil {
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Code != codes.AlreadyExists {
					return err
				}
				already = true
			}
			if a.json() {
				return writeRaw(a.env.Stdout, fmt.Appendf(nil, `{"repository":%q,"phase":%q,"enabled":%t,"changed":%t}`, repo.String(), phase, on, !already), false)
			}
			if already {
				fmt.Fprintf(a.env.Stdout, "Automatic %ss of %s were already %s\n", phase, repo, word)
			} else {
				fmt.Fprintf(a.env.Stdout, "Automatic %ss of %s are now %s\n", phase, repo, word)
			}
			return nil
		},
	}
	a.addRepoFlag(cmd)
	return cmd
}
