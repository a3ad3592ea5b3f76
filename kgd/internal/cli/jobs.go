package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/client"
	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/render"
)

func (a *app) reposCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "repos",
		Short: "List the tracked repositories with their latest job",
		Long: `List the tracked repositories, each with its latest job (iteration, id,
status, commit, branch or tag, age) and which automatic triggers are on.`,
		Example: "  kgd repos\n  kgd repos -o json | jq -r '.repositories[].repository'",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clientFor(cmd)
			if err != nil {
				return err
			}
			resp, err := c.ListRepositories(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return writeProto(a.env.Stdout, resp, false)
			}
			return a.view().Repositories(resp)
		},
	}
}

func (a *app) jobsCmd() *cobra.Command {
	var limit int
	var pageToken string
	cmd := &cobra.Command{
		Use:   "jobs -r OWNER/NAME",
		Short: "List a repository's jobs, newest first",
		Long: `List a repository's jobs, newest first, a page at a time: iteration, id,
status, commit, branch or tag, what triggered it, who, how long ago and how
long it ran. The last line names the next page's token when there is one.`,
		Example: "  kgd jobs -r demo/hello\n  kgd jobs -r demo/hello --limit 5\n  kgd jobs -r demo/hello --page-token TOKEN",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 || limit > 100 {
				return usageErrorf("--limit must be between 1 and 100 (0: the server's default, 20)")
			}
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			resp, err := c.ListJobs(cmd.Context(), repo, limit, pageToken)
			if err != nil {
				return err
			}
			if a.json() {
				return writeProto(a.env.Stdout, resp, false)
			}
			return a.view().Jobs(repo.String(), resp)
		},
	}
	a.addRepoFlag(cmd)
	cmd.Flags().IntVarP(&limit, "limit", "n", 0, "jobs per page, at most 100 (default 20)")
	cmd.Flags().StringVar(&pageToken, "page-token", "", "the page to show: a previous page's next page token")
	return cmd
}

func (a *app) jobCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:               "job JOB -r OWNER/NAME",
		Short:             "Show one job: its commit, status, phases and images",
		Example:           "  kgd job p-3f2a… -r demo/hello\n  kgd job p-3f2a… -r demo/hello -o json | jq .images",
		Args:              exactArgs(1, "one job id"),
		ValidArgsFunction: a.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			job, err := c.GetJob(cmd.Context(), repo, args[0])
			if err != nil {
				return err
			}
			if a.json() {
				return writeProto(a.env.Stdout, job, false)
			}
			return a.view().Job(job)
		},
	}
	a.addRepoFlag(cmd)
	return cmd
}

func (a *app) stateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state -r OWNER/NAME",
		Short: "Show the Skaffold state of a repository's latest job",
		Long: `Show the Skaffold v2 state (GET /v2/state) of the repository's latest job:
the job, each artifact's build status and pushed image, the deploy and status
check with each resource, and whether automatic builds and deploys are on.`,
		Example: "  kgd state -r demo/hello\n  kgd state -r demo/hello -o json",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.State(cmd.Context(), repo)
			if err != nil {
				return err
			}
			if a.json() {
				return writeProto(a.env.Stdout, st, false)
			}
			return a.view().State(repo.String(), st)
		},
	}
	a.addRepoFlag(cmd)
	return cmd
}

func (a *app) logsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs JOB -r OWNER/NAME [-f]",
		Short: "Print a job's log: build output, deploy and status-check messages",
		Long: `Print a job's log (the JobLog stream): build output, deploy and status-check
messages, phase changes and the final line, oldest first. With -f it goes on
live until the job's iteration ends (a job that has not started yet is waited
for). It exits with 1 when the log ends with the job failed or canceled.`,
		Example:           "  kgd logs p-3f2a… -r demo/hello\n  kgd logs p-3f2a… -r demo/hello -f",
		Args:              exactArgs(1, "one job id"),
		ValidArgsFunction: a.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			v := a.view()
			var last string
			for line, err := range c.JobLog(cmd.Context(), repo, args[0], follow) {
				if err != nil {
					return err
				}
				if a.json() {
					err = writeProto(a.env.Stdout, line, true)
				} else {
					err = v.LogLine(line)
				}
				if err != nil {
					return err
				}
				if line.GetLast() {
					last = line.GetStatus()
				}
			}
			switch strings.ToLower(last) {
			case "failed", "canceled":
				return &exitError{code: client.ExitFailed}
			}
			return nil
		},
	}
	a.addRepoFlag(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "go on live until the job's iteration ends")
	return cmd
}

// outcomeError ends a command that showed a job to its end with the
// job's exit code: 0 for success, 1 for failed or canceled. The final line
// was printed; in JSON mode it goes to stderr instead.
func (a *app) outcomeError(job, repo string, o render.Outcome) error {
	if o.Status == render.Succeeded || o.Status == "" {
		return nil
	}
	msg := ""
	if a.json() {
		msg = render.FinalLine(render.Palette{}, job, repo, o)
	}
	return &exitError{code: client.ExitFailed, msg: msg}
}
