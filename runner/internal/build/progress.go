package build

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// maxOpenLogLines bounds the partial output lines held at once by a
// progressPrinter, one per step and stream (each at most maxLine bytes):
// past it, the oldest is passed on unfinished.
const maxOpenLogLines = 64

// progressPrinter turns BuildKit's trace into lines like the docker CLI's
// plain progress output:
//
//	#3 [2/3] RUN ["/prog", "lines", "3"]
//	#3 0.215 line 0
//	#3 DONE 0.4s
//	#4 [3/3] COPY f /f
//	#4 CACHED
//	#5 ERROR: executor failed running [...]: exit code: 1
//
// A step is numbered when it first starts, in that order. Of a step's
// progress statuses (transfers, layer extraction) only the completed ones
// are passed on, once each. Memory is bounded: each line is cut at
// maxLine bytes, like the legacy builder's output, and at most
// maxOpenLogLines partial lines are held.
type progressPrinter struct {
	out     func(string)
	maxLine int

	steps    map[string]*step // by vertex digest
	next     int              // the last step number given
	statuses map[string]bool  // vertex + "\x00" + status ID, once completed
	open     []*openLine      // partial log lines, oldest first
	// failed are the steps that ended with an error, in order. Not
	// all fail the build: a cache source that cannot be read is one.
	failed []*step
}

// step is what the printer knows of one vertex.
type step struct {
	index   int // 0 until printed
	name    string
	started time.Time
	done    bool
	err     string
}

// openLine is the partial last line of one step's stream.
type openLine struct {
	vertex string
	stream int64
	start  time.Time // timestamp of the line's first chunk
	lines  *lineSplitter
}

func newProgressPrinter(maxLine int, out func(string)) *progressPrinter {
	return &progressPrinter{out: out, maxLine: maxLine, steps: map[string]*step{}, statuses: map[string]bool{}}
}

// oneLine joins the lines of step names and errors.
var oneLine = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

// line passes s on as one line, cut at maxLine bytes.
func (p *progressPrinter) line(s string) {
	p.out(cutLine(oneLine.Replace(s), p.maxLine))
}

// print passes on the lines of one trace message.
func (p *progressPrinter) print(s solveStatus) {
	for _, v := range s.Vertexes {
		st := p.steps[v.Digest]
		if st == nil {
			st = &step{}
			p.steps[v.Digest] = st
		}
		if v.Name != "" {
			st.name = v.Name
		}
		if !v.Started.IsZero() {
			st.started = v.Started
		}
		if v.Started.IsZero() && v.Completed.IsZero() {
			continue // waiting: printed when it starts
		}
		p.header(st)
		if v.Completed.IsZero() || st.done {
			continue
		}
		p.flushStep(v.Digest)
		st.done = true
		switch {
		case v.Error != "" && strings.HasSuffix(v.Error, context.Canceled.Error()):
			p.line(fmt.Sprintf("#%d CANCELED", st.index))
		case v.Error != "":
			st.err = v.Error
			p.failed = append(p.failed, st)
			p.line(fmt.Sprintf("#%d ERROR: %s", st.index, v.Error))
		case v.Cached:
			p.line(fmt.Sprintf("#%d CACHED", st.index))
		case !v.Started.IsZero():
			p.line(fmt.Sprintf("#%d DONE %.1fs", st.index, v.Completed.Sub(v.Started).Seconds()))
		default:
			p.line(fmt.Sprintf("#%d DONE", st.index))
		}
	}
	for _, s := range s.Statuses {
		st := p.steps[s.Vertex]
		key := s.Vertex + "\x00" + s.ID
		if st == nil || s.Completed.IsZero() || p.statuses[key] {
			continue
		}
		p.statuses[key] = true
		p.header(st)
		text := s.ID
		if s.Name != "" && s.Name != s.ID {
			text = s.Name
		}
		switch {
		case s.Total > 0:
			text += " " + humanBytes(s.Current) + " / " + humanBytes(s.Total)
		case s.Current > 0:
			text += " " + humanBytes(s.Current)
		}
		if !s.Started.IsZero() {
			if d := s.Completed.Sub(s.Started).Seconds(); d > 0.01 {
				text += fmt.Sprintf(" %.1fs", d)
			}
		}
		p.line(fmt.Sprintf("#%d %s done", st.index, text))
	}
	for _, l := range s.Logs {
		st := p.steps[l.Vertex]
		if st == nil {
			st = &step{}
			p.steps[l.Vertex] = st
		}
		p.header(st)
		p.log(st, l)
	}
	for _, w := range s.Warnings {
		st := p.steps[w.Vertex]
		text := "WARN: " + strings.TrimSpace(string(w.Short))
		if w.URL != "" {
			text += " (" + w.URL + ")"
		}
		if st == nil {
			p.line(text)
			continue
		}
		p.header(st)
		p.line(fmt.Sprintf("#%d %s", st.index, text))
	}
}

// failedStep returns the name of the step whose error the build's error
// message msg reports, or "" if none does.
func (p *progressPrinter) failedStep(msg string) string {
	for _, st := range slices.Backward(p.failed) {
		if strings.Contains(msg, st.err) {
			return st.name
		}
	}
	return ""
}

// header numbers st and prints its name, the first time.
func (p *progressPrinter) header(st *step) {
	if st.index != 0 {
		return
	}
	p.next++
	st.index = p.next
	name := st.name
	if name == "" {
		name = "(unnamed step)"
	}
	p.line(fmt.Sprintf("#%d %s", st.index, name))
}

// log passes on the whole lines of a log chunk, each as "#N <seconds
// since the step started> <text>", and keeps its unfinished last line.
func (p *progressPrinter) log(st *step, l vertexLog) {
	i := slices.IndexFunc(p.open, func(o *openLine) bool { return o.vertex == l.Vertex && o.stream == l.Stream })
	var o *openLine
	if i >= 0 {
		o = p.open[i]
	} else {
		if len(p.open) >= maxOpenLogLines {
			p.open[0].lines.flush()
			p.open = p.open[1:]
		}
		o = &openLine{vertex: l.Vertex, stream: l.Stream}
		o.lines = &lineSplitter{max: p.maxLine, out: func(text string) {
			prefix := fmt.Sprintf("#%d ", st.index)
			if !st.started.IsZero() && !o.start.IsZero() {
				prefix += fmt.Sprintf("%.3f ", max(o.start.Sub(st.started).Seconds(), 0))
			}
			p.out(prefix + text)
		}}
		p.open = append(p.open, o)
	}
	msg := string(l.Msg)
	for msg != "" {
		if o.lines.n == 0 {
			o.start = l.Timestamp
		}
		nl := strings.IndexByte(msg, '\n')
		if nl < 0 {
			o.lines.write(msg)
			return
		}
		o.lines.write(msg[:nl+1])
		msg = msg[nl+1:]
	}
}

// flushStep passes on the partial lines of the step vertex.
func (p *progressPrinter) flushStep(vertex string) {
	p.open = slices.DeleteFunc(p.open, func(o *openLine) bool {
		if o.vertex != vertex {
			return false
		}
		o.lines.flush()
		return true
	})
}

// flush passes on every partial line; call it when the stream ends.
func (p *progressPrinter) flush() {
	for _, o := range p.open {
		o.lines.flush()
	}
	p.open = nil
}

// humanBytes formats n like "2.31kB", in decimal units as the docker CLI
// does.
func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB", "PB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.2f%s", f, u)
		}
	}
	return fmt.Sprintf("%.2fEB", f/unit)
}
