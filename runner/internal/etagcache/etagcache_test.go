package etagcache_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/etagcache"
)

// TestConditionalReads reads a commit's statuses through the Transport
// from the GitHub stand-in, which answers conditional GETs as GitHub does:
// an unchanged list comes back 304 (free of rate limit) and is served from
// memory, a changed one is read again, and one user's answer is never
// served to another.
func TestConditionalReads(t *testing.T) {
	gh, err := githubstandin.New(githubstandin.Config{ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := gh.Start(nil); err != nil {
		t.Fatal(err)
	}
	defer gh.Close()
	if _, _, err := gh.CreateRepo("acme", "web", "acme", false); err != nil {
		t.Fatal(err)
	}
	tr := &etagcache.Transport{}
	client := func(token string) *github.Client {
		c := github.NewClient(&http.Client{Transport: tr}).WithAuthToken(token)
		c.BaseURL, _ = url.Parse(gh.APIURL)
		return c
	}
	ctx := context.Background()
	const sha = "1111111111111111111111111111111111111111"
	acme := client(gh.Token("acme"))
	list := func(c *github.Client) (int, string) {
		t.Helper()
		sts, resp, err := c.Repositories.ListStatuses(ctx, "acme", "web", sha, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(sts), resp.Header.Get("X-RateLimit-Remaining")
	}
	if _, _, err := acme.Repositories.CreateStatus(ctx, "acme", "web", sha, &github.RepoStatus{State: github.String("pending")}); err != nil {
		t.Fatal(err)
	}
	n, _ := list(acme)
	if n != 1 || tr.Hits() != 0 || gh.NotModified() != 0 {
		t.Fatalf("first read: %d statuses, %d hits, %d 304s; want 1, 0, 0", n, tr.Hits(), gh.NotModified())
	}
	n, _ = list(acme)
	if n != 1 || tr.Hits() != 1 || gh.NotModified() != 1 {
		t.Errorf("unchanged read: %d statuses, %d hits, %d 304s; want 1 served from memory after a 304", n, tr.Hits(), gh.NotModified())
	}
	if _, _, err := acme.Repositories.CreateStatus(ctx, "acme", "web", sha, &github.RepoStatus{State: github.String("success")}); err != nil {
		t.Fatal(err)
	}
	if n, _ = list(acme); n != 2 || tr.Hits() != 1 {
		t.Errorf("read after a change: %d statuses, %d hits; want 2 read anew", n, tr.Hits())
	}
	// Another user's first read is not the first user's cached answer.
	if _, _, err := gh.CreateRepo("other", "x", "other", false); err != nil {
		t.Fatal(err)
	}
	if n, _ = list(client(gh.Token("other"))); n != 2 || tr.Hits() != 1 {
		t.Errorf("another token's first read: %d statuses, %d hits; want a read of its own", n, tr.Hits())
	}
}
