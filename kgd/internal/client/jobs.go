package client

import (
	"context"
	"iter"
	"net/http"
	"net/url"
	"strconv"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
)

// The job history API (kgd.jobs.v1.Jobs) over the gateway.

func (r Repo) jobsPath() string { return "kgd/v1/repositories/" + r.path() + "/jobs" }

func (r Repo) jobPath(id string) string { return r.jobsPath() + "/" + url.PathEscape(id) }

// ListRepositories lists the tracked repositories with their latest job
// (GET /kgd/v1/repositories).
func (c *Client) ListRepositories(ctx context.Context) (*jobspb.ListRepositoriesResponse, error) {
	out := &jobspb.ListRepositoriesResponse{}
	_, err := c.getProto(ctx, request{method: http.MethodGet, path: "kgd/v1/repositories"}, out)
	return out, err
}

// ListJobs lists a page of repo's jobs, newest first (GET
// /kgd/v1/repositories/{owner}/{name}/jobs); pageSize 0 is the server's
// default (20).
func (c *Client) ListJobs(ctx context.Context, repo Repo, pageSize int, pageToken string) (*jobspb.ListJobsResponse, error) {
	q := url.Values{}
	if pageSize > 0 {
		q.Set("page_size", strconv.Itoa(pageSize))
	}
	if pageToken != "" {
		q.Set("page_token", pageToken)
	}
	out := &jobspb.ListJobsResponse{}
	_, err := c.getProto(ctx, request{method: http.MethodGet, path: repo.jobsPath(), query: q}, out)
	return out, err
}

// GetJob returns one job of repo (GET …/jobs/{job_id}).
func (c *Client) GetJob(ctx context.Context, repo Repo, id string) (*jobspb.Job, error) {
	out := &jobspb.Job{}
	_, err := c.getProto(ctx, request{method: http.MethodGet, path: repo.jobPath(id)}, out)
	return out, err
}

// JobLog streams one job's log (GET …/jobs/{job_id}/log): the stored
// lines, then, with follow, live ones until the job's iteration ends.
func (c *Client) JobLog(ctx context.Context, repo Repo, id string, follow bool) iter.Seq2[*jobspb.LogLine, error] {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	return streamOf(c, ctx, request{method: http.MethodGet, path: repo.jobPath(id) + "/log", query: q},
		func() *jobspb.LogLine { return &jobspb.LogLine{} })
}

// RerunJob starts a new job that builds and deploys the commit of job id
// (POST …/jobs/{job_id}:rerun).
func (c *Client) RerunJob(ctx context.Context, repo Repo, id string) (*jobspb.Job, error) {
	out := &jobspb.Job{}
	_, err := c.getProto(ctx, request{method: http.MethodPost, path: repo.jobPath(id) + ":rerun", body: []byte("{}")}, out)
	return out, err
}

// DeployCommit starts a new job that builds and deploys commit (a full
// SHA or a prefix of at least 7 digits) of branch (POST …/deploys).
func (c *Client) DeployCommit(ctx context.Context, repo Repo, branch, commit string) (*jobspb.Job, error) {
	out := &jobspb.Job{}
	body := jsonBody(map[string]string{"branch": branch, "commit": commit})
	_, err := c.getProto(ctx, request{method: http.MethodPost, path: "kgd/v1/repositories/" + repo.path() + "/deploys", body: body}, out)
	return out, err
}

// Rollback starts a deploy-only job that deploys the images job id
// deployed: every unit, or only units (POST …/jobs/{job_id}:rollback).
func (c *Client) Rollback(ctx context.Context, repo Repo, id string, units []string) (*jobspb.Job, error) {
	if units == nil {
		units = []string{}
	}
	out := &jobspb.Job{}
	body := jsonBody(map[string][]string{"units": units})
	_, err := c.getProto(ctx, request{method: http.MethodPost, path: repo.jobPath(id) + ":rollback", body: body}, out)
	return out, err
}
