package githubstandin

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kube-git-deploy/kube-git-deploy/shared/githubfake"
)

// Limits of the commit status and deployment APIs. The first two are
// GitHub's; the others only bound the stand-in's memory.
const (
	// maxStatusesPerContext is how many statuses one sha and context may
	// have; GitHub answers 422 after 1000.
	maxStatusesPerContext = 1000
	// maxDescription is GitHub's limit on a status description, in
	// characters.
	maxDescription = 140
	// keptStatusSHAs is how many commits per repository keep their
	// statuses; the commit whose first status is the oldest is forgotten
	// first.
	keptStatusSHAs = 10000
	// keptDeployments is how many deployments per repository are kept,
	// the oldest forgotten first.
	keptDeployments = 10000
	// keptDeploymentStatuses is how many statuses per deployment are kept,
	// the oldest forgotten first.
	keptDeploymentStatuses = 1000
	// keptAPIRequests is how many requests APIRequests remembers.
	keptAPIRequests = 10000
	// maxAPIBody bounds a request body of these routes (1 MiB).
	maxAPIBody = 1 << 20
)

// Page sizes of the list routes, as GitHub's.
const (
	defaultPerPage = 30
	maxPerPage     = 100
)

// rateLimit is GitHub's primary rate limit of an OAuth token or PAT, in
// requests per rateWindow; the stand-in counts per user (per client
// address without a token).
const (
	rateLimit  = 5000
	rateWindow = time.Hour
)

// GitHub's documentation pages, for documentation_url.
const (
	statusesDocs           = "https://docs.github.com/rest/commits/statuses"
	deploymentsDocs        = "https://docs.github.com/rest/deployments/deployments"
	deploymentStatusesDocs = "https://docs.github.com/rest/deployments/statuses"
	primaryLimitDocs       = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-primary-rate-limits"
	secondaryLimitDocs     = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
)

var (
	shaRE = regexp.MustCompile(`^[0-9a-fA-F]{40}$`)

	commitStates     = []string{"error", "failure", "pending", "success"}
	deploymentStates = []string{"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
)

// Status is a commit status as the stand-in recorded it.
type Status struct {
	ID int64 `json:"id"`
	// SHA is the commit's, in lower case.
	SHA         string `json:"sha"`
	State       string `json:"state"`
	TargetURL   string `json:"target_url"`
	Description string `json:"description"`
	Context     string `json:"context"`
	// Creator is the login of the token's user.
	Creator   string    `json:"creator"`
	CreatedAt time.Time `json:"created_at"`
}

// Deployment is a GitHub Deployment as the stand-in recorded it.
type Deployment struct {
	ID int64 `json:"id"`
	// SHA is the commit Ref named when the deployment was created.
	SHA     string          `json:"sha"`
	Ref     string          `json:"ref"`
	Task    string          `json:"task"`
	Payload json.RawMessage `json:"payload"`
	// Environment is the current one: a deployment status may change it.
	Environment         string `json:"environment"`
	OriginalEnvironment string `json:"original_environment"`
	Description         string `json:"description"`
	Creator             string `json:"creator"`
	// AutoMerge is recorded and otherwise ignored.
	AutoMerge bool `json:"auto_merge"`
	// RequiredContexts is nil when the request left it out (every context
	// had to be green).
	RequiredContexts      []string  `json:"required_contexts"`
	TransientEnvironment  bool      `json:"transient_environment"`
	ProductionEnvironment bool      `json:"production_environment"`
	CreatedAt             time.Time `json:"created_at"`
	UpdatedAt             time.Time `json:"updated_at"`
	// Statuses are oldest first.
	Statuses []DeploymentStatus `json:"statuses"`
}

// DeploymentStatus is one status of a Deployment.
type DeploymentStatus struct {
	ID             int64  `json:"id"`
	State          string `json:"state"`
	Description    string `json:"description"`
	Environment    string `json:"environment"`
	TargetURL      string `json:"target_url"`
	LogURL         string `json:"log_url"`
	EnvironmentURL string `json:"environment_url"`
	Creator        string `json:"creator"`
	// AutoInactive is what the request asked; false on the inactive
	// statuses the stand-in adds itself.
	AutoInactive bool      `json:"auto_inactive"`
	CreatedAt    time.Time `json:"created_at"`
}

// APIRequest is one request to the commit status and deployment routes
// and the status code it was answered.
type APIRequest struct {
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	StatusCode int       `json:"status_code"`
	At         time.Time `json:"at"`
}

// APIOutage makes the commit status and deployment routes fail, as GitHub
// does when it is unwell or limits a client; see SetAPIOutage.
type APIOutage struct {
	// StatusCode answers every request: 403 or 429 (GitHub's secondary
	// rate limit), 500, 502 or 503 ({"message":"Server Error"}).
	StatusCode int `json:"status_code"`
	// RetryAfter, in seconds, is sent as Retry-After with a 403 or 429;
	// 0 sends none.
	RetryAfter int `json:"retry_after,omitempty"`
	// Requests is how many requests still fail; 0 means every request
	// until the outage is ended.
	Requests int `json:"requests,omitempty"`
}

// apiState is what the commit status and deployment routes keep, under
// Server.mu.
type apiState struct {
	now func() time.Time

	statuses    map[string]map[string][]*Status // repository key → lower-case sha → oldest first
	statusSHAs  map[string][]string             // repository key → shas, by their first status
	deployments map[string][]*Deployment        // repository key → oldest first

	nextStatusID, nextDeploymentID, nextDeploymentStatusID int64

	outage   *APIOutage
	requests []APIRequest
	rates    map[string]*rateCount
	// notModified counts conditional GETs answered 304.
	notModified int
}

// rateCount counts the requests of one user in the current window.
type rateCount struct {
	used  int
	reset time.Time
}

func newAPIState() apiState {
	return apiState{
		now:                    time.Now,
		statuses:               map[string]map[string][]*Status{},
		statusSHAs:             map[string][]string{},
		deployments:            map[string][]*Deployment{},
		nextStatusID:           31000000000,
		nextDeploymentID:       1500000000,
		nextDeploymentStatusID: 2600000000,
		rates:                  map[string]*rateCount{},
	}
}

// statusRoutes registers GitHub's REST routes of commit statuses and
// deployments:
//
//	POST /api/v3/repos/{owner}/{repo}/statuses/{sha}                  create a commit status (201)
//	GET  /api/v3/repos/{owner}/{repo}/commits/{ref}/statuses          list them, newest first
//	GET  /api/v3/repos/{owner}/{repo}/commits/{ref}/status            combined status
//	POST /api/v3/repos/{owner}/{repo}/deployments                     create a deployment (201, 409, 422)
//	GET  /api/v3/repos/{owner}/{repo}/deployments                     list them (sha, ref, task, environment), newest first
//	GET  /api/v3/repos/{owner}/{repo}/deployments/{id}                one deployment
//	POST /api/v3/repos/{owner}/{repo}/deployments/{id}/statuses       create a deployment status (201)
//	GET  /api/v3/repos/{owner}/{repo}/deployments/{id}/statuses       list them, newest first
//
// Writes take the token of a user who administers the repository (401
// without a known token, 404 for anyone else); reads of a public
// repository need no token, those of a private one its admin's. Lists
// are paged with page and per_page (default 30, at most 100) and a Link
// header. Every answer carries GitHub's X-RateLimit-* headers, counting
// 5000 requests per user and hour; SetAPIOutage makes all of them fail.
//
// Unlike GitHub, any 40-hex sha is a commit (it need not exist in the
// repository), a ref may also be a branch or tag name, and auto_merge is
// ignored.
func (s *Server) statusRoutes(mux *http.ServeMux) {
	base := githubfake.APIPrefix + "repos/{owner}/{repo}/"
	mux.HandleFunc("POST "+base+"statuses/{sha...}", s.apiRoute(s.handleCreateStatus))
	mux.HandleFunc("GET "+base+"commits/{rest...}", s.apiRoute(s.handleCommitStatuses))
	mux.HandleFunc("POST "+base+"deployments", s.apiRoute(s.handleCreateDeployment))
	mux.HandleFunc("GET "+base+"deployments", s.apiRoute(s.handleListDeployments))
	mux.HandleFunc("GET "+base+"deployments/{id}", s.apiRoute(s.handleGetDeployment))
	mux.HandleFunc("POST "+base+"deployments/{id}/statuses", s.apiRoute(s.handleCreateDeploymentStatus))
	mux.HandleFunc("GET "+base+"deployments/{id}/statuses", s.apiRoute(s.handleListDeploymentStatuses))
}

// NotModified counts the conditional GETs of the status and deployment
// routes answered 304 Not Modified (free of rate limit, as on GitHub).
func (s *Server) NotModified() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.api.notModified
}

// Statuses returns the commit statuses of sha in owner/name, oldest first.
func (s *Server) Statuses(owner, name, sha string) []Status {
	r := s.repo(owner, name)
	if r == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Status
	for _, st := range s.api.statuses[key(r)][strings.ToLower(sha)] {
		out = append(out, *st)
	}
	return out
}

// Deployments returns the deployments of owner/name, oldest first, each
// with its statuses, oldest first.
func (s *Server) Deployments(owner, name string) []Deployment {
	r := s.repo(owner, name)
	if r == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Deployment
	for _, d := range s.api.deployments[key(r)] {
		c := *d
		c.Payload = slices.Clone(d.Payload)
		c.RequiredContexts = slices.Clone(d.RequiredContexts)
		c.Statuses = slices.Clone(d.Statuses)
		out = append(out, c)
	}
	return out
}

// APIRequests returns the recent requests to the commit status and
// deployment routes, oldest first, including those an outage refused.
// A request is listed before its answer reaches the client.
func (s *Server) APIRequests() []APIRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.api.requests)
}

// SetAPIOutage makes the commit status and deployment routes answer every
// request with o.StatusCode, recording nothing, until it is ended with a
// nil o (or one whose StatusCode is 0) or, when o.Requests is not 0, for
// that many requests.
func (s *Server) SetAPIOutage(o *APIOutage) error {
	if o != nil && o.StatusCode == 0 {
		o = nil
	}
	if o != nil {
		switch o.StatusCode {
		case http.StatusForbidden, http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable:
		default:
			return fmt.Errorf("api outage: status_code %d: want 403, 429, 500, 502 or 503 (0 ends it)", o.StatusCode)
		}
		if o.RetryAfter < 0 || o.Requests < 0 {
			return fmt.Errorf("api outage: retry_after %d and requests %d must not be negative", o.RetryAfter, o.Requests)
		}
		c := *o
		o = &c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.api.outage = o
	return nil
}

// apiOutage returns a copy of the current API outage, or nil.
func (s *Server) apiOutage() *APIOutage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api.outage == nil {
		return nil
	}
	c := *s.api.outage
	return &c
}

// handleAPIOutage handles PUT /_standin/api-outage.
func (s *Server) handleAPIOutage(w http.ResponseWriter, r *http.Request) {
	var in APIOutage
	if err := decode(r, &in); err != nil {
		writeError(w, err)
		return
	}
	if err := s.SetAPIOutage(&in); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "api_outage": s.apiOutage()})
}

// apiHandler is a handler of these routes; login is the caller's, ""
// without a token.
type apiHandler func(w http.ResponseWriter, r *http.Request, login string)

// apiRoute adapts h: it records the request for APIRequests, sets the
// rate limit headers, and answers for h during an outage, for an unknown
// token and once the caller's rate limit is spent.
func (s *Server) apiRoute(h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rw := &apiWriter{ResponseWriter: w, s: s, method: r.Method, path: r.URL.Path}
		defer rw.record(http.StatusOK) // an answer without a body
		login, badToken := s.caller(r)
		rateKey := "user " + strings.ToLower(login)
		if login == "" {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			rateKey = "address " + host
		}
		now := s.api.now()
		s.mu.Lock()
		remaining, reset, limited := s.takeRate(rateKey, now)
		outage := s.takeAPIOutage()
		s.mu.Unlock()

		hdr := rw.Header()
		hdr.Set("X-RateLimit-Limit", strconv.Itoa(rateLimit))
		hdr.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
		hdr.Set("X-RateLimit-Used", strconv.Itoa(rateLimit-remaining))
		hdr.Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		hdr.Set("X-RateLimit-Resource", "core")
		switch {
		case outage != nil:
			writeAPIOutage(rw, *outage)
		case badToken:
			restError(rw, http.StatusUnauthorized, "Bad credentials", "https://docs.github.com/rest")
		case limited:
			msg := "API rate limit exceeded for " + rateKey + "."
			restError(rw, http.StatusForbidden, msg, primaryLimitDocs)
		case r.Method == http.MethodGet:
			s.conditional(rw, r, func(w http.ResponseWriter) { h(w, r, login) }, rateKey, now)
		default:
			h(rw, r, login)
		}
	}
}

// conditional answers a GET as GitHub does conditional requests: a 200
// carries an ETag of its body, and a request whose If-None-Match names
// the current one is answered 304 without a body and not counted against
// the rate limit.
func (s *Server) conditional(w *apiWriter, r *http.Request, h func(http.ResponseWriter), rateKey string, now time.Time) {
	rec := httptest.NewRecorder()
	h(rec)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	if rec.Code != http.StatusOK {
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		return
	}
	sum := sha256.Sum256(rec.Body.Bytes())
	etag := `W/"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	for _, tag := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if t := strings.TrimSpace(tag); t == etag || "W/"+t == etag || t == "*" {
			s.mu.Lock()
			if rc := s.api.rates[rateKey]; rc != nil && rc.used > 0 && now.Before(rc.reset) {
				rc.used--
				w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(rateLimit-rc.used))
				w.Header().Set("X-RateLimit-Used", strconv.Itoa(rc.used))
			}
			s.api.notModified++
			s.mu.Unlock()
			w.Header().Del("Content-Type")
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	w.Write(rec.Body.Bytes())
}

// caller returns the login of the request's token; badToken reports an
// Authorization header with a token the stand-in does not know.
func (s *Server) caller(r *http.Request) (login string, badToken bool) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "", false
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(auth, "token ")
	}
	login, known := s.gh.TokenLogin(tok)
	if !ok || !known {
		return "", true
	}
	return login, false
}

// takeRate counts one request of key at now and returns what is left of
// its window and when the window ends; limited reports a spent limit (the
// request is not counted). Called with s.mu held.
func (s *Server) takeRate(key string, now time.Time) (remaining int, reset time.Time, limited bool) {
	rc := s.api.rates[key]
	if rc == nil || !now.Before(rc.reset) {
		if len(s.api.rates) >= 1000 {
			for k, old := range s.api.rates {
				if !now.Before(old.reset) {
					delete(s.api.rates, k)
				}
			}
		}
		rc = &rateCount{reset: now.Add(rateWindow).Truncate(time.Second)}
		s.api.rates[key] = rc
	}
	if rc.used >= rateLimit {
		return 0, rc.reset, true
	}
	rc.used++
	return rateLimit - rc.used, rc.reset, false
}

// takeAPIOutage returns the outage that answers this request, if any,
// counting it. Called with s.mu held.
func (s *Server) takeAPIOutage() *APIOutage {
	o := s.api.outage
	if o == nil {
		return nil
	}
	c := *o
	if o.Requests > 0 {
		o.Requests--
		if o.Requests == 0 {
			s.api.outage = nil
		}
	}
	return &c
}

// writeAPIOutage answers as GitHub does when it limits a client (403,
// 429) or fails (5xx).
func writeAPIOutage(w http.ResponseWriter, o APIOutage) {
	if o.StatusCode == http.StatusForbidden || o.StatusCode == http.StatusTooManyRequests {
		if o.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(o.RetryAfter))
		}
		writeJSON(w, o.StatusCode, map[string]any{
			"message":           "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
			"documentation_url": secondaryLimitDocs,
		})
		return
	}
	writeJSON(w, o.StatusCode, map[string]any{"message": "Server Error"})
}

// apiWriter records the request for APIRequests when its status is
// written, before any of the answer is sent.
type apiWriter struct {
	http.ResponseWriter
	s            *Server
	method, path string
	recorded     bool
}

func (w *apiWriter) WriteHeader(code int) {
	w.record(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *apiWriter) Write(b []byte) (int, error) {
	if !w.recorded {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *apiWriter) record(code int) {
	if w.recorded {
		return
	}
	w.recorded = true
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.api.requests = append(s.api.requests, APIRequest{Method: w.method, Path: w.path, StatusCode: code, At: s.api.now().UTC()})
	if n := len(s.api.requests); n > keptAPIRequests {
		s.api.requests = slices.Delete(s.api.requests, 0, n-keptAPIRequests)
	}
}

// fieldError is one entry of a 422 answer's errors.
type fieldError struct {
	Resource string `json:"resource"`
	Field    string `json:"field,omitempty"`
	Code     string `json:"code"`
	Message  string `json:"message,omitempty"`
}

// restError answers with GitHub's error shape.
func restError(w http.ResponseWriter, status int, msg, docs string, errs ...fieldError) {
	body := map[string]any{"message": msg, "documentation_url": docs, "status": strconv.Itoa(status)}
	if len(errs) > 0 {
		body["errors"] = errs
	}
	writeJSON(w, status, body)
}

func validationFailed(w http.ResponseWriter, docs string, e fieldError) {
	restError(w, http.StatusUnprocessableEntity, "Validation Failed", docs, e)
}

// decodeAPI reads a JSON request body into v as GitHub does: unknown
// fields are ignored and an empty body is {}. It answers and returns false
// when the body does not do.
func decodeAPI(w http.ResponseWriter, r *http.Request, v any, docs string) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody)).Decode(v)
	var (
		tooLarge *http.MaxBytesError
		typeErr  *json.UnmarshalTypeError
	)
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return true
	case errors.As(err, &tooLarge):
		restError(w, http.StatusRequestEntityTooLarge, "Payload too large", docs)
	case errors.As(err, &typeErr):
		restError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Invalid request.\n\nFor '%s', the value is not a %s.", typeErr.Field, typeErr.Type), docs)
	default:
		restError(w, http.StatusBadRequest, "Problems parsing JSON", docs)
	}
	return false
}

// accessRepo finds the repository of the path: writing it takes its
// admin's token, reading a private one too. It answers 401 for a write
// without a token and 404, as GitHub does, to anyone else.
func (s *Server) accessRepo(w http.ResponseWriter, r *http.Request, login string, write bool) (*repoInfo, bool) {
	if write && login == "" {
		restError(w, http.StatusUnauthorized, "Requires authentication", "https://docs.github.com/rest")
		return nil, false
	}
	ri := s.repo(r.PathValue("owner"), r.PathValue("repo"))
	if ri == nil || ((write || ri.private) && !strings.EqualFold(login, ri.admin)) {
		restError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest")
		return nil, false
	}
	return ri, true
}

// resolveRef returns the commit ref names: a 40-hex sha (any), a branch
// or a tag of the repository, or a full ref name; ok is false when there
// is none.
func resolveRef(ri *repoInfo, ref string) (sha string, ok bool, err error) {
	if shaRE.MatchString(ref) {
		return strings.ToLower(ref), true, nil
	}
	refs, err := ri.git.Refs()
	if err != nil {
		return "", false, err
	}
	for _, full := range []string{"refs/heads/" + ref, "refs/tags/" + ref, ref} {
		if sha, ok := refs[full]; ok && strings.HasPrefix(full, "refs/") {
			return sha, true, nil
		}
	}
	return "", false, nil
}

// paginate picks the page of n items the request asks for, items
// [lo, hi), and sets a Link header like GitHub's (next and last when more
// pages follow, prev and first after the first page). It answers 422 and
// returns false for a bad page or per_page.
func (s *Server) paginate(w http.ResponseWriter, r *http.Request, n int, docs string) (lo, hi int, ok bool) {
	q := r.URL.Query()
	perPage, page := defaultPerPage, 1
	for _, p := range []struct {
		name string
		v    *int
	}{{"per_page", &perPage}, {"page", &page}} {
		if v := q.Get(p.name); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil || i < 1 {
				restError(w, http.StatusUnprocessableEntity, "Validation Failed: "+p.name+" must be a positive number", docs)
				return 0, 0, false
			}
			*p.v = i
		}
	}
	perPage = min(perPage, maxPerPage)
	last := max(1, (n+perPage-1)/perPage)
	lo = n
	if page-1 < last {
		lo = (page - 1) * perPage
	}
	hi = min(lo+perPage, n)

	link := func(p int, rel string) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(p))
		v.Set("per_page", strconv.Itoa(perPage))
		u := s.APIURL + strings.TrimPrefix(r.URL.EscapedPath(), githubfake.APIPrefix) + "?" + v.Encode()
		return "<" + u + `>; rel="` + rel + `"`
	}
	var links []string
	if page > 1 {
		links = append(links, link(min(page-1, last), "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	return lo, hi, true
}

// nullable is s, or JSON null when it is empty, as GitHub sends unset
// strings.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// apiUser is a GitHub account as the REST API shows it.
func (s *Server) apiUser(login string) User {
	u := s.urls().user(login)
	u.Name, u.Email = "", ""
	return u
}

// repoURL is the API URL of ri.
func (s *Server) repoURL(ri *repoInfo) string { return s.APIURL + "repos/" + ri.owner + "/" + ri.name }

// statusJSON is GitHub's JSON of a commit status (go-github's RepoStatus).
type statusJSON struct {
	URL         string  `json:"url"`
	AvatarURL   string  `json:"avatar_url"`
	ID          int64   `json:"id"`
	NodeID      string  `json:"node_id"`
	State       string  `json:"state"`
	Description *string `json:"description"`
	TargetURL   *string `json:"target_url"`
	Context     string  `json:"context"`
	CreatedAt   string  `json:"created_at"`
	UpdatedAt   string  `json:"updated_at"`
	Creator     User    `json:"creator"`
}

func (s *Server) statusJSON(ri *repoInfo, st *Status) statusJSON {
	creator := s.apiUser(st.Creator)
	return statusJSON{
		URL: s.repoURL(ri) + "/statuses/" + st.SHA, AvatarURL: creator.AvatarURL,
		ID: st.ID, NodeID: fmt.Sprintf("SC_standin%d", st.ID), State: st.State,
		Description: nullable(st.Description), TargetURL: nullable(st.TargetURL), Context: st.Context,
		CreatedAt: timestamp(st.CreatedAt), UpdatedAt: timestamp(st.CreatedAt), Creator: creator,
	}
}

// handleCreateStatus handles POST /api/v3/repos/{owner}/{repo}/statuses/{sha}.
func (s *Server) handleCreateStatus(w http.ResponseWriter, r *http.Request, login string) {
	ri, ok := s.accessRepo(w, r, login, true)
	if !ok {
		return
	}
	var in struct {
		State       string `json:"state"`
		TargetURL   string `json:"target_url"`
		Description string `json:"description"`
		Context     string `json:"context"`
	}
	if !decodeAPI(w, r, &in, statusesDocs) {
		return
	}
	sha := r.PathValue("sha")
	if !shaRE.MatchString(sha) {
		restError(w, http.StatusUnprocessableEntity, "No commit found for SHA: "+sha, statusesDocs)
		return
	}
	sha = strings.ToLower(sha)
	if !slices.Contains(commitStates, in.State) {
		validationFailed(w, statusesDocs, fieldError{Resource: "Status", Field: "state", Code: "custom",
			Message: "state is not included in the list"})
		return
	}
	if utf8.RuneCountInString(in.Description) > maxDescription {
		validationFailed(w, statusesDocs, fieldError{Resource: "Status", Field: "description", Code: "custom",
			Message: "description is too long (maximum is 140 characters)"})
		return
	}
	if in.Context == "" {
		in.Context = "default"
	}

	s.mu.Lock()
	k := key(ri)
	bySHA := s.api.statuses[k]
	if bySHA == nil {
		bySHA = map[string][]*Status{}
		s.api.statuses[k] = bySHA
	}
	n := 0
	for _, st := range bySHA[sha] {
		if st.Context == in.Context {
			n++
		}
	}
	if n >= maxStatusesPerContext {
		s.mu.Unlock()
		validationFailed(w, statusesDocs, fieldError{Resource: "Status", Code: "custom",
			Message: "This SHA and context has reached the maximum number of statuses."})
		return
	}
	if _, seen := bySHA[sha]; !seen {
		order := append(s.api.statusSHAs[k], sha)
		if len(order) > keptStatusSHAs {
			delete(bySHA, order[0])
			order = slices.Delete(order, 0, 1)
		}
		s.api.statusSHAs[k] = order
	}
	s.api.nextStatusID++
	st := &Status{ID: s.api.nextStatusID, SHA: sha, State: in.State, TargetURL: in.TargetURL, Description: in.Description,
		Context: in.Context, Creator: login, CreatedAt: s.api.now().UTC()}
	bySHA[sha] = append(bySHA[sha], st)
	out := s.statusJSON(ri, st)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

// handleCommitStatuses handles GET
// /api/v3/repos/{owner}/{repo}/commits/{ref}/statuses (the statuses of
// ref, newest first) and GET .../commits/{ref}/status (its combined
// status). A ref may contain slashes.
func (s *Server) handleCommitStatuses(w http.ResponseWriter, r *http.Request, login string) {
	rest := r.PathValue("rest")
	ref, list := strings.CutSuffix(rest, "/statuses")
	combined := false
	if !list {
		ref, combined = strings.CutSuffix(rest, "/status")
	}
	if (!list && !combined) || ref == "" {
		restError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest")
		return
	}
	ri, ok := s.accessRepo(w, r, login, false)
	if !ok {
		return
	}
	sha, found, err := resolveRef(ri, ref)
	if err != nil {
		restError(w, http.StatusInternalServerError, "Server Error", statusesDocs)
		return
	}
	if !found {
		restError(w, http.StatusNotFound, "No commit found for SHA: "+ref, statusesDocs)
		return
	}

	s.mu.Lock()
	all := s.api.statuses[key(ri)][sha]
	var picked []statusJSON // newest first
	seen := map[string]bool{}
	state := "success"
	for i := len(all) - 1; i >= 0; i-- {
		st := all[i]
		if combined {
			if seen[st.Context] {
				continue
			}
			seen[st.Context] = true
			switch {
			case st.State == "error" || st.State == "failure":
				state = "failure"
			case st.State == "pending" && state != "failure":
				state = "pending"
			}
		}
		picked = append(picked, s.statusJSON(ri, st))
	}
	s.mu.Unlock()
	if len(picked) == 0 {
		state = "pending"
	}

	lo, hi, ok := s.paginate(w, r, len(picked), statusesDocs)
	if !ok {
		return
	}
	page := append([]statusJSON{}, picked[lo:hi]...)
	if list {
		writeJSON(w, http.StatusOK, page)
		return
	}
	owner := s.apiUser(ri.owner)
	writeJSON(w, http.StatusOK, map[string]any{
		"state": state, "statuses": page, "sha": sha, "total_count": len(picked),
		"repository": map[string]any{
			"id": ri.id, "node_id": fmt.Sprintf("R_standin%d", ri.id), "name": ri.name, "full_name": ri.owner + "/" + ri.name,
			"private": ri.private, "owner": owner, "html_url": s.URL + ri.owner + "/" + ri.name, "url": s.repoURL(ri),
		},
		"commit_url":     s.repoURL(ri) + "/commits/" + sha,
		"url":            s.repoURL(ri) + "/commits/" + sha + "/status",
		"repository_url": s.repoURL(ri),
	})
}

// deploymentJSON is GitHub's JSON of a deployment (go-github's
// Deployment).
type deploymentJSON struct {
	URL                   string          `json:"url"`
	ID                    int64           `json:"id"`
	NodeID                string          `json:"node_id"`
	SHA                   string          `json:"sha"`
	Ref                   string          `json:"ref"`
	Task                  string          `json:"task"`
	Payload               json.RawMessage `json:"payload"`
	OriginalEnvironment   string          `json:"original_environment"`
	Environment           string          `json:"environment"`
	Description           *string         `json:"description"`
	Creator               User            `json:"creator"`
	CreatedAt             string          `json:"created_at"`
	UpdatedAt             string          `json:"updated_at"`
	StatusesURL           string          `json:"statuses_url"`
	RepositoryURL         string          `json:"repository_url"`
	TransientEnvironment  bool            `json:"transient_environment"`
	ProductionEnvironment bool            `json:"production_environment"`
}

func (s *Server) deploymentJSON(ri *repoInfo, d *Deployment) deploymentJSON {
	u := s.repoURL(ri) + "/deployments/" + strconv.FormatInt(d.ID, 10)
	return deploymentJSON{
		URL: u, ID: d.ID, NodeID: fmt.Sprintf("DE_standin%d", d.ID), SHA: d.SHA, Ref: d.Ref, Task: d.Task,
		Payload: slices.Clone(d.Payload), OriginalEnvironment: d.OriginalEnvironment, Environment: d.Environment,
		Description: nullable(d.Description), Creator: s.apiUser(d.Creator),
		CreatedAt: timestamp(d.CreatedAt), UpdatedAt: timestamp(d.UpdatedAt),
		StatusesURL: u + "/statuses", RepositoryURL: s.repoURL(ri),
		TransientEnvironment: d.TransientEnvironment, ProductionEnvironment: d.ProductionEnvironment,
	}
}

// deploymentStatusJSON is GitHub's JSON of a deployment status
// (go-github's DeploymentStatus).
type deploymentStatusJSON struct {
	URL            string  `json:"url"`
	ID             int64   `json:"id"`
	NodeID         string  `json:"node_id"`
	State          string  `json:"state"`
	Creator        User    `json:"creator"`
	Description    string  `json:"description"`
	Environment    string  `json:"environment"`
	TargetURL      string  `json:"target_url"`
	LogURL         string  `json:"log_url"`
	EnvironmentURL string  `json:"environment_url"`
	CreatedAt      string  `json:"created_at"`
	UpdatedAt      string  `json:"updated_at"`
	DeploymentURL  string  `json:"deployment_url"`
	RepositoryURL  string  `json:"repository_url"`
	PerformedVia   *string `json:"performed_via_github_app"`
}

func (s *Server) deploymentStatusJSON(ri *repoInfo, d *Deployment, st DeploymentStatus) deploymentStatusJSON {
	du := s.repoURL(ri) + "/deployments/" + strconv.FormatInt(d.ID, 10)
	return deploymentStatusJSON{
		URL: du + "/statuses/" + strconv.FormatInt(st.ID, 10), ID: st.ID, NodeID: fmt.Sprintf("DES_standin%d", st.ID),
		State: st.State, Creator: s.apiUser(st.Creator), Description: st.Description, Environment: st.Environment,
		TargetURL: st.TargetURL, LogURL: st.LogURL, EnvironmentURL: st.EnvironmentURL,
		CreatedAt: timestamp(st.CreatedAt), UpdatedAt: timestamp(st.CreatedAt),
		DeploymentURL: du, RepositoryURL: s.repoURL(ri),
	}
}

// handleCreateDeployment handles POST /api/v3/repos/{owner}/{repo}/deployments.
// As on GitHub, a request without required_contexts needs every context
// of the commit green (its latest status success), one with a list needs
// those contexts green, and [] needs nothing; otherwise it is a 409.
func (s *Server) handleCreateDeployment(w http.ResponseWriter, r *http.Request, login string) {
	ri, ok := s.accessRepo(w, r, login, true)
	if !ok {
		return
	}
	var in struct {
		Ref                   string          `json:"ref"`
		Task                  string          `json:"task"`
		AutoMerge             *bool           `json:"auto_merge"`
		RequiredContexts      *[]string       `json:"required_contexts"`
		Payload               json.RawMessage `json:"payload"`
		Environment           string          `json:"environment"`
		Description           string          `json:"description"`
		TransientEnvironment  bool            `json:"transient_environment"`
		ProductionEnvironment *bool           `json:"production_environment"`
	}
	if !decodeAPI(w, r, &in, deploymentsDocs) {
		return
	}
	if in.Ref == "" {
		restError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"ref\" wasn't supplied.", deploymentsDocs)
		return
	}
	sha, found, err := resolveRef(ri, in.Ref)
	if err != nil {
		restError(w, http.StatusInternalServerError, "Server Error", deploymentsDocs)
		return
	}
	if !found {
		restError(w, http.StatusUnprocessableEntity, "No ref found for: "+in.Ref, deploymentsDocs)
		return
	}
	d := &Deployment{SHA: sha, Ref: in.Ref, Task: in.Task, Payload: in.Payload, Environment: in.Environment,
		Description: in.Description, Creator: login, AutoMerge: in.AutoMerge == nil || *in.AutoMerge,
		TransientEnvironment: in.TransientEnvironment}
	if d.Task == "" {
		d.Task = "deploy"
	}
	if d.Environment == "" {
		d.Environment = "production"
	}
	d.OriginalEnvironment = d.Environment
	d.ProductionEnvironment = d.Environment == "production"
	if in.ProductionEnvironment != nil {
		d.ProductionEnvironment = *in.ProductionEnvironment
	}
	if p := strings.TrimSpace(string(d.Payload)); p == "" || p == "null" {
		d.Payload = json.RawMessage("{}")
	}
	if in.RequiredContexts != nil {
		d.RequiredContexts = slices.Clone(*in.RequiredContexts)
		if d.RequiredContexts == nil {
			d.RequiredContexts = []string{}
		}
	}

	type contextState struct {
		Context string `json:"context"`
		State   string `json:"state"`
	}
	s.mu.Lock()
	latest := map[string]string{} // context → state of its latest status
	for _, st := range s.api.statuses[key(ri)][sha] {
		latest[st.Context] = st.State
	}
	var failed []contextState
	if d.RequiredContexts == nil {
		for _, c := range slices.Sorted(maps.Keys(latest)) {
			if latest[c] != "success" {
				failed = append(failed, contextState{c, latest[c]})
			}
		}
	} else {
		for _, c := range d.RequiredContexts {
			if latest[c] != "success" {
				state := latest[c]
				if state == "" {
					state = "missing"
				}
				failed = append(failed, contextState{c, state})
			}
		}
	}
	if len(failed) > 0 {
		s.mu.Unlock()
		writeJSON(w, http.StatusConflict, map[string]any{
			"message": "Conflict: Commit status checks failed for " + in.Ref + ".",
			"errors": []map[string]any{{"contexts": failed, "resource": "Deployment", "field": "required_contexts",
				"code": "invalid"}},
			"documentation_url": deploymentsDocs + "#create-a-deployment",
			"status":            "409",
		})
		return
	}
	s.api.nextDeploymentID++
	d.ID = s.api.nextDeploymentID
	d.CreatedAt = s.api.now().UTC()
	d.UpdatedAt = d.CreatedAt
	k := key(ri)
	list := append(s.api.deployments[k], d)
	if len(list) > keptDeployments {
		list = slices.Delete(list, 0, len(list)-keptDeployments)
	}
	s.api.deployments[k] = list
	out := s.deploymentJSON(ri, d)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

// handleListDeployments handles GET /api/v3/repos/{owner}/{repo}/deployments:
// the deployments matching the query's sha, ref, task and environment,
// newest first.
func (s *Server) handleListDeployments(w http.ResponseWriter, r *http.Request, login string) {
	ri, ok := s.accessRepo(w, r, login, false)
	if !ok {
		return
	}
	q := r.URL.Query()
	match := func(want, got string) bool { return want == "" || want == got }
	var picked []deploymentJSON
	s.mu.Lock()
	list := s.api.deployments[key(ri)]
	for i := len(list) - 1; i >= 0; i-- {
		d := list[i]
		if match(strings.ToLower(q.Get("sha")), d.SHA) && match(q.Get("ref"), d.Ref) && match(q.Get("task"), d.Task) &&
			match(q.Get("environment"), d.Environment) {
			picked = append(picked, s.deploymentJSON(ri, d))
		}
	}
	s.mu.Unlock()
	lo, hi, ok := s.paginate(w, r, len(picked), deploymentsDocs)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, append([]deploymentJSON{}, picked[lo:hi]...))
}

// findDeployment returns the deployment of the path's id. Called with
// s.mu held.
func (s *Server) findDeployment(ri *repoInfo, r *http.Request) *Deployment {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil
	}
	list := s.api.deployments[key(ri)]
	i, found := slices.BinarySearchFunc(list, id, func(d *Deployment, id int64) int { return cmp.Compare(d.ID, id) })
	if !found {
		return nil
	}
	return list[i]
}

// handleGetDeployment handles GET /api/v3/repos/{owner}/{repo}/deployments/{id}.
func (s *Server) handleGetDeployment(w http.ResponseWriter, r *http.Request, login string) {
	ri, ok := s.accessRepo(w, r, login, false)
	if !ok {
		return
	}
	s.mu.Lock()
	d := s.findDeployment(ri, r)
	var out deploymentJSON
	if d != nil {
		out = s.deploymentJSON(ri, d)
	}
	s.mu.Unlock()
	if d == nil {
		restError(w, http.StatusNotFound, "Not Found", deploymentsDocs+"#get-a-deployment")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleCreateDeploymentStatus handles POST
// /api/v3/repos/{owner}/{repo}/deployments/{id}/statuses. The environment
// defaults to the previous status's, or the deployment's, and a new one
// moves the deployment. As on GitHub, a success with auto_inactive (the
// default) in an environment that is neither production nor transient
// adds an inactive status to every earlier deployment of the repository
// in that environment whose latest status is success.
func (s *Server) handleCreateDeploymentStatus(w http.ResponseWriter, r *http.Request, login string) {
	ri, ok := s.accessRepo(w, r, login, true)
	if !ok {
		return
	}
	var in struct {
		State          string `json:"state"`
		TargetURL      string `json:"target_url"`
		LogURL         string `json:"log_url"`
		Description    string `json:"description"`
		EnvironmentURL string `json:"environment_url"`
		Environment    string `json:"environment"`
		AutoInactive   *bool  `json:"auto_inactive"`
	}
	if !decodeAPI(w, r, &in, deploymentStatusesDocs) {
		return
	}
	if !slices.Contains(deploymentStates, in.State) {
		validationFailed(w, deploymentStatusesDocs, fieldError{Resource: "DeploymentStatus", Field: "state", Code: "custom",
			Message: "state is not included in the list"})
		return
	}
	if utf8.RuneCountInString(in.Description) > maxDescription {
		validationFailed(w, deploymentStatusesDocs, fieldError{Resource: "DeploymentStatus", Field: "description",
			Code: "custom", Message: "description is too long (maximum is 140 characters)"})
		return
	}
	// log_url replaces target_url; GitHub answers both.
	if in.LogURL == "" {
		in.LogURL = in.TargetURL
	}
	if in.TargetURL == "" {
		in.TargetURL = in.LogURL
	}
	autoInactive := in.AutoInactive == nil || *in.AutoInactive

	s.mu.Lock()
	d := s.findDeployment(ri, r)
	if d == nil {
		s.mu.Unlock()
		restError(w, http.StatusNotFound, "Not Found", deploymentStatusesDocs)
		return
	}
	env := in.Environment
	if env == "" {
		env = d.Environment
		if n := len(d.Statuses); n > 0 {
			env = d.Statuses[n-1].Environment
		}
	}
	now := s.api.now().UTC()
	add := func(d *Deployment, st DeploymentStatus) DeploymentStatus {
		s.api.nextDeploymentStatusID++
		st.ID, st.CreatedAt = s.api.nextDeploymentStatusID, now
		d.Statuses = append(d.Statuses, st)
		if len(d.Statuses) > keptDeploymentStatuses {
			d.Statuses = slices.Delete(d.Statuses, 0, len(d.Statuses)-keptDeploymentStatuses)
		}
		d.UpdatedAt = now
		return st
	}
	d.Environment = env
	st := add(d, DeploymentStatus{State: in.State, Description: in.Description, Environment: env, TargetURL: in.TargetURL,
		LogURL: in.LogURL, EnvironmentURL: in.EnvironmentURL, Creator: login, AutoInactive: autoInactive})
	if in.State == "success" && autoInactive && !d.ProductionEnvironment && !d.TransientEnvironment {
		for _, old := range s.api.deployments[key(ri)] {
			if old.ID >= d.ID {
				break
			}
			n := len(old.Statuses)
			if old.ProductionEnvironment || old.TransientEnvironment || old.Environment != env || n == 0 ||
				old.Statuses[n-1].State != "success" {
				continue
			}
			add(old, DeploymentStatus{State: "inactive", Environment: old.Environment, Creator: login})
		}
	}
	out := s.deploymentStatusJSON(ri, d, st)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

// handleListDeploymentStatuses handles GET
// /api/v3/repos/{owner}/{repo}/deployments/{id}/statuses, newest first.
func (s *Server) handleListDeploymentStatuses(w http.ResponseWriter, r *http.Request, login string) {
	ri, ok := s.accessRepo(w, r, login, false)
	if !ok {
		return
	}
	var picked []deploymentStatusJSON
	s.mu.Lock()
	d := s.findDeployment(ri, r)
	if d != nil {
		for i := len(d.Statuses) - 1; i >= 0; i-- {
			picked = append(picked, s.deploymentStatusJSON(ri, d, d.Statuses[i]))
		}
	}
	s.mu.Unlock()
	if d == nil {
		restError(w, http.StatusNotFound, "Not Found", deploymentStatusesDocs)
		return
	}
	lo, hi, ok := s.paginate(w, r, len(picked), deploymentStatusesDocs)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, append([]deploymentStatusJSON{}, picked[lo:hi]...))
}
