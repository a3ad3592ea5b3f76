package render

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// View writes kgd's human output: tables, key-value blocks and log lines.
type View struct {
	// W receives the output.
	W io.Writer
	// P colours it.
	P Palette
	// Now is the time ages and running durations are measured to.
	Now time.Time
	// Loc is the time zone times are shown in; nil means UTC.
	Loc *time.Location
}

func (v View) loc() *time.Location {
	if v.Loc == nil {
		return time.UTC
	}
	return v.Loc
}

// clock formats a time with its date, in v's zone.
func (v View) clock(t time.Time) string {
	return t.In(v.loc()).Format("2006-01-02 15:04:05 MST")
}

// ref is a job's branch, else its tag, else its ref.
func ref(j *jobspb.Job) string {
	switch {
	case j.GetBranch() != "":
		return j.GetBranch()
	case j.GetTag() != "":
		return "tag " + j.GetTag()
	}
	return orDash(j.GetRef())
}

func (v View) status(j *jobspb.Job) string {
	s := v.P.Status(orDash(j.GetStatus()))
	if j.GetDeployPending() {
		s += v.P.Yellow(" (deploy pending)")
	}
	return s
}

func iteration(n int32) string {
	if n <= 0 {
		return "-"
	}
	return strconv.Itoa(int(n))
}

// jobDuration is how long a job ran: to its end, or to now while it runs;
// "-" before it started.
func (v View) jobDuration(j *jobspb.Job) string {
	start := timeOf(j.GetStartedAt())
	if start.IsZero() {
		return "-"
	}
	end := timeOf(j.GetFinishedAt())
	if end.IsZero() {
		end = v.Now
	}
	return Duration(end.Sub(start))
}

// Repositories writes the tracked repositories with their latest job.
func (v View) Repositories(resp *jobspb.ListRepositoriesResponse) error {
	if len(resp.GetRepositories()) == 0 {
		_, err := fmt.Fprintln(v.W, "No repository is tracked. Track one with: kgd track OWNER/NAME")
		return err
	}
	t := table{header: []string{"REPOSITORY", "ITER", "LATEST JOB", "STATUS", "COMMIT", "BRANCH/TAG", "AGE", "AUTO"}}
	for _, r := range resp.GetRepositories() {
		auto := []string{}
		if r.GetAutoBuild() {
			auto = append(auto, "build")
		}
		if r.GetAutoDeploy() {
			auto = append(auto, "deploy")
		}
		if len(auto) == 0 {
			auto = append(auto, v.P.Yellow("off"))
		}
		j := r.GetLatestJob()
		if j == nil {
			t.add(v.P.Cyan(r.GetRepository()), "-", "-", v.P.Faint("no jobs yet"), "-", "-", "-", strings.Join(auto, ","))
			continue
		}
		t.add(v.P.Cyan(r.GetRepository()), iteration(j.GetIteration()), j.GetId(), v.status(j), ShortSHA(j.GetCommit()), ref(j),
			Age(v.Now, timeOf(j.GetCreatedAt())), strings.Join(auto, ","))
	}
	return t.write(v.W, v.P)
}

// Jobs writes a page of a repository's jobs, newest first, and how to
// get the next page.
func (v View) Jobs(repo string, resp *jobspb.ListJobsResponse) error {
	if len(resp.GetJobs()) == 0 {
		_, err := fmt.Fprintf(v.W, "%s has no jobs yet: push a commit, or run kgd deploy -r %s --branch BRANCH --commit SHA\n", repo, repo)
		return err
	}
	t := table{header: []string{"ITER", "ID", "STATUS", "COMMIT", "BRANCH/TAG", "TRIGGER", "ACTOR", "AGE", "DURATION"}}
	for _, j := range resp.GetJobs() {
		t.add(iteration(j.GetIteration()), j.GetId(), v.status(j), ShortSHA(j.GetCommit()), ref(j), orDash(j.GetTrigger()),
			orDash(j.GetActor()), Age(v.Now, timeOf(j.GetCreatedAt())), v.jobDuration(j))
	}
	if err := t.write(v.W, v.P); err != nil {
		return err
	}
	if tok := resp.GetNextPageToken(); tok != "" {
		_, err := fmt.Fprintf(v.W, "%s\n", v.P.Faint("More: kgd jobs -r "+repo+" --page-token "+tok))
		return err
	}
	return nil
}

// Job writes one job: its facts, phases and images.
func (v View) Job(j *jobspb.Job) error {
	fields := []Field{
		{"Job", v.P.Cyan(j.GetId())},
		{"Repository", j.GetRepository()},
		{"Iteration", iteration(j.GetIteration())},
		{"Status", v.status(j)},
		{"Commit", orDash(j.GetCommit())},
	}
	switch {
	case j.GetBranch() != "":
		fields = append(fields, Field{"Branch", j.GetBranch()})
	case j.GetTag() != "":
		fields = append(fields, Field{"Tag", j.GetTag()})
	default:
		fields = append(fields, Field{"Ref", orDash(j.GetRef())})
	}
	fields = append(fields, Field{"Trigger", orDash(j.GetTrigger())}, Field{"Actor", orDash(j.GetActor())})
	if s := j.GetSourceJob(); s != "" {
		fields = append(fields, Field{"Source job", s})
	}
	if u := j.GetUnits(); len(u) > 0 {
		fields = append(fields, Field{"Units", strings.Join(u, ", ")})
	}
	if t := timeOf(j.GetCreatedAt()); !t.IsZero() {
		fields = append(fields, Field{"Created", v.clock(t) + v.P.Faint(" ("+Age(v.Now, t)+" ago)")})
	}
	if t := timeOf(j.GetStartedAt()); !t.IsZero() {
		fields = append(fields, Field{"Started", v.clock(t)})
	}
	if t := timeOf(j.GetFinishedAt()); !t.IsZero() {
		fields = append(fields, Field{"Finished", v.clock(t) + v.P.Faint(" (took "+v.jobDuration(j)+")")})
	} else if !timeOf(j.GetStartedAt()).IsZero() {
		fields = append(fields, Field{"Running for", v.jobDuration(j)})
	}
	if n := j.GetAttempts(); n > 1 {
		fields = append(fields, Field{"Attempts", v.P.Yellow(strconv.Itoa(int(n)))})
	}
	if e := j.GetError(); e != "" {
		fields = append(fields, Field{"Error", v.P.Red(e)})
	}
	if j.GetDeployPending() {
		fields = append(fields, Field{"Deploy", v.P.Yellow("pending: run kgd execute deploy -r " + j.GetRepository())})
	}
	if err := writeFields(v.W, v.P, fields); err != nil {
		return err
	}
	if len(j.GetPhases()) > 0 {
		t := table{header: []string{"PHASE", "STATUS", "DURATION"}}
		for _, ph := range j.GetPhases() {
			d := "-"
			if start := timeOf(ph.GetStartedAt()); !start.IsZero() {
				end := timeOf(ph.GetFinishedAt())
				if end.IsZero() {
					end = v.Now
				}
				d = Duration(end.Sub(start))
			}
			t.add(ph.GetName(), v.P.Status(orDash(ph.GetStatus())), d)
		}
		if _, err := fmt.Fprintln(v.W); err != nil {
			return err
		}
		if err := t.write(v.W, v.P); err != nil {
			return err
		}
	}
	if imgs := j.GetImages(); len(imgs) > 0 {
		t := table{header: []string{"UNIT", "IMAGE"}}
		for _, u := range slices.Sorted(maps.Keys(imgs)) {
			t.add(u, imgs[u])
		}
		if _, err := fmt.Fprintln(v.W); err != nil {
			return err
		}
		return t.write(v.W, v.P)
	}
	return nil
}

// phaseWidth fits the longest phase name, "status-check".
const phaseWidth = len("status-check")

// LogLine writes one line of a job's log: its time, phase and text,
// coloured by level and status.
func (v View) LogLine(l *jobspb.LogLine) error {
	text := l.GetText()
	switch {
	case l.GetLast() || l.GetStatus() != "":
		text = v.P.statusColor(l.GetStatus())(text)
		if l.GetLast() {
			text = v.P.Bold(text)
		}
	case strings.EqualFold(l.GetLevel(), "ERROR"):
		text = v.P.Red(text)
	case strings.EqualFold(l.GetLevel(), "WARN"):
		text = v.P.Yellow(text)
	}
	when := "--:--:--"
	if t := timeOf(l.GetTime()); !t.IsZero() {
		when = t.In(v.loc()).Format("15:04:05")
	}
	pad := max(0, phaseWidth-len(l.GetPhase()))
	_, err := fmt.Fprintf(v.W, "%s %s%s %s\n", v.P.Faint(when), v.P.Cyan(l.GetPhase()), strings.Repeat(" ", pad), text)
	return err
}

// Fields writes a key-value block.
func (v View) Fields(fields []Field) error { return writeFields(v.W, v.P, fields) }

// State writes a summary of a repository's v2 state: which job it is,
// each phase's status with the artifacts and resources, the automatic
// triggers.
func (v View) State(repo string, s *v2pb.State) error {
	md := s.GetMetadata()
	add := md.GetAdditional()
	fields := []Field{{"Repository", v.P.Cyan(repo)}}
	if id := md.GetRunID(); id != "" {
		job := id
		if it := add["iteration"]; it != "" {
			job += " (iteration " + it + ")"
		}
		fields = append(fields, Field{"Job", job})
	} else {
		fields = append(fields, Field{"Job", v.P.Faint("none yet")})
	}
	if c := add["commit"]; c != "" {
		on := add["branch"]
		if on == "" {
			on = add["tag"]
		}
		if on != "" {
			c += " on " + on
		}
		fields = append(fields, Field{"Commit", c})
	}
	arts := s.GetBuildState().GetArtifacts()
	fields = append(fields, Field{"Build", v.P.Status(overall(slices.Collect(maps.Values(arts))))})
	built := md.GetBuild().GetAdditional()
	for _, a := range slices.Sorted(maps.Keys(arts)) {
		line := "  " + a + "  " + v.P.Status(arts[a])
		if r := built[a]; r != "" {
			line += "  " + v.P.Faint(r)
		}
		fields = append(fields, Field{"", line})
	}
	fields = append(fields, Field{"Deploy", v.P.Status(orDash(s.GetDeployState().GetStatus()))})
	sc := s.GetStatusCheckState()
	fields = append(fields, Field{"Status check", v.P.Status(orDash(sc.GetStatus()))})
	res := sc.GetResources()
	for _, r := range slices.Sorted(maps.Keys(res)) {
		fields = append(fields, Field{"", "  " + r + "  " + v.P.Status(res[r])})
	}
	fields = append(fields, Field{"Auto", "build " + onOff(v.P, s.GetBuildState().GetAutoTrigger()) + ", deploy " + onOff(v.P, s.GetDeployState().GetAutoTrigger())})
	return writeFields(v.W, v.P, fields)
}

func onOff(p Palette, on bool) string {
	if on {
		return "on"
	}
	return p.Yellow("off")
}

// overall sums up per-artifact statuses: any failure fails, anything in
// progress is in progress, all succeeded succeeds.
func overall(statuses []string) string {
	if len(statuses) == 0 {
		return "NotStarted"
	}
	has := func(s ...string) bool {
		return slices.ContainsFunc(statuses, func(x string) bool { return slices.Contains(s, x) })
	}
	switch {
	case has("Failed"):
		return "Failed"
	case has("InProgress", "In Progress"):
		return "InProgress"
	case has("Canceled"):
		return "Canceled"
	case !slices.ContainsFunc(statuses, func(x string) bool { return x != "Succeeded" && x != "Complete" }):
		return "Succeeded"
	}
	return statuses[0]
}
