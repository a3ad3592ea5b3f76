package githubstandin

import (
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
)

// serveGit serves git's smart HTTP protocol at /OWNER/NAME.git/... with
// GitHub's rules: anyone may read a public repository; reading a private
// one, and pushing, take a token of its admin as the basic-auth password
// (any user name, as with GitHub's x-access-token). A push over HTTP is
// delivered to the repository's hooks like one made with Push.
func (s *Server) serveGit(w http.ResponseWriter, r *http.Request) {
	owner, name, ok := gitserve.SplitPath(r.URL.Path)
	var repo *repoInfo
	if ok {
		repo = s.repo(owner, name)
	}
	if repo == nil {
		http.Error(w, "Repository not found.", http.StatusNotFound)
		return
	}
	write := strings.HasSuffix(r.URL.Path, "/git-receive-pack") || r.URL.Query().Get("service") == "git-receive-pack"
	var login string
	if _, pw, ok := r.BasicAuth(); ok {
		login, _ = s.gh.TokenLogin(pw)
	}
	if (repo.private || write) && !strings.EqualFold(login, repo.admin) {
		if login == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, "Invalid username or token.", http.StatusUnauthorized)
			return
		}
		http.Error(w, "Permission to "+repo.owner+"/"+repo.name+".git denied to "+login+".", http.StatusForbidden)
		return
	}
	// The directory has the repository's own spelling.
	rest := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	r.URL.Path = "/" + repo.owner + "/" + repo.name + ".git"
	if len(rest) == 3 {
		r.URL.Path += "/" + rest[2]
	}
	r.URL.RawPath = ""
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack") {
		s.receivePack(w, r, repo, login)
		return
	}
	s.git.ServeHTTP(w, r)
}

// receivePack serves a git push and then, in the background as GitHub
// does, delivers one push event per ref it changed.
func (s *Server) receivePack(w http.ResponseWriter, r *http.Request, repo *repoInfo, pusher string) {
	repo.mu.Lock()
	before, err := repo.git.Refs()
	if err != nil {
		repo.mu.Unlock()
		http.Error(w, "cannot read the repository", http.StatusInternalServerError)
		return
	}
	s.git.ServeHTTP(w, r)
	after, err := repo.git.Refs()
	repo.mu.Unlock()
	if err != nil {
		s.log.Warn("cannot read the refs after a push", "repo", repo.owner+"/"+repo.name, "err", err.Error())
		return
	}
	known := slices.Collect(maps.Values(before))
	for _, ref := range slices.Sorted(maps.Keys(mergeKeys(before, after))) {
		old, new := before[ref], after[ref]
		if old == new {
			continue
		}
		payload, err := s.pushPayload(repo, ref, old, new, known, pusher)
		if err != nil {
			s.log.Warn("cannot describe a push", "repo", repo.owner+"/"+repo.name, "ref", ref, "err", err.Error())
			continue
		}
		s.log.Info("pushed over git", "repo", repo.owner+"/"+repo.name, "ref", ref, "after", new, "pusher", pusher)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.Deliver(s.ctx, repo.owner, repo.name, "push", payload)
		}()
	}
}

func mergeKeys(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	for k, v := range b {
		m[k] = v
	}
	return m
}
