// Package dashboard serves the API service's web dashboard under /ui/: the
// tracked repositories with their latest job, a repository's jobs, and one
// job's pipeline and log, live.
//
// Pages are rendered on the server from the job history API
// (kgd.jobs.v1.Jobs), called over gRPC with the browser's identity: the
// request's Authorization and X-Serverless-Authorization headers become
// the gRPC metadata "authorization" and "x-serverless-authorization", as
// the HTTP gateway forwards them, so a page shows exactly what the
// caller may read through the API. One embedded script keeps the pages
// live: it follows the repository's Skaffold v2 event stream
// (GET /v2/events?repository=owner/name&sequence=true, resuming with
// since=N), fetches jobs from the gateway's JSON routes, and for operators
// posts reruns and rollbacks (JSON bodies, which the local guard
// requires). Nothing is loaded from elsewhere: the script and the style
// sheet are embedded, and every response forbids other origins
// (Content-Security-Policy default-src 'self') and inline scripts.
package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
)

// Prefix is the path the dashboard is served under: mount the handler
// New returns at Prefix (and at "/ui", which it redirects here).
const Prefix = "/ui/"

// JobsClient is the part of jobspb.JobsClient the dashboard calls;
// jobspb.NewJobsClient(conn) satisfies it.
type JobsClient interface {
	ListRepositories(ctx context.Context, in *jobspb.ListRepositoriesRequest, opts ...grpc.CallOption) (*jobspb.ListRepositoriesResponse, error)
	ListJobs(ctx context.Context, in *jobspb.ListJobsRequest, opts ...grpc.CallOption) (*jobspb.ListJobsResponse, error)
	GetJob(ctx context.Context, in *jobspb.GetJobRequest, opts ...grpc.CallOption) (*jobspb.Job, error)
	JobLog(ctx context.Context, in *jobspb.JobLogRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[jobspb.LogLine], error)
}

// Options tune the dashboard. The zero value is ready to use.
type Options struct {
	// Log receives the errors a page could not show in detail (the
	// API's internal errors); nil discards them.
	Log *slog.Logger
	// PageSize is the number of jobs on a page of a repository's jobs;
	// 0 means 20, at most 100 (the API's limit).
	PageSize int
	// MaxLogLines is the number of log lines a job's page renders (the
	// latest ones; the full log stays at the API's log route); 0 means
	// 5000.
	MaxLogLines int
	// Timeout bounds the API calls of one page; 0 means 30 seconds.
	Timeout time.Duration
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Headers every response of the dashboard carries.
const (
	// csp allows the dashboard's own script, style sheet and API calls
	// only: no inline script or style, no other origin, no framing.
	csp = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)

// dashboard is the handler New returns.
type dashboard struct {
	jobs    JobsClient
	opts    Options
	log     *slog.Logger
	pages   map[string]*template.Template
	static  map[string]staticFile
	handler http.Handler
}

// staticFile is an embedded asset with its content type and ETag.
type staticFile struct {
	body        []byte
	contentType string
	etag        string
}

// New returns the dashboard's handler, serving every path under Prefix
// ("/ui/") and redirecting "/ui" to "/ui/". It calls jobs with each
// request's identity (see the package comment).
func New(jobs JobsClient, opts Options) (http.Handler, error) {
	if jobs == nil {
		return nil, errors.New("dashboard: no jobs client")
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 20
	}
	opts.PageSize = min(opts.PageSize, 100)
	if opts.MaxLogLines <= 0 {
		opts.MaxLogLines = 5000
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &dashboard{jobs: jobs, opts: opts, log: log, static: map[string]staticFile{}}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	err := fs.WalkDir(staticFS, "static", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct, ok := types[path.Ext(p)]
		if !ok {
			return fmt.Errorf("static file %s: unknown type", p)
		}
		d.static[path.Base(p)] = staticFile{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	if d.pages, err = parseTemplates(d.assetVersion); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/{$}", d.handleRepositories)
	mux.HandleFunc("GET /ui/repos/{owner}/{name}", d.handleRepository)
	mux.HandleFunc("GET /ui/repos/{owner}/{name}/jobs/{id}", d.handleJob)
	mux.HandleFunc("GET /ui/static/{file}", d.handleStatic)
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			d.renderError(w, r, http.StatusMethodNotAllowed, "This page can only be read (GET).")
			return
		}
		d.renderError(w, r, http.StatusNotFound, "There is no such page.")
	})
	d.handler = mux
	return d, nil
}

func (d *dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	d.handler.ServeHTTP(w, r)
}

// assetVersion is the version query of a static file's URL, so a new
// build's files are never taken from a stale cache.
func (d *dashboard) assetVersion(name string) string {
	if f, ok := d.static[name]; ok {
		return f.etag[1 : len(f.etag)-1]
	}
	return ""
}

// handleStatic handles GET /ui/static/{file}: the embedded script and
// style sheet.
func (d *dashboard) handleStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := d.static[r.PathValue("file")]
	if !ok {
		d.renderError(w, r, http.StatusNotFound, "There is no such file.")
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("ETag", f.etag)
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// outgoing returns ctx carrying the request's identity headers as the
// gRPC metadata the HTTP gateway would forward, so the API authorizes
// the dashboard's calls as it authorizes the caller's own.
func outgoing(ctx context.Context, r *http.Request) context.Context {
	var kv []string
	for _, v := range r.Header.Values("Authorization") {
		kv = append(kv, "authorization", v)
	}
	for _, v := range r.Header.Values("X-Serverless-Authorization") {
		kv = append(kv, "x-serverless-authorization", v)
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// nameRE matches a GitHub owner or repository name.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// httpStatus maps an API error to the status of the page that failed,
// and whether its message may be shown (the API's own refusals are
// written for users; anything else is logged, not shown).
func httpStatus(err error) (int, bool) {
	switch status.Code(err) {
	case codes.NotFound:
		return http.StatusNotFound, true
	case codes.PermissionDenied:
		return http.StatusForbidden, true
	case codes.Unauthenticated:
		return http.StatusUnauthorized, true
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition:
		return http.StatusBadRequest, true
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests, true
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return http.StatusBadGateway, false
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return http.StatusBadGateway, false
	default:
		return http.StatusInternalServerError, false
	}
}

// apiError renders the error page for a failed API call.
func (d *dashboard) apiError(w http.ResponseWriter, r *http.Request, doing string, err error) {
	if r.Context().Err() != nil {
		return // the browser left; nobody reads the page
	}
	code, show := httpStatus(err)
	msg := "The API service did not answer as expected; try again in a moment."
	if show {
		msg = status.Convert(err).Message()
	}
	if !show {
		d.log.ErrorContext(r.Context(), "dashboard: API call failed", "doing", doing, "path", r.URL.Path, "error", err)
	}
	d.renderError(w, r, code, msg)
}

// errorPage is the data of the error template.
type errorPage struct {
	page
	Code    int
	Status  string
	Message string
}

// renderError writes the small error page with code.
func (d *dashboard) renderError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	p := errorPage{page: page{Title: http.StatusText(code)}, Code: code, Status: http.StatusText(code), Message: msg}
	d.render(w, r, code, "error", &p)
}

// render executes a page's template into a buffer first, so a failure
// becomes a clean 500 rather than half a page.
func (d *dashboard) render(w http.ResponseWriter, r *http.Request, code int, name string, data any) {
	var buf bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		d.log.ErrorContext(r.Context(), "dashboard: render page", "page", name, "error", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "internal error: the page could not be rendered\n")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}
