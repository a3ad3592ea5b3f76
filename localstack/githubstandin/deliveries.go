package githubstandin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/githubfake"
)

// Page sizes of the deliveries API, as GitHub's.
const (
	defaultDeliveriesPerPage = 30
	maxDeliveriesPerPage     = 100
)

// cursorPrefix starts the opaque cursors of the deliveries API; like
// GitHub's ("v1_12077215967") they name the last delivery of a page.
const cursorPrefix = "v1_"

// deliveryRoutes registers the REST API of a hook's deliveries, which
// shared/githubfake does not serve:
//
//	GET  /api/v3/repos/{owner}/{repo}/hooks/{hook_id}/deliveries                            list, newest first
//	POST /api/v3/repos/{owner}/{repo}/hooks/{hook_id}/deliveries/{delivery_id}/attempts     redeliver (202)
//
// Both take the token of a user who administers the repository, as the
// hook routes do. Unlike GitHub, a redelivery is made before the 202
// answer, so its record is listed as soon as the request returns.
func (s *Server) deliveryRoutes(mux *http.ServeMux) {
	base := githubfake.APIPrefix + "repos/{owner}/{repo}/hooks/{hook_id}/deliveries"
	mux.HandleFunc("GET "+base, s.handleListDeliveries)
	mux.HandleFunc("POST "+base+"/{delivery_id}/attempts", s.handleRedeliverAttempt)
}

// hookDelivery is GitHub's JSON of a delivery in the list (go-github's
// HookDelivery).
type hookDelivery struct {
	ID             int64     `json:"id"`
	GUID           string    `json:"guid"`
	DeliveredAt    string    `json:"delivered_at"`
	Redelivery     bool      `json:"redelivery"`
	Duration       float64   `json:"duration"`
	Status         string    `json:"status"`
	StatusCode     int       `json:"status_code"`
	Event          string    `json:"event"`
	Action         *string   `json:"action"`
	InstallationID *int64    `json:"installation_id"`
	RepositoryID   int64     `json:"repository_id"`
	ThrottledAt    *struct{} `json:"throttled_at"`
}

func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"message": msg, "documentation_url": "https://docs.github.com/rest/repos/webhooks",
		"status": strconv.Itoa(status)})
}

// hookAdmin authenticates the request's token and finds the repository
// and hook of the path; it answers 401 for a token it does not know and,
// as GitHub does, 404 for a repository the user does not administer and
// for a hook that does not exist.
func (s *Server) hookAdmin(w http.ResponseWriter, r *http.Request) (*repoInfo, int64, bool) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(auth, "token ")
	}
	login, known := s.gh.TokenLogin(tok)
	if !ok || !known {
		apiError(w, http.StatusUnauthorized, "Bad credentials")
		return nil, 0, false
	}
	ri := s.repo(r.PathValue("owner"), r.PathValue("repo"))
	if ri == nil || !strings.EqualFold(login, ri.admin) {
		apiError(w, http.StatusNotFound, "Not Found")
		return nil, 0, false
	}
	hookID, err := strconv.ParseInt(r.PathValue("hook_id"), 10, 64)
	if err != nil {
		apiError(w, http.StatusNotFound, "Not Found")
		return nil, 0, false
	}
	for _, h := range s.gh.Hooks(ri.owner, ri.name) {
		if h.ID == hookID {
			return ri, hookID, true
		}
	}
	apiError(w, http.StatusNotFound, "Not Found")
	return nil, 0, false
}

// handleListDeliveries handles
// GET /api/v3/repos/{owner}/{repo}/hooks/{hook_id}/deliveries: the hook's
// deliveries, newest first, per_page (default 30, at most 100) at a time,
// with a Link header rel="next" carrying the cursor of the next page.
func (s *Server) handleListDeliveries(w http.ResponseWriter, r *http.Request) {
	ri, hookID, ok := s.hookAdmin(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	perPage := defaultDeliveriesPerPage
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			apiError(w, http.StatusUnprocessableEntity, "Validation Failed: per_page must be a positive number")
			return
		}
		perPage = min(n, maxDeliveriesPerPage)
	}
	var before int64 // list deliveries older than this id; 0: from the newest
	if c := q.Get("cursor"); c != "" {
		id, err := strconv.ParseInt(strings.TrimPrefix(c, cursorPrefix), 10, 64)
		if !strings.HasPrefix(c, cursorPrefix) || err != nil || id <= 0 {
			apiError(w, http.StatusBadRequest, "Invalid cursor")
			return
		}
		before = id
	}

	var page []hookDelivery
	more := false
	s.mu.Lock()
	list := s.deliveries[key(ri)]
	for i := len(list) - 1; i >= 0; i-- {
		d := list[i]
		if d.HookID != hookID || (before != 0 && d.ID >= before) {
			continue
		}
		if len(page) == perPage {
			more = true
			break
		}
		page = append(page, hookDelivery{
			ID: d.ID, GUID: d.GUID, DeliveredAt: d.At.UTC().Format(time.RFC3339), Redelivery: d.Redelivery,
			Duration: d.Duration, Status: d.Status, StatusCode: d.StatusCode, Event: d.Event, RepositoryID: ri.id,
		})
	}
	s.mu.Unlock()
	if page == nil {
		page = []hookDelivery{}
	}
	if more {
		next := url.Values{"per_page": {strconv.Itoa(perPage)}, "cursor": {cursorPrefix + strconv.FormatInt(page[len(page)-1].ID, 10)}}
		u := fmt.Sprintf("%srepos/%s/%s/hooks/%d/deliveries?%s", s.APIURL, r.PathValue("owner"), r.PathValue("repo"), hookID, next.Encode())
		w.Header().Set("Link", "<"+u+`>; rel="next"`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(page)
}

// handleRedeliverAttempt handles POST
// /api/v3/repos/{owner}/{repo}/hooks/{hook_id}/deliveries/{delivery_id}/attempts:
// it delivers the recorded delivery again, with its GUID, headers and
// body, as a new record with redelivery true, and answers 202 as GitHub
// does (whatever the receiver answered).
func (s *Server) handleRedeliverAttempt(w http.ResponseWriter, r *http.Request) {
	ri, hookID, ok := s.hookAdmin(w, r)
	if !ok {
		return
	}
	id, err := strconv.ParseInt(r.PathValue("delivery_id"), 10, 64)
	if err != nil {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	var old *Delivery
	s.mu.Lock()
	for _, d := range s.deliveries[key(ri)] {
		if d.ID == id && d.HookID == hookID {
			old = d
		}
	}
	s.mu.Unlock()
	if old == nil {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	if _, err := s.redeliver(s.ctx, ri, old); err != nil {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{})
}
