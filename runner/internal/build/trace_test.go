package build

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
)

// renderStream turns a recorded daemon stream into the lines Build
// passes on: the stream's own lines and the progress printer's.
func renderStream(t *testing.T, path string, maxLine int) (lines []string, streamErr error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := func(l string) { lines = append(lines, l) }
	p := newProgressPrinter(maxLine, out)
	streamErr = readStream(f, maxLine, out, func(id string, aux json.RawMessage) {
		if id != traceID {
			return
		}
		var data []byte
		if err := json.Unmarshal(aux, &data); err != nil {
			t.Fatal(err)
		}
		st, err := decodeTrace(data)
		if err != nil {
			t.Fatalf("decodeTrace: %v", err)
		}
		p.print(st)
	})
	p.flush()
	return lines, streamErr
}

// TestDecodeTraceRecorded renders a stream recorded from Docker 20.10's
// BuildKit (a build whose RUN step fails) as Build does.
func TestDecodeTraceRecorded(t *testing.T) {
	t.Parallel()
	lines, err := renderStream(t, "testdata/trace/fail.json", DefaultMaxLineBytes)
	want := []string{
		"#1 [internal] load remote build context",
		"#1 DONE 0.0s",
		"#2 copy /context /",
		"#2 DONE 0.3s",
		"#3 [1/2] COPY prog /prog",
		"#3 CACHED",
		`#4 [2/2] RUN ["/prog", "cat", "/nonexistent"]`,
		"#4 0.595 open /nonexistent: no such file or directory",
		"#4 ERROR: executor failed running [/prog cat /nonexistent]: exit code: 1",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if err == nil || err.Error() != "executor failed running [/prog cat /nonexistent]: exit code: 1" {
		t.Errorf("stream error = %v", err)
	}
}

// pb builds protobuf messages for the tests.
type pb []byte

func (b pb) str(num protowire.Number, s string) pb {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func (b pb) msg(num protowire.Number, m pb) pb {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), m)
}

func (b pb) varint(num protowire.Number, v uint64) pb {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func ts(t time.Time) pb {
	return pb(nil).varint(1, uint64(t.Unix())).varint(2, uint64(t.Nanosecond()))
}

// TestProgressPrinter drives the printer with messages built here:
// statuses, warnings, output split across messages and streams, unknown
// fields, cancelled and cached steps, and the line limit.
func TestProgressPrinter(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	vx := func(digest, name string, started, completed time.Time, cached bool, errMsg string) pb {
		m := pb(nil).str(1, digest).str(2, "sha256:input").str(3, name)
		if cached {
			m = m.varint(4, 1)
		}
		if !started.IsZero() {
			m = m.msg(5, ts(started))
		}
		if !completed.IsZero() {
			m = m.msg(6, ts(completed))
		}
		if errMsg != "" {
			m = m.str(7, errMsg)
		}
		return m.varint(99, 7) // an unknown field, skipped
	}
	logMsg := func(digest string, at time.Time, stream uint64, text string) pb {
		return pb(nil).str(1, digest).msg(2, ts(at)).varint(3, stream).str(4, text)
	}
	status := func(digest, id string, current, total uint64, started, completed time.Time) pb {
		m := pb(nil).str(1, id).str(2, digest).str(3, id).varint(4, current).varint(5, total).msg(7, ts(started))
		if !completed.IsZero() {
			m = m.msg(8, ts(completed))
		}
		return m
	}
	var zero time.Time
	long := strings.Repeat("y", 100)
	const maxLine = 60
	msgs := []pb{
		pb(nil).msg(1, vx("a", "[1/3] COPY x /x", zero, zero, false, "")), // waiting: not printed yet
		pb(nil).msg(1, vx("a", "[1/3] COPY x /x", sec(0), zero, false, "")).
			msg(2, status("a", "sha256:layer", 1500, 3000, sec(0), zero)), // not complete: not printed
		pb(nil).msg(2, status("a", "sha256:layer", 3000, 3000, sec(0), sec(1))).
			msg(2, status("a", "sha256:layer", 3000, 3000, sec(0), sec(1))), // once
		pb(nil).msg(1, vx("a", "[1/3] COPY x /x", sec(0), sec(1.3), false, "")),
		pb(nil).msg(1, vx("b", "[2/3] RUN build", sec(2), zero, false, "")).
			msg(3, logMsg("b", sec(2.5), 1, "out one\nout t")).
			msg(3, logMsg("b", sec(2.6), 2, "err one\n")),
		pb(nil).msg(3, logMsg("b", sec(2.7), 1, "wo\n"+long+"\npartial")).
			msg(4, pb(nil).str(1, "b").varint(2, 1).str(3, "deprecated thing\n").str(5, "https://example.invalid/w")),
		pb(nil).msg(1, vx("b", "[2/3] RUN build", sec(2), sec(4), false, "")),
		pb(nil).msg(1, vx("c", "[3/3] RUN cached", sec(4), sec(4), true, "")),
		pb(nil).msg(1, vx("d", "[internal] other", sec(4), sec(5), false, "build: context canceled")),
		pb(nil).msg(1, vx("e", "[x] failing", sec(4), sec(6), false, "exit code: 2")),
	}
	var lines []string
	p := newProgressPrinter(maxLine, func(l string) { lines = append(lines, l) })
	for i, m := range msgs {
		st, err := decodeTrace(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		p.print(st)
	}
	p.flush()
	want := []string{
		"#1 [1/3] COPY x /x",
		"#1 sha256:layer 3.00kB / 3.00kB 1.0s done",
		"#1 DONE 1.3s",
		"#2 [2/3] RUN build",
		"#2 0.500 out one",
		"#2 0.600 err one",
		"#2 0.500 out two",
		"#2 0.700 " + strings.Repeat("y", maxLine) + " … [line truncated: 100 bytes]",
		"#2 WARN: deprecated thing (https://example.invalid/w)",
		"#2 0.700 partial",
		"#2 DONE 2.0s",
		"#3 [3/3] RUN cached",
		"#3 CACHED",
		"#4 [internal] other",
		"#4 CANCELED",
		"#5 [x] failing",
		"#5 ERROR: exit code: 2",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if got := p.failedStep("process failed: exit code: 2"); got != "[x] failing" {
		t.Errorf("failedStep = %q", got)
	}
}

// TestDecodeTraceErrors checks that malformed messages are errors, not
// panics or silent garbage.
func TestDecodeTraceErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		b    []byte
	}{
		{"TruncatedTag", []byte{0x80}},
		{"TruncatedLength", []byte{0x0a, 0x05, 0x0a}},
		{"BadVertex", pb(nil).msg(1, pb{0x0a, 0x09})},
		{"TimestampOutOfRange", pb(nil).msg(1, pb(nil).msg(5, pb(nil).varint(1, 1<<62)))},
		{"NegativeNanos", pb(nil).msg(3, pb(nil).msg(2, pb(nil).varint(2, uint64(1<<64-1))))},
		{"BadGroup", []byte{0x0b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := decodeTrace(tt.b); err == nil {
				t.Errorf("decodeTrace(%x) = nil error", tt.b)
			}
		})
	}
}

// FuzzDecodeTrace checks that no input makes decodeTrace or the printer
// panic, and that the printer keeps its line limit.
func FuzzDecodeTrace(f *testing.F) {
	data, err := os.ReadFile("testdata/trace/fail.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m struct{ Aux string }
		if json.Unmarshal([]byte(l), &m) == nil && m.Aux != "" {
			if b, err := base64.StdEncoding.DecodeString(m.Aux); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte{})
	f.Add([]byte(pb(nil).msg(3, pb(nil).str(1, "v").str(4, "a\nb\r\nc"))))
	const maxLine = 64
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeTrace(b)
		if err != nil {
			return
		}
		p := newProgressPrinter(maxLine, func(l string) {
			if len(stepPrefix.ReplaceAllString(l, "")) > maxLine+len(truncated(1<<62)) {
				t.Fatalf("line of %d bytes", len(l))
			}
		})
		p.print(st)
		p.print(st) // again: the same steps, now known
		p.flush()
	})
}
