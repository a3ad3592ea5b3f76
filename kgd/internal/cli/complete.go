package cli

import (
	"context"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kube-git-deploy/kube-git-deploy/kgd/internal/render"
)

// completionTimeout bounds the API calls shell completion makes.
const completionTimeout = 3 * time.Second

// completeRepos completes a repository from the tracked list.
func (a *app) completeRepos(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, err := a.clientFor(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	resp, err := c.ListRepositories(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, r := range resp.GetRepositories() {
		desc := "no jobs yet"
		if j := r.GetLatestJob(); j != nil {
			desc = "latest job " + j.GetStatus()
		}
		out = append(out, cobra.CompletionWithDesc(r.GetRepository(), desc))
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeJobs completes a job id of the repository named so far (-r or
// KGD_REPOSITORY) from its newest jobs.
func (a *app) completeJobs(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if cmd.Flag("job") == nil && len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	repo, err := a.repo(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := a.clientFor(cmd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	resp, err := c.ListJobs(ctx, repo, 50, "")
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, j := range resp.GetJobs() {
		desc := strings.Join([]string{"#" + iterationText(j.GetIteration()), j.GetStatus(), render.ShortSHA(j.GetCommit()), j.GetBranch()}, " ")
		out = append(out, cobra.CompletionWithDesc(j.GetId(), strings.TrimSpace(desc)))
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}

func iterationText(n int32) string {
	if n <= 0 {
		return "-"
	}
	return strconv.Itoa(int(n))
}

// openBrowser opens url in the desktop's browser, without waiting for it
// (nor stopping it when kgd ends).
func openBrowser(_ context.Context, url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reap it; the browser outlives kgd
	return nil
}
