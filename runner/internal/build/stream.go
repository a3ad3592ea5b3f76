package build

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/docker/docker/pkg/jsonmessage"
)

// maxMessageBytes bounds one JSON message of the daemon's output held in
// memory (1 MiB). The legacy builder sends a step's output in chunks of
// at most 32 KiB, whatever the length of its lines; a larger message is
// cut (see readStream).
const maxMessageBytes = 1 << 20

// traceID is the id of the messages carrying BuildKit's progress.
const traceID = "moby.buildkit.trace"

// readStream decodes the daemon's JSON message stream, calling out with
// each line as it arrives and aux with each aux payload and the id of its
// message ("moby.buildkit.trace" for BuildKit's progress,
// "moby.image.id" for the image BuildKit built, empty from the legacy
// builder and pushes). It returns the stream's errorDetail as a
// *jsonmessage.JSONError.
//
// Memory is bounded whatever the daemon sends: a line (build output
// split at '\n', or a status) longer than maxLine bytes is cut and ends
// with " … [line truncated: N bytes]", N being the line's full length;
// a message over maxMessageBytes is not decoded whole: if it carries
// build output ("stream"), its first maxMessageBytes are, and the rest
// counts towards the truncated line; if it carries BuildKit progress,
// it is dropped with a line saying so; any other oversized message is an
// error.
func readStream(r io.Reader, maxLine int, out func(string), aux func(id string, aux json.RawMessage)) error {
	msgs := &messageReader{r: bufio.NewReaderSize(r, 64<<10), max: maxMessageBytes}
	lines := &lineSplitter{max: maxLine, out: out}
	defer lines.flush()
	lastStatus := map[string]string{} // layer ID → last status reported
	for {
		raw, size, err := msgs.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if size > int64(len(raw)) {
			if bytes.HasPrefix(raw, []byte(`{"id":"`+traceID+`"`)) {
				// BuildKit cuts a step's output into small messages;
				// one this large is not worth holding.
				lines.flush()
				out(fmt.Sprintf("… [BuildKit progress message of %d bytes dropped]", size))
				continue
			}
			text, ok := streamPrefix(raw)
			if !ok {
				return fmt.Errorf("the daemon sent a message of %d bytes, over the limit of %d", size, maxMessageBytes)
			}
			lines.write(text)
			lines.drop(size - int64(len(raw)))
			continue
		}
		var m jsonmessage.JSONMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("decode the daemon's output: %w", err)
		}
		if m.Error != nil {
			m.Error.Message = cutLine(m.Error.Message, maxLine)
			return m.Error
		}
		//lint:ignore SA1019 a daemon may still send only the legacy error field
		if m.ErrorMessage != "" {
			//lint:ignore SA1019 see above
			return &jsonmessage.JSONError{Message: cutLine(m.ErrorMessage, maxLine)}
		}
		if m.Aux != nil {
			aux(m.ID, *m.Aux)
		}
		if m.Stream != "" {
			lines.write(m.Stream)
		}
		if m.Status != "" {
			// Progress ticks repeat the same status for a layer; report
			// each layer's status once per change.
			if m.ID != "" {
				last := lastStatus[m.ID]
				lastStatus[m.ID] = m.Status
				if last == m.Status || isRetryTick(last, m.Status) {
					continue
				}
				out(cutLine(m.ID+": "+m.Status, maxLine))
				continue
			}
			out(cutLine(strings.TrimRight(m.Status, "\r\n"), maxLine))
		}
	}
}

// isRetryTick reports whether status continues the daemon's once-a-second
// "Retrying in N seconds" countdown that last started.
func isRetryTick(last, status string) bool {
	var lastN, n int
	if _, err := fmt.Sscanf(last, "Retrying in %d", &lastN); err != nil {
		return false
	}
	if _, err := fmt.Sscanf(status, "Retrying in %d", &n); err != nil {
		return false
	}
	return n < lastN
}

// messageReader splits a stream of JSON objects without decoding them,
// keeping at most max bytes of each.
type messageReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// next returns the next JSON object of the stream and its size in bytes.
// If the object is larger than max, raw holds only its first max bytes.
// raw is valid until the next call. At the end of the stream next
// returns io.EOF.
func (m *messageReader) next() (raw []byte, size int64, err error) {
	var c byte
	for {
		if c, err = m.r.ReadByte(); err != nil {
			return nil, 0, err
		}
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			break
		}
	}
	if c != '{' {
		return nil, 0, fmt.Errorf("decode the daemon's output: unexpected %q", c)
	}
	m.buf = append(m.buf[:0], c)
	size = 1
	depth, inString, escaped := 1, false, false
	for depth > 0 {
		if inString && !escaped {
			// Take string content in runs up to the next quote or
			// backslash, straight from the reader's buffer.
			if _, err := m.r.Peek(1); err != nil {
				return nil, 0, unexpectedEOF(err)
			}
			avail, _ := m.r.Peek(m.r.Buffered())
			n := len(avail)
			if i := bytes.IndexAny(avail, `"\`); i >= 0 {
				n = i + 1
				switch avail[i] {
				case '\\':
					escaped = true
				case '"':
					inString = false
				}
			}
			size += int64(n)
			if room := m.max - len(m.buf); room > 0 {
				m.buf = append(m.buf, avail[:min(room, n)]...)
			}
			m.r.Discard(n)
			continue
		}
		if c, err = m.r.ReadByte(); err != nil {
			return nil, 0, unexpectedEOF(err)
		}
		size++
		if len(m.buf) < m.max {
			m.buf = append(m.buf, c)
		}
		switch {
		case escaped:
			escaped = false
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		}
	}
	return m.buf, size, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("decode the daemon's output: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// streamPrefix decodes the build output at the start of raw, the first
// bytes of a message {"stream":"...", as far as raw holds complete
// characters of it.
func streamPrefix(raw []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(raw, []byte(`{"stream":"`))
	if !ok {
		return "", false
	}
	end := 0
	for end < len(rest) && rest[end] != '"' {
		if rest[end] != '\\' {
			end++
			continue
		}
		n := 2
		if end+1 < len(rest) && rest[end+1] == 'u' {
			n = 6
		}
		if end+n > len(rest) {
			break
		}
		end += n
	}
	var text string
	quoted := make([]byte, 0, end+2)
	quoted = append(append(append(quoted, '"'), rest[:end]...), '"')
	if err := json.Unmarshal(quoted, &text); err != nil {
		return "", false
	}
	return text, true
}

// truncated is the marker ending a line that was cut.
func truncated(n int64) string { return fmt.Sprintf(" … [line truncated: %d bytes]", n) }

// cutLine returns s, or its first max bytes (whole characters) followed
// by the truncation marker if it is longer.
func cutLine(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return validPrefix(s[:max]) + truncated(int64(len(s)))
}

// validPrefix drops a UTF-8 sequence cut at the end of s.
func validPrefix(s string) string {
	for i := 0; i < utf8.UTFMax && len(s) > 0; i++ {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size > 1 {
			return s
		}
		s = s[:len(s)-1]
	}
	return s
}

// lineSplitter turns chunks of build output into lines of at most max
// bytes (plus the truncation marker), holding at most max bytes.
type lineSplitter struct {
	max int
	out func(string)
	buf []byte // the start of the current line
	n   int64  // the current line's length so far, cut bytes included
}

// write adds text to the output, emitting each line it completes.
func (s *lineSplitter) write(text string) {
	for {
		i := strings.IndexByte(text, '\n')
		if i < 0 {
			s.add(text)
			return
		}
		s.add(text[:i])
		s.flush()
		text = text[i+1:]
	}
}

func (s *lineSplitter) add(p string) {
	s.n += int64(len(p))
	if room := s.max - len(s.buf); room > 0 {
		s.buf = append(s.buf, p[:min(room, len(p))]...)
	}
}

// drop counts n bytes of the current line that were not seen.
func (s *lineSplitter) drop(n int64) { s.n += n }

// flush emits the current line, unless it is blank.
func (s *lineSplitter) flush() {
	defer func() { s.buf, s.n = s.buf[:0], 0 }()
	if s.n > int64(len(s.buf)) {
		s.out(validPrefix(string(s.buf)) + truncated(s.n))
		return
	}
	if line := strings.TrimRight(string(s.buf), "\r\n"); strings.TrimSpace(line) != "" {
		s.out(line)
	}
}

// logLimit passes lines on until max bytes were passed, then emits one
// marker and drops the rest.
type logLimit struct {
	max, n int64
	out    func(string)
	cut    bool
}

func (l *logLimit) line(s string) {
	if l.cut {
		return
	}
	if l.n+int64(len(s)) > l.max {
		l.cut = true
		l.out(fmt.Sprintf("… [build log truncated after %d bytes; the build goes on]", l.n))
		return
	}
	l.n += int64(len(s))
	l.out(s)
}
