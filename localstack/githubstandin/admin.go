package githubstandin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
)

// maxAdminBody bounds an admin request (a commit may carry a binary).
const maxAdminBody = 64 << 20

// adminRoutes registers the stand-in's own endpoints, which GitHub does
// not have:
//
//	GET  /_standin/                                   what this is, who is signed in, the repositories
//	PUT  /_standin/sign-in                            {"login","scopes"}: who the authorize page signs in
//	POST /_standin/repos                              {"owner","name","admin","private"}: 201 created, 200 if it exists
//	POST /_standin/repos/{owner}/{name}/commits       commit files to a branch and deliver the push (201)
//	GET  /_standin/repos/{owner}/{name}/deliveries    recent webhook deliveries
//	POST /_standin/repos/{owner}/{name}/deliveries/{guid}/redeliver
//	PUT  /_standin/outage                             {"down": true, "status_code": 0|503}: receivers "down" (see SetOutage); {"down": false} ends it
//	PUT  /_standin/api-outage                         {"status_code": 403|429|500|502|503, "retry_after": s, "requests": n}: the commit
//	                                                  status and deployment API fails (see SetAPIOutage); {"status_code": 0} ends it
//
// A commit request is
//
//	{"branch": "main", "message": "...", "author": "<login>",
//	 "files": {"path": "text"}, "files_base64": {"path": "<base64>"},
//	 "delete": ["path"], "deliver": true}
//
// Every answer is JSON with "ok"; errors carry "error".
func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+AdminPrefix+"{$}", s.handleInfo)
	mux.HandleFunc("PUT "+AdminPrefix+"sign-in", s.handleSignIn)
	mux.HandleFunc("POST "+AdminPrefix+"repos", s.handleCreateRepo)
	mux.HandleFunc("POST "+AdminPrefix+"repos/{owner}/{name}/commits", s.handleCommit)
	mux.HandleFunc("GET "+AdminPrefix+"repos/{owner}/{name}/deliveries", s.handleDeliveries)
	mux.HandleFunc("POST "+AdminPrefix+"repos/{owner}/{name}/deliveries/{guid}/redeliver", s.handleRedeliver)
	mux.HandleFunc("PUT "+AdminPrefix+"outage", s.handleOutage)
	mux.HandleFunc("PUT "+AdminPrefix+"api-outage", s.handleAPIOutage)
	mux.HandleFunc(AdminPrefix, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"ok": false, "error": "no such stand-in endpoint: " + r.Method + " " + r.URL.Path})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrForbidden):
		status = http.StatusForbidden
	}
	writeJSON(w, status, map[string]any{"ok": false, "error": err.Error()})
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// handleInfo handles GET /_standin/.
func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	repos := []Repo{}
	for _, k := range slices.Sorted(maps.Keys(s.repos)) {
		repos = append(repos, s.describe(s.repos[k]))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"ok":           true,
		"standin":      "GitHub stand-in of kube-git-deploy, for local development and tests only; not GitHub",
		"web_url":      s.URL,
		"api_url":      s.APIURL,
		"signed_in":    s.SignedIn(),
		"outage":       s.outage(),
		"api_outage":   s.apiOutage(),
		"repositories": repos,
	})
}

// handleSignIn handles PUT /_standin/sign-in.
func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Login  string `json:"login"`
		Scopes string `json:"scopes"`
	}
	if err := decode(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if err := s.SignInAs(in.Login, in.Scopes); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "signed_in": in.Login})
}

// handleCreateRepo handles POST /_standin/repos.
func (s *Server) handleCreateRepo(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Owner   string `json:"owner"`
		Name    string `json:"name"`
		Admin   string `json:"admin"`
		Private bool   `json:"private"`
	}
	if err := decode(r, &in); err != nil {
		writeError(w, err)
		return
	}
	repo, created, err := s.CreateRepo(in.Owner, in.Name, in.Admin, in.Private)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"ok": true, "created": created, "repository": repo})
}

// handleCommit handles POST /_standin/repos/{owner}/{name}/commits.
func (s *Server) handleCommit(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Branch      string            `json:"branch"`
		Message     string            `json:"message"`
		Author      string            `json:"author"`
		Files       map[string]string `json:"files"`
		FilesBase64 map[string]string `json:"files_base64"`
		Delete      []string          `json:"delete"`
		Deliver     *bool             `json:"deliver"`
	}
	if err := decode(r, &in); err != nil {
		writeError(w, err)
		return
	}
	c := Commit{Branch: in.Branch, Message: in.Message, Author: in.Author, Delete: in.Delete,
		Files: map[string][]byte{}, NoDelivery: in.Deliver != nil && !*in.Deliver}
	for p, text := range in.Files {
		c.Files[p] = []byte(text)
	}
	for p, b64 := range in.FilesBase64 {
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			writeError(w, fmt.Errorf("files_base64[%q]: %w", p, err))
			return
		}
		c.Files[p] = b
	}
	res, err := s.Push(r.Context(), r.PathValue("owner"), r.PathValue("name"), c)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"ok": true, "ref": res.Ref, "before": res.Before, "after": res.After,
		"created": res.Created, "deliveries": res.Deliveries})
}

// handleDeliveries handles GET /_standin/repos/{owner}/{name}/deliveries.
func (s *Server) handleDeliveries(w http.ResponseWriter, r *http.Request) {
	if _, err := s.Repo(r.PathValue("owner"), r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "deliveries": s.Deliveries(r.PathValue("owner"), r.PathValue("name"))})
}

// handleRedeliver handles
// POST /_standin/repos/{owner}/{name}/deliveries/{guid}/redeliver.
func (s *Server) handleRedeliver(w http.ResponseWriter, r *http.Request) {
	d, err := s.Redeliver(r.Context(), r.PathValue("owner"), r.PathValue("name"), r.PathValue("guid"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "delivery": d})
}

// handleOutage handles PUT /_standin/outage.
func (s *Server) handleOutage(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Down       bool `json:"down"`
		StatusCode int  `json:"status_code"`
	}
	if err := decode(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if in.StatusCode != 0 && (in.StatusCode < 300 || in.StatusCode > 599) {
		writeError(w, fmt.Errorf("status_code %d: want 0 (unreachable) or a failing HTTP status", in.StatusCode))
		return
	}
	if !in.Down {
		s.SetOutage(nil)
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "outage": nil})
		return
	}
	o := &Outage{StatusCode: in.StatusCode}
	s.SetOutage(o)
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "outage": o})
}
