package dashboard

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
)

// page is what every page's layout needs.
type page struct {
	// Title is the page's heading and the first part of its <title>.
	Title string
	// Crumbs lead from the repositories to this page; the last one is
	// the page itself (no URL).
	Crumbs []crumb
	// Live are the data attributes of <main> the script reads: which
	// repository and job the page follows and from where.
	Live map[string]string
}

type crumb struct{ Name, URL string }

// repositoryView is one tracked repository.
type repositoryView struct {
	Repository, Owner, Name, URL string
	TrackedBy                    string
	TrackedAt                    *timestamppb.Timestamp
	AutoBuild, AutoDeploy        bool
	CanOperate                   bool
	Latest                       *jobView
}

// jobView is one job as the pages show it.
type jobView struct {
	ID, URL, APIURL, LogURL          string
	Repository                       string
	Iteration                        int32
	Status                           string
	Commit, Ref, Branch, Tag         string
	Trigger, Actor, Error            string
	CreatedAt, StartedAt, FinishedAt *timestamppb.Timestamp
	Duration                         string
	SourceJob, SourceURL             string
	Units                            []string
	Images                           []image
	Attempts                         int32
	DeployPending                    bool
	Ended                            bool // the job has ended (succeeded, failed or canceled)
	CanRollback                      bool // succeeded, with images to deploy again
	Phases                           []phaseView
	phaseStatus                      map[string]string
	refName                          string
}

type image struct{ Unit, Ref string }

// phaseView is one step of the pipeline: build, deploy or status-check,
// with its units (artifacts, releases, resources) as the log names them.
type phaseView struct {
	Name, Label, Status string
	Units               []unitView
}

type unitView struct{ Name, Status, Message string }

// logLine is one rendered line of a job's log.
type logLine struct {
	Time                     *timestamppb.Timestamp
	Phase, Unit, Level, Text string
	Status                   string
	Sequence                 int64
	Last                     bool
}

// notRun is the status a page gives a phase an ended job did not run.
const notRun = "NotRun"

// Terminal job statuses.
var finished = []string{"succeeded", "failed", "canceled"}

// pipeline are the phases a job page shows, in order.
var pipeline = []struct{ name, label string }{
	{"build", "Build"}, {"deploy", "Deploy"}, {"status-check", "Status check"},
}

func splitRepository(full string) (owner, name string) {
	owner, name, _ = strings.Cut(full, "/")
	return owner, name
}

func repositoryURL(full string) string {
	owner, name := splitRepository(full)
	return Prefix + "repos/" + url.PathEscape(owner) + "/" + url.PathEscape(name)
}

func newJobView(j *jobspb.Job) *jobView {
	if j == nil {
		return nil
	}
	owner, name := splitRepository(j.GetRepository())
	api := "/kgd/v1/repositories/" + url.PathEscape(owner) + "/" + url.PathEscape(name) + "/jobs/" + url.PathEscape(j.GetId())
	v := &jobView{
		ID: j.GetId(), URL: repositoryURL(j.GetRepository()) + "/jobs/" + url.PathEscape(j.GetId()),
		APIURL: api, LogURL: api + "/log",
		Repository: j.GetRepository(), Iteration: j.GetIteration(), Status: j.GetStatus(),
		Commit: j.GetCommit(), Ref: j.GetRef(), Branch: j.GetBranch(), Tag: j.GetTag(),
		Trigger: j.GetTrigger(), Actor: j.GetActor(), Error: j.GetError(),
		CreatedAt: j.GetCreatedAt(), StartedAt: j.GetStartedAt(), FinishedAt: j.GetFinishedAt(),
		SourceJob: j.GetSourceJob(), Units: j.GetUnits(), Attempts: j.GetAttempts(),
		DeployPending: j.GetDeployPending(), Ended: slices.Contains(finished, j.GetStatus()),
		phaseStatus: map[string]string{},
	}
	if v.SourceJob != "" {
		v.SourceURL = repositoryURL(j.GetRepository()) + "/jobs/" + url.PathEscape(v.SourceJob)
	}
	if j.GetStartedAt() != nil && j.GetFinishedAt() != nil {
		v.Duration = duration(j.GetFinishedAt().AsTime().Sub(j.GetStartedAt().AsTime()))
	}
	for unit, ref := range j.GetImages() {
		v.Images = append(v.Images, image{unit, ref})
	}
	slices.SortFunc(v.Images, func(a, b image) int { return strings.Compare(a.Unit, b.Unit) })
	v.CanRollback = v.Status == "succeeded" && len(v.Images) > 0
	for _, p := range j.GetPhases() {
		v.phaseStatus[p.GetName()] = p.GetStatus()
	}
	v.refName = cmpOr(v.Branch, v.Tag, strings.TrimPrefix(strings.TrimPrefix(v.Ref, "refs/heads/"), "refs/tags/"))
	return v
}

// RefName is the branch or tag the job is of.
func (v *jobView) RefName() string { return v.refName }

// Short is the commit's abbreviation.
func (v *jobView) Short() string { return short(v.Commit) }

// Name is how pages name the job: its iteration, or its id before a
// runner numbered it.
func (v *jobView) Name() string {
	if v.Iteration > 0 {
		return "#" + strconv.Itoa(int(v.Iteration))
	}
	return v.ID
}

func cmpOr(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func short(commit string) string {
	if len(commit) > 7 {
		return commit[:7]
	}
	return commit
}

// duration writes d as "1h 2m", "3m 4s" or "5s".
func duration(d time.Duration) string {
	if d < 0 {
		return ""
	}
	d = d.Round(time.Second)
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	switch {
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

// handleRepositories handles GET /ui/: the tracked repositories and
// their latest jobs.
func (d *dashboard) handleRepositories(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(outgoing(r.Context(), r), d.opts.Timeout)
	defer cancel()
	resp, err := d.jobs.ListRepositories(ctx, &jobspb.ListRepositoriesRequest{})
	if err != nil {
		d.apiError(w, r, "list repositories", err)
		return
	}
	data := struct {
		page
		Repositories []repositoryView
	}{page: page{Title: "Repositories", Crumbs: []crumb{{Name: "Repositories"}}}}
	for _, repo := range resp.GetRepositories() {
		data.Repositories = append(data.Repositories, newRepositoryView(repo))
	}
	slices.SortFunc(data.Repositories, func(a, b repositoryView) int { return strings.Compare(a.Repository, b.Repository) })
	d.render(w, r, http.StatusOK, "repositories", &data)
}

func newRepositoryView(repo *jobspb.Repository) repositoryView {
	owner, name := splitRepository(repo.GetRepository())
	return repositoryView{
		Repository: repo.GetRepository(), Owner: owner, Name: name, URL: repositoryURL(repo.GetRepository()),
		TrackedBy: repo.GetTrackedBy(), TrackedAt: repo.GetTrackedAt(),
		AutoBuild: repo.GetAutoBuild(), AutoDeploy: repo.GetAutoDeploy(), CanOperate: repo.GetCanOperate(),
		Latest: newJobView(repo.GetLatestJob()),
	}
}

// repository finds the repository owner/name among the tracked ones the
// caller may read; a missing one is NotFound.
func (d *dashboard) repository(ctx context.Context, owner, name string) (*jobspb.Repository, error) {
	if !nameRE.MatchString(owner) || !nameRE.MatchString(name) {
		return nil, status.Errorf(codes.NotFound, "%q is not a repository name", owner+"/"+name)
	}
	resp, err := d.jobs.ListRepositories(ctx, &jobspb.ListRepositoriesRequest{})
	if err != nil {
		return nil, err
	}
	for _, repo := range resp.GetRepositories() {
		if strings.EqualFold(repo.GetRepository(), owner+"/"+name) {
			return repo, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "repository %s/%s is not tracked", owner, name)
}

// handleRepository handles GET /ui/repos/{owner}/{name}: a page of the
// repository's jobs, newest first (?page_token= for older ones); the
// first page is live.
func (d *dashboard) handleRepository(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(outgoing(r.Context(), r), d.opts.Timeout)
	defer cancel()
	repo, err := d.repository(ctx, r.PathValue("owner"), r.PathValue("name"))
	if err != nil {
		d.apiError(w, r, "find the repository", err)
		return
	}
	rv := newRepositoryView(repo)
	token := r.URL.Query().Get("page_token")
	resp, err := d.jobs.ListJobs(ctx, &jobspb.ListJobsRequest{Owner: rv.Owner, Name: rv.Name, PageSize: int32(d.opts.PageSize), PageToken: token})
	if err != nil {
		d.apiError(w, r, "list jobs", err)
		return
	}
	data := struct {
		page
		Repo      repositoryView
		Jobs      []*jobView
		Older     string
		Newest    string
		FirstPage bool
		Blank     *jobView // the script's template of a new row
	}{
		page: page{Title: rv.Repository, Crumbs: []crumb{{"Repositories", Prefix}, {Name: rv.Repository}},
			Live: map[string]string{"page": "repository", "repository": rv.Repository}},
		Repo: rv, FirstPage: token == "", Blank: &jobView{},
	}
	if token != "" {
		data.Live["page"] = "repository-older" // older jobs only change status; the script does not follow them
		data.Newest = rv.URL
	}
	for _, j := range resp.GetJobs() {
		data.Jobs = append(data.Jobs, newJobView(j))
	}
	if t := resp.GetNextPageToken(); t != "" {
		data.Older = rv.URL + "?" + url.Values{"page_token": {t}}.Encode()
	}
	d.render(w, r, http.StatusOK, "repository", &data)
}

// handleJob handles GET /ui/repos/{owner}/{name}/jobs/{id}: one job's
// pipeline and log; live while it runs.
func (d *dashboard) handleJob(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(outgoing(r.Context(), r), d.opts.Timeout)
	defer cancel()
	repo, err := d.repository(ctx, r.PathValue("owner"), r.PathValue("name"))
	if err != nil {
		d.apiError(w, r, "find the repository", err)
		return
	}
	rv := newRepositoryView(repo)
	j, err := d.jobs.GetJob(ctx, &jobspb.GetJobRequest{Owner: rv.Owner, Name: rv.Name, JobId: r.PathValue("id")})
	if err != nil {
		d.apiError(w, r, "get the job", err)
		return
	}
	job := newJobView(j)
	lines, dropped, logErr := d.jobLog(ctx, rv.Owner, rv.Name, j.GetId())
	if logErr != nil && r.Context().Err() == nil {
		d.log.WarnContext(r.Context(), "dashboard: job log", "job", j.GetId(), "error", logErr)
	}
	job.Phases = phases(job, lines)
	var since int64
	ended := job.Ended
	for _, l := range lines {
		since = max(since, l.Sequence)
		ended = ended || l.Last
	}
	live := map[string]string{"page": "job", "repository": rv.Repository, "job": job.ID,
		"iteration": strconv.Itoa(int(job.Iteration)), "status": job.Status}
	if since > 0 {
		live["since"] = strconv.FormatInt(since, 10)
	}
	if ended {
		live["ended"] = "true"
	}
	data := struct {
		page
		Repo       repositoryView
		Job        *jobView
		Log        []logLine
		Dropped    int
		LogError   string
		CanOperate bool
	}{
		page: page{Title: "Job " + job.Name() + " of " + rv.Repository,
			Crumbs: []crumb{{"Repositories", Prefix}, {rv.Repository, rv.URL}, {Name: "Job " + job.Name()}}, Live: live},
		Repo: rv, Job: job, Log: lines, Dropped: dropped, CanOperate: repo.GetCanOperate(),
	}
	if logErr != nil {
		data.LogError = "The log could not be read"
		if code, show := httpStatus(logErr); show && code != http.StatusNotFound {
			data.LogError += ": " + status.Convert(logErr).Message()
		}
	}
	d.render(w, r, http.StatusOK, "job", &data)
}

// jobLog reads the job's log as it is now (no follow): its latest
// Options.MaxLogLines lines and how many earlier ones were dropped.
func (d *dashboard) jobLog(ctx context.Context, owner, name, id string) ([]logLine, int, error) {
	stream, err := d.jobs.JobLog(ctx, &jobspb.JobLogRequest{Owner: owner, Name: name, JobId: id})
	if err != nil {
		return nil, 0, err
	}
	var lines []logLine
	dropped := 0
	for {
		l, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return lines, dropped, nil
		}
		if err != nil {
			return lines, dropped, err
		}
		if len(lines) == d.opts.MaxLogLines {
			lines = slices.Delete(lines, 0, 1)
			dropped++
		}
		lines = append(lines, logLine{Time: l.GetTime(), Phase: l.GetPhase(), Unit: l.GetUnit(), Level: l.GetLevel(),
			Text: l.GetText(), Status: l.GetStatus(), Sequence: l.GetSequence(), Last: l.GetLast()})
	}
}

// phases builds the pipeline of a job: each phase's status from the job
// record, its units and their statuses from the log lines that name one.
func phases(job *jobView, lines []logLine) []phaseView {
	var out []phaseView
	for _, p := range pipeline {
		pv := phaseView{Name: p.name, Label: p.label, Status: job.phaseStatus[p.name]}
		if pv.Status == "" && job.Ended {
			pv.Status = notRun
		}
		for _, l := range lines {
			if l.Phase != p.name || l.Unit == "" {
				continue
			}
			i := slices.IndexFunc(pv.Units, func(u unitView) bool { return u.Name == l.Unit })
			if i < 0 {
				pv.Units = append(pv.Units, unitView{Name: l.Unit})
				i = len(pv.Units) - 1
			}
			if l.Status != "" {
				pv.Units[i].Status = l.Status
			}
			if p.name == "status-check" && l.Text != "" {
				pv.Units[i].Message = strings.TrimPrefix(l.Text, l.Unit+": ")
			}
		}
		out = append(out, pv)
	}
	return out
}

// funcs are the templates' helpers.
func funcs(asset func(string) string) template.FuncMap {
	return template.FuncMap{
		"asset": func(name string) string { return Prefix + "static/" + name + "?v=" + asset(name) },
		"when": func(ts *timestamppb.Timestamp) string {
			if ts == nil {
				return ""
			}
			return ts.AsTime().UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"clock": func(ts *timestamppb.Timestamp) string {
			if ts == nil {
				return ""
			}
			return ts.AsTime().UTC().Format("15:04:05")
		},
		"iso": func(ts *timestamppb.Timestamp) string {
			if ts == nil {
				return ""
			}
			return ts.AsTime().UTC().Format(time.RFC3339)
		},
		"statusLabel": statusLabel,
		"statusClass": statusClass,
		"statusIcon":  statusIcon,
		"lower":       strings.ToLower,
	}
}

// statusLabel is the words a status badge shows: the job statuses as
// they are, the v2 phase statuses in lower case with spaces.
func statusLabel(s string) string {
	switch s {
	case "":
		return "not started"
	case "InProgress":
		return "in progress"
	case "NotStarted":
		return "not started"
	case notRun:
		return "not run"
	}
	return strings.ToLower(s)
}

// statusClass is a badge's CSS class; colour only repeats the label.
func statusClass(s string) string {
	switch strings.ToLower(s) {
	case "succeeded", "complete":
		return "ok"
	case "failed":
		return "bad"
	case "running", "inprogress", "in progress", "started":
		return "run"
	case "canceled", "terminated":
		return "off"
	}
	return "wait"
}

// statusIcon is a badge's symbol (hidden from screen readers: the label
// says it).
func statusIcon(s string) string {
	return map[string]string{"ok": "✓", "bad": "✗", "run": "●", "off": "⊘", "wait": "◷"}[statusClass(s)]
}

// parseTemplates parses each page's template with the layout.
func parseTemplates(asset func(string) string) (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range []string{"repositories", "repository", "job", "error"} {
		t, err := template.New(name).Funcs(funcs(asset)).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parse the %s page: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}
