package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/client"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
)

func (a *app) eventsCmd() *cobra.Command {
	var follow bool
	var jobID string
	cmd := &cobra.Command{
		Use:   "events -r OWNER/NAME [-f] [--job JOB]",
		Short: "Print a job's events the way skaffold dev prints an iteration",
		Long: `Print one job's Skaffold v2 events the way ` + "`skaffold dev`" + ` prints an iteration to a
terminal: the phases as they start and end ("Starting build...", "Build [image]
succeeded", "Starting deploy...", "Waiting for deployments to stabilize..."),
the build and deploy output, and a final line such as
"Job p-… of demo/hello succeeded in 12s" or "… failed in 3.1s: <error>".

Without -f it prints the stored events of the named job (--job), or of the
repository's latest, and exits. With -f it follows live until the job's
iteration ends; without --job it follows the job running now or, if none is,
the next one to start (push, then run kgd events -f).

The exit code is the job's: 0 succeeded, 1 failed or canceled; 0 also when
the job has not ended yet (without -f). With -o json each of the job's
events is printed as one JSON line (proto.v2.Event).`,
		Example: "  kgd events -r demo/hello\n  kgd events -r demo/hello -f\n  kgd events -r demo/hello --job p-3f2a…\n" +
			"  git push && kgd events -f -r demo/hello",
		Args: exactArgs(0, "no arguments (name a job with --job)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, c, err := a.repoClient(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var job *jobspb.Job
			var after int32
			if jobID != "" {
				if job, err = c.GetJob(ctx, repo, jobID); err != nil {
					return err
				}
			} else {
				page, err := c.ListJobs(ctx, repo, 20, "")
				if err != nil {
					return err
				}
				job, after = pickJob(page.GetJobs(), follow)
				switch {
				case job == nil && !follow:
					fmt.Fprintf(a.env.Stdout, "%s has no jobs yet\n", repo)
					return nil
				case job == nil:
					fmt.Fprintf(a.env.Stderr, "Waiting for the next job of %s to start... (Ctrl-C to stop)\n", repo)
				}
			}
			id, o, err := a.follower(c, repo).show(ctx, job, after, follow)
			if err != nil {
				return err
			}
			return a.outcomeError(id, repo.String(), o)
		},
	}
	a.addRepoFlag(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow live until the job's iteration ends")
	cmd.Flags().StringVar(&jobID, "job", "", "the job to show (default: the latest; with -f the running or next one)")
	_ = cmd.RegisterFlagCompletionFunc("job", a.completeJobs)
	return cmd
}

// pickJob chooses the job kgd events shows without --job, from the
// newest page of jobs: the latest job; with follow the newest running
// one, or, when none runs, none: the next to start after the highest
// iteration so far (returned as after).
func pickJob(jobs []*jobspb.Job, follow bool) (job *jobspb.Job, after int32) {
	if !follow {
		if len(jobs) == 0 {
			return nil, 0
		}
		return jobs[0], 0
	}
	for _, j := range jobs {
		if strings.EqualFold(j.GetStatus(), "running") {
			return j, 0
		}
		after = max(after, j.GetIteration())
	}
	return nil, after
}

// follower returns a follower printing to stdout (events as text, or as
// JSON lines with -o json).
func (a *app) follower(c *client.Client, repo client.Repo) *follower {
	f := &follower{c: c, repo: repo, out: a.env.Stdout, p: a.palette(), pollEvery: a.env.PollEvery}
	if a.json() {
		f.out, f.ndjson = io.Discard, a.env.Stdout
	}
	return f
}

// waitFor follows a job kgd just started until its iteration ends: its
// events as text, or with -o json only the job's record at its end.
func (a *app) waitFor(ctx context.Context, c *client.Client, repo client.Repo, job *jobspb.Job) error {
	f := a.follower(c, repo)
	if a.json() {
		f.ndjson = nil
	}
	id, o, err := f.show(ctx, job, 0, true)
	if err != nil {
		return err
	}
	if a.json() {
		final, err := finalRecord(ctx, c, repo, id)
		if err != nil {
			return err
		}
		if err := writeProto(a.env.Stdout, final, false); err != nil {
			return err
		}
	}
	return a.outcomeError(id, repo.String(), o)
}

// recordLag bounds how long a job's record may take to show the end its
// events showed: the runner records the job's end right after its last
// event.
const recordLag = 30 * time.Second

// finalRecord returns job id's record once it shows the job finished
// (its last event comes first), or as it is after recordLag.
func finalRecord(ctx context.Context, c *client.Client, repo client.Repo, id string) (*jobspb.Job, error) {
	deadline := time.Now().Add(recordLag)
	for {
		j, err := c.GetJob(ctx, repo, id)
		if err != nil || finished(j.GetStatus()) || time.Now().After(deadline) {
			return j, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
