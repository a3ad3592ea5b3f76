package githubstandin

import (
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
)

// maxPushCommits is how many commits a push event lists at most, as on
// GitHub (the newest 20).
const maxPushCommits = 20

// PushEvent is the body of a push delivery, with the fields and shape of
// GitHub's push event (see functions/webhook/testdata for recorded ones).
type PushEvent struct {
	Ref        string       `json:"ref"`
	Before     string       `json:"before"`
	After      string       `json:"after"`
	Created    bool         `json:"created"`
	Deleted    bool         `json:"deleted"`
	Forced     bool         `json:"forced"`
	BaseRef    *string      `json:"base_ref"`
	Compare    string       `json:"compare"`
	Commits    []PushCommit `json:"commits"`
	HeadCommit *PushCommit  `json:"head_commit"`
	Repository PushRepo     `json:"repository"`
	Pusher     CommitUser   `json:"pusher"`
	Sender     User         `json:"sender"`
}

// PushCommit is one commit of a push event.
type PushCommit struct {
	ID        string     `json:"id"`
	TreeID    string     `json:"tree_id"`
	Distinct  bool       `json:"distinct"`
	Message   string     `json:"message"`
	Timestamp string     `json:"timestamp"`
	URL       string     `json:"url"`
	Author    CommitUser `json:"author"`
	Committer CommitUser `json:"committer"`
	Added     []string   `json:"added"`
	Removed   []string   `json:"removed"`
	Modified  []string   `json:"modified"`
}

// CommitUser is a commit's author or committer, or the pusher.
type CommitUser struct {
	Name     string `json:"name"`
	Email    string `json:"email"`
	Username string `json:"username,omitempty"`
}

// User is a GitHub account as webhooks show it.
type User struct {
	Name      string `json:"name,omitempty"`
	Email     string `json:"email,omitempty"`
	Login     string `json:"login"`
	ID        int64  `json:"id"`
	NodeID    string `json:"node_id"`
	AvatarURL string `json:"avatar_url"`
	URL       string `json:"url"`
	HTMLURL   string `json:"html_url"`
	ReposURL  string `json:"repos_url"`
	Type      string `json:"type"`
	SiteAdmin bool   `json:"site_admin"`
}

// PushRepo is the repository of a push event. As on GitHub, created_at and
// pushed_at are Unix seconds in push events (elsewhere they are strings).
type PushRepo struct {
	ID            int64  `json:"id"`
	NodeID        string `json:"node_id"`
	Name          string `json:"name"`
	FullName      string `json:"full_name"`
	Private       bool   `json:"private"`
	Owner         User   `json:"owner"`
	HTMLURL       string `json:"html_url"`
	Description   string `json:"description"`
	Fork          bool   `json:"fork"`
	URL           string `json:"url"`
	HooksURL      string `json:"hooks_url"`
	CreatedAt     int64  `json:"created_at"`
	UpdatedAt     string `json:"updated_at"`
	PushedAt      int64  `json:"pushed_at"`
	GitURL        string `json:"git_url"`
	SSHURL        string `json:"ssh_url"`
	CloneURL      string `json:"clone_url"`
	Size          int    `json:"size"`
	Visibility    string `json:"visibility"`
	DefaultBranch string `json:"default_branch"`
	MasterBranch  string `json:"master_branch"`
}

// repoInfo is what the stand-in knows of a repository. mu serializes the
// changes to its git repository.
type repoInfo struct {
	mu            sync.Mutex
	id            int64
	owner, name   string
	admin         string
	defaultBranch string
	private       bool
	created       time.Time
	git           *gitserve.Repo
}

// urls are the stand-in's base URLs, for the URLs inside payloads.
type urls struct{ web, api string }

// accountID is a stable id for a login.
func accountID(login string) int64 {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(login)))
	return int64(h.Sum32()&0x7fffffff) + 1
}

func (u urls) user(login string) User {
	id := accountID(login)
	return User{
		Name: login, Email: login + "@users.noreply.standin.invalid",
		Login: login, ID: id, NodeID: fmt.Sprintf("U_standin%d", id),
		AvatarURL: u.web + "avatars/" + login, URL: u.api + "users/" + login, HTMLURL: u.web + login,
		ReposURL: u.api + "users/" + login + "/repos", Type: "User",
	}
}

func (u urls) repo(r *repoInfo, pushed time.Time) PushRepo {
	full := r.owner + "/" + r.name
	host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(u.web, "http://"), "https://"), "/")
	vis := "public"
	if r.private {
		vis = "private"
	}
	return PushRepo{
		ID: r.id, NodeID: fmt.Sprintf("R_standin%d", r.id), Name: r.name, FullName: full, Private: r.private,
		Owner: u.user(r.owner), HTMLURL: u.web + full, Description: "", URL: u.web + full,
		HooksURL: u.api + "repos/" + full + "/hooks", CreatedAt: r.created.Unix(),
		UpdatedAt: pushed.UTC().Format(time.RFC3339), PushedAt: pushed.Unix(),
		GitURL: "git://" + host + "/" + full + ".git", SSHURL: "git@" + host + ":" + full + ".git",
		CloneURL: u.web + full + ".git", Visibility: vis, DefaultBranch: r.defaultBranch, MasterBranch: r.defaultBranch,
	}
}

func (u urls) commit(r *repoInfo, c gitserve.CommitInfo, login string) PushCommit {
	author := CommitUser{Name: c.Author.Name, Email: c.Author.Email}
	committer := CommitUser{Name: c.Committer.Name, Email: c.Committer.Email}
	if login != "" {
		author.Username, committer.Username = login, login
	}
	return PushCommit{
		ID: c.SHA, TreeID: c.Tree, Distinct: true, Message: c.Message,
		Timestamp: c.Committer.When.Format(time.RFC3339),
		URL:       u.web + r.owner + "/" + r.name + "/commit/" + c.SHA,
		Author:    author, Committer: committer,
		Added: c.Added, Removed: c.Removed, Modified: c.Modified,
	}
}

// zeroSHA is GitHub's before for a created ref and after for a deleted one.
const zeroSHA = "0000000000000000000000000000000000000000"

// pushEvent builds the event of a push to ref by pusher: from before (""
// when the ref is new) to head (nil when the ref is deleted), listing the
// pushed commits (oldest first).
func (u urls) pushEvent(r *repoInfo, ref, before string, head *gitserve.CommitInfo, commits []gitserve.CommitInfo, pusher string, now time.Time) PushEvent {
	e := PushEvent{
		Ref: ref, Before: before, After: zeroSHA, Created: before == "", Deleted: head == nil,
		Repository: u.repo(r, now),
		Pusher:     CommitUser{Name: pusher, Email: pusher + "@users.noreply.standin.invalid"},
		Sender:     u.user(pusher),
		Commits:    []PushCommit{},
	}
	e.Sender.Name, e.Sender.Email = "", ""
	if e.Created {
		e.Before = zeroSHA
	}
	if head != nil {
		e.After = head.SHA
		hc := u.commit(r, *head, pusher)
		e.HeadCommit = &hc
	}
	base := u.web + r.owner + "/" + r.name
	if e.Created {
		e.Compare = base + "/commit/" + e.After[:12]
	} else {
		e.Compare = base + "/compare/" + e.Before[:12] + "..." + e.After[:12]
	}
	for _, c := range commits {
		e.Commits = append(e.Commits, u.commit(r, c, pusher))
	}
	return e
}
