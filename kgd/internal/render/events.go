package render

import (
	"fmt"
	"io"
	"strings"
	"time"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// Final statuses of a v2 DevLoop task.
const (
	Succeeded = "Succeeded"
	Failed    = "Failed"
	Canceled  = "Canceled"
)

// Outcome is how a job's iteration ended.
type Outcome struct {
	// Status is Succeeded, Failed or Canceled; empty while it runs.
	Status string
	// Message is why it failed or was canceled.
	Message string
	// Duration is from the iteration's first event to its last; 0 when
	// its first event was not seen.
	Duration time.Duration
}

// EventPrinter prints one job's v2 events the way `skaffold dev` prints
// an iteration to a terminal: the phases as they start and end ("Starting
// build...", "Build [image] succeeded", "Starting deploy...", "Waiting for
// deployments to stabilize..."), the build and deploy output, resources
// as they become ready, and a final line naming the job and its outcome.
//
// It prints what it is given: choosing the job's events from a stream is
// the caller's job. An EventPrinter is not safe for concurrent use.
type EventPrinter struct {
	w    io.Writer
	p    Palette
	job  string
	repo string

	header    bool
	start     time.Time
	taskStart map[string]time.Time
	// lastErr is the last error message printed, so a task's failure that
	// repeats its subtask's is not printed twice.
	lastErr string
	// progress is the last progress message printed per resource.
	progress map[string]string
	outcome  Outcome
}

// NewEventPrinter returns a printer of the events of job (its id) of
// repo ("owner/name").
func NewEventPrinter(w io.Writer, p Palette, job, repo string) *EventPrinter {
	return &EventPrinter{w: w, p: p, job: job, repo: repo, taskStart: map[string]time.Time{}, progress: map[string]string{}}
}

// Done reports whether the iteration's final event was printed.
func (ep *EventPrinter) Done() bool { return ep.outcome.Status != "" }

// Outcome returns how the iteration ended (an empty Status before Done).
func (ep *EventPrinter) Outcome() Outcome { return ep.outcome }

// Print prints one event.
func (ep *EventPrinter) Print(e *v2pb.Event) error {
	at := timeOf(e.GetTimestamp())
	if ep.start.IsZero() && !at.IsZero() {
		if _, ok := e.GetEventType().(*v2pb.Event_MetaEvent); ok || isTask(e, "DevLoop") {
			ep.start = at
		}
	}
	var lines []string
	switch ev := e.GetEventType().(type) {
	case *v2pb.Event_MetaEvent:
		lines = append(lines, ep.meta(ev.MetaEvent))
	case *v2pb.Event_TaskEvent:
		lines = ep.task(ev.TaskEvent, at)
	case *v2pb.Event_BuildSubtaskEvent:
		lines = ep.build(ev.BuildSubtaskEvent)
	case *v2pb.Event_RenderEvent:
		if ev.RenderEvent.GetStatus() == Failed {
			lines = ep.failure("Render failed", ev.RenderEvent.GetActionableErr())
		}
	case *v2pb.Event_DeploySubtaskEvent:
		if ev.DeploySubtaskEvent.GetStatus() == Failed {
			lines = ep.failure("Deploy failed", ev.DeploySubtaskEvent.GetActionableErr())
		}
	case *v2pb.Event_StatusCheckSubtaskEvent:
		lines = ep.resource(ev.StatusCheckSubtaskEvent)
	case *v2pb.Event_SkaffoldLogEvent:
		lines = ep.log(ev.SkaffoldLogEvent)
	}
	if len(lines) == 0 {
		return nil
	}
	_, err := io.WriteString(ep.w, strings.Join(lines, "\n")+"\n")
	return err
}

func isTask(e *v2pb.Event, task string) bool {
	t := e.GetTaskEvent()
	return t != nil && t.GetTask() == task
}

// headerLine names the job; details (iteration, commit) come from its
// MetaEvent when seen.
func (ep *EventPrinter) headerLine(details string) string {
	ep.header = true
	s := "Job " + ep.job + " of " + ep.repo
	if details != "" {
		s += ", " + details
	}
	return ep.p.Bold(s)
}

func (ep *EventPrinter) meta(m *v2pb.MetaEvent) string {
	add := m.GetMetadata().GetAdditional()
	var d []string
	if it := add["iteration"]; it != "" {
		d = append(d, "iteration "+it)
	}
	what := ShortSHA(add["commit"])
	if b := add["branch"]; b != "" {
		what += " on " + b
	} else if t := add["tag"]; t != "" {
		what += " (tag " + t + ")"
	}
	if tr := add["trigger"]; tr != "" {
		what += " (" + tr + ")"
	}
	if what != "" {
		d = append(d, what)
	}
	if ep.header {
		// A second MetaEvent: a runner took the job over and starts again.
		return ep.p.Yellow("Job " + ep.job + " starts again: " + strings.Join(d, ", "))
	}
	return ep.headerLine(strings.Join(d, ": "))
}

func (ep *EventPrinter) task(t *v2pb.TaskEvent, at time.Time) []string {
	status := t.GetStatus()
	if status == "InProgress" {
		ep.taskStart[t.GetId()] = at
	}
	took := ""
	if start, ok := ep.taskStart[t.GetId()]; ok && !start.IsZero() && !at.IsZero() && status != "InProgress" {
		took = Duration(at.Sub(start))
	}
	switch t.GetTask() {
	case "DevLoop":
		switch status {
		case "InProgress":
			if !ep.header {
				return []string{ep.headerLine(fmt.Sprintf("iteration %d", t.GetIteration()))}
			}
		case Succeeded, Failed, Canceled:
			return ep.final(status, t.GetActionableErr(), at)
		}
	case "Build":
		switch status {
		case "InProgress":
			return []string{"Starting build..."}
		case Failed, Canceled:
			return ep.failure("Build "+strings.ToLower(status), t.GetActionableErr())
		}
	case "Render":
		if status == Failed {
			return ep.failure("Render failed", t.GetActionableErr())
		}
	case "Deploy":
		switch status {
		case "InProgress":
			return []string{"Starting deploy..."}
		case Succeeded:
			return []string{ep.p.Green("Deploy succeeded") + tookText(took)}
		case Failed, Canceled:
			return ep.failure("Deploy "+strings.ToLower(status), t.GetActionableErr())
		}
	case "StatusCheck":
		switch status {
		case "InProgress":
			return []string{"Waiting for deployments to stabilize..."}
		case Succeeded:
			return []string{"Deployments stabilized" + tookText(took)}
		case Failed, Canceled:
			return ep.failure("Deployments did not stabilize", t.GetActionableErr())
		}
	}
	return nil
}

func tookText(took string) string {
	if took == "" {
		return ""
	}
	return " in " + took
}

func (ep *EventPrinter) build(b *v2pb.BuildSubtaskEvent) []string {
	name := "[" + b.GetArtifact() + "]"
	if b.GetStep() != "" && b.GetStep() != "Build" {
		if b.GetStatus() != Failed {
			return nil
		}
		name += " " + strings.ToLower(b.GetStep())
	}
	switch b.GetStatus() {
	case "InProgress":
		return []string{"Building " + name + "..."}
	case Succeeded:
		return []string{ep.p.Green("Build " + name + " succeeded")}
	case Failed, Canceled:
		return ep.failure("Build "+name+" "+strings.ToLower(b.GetStatus()), b.GetActionableErr())
	}
	return nil
}

func (ep *EventPrinter) resource(r *v2pb.StatusCheckSubtaskEvent) []string {
	res := r.GetResource()
	switch r.GetStatus() {
	case "InProgress":
		msg := r.GetMessage()
		if msg == "" || ep.progress[res] == msg {
			return nil
		}
		ep.progress[res] = msg
		return []string{" - " + res + ": " + msg}
	case Succeeded:
		return []string{" - " + res + " is " + ep.p.Green("ready") + "."}
	case Failed:
		msg := errText(r.GetActionableErr())
		if msg == "" {
			msg = r.GetMessage()
		}
		ep.lastErr = msg
		return []string{" - " + res + " " + ep.p.Red("failed") + ": " + msg}
	}
	return nil
}

func (ep *EventPrinter) log(l *v2pb.SkaffoldLogEvent) []string {
	msg := strings.TrimRight(l.GetMessage(), "\n")
	switch l.GetLevel() {
	case enumspb.LogLevel_WARN:
		msg = ep.p.Yellow(msg)
	case enumspb.LogLevel_ERROR, enumspb.LogLevel_FATAL, enumspb.LogLevel_PANIC:
		msg = ep.p.Red(msg)
	}
	return []string{msg}
}

// failure prints what failed and why, unless it repeats the error just
// printed.
func (ep *EventPrinter) failure(what string, ae *v2pb.ActionableErr) []string {
	msg := errText(ae)
	if msg != "" && msg == ep.lastErr {
		return nil
	}
	ep.lastErr = msg
	if msg == "" {
		return []string{ep.p.Red(what)}
	}
	return []string{ep.p.Red(what+": ") + msg}
}

// errText is an ActionableErr's message, or its code without one.
func errText(ae *v2pb.ActionableErr) string {
	if ae == nil {
		return ""
	}
	if m := strings.TrimSpace(ae.GetMessage()); m != "" {
		return m
	}
	if ae.GetErrCode() != enumspb.StatusCode_OK {
		return ae.GetErrCode().String()
	}
	return ""
}

// final ends the iteration with its clear last line.
func (ep *EventPrinter) final(status string, ae *v2pb.ActionableErr, at time.Time) []string {
	ep.outcome = Outcome{Status: status, Message: errText(ae)}
	if !ep.start.IsZero() && !at.IsZero() {
		ep.outcome.Duration = at.Sub(ep.start)
	}
	return []string{FinalLine(ep.p, ep.job, ep.repo, ep.outcome)}
}

// FinalLine is the line that ends a followed job: "Job ID of OWNER/NAME
// succeeded in 12s", "… failed in 3.1s: <error>", "… was canceled after
// 2m05s: <why>".
func FinalLine(p Palette, job, repo string, o Outcome) string {
	took := ""
	if o.Duration > 0 {
		took = Duration(o.Duration)
	}
	s := p.Bold("Job "+job+" of "+repo) + " "
	switch o.Status {
	case Succeeded:
		s += p.Green("succeeded")
		if took != "" {
			s += " in " + took
		}
	case Canceled:
		s += p.Yellow("was canceled")
		if took != "" {
			s += " after " + took
		}
	default:
		s += p.Red(strings.ToLower(orDash(o.Status)))
		if took != "" {
			s += " in " + took
		}
	}
	if o.Message != "" {
		s += ": " + o.Message
	}
	return s
}
