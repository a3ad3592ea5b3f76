package localstack

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"
)

// console writes whole lines from every part of the stack to one writer,
// so lines never interleave.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) writeLine(line []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.Write(line)
}

// source returns a writer for one part's output: each line is prefixed
// with "[name] ", a Cloud Logging JSON line (what our binaries write) is
// rendered as "LEVEL message key=value ...", and strip is removed from the
// start of lines. The last lines are kept for error messages.
func (c *console) source(name, strip string) *lineWriter {
	return &lineWriter{console: c, prefix: "[" + name + "] ", strip: strip, tail: newTail(40)}
}

// lineWriter is one part's output.
type lineWriter struct {
	console *console
	prefix  string
	strip   string
	tail    *tail

	// drop, when set, leaves out lines it reports as noise.
	drop func(line string) bool

	mu      sync.Mutex
	partial []byte
	watch   func(line string) // called for every rendered line
}

// Write splits p into lines and forwards the complete ones.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.emit(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 64<<10 { // a runaway line without newline
		w.emit(w.partial)
		w.partial = nil
	}
	return len(p), nil
}

// Flush forwards an unterminated last line.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit(w.partial)
		w.partial = nil
	}
}

func (w *lineWriter) emit(raw []byte) {
	line := strings.TrimRight(string(raw), "\r")
	line = strings.TrimPrefix(line, w.strip)
	line = renderJSONLog(line)
	if w.drop != nil && w.drop(line) {
		return
	}
	w.tail.add(line)
	if w.watch != nil {
		w.watch(line)
	}
	w.console.writeLine([]byte(w.prefix + line + "\n"))
}

// javaLogHeader is the first line of a java.util.logging record
// ("Nov 22, 2026 5:40:27 AM com.google... method"); the second carries the
// level and message.
var javaLogHeader = regexp.MustCompile(`^[A-Z][a-z]{2} \d{1,2}, \d{4} \d{1,2}:\d{2}:\d{2} [AP]M \S+`)

// javaStack matches the lines of a Java stack trace: frames, "Caused by",
// "... 30 more" and the exception line itself.
var javaStack = regexp.MustCompile(`^(at [\w$.<>/]+\(.*\)|Caused by: .*|\.\.\. \d+ more|[a-z][\w]*(\.[\w$]+)+(Exception|Error)(: .*)?)$`)

// emulatorNoise reports the emulators' lines that say nothing to a user:
// java.util.logging headers, one line per client connection, logging-setup
// chatter, blank lines, and the stack traces the emulators print when a
// client closes a stream (the runner's pull at shutdown), which are
// harmless.
func emulatorNoise(line string) bool {
	t := strings.TrimSpace(line)
	return t == "" || javaLogHeader.MatchString(line) || javaStack.MatchString(t) ||
		strings.HasPrefix(t, "INFO: Detected HTTP/2 connection") || strings.HasPrefix(t, "INFO: Detected non-HTTP/2 connection") ||
		strings.HasPrefix(t, "WARNING: Failed to complete operation") || strings.HasPrefix(t, "WARNING: Exception in onRstStreamRead()") || t == "WARNING: Stream Error" ||
		strings.HasPrefix(t, "SLF4J:")
}

// registryNoise leaves out the registry's line per request, except
// manifest uploads: one line per pushed image. (A push's 404s for blobs
// the registry lacks are normal and would only alarm.)
func registryNoise(line string) bool {
	method, rest, _ := strings.Cut(line, " ")
	switch method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE":
		return method != "PUT" || !strings.Contains(rest, "/manifests/")
	}
	return false
}

// setWatch sets a function called with every line from now on.
func (w *lineWriter) setWatch(f func(string)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watch = f
}

// renderJSONLog turns a log line of shared/logging (JSON with severity,
// message, time and Cloud Logging's keys) into "LEVEL message k=v ...",
// keeping the attributes' order. Other lines are returned as they are.
func renderJSONLog(line string) string {
	if !strings.HasPrefix(line, "{") {
		return line
	}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return line
	}
	var severity, message string
	var attrs []string
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return line
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return line
		}
		switch k {
		case "severity", "level":
			json.Unmarshal(v, &severity)
		case "message", "msg":
			json.Unmarshal(v, &message)
		case "time", "logging.googleapis.com/sourceLocation", "logging.googleapis.com/trace", "source":
		default:
			attrs = append(attrs, k+"="+renderValue(v))
		}
	}
	if severity == "" && message == "" {
		return line
	}
	out := severity + " " + message
	if len(attrs) > 0 {
		out += " " + strings.Join(attrs, " ")
	}
	return out
}

func renderValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		if s == "" || strings.ContainsAny(s, " \t\"=") {
			b, _ := json.Marshal(s)
			return string(b)
		}
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) == nil {
		return buf.String()
	}
	return string(v)
}

// tail keeps the last lines written.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// logger returns a slog logger whose lines go to w; w renders them like
// the binaries' JSON lines.
func logger(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// stamp formats a duration for start-up messages.
func stamp(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
