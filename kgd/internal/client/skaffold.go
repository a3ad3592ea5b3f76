package client

import (
	"context"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// The Skaffold v2 API over the gateway, scoped to one repository with
// ?repository=owner/name.

func scope(repo Repo) url.Values { return url.Values{"repository": {repo.String()}} }

// State returns the state of repo's latest job (GET /v2/state).
func (c *Client) State(ctx context.Context, repo Repo) (*v2pb.State, error) {
	out := &v2pb.State{}
	_, err := c.getProto(ctx, request{method: http.MethodGet, path: "v2/state", query: scope(repo)}, out)
	return out, err
}

// Events streams repo's v2 events with their sequence numbers
// (GET /v2/events?repository=…&sequence=true): with since < 0 the
// repository's recent iterations, else exactly the events numbered above
// since; then live events. The stream never ends by itself: the sequence
// ends only with an error, or when the consumer stops.
func (c *Client) Events(ctx context.Context, repo Repo, since int64) iter.Seq2[*v2pb.Event, error] {
	q := scope(repo)
	q.Set("sequence", "true")
	if since >= 0 {
		q.Set("since", strconv.FormatInt(since, 10))
	}
	return streamOf(c, ctx, request{method: http.MethodGet, path: "v2/events", query: q}, func() *v2pb.Event { return &v2pb.Event{} })
}

// jobsHeader names, in the answer to Execute, the jobs it started:
// "owner/name=job-id", one value each.
const jobsHeader = "Grpc-Metadata-X-Kgd-Jobs"

// Execute runs repo's pending build and/or deploy (POST /v2/execute) and
// returns the ids of the jobs it started, if any.
func (c *Client) Execute(ctx context.Context, repo Repo, build, deploy bool) ([]string, error) {
	intent := map[string]bool{}
	if build {
		intent["build"] = true
	}
	if deploy {
		intent["deploy"] = true
	}
	_, h, err := c.do(ctx, request{method: http.MethodPost, path: "v2/execute", query: scope(repo), body: jsonBody(intent)})
	if err != nil {
		return nil, err
	}
	var jobs []string
	for _, v := range h.Values(jobsHeader) {
		for _, one := range strings.Split(v, ",") {
			if r, id, ok := strings.Cut(strings.TrimSpace(one), "="); ok && strings.EqualFold(r, repo.String()) && id != "" {
				jobs = append(jobs, id)
			}
		}
	}
	return jobs, nil
}

// Phase names a phase whose automatic trigger SetAuto switches.
type Phase string

// Phases of SetAuto.
const (
	PhaseBuild  Phase = "build"
	PhaseDeploy Phase = "deploy"
)

// SetAuto switches automatic builds or deploys of repo on or off
// (PUT /v2/{build,deploy}/auto_execute). Setting the current value is
// ALREADY_EXISTS, as in Skaffold.
func (c *Client) SetAuto(ctx context.Context, repo Repo, phase Phase, enabled bool) error {
	_, _, err := c.do(ctx, request{method: http.MethodPut, path: "v2/" + string(phase) + "/auto_execute", query: scope(repo),
		body: jsonBody(map[string]bool{"enabled": enabled})})
	return err
}
