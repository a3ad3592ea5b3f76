package build

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file decodes BuildKit's progress messages without depending on
// github.com/moby/buildkit: the daemon sends each as the aux of a JSON
// message {"id":"moby.buildkit.trace","aux":"<base64>"}, the bytes being a
// protobuf moby.buildkit.v1.StatusResponse (buildkit
// api/services/control/control.proto). Only the fields the build log
// needs are decoded; unknown fields are skipped, as protobuf requires.

// solveStatus is a decoded StatusResponse.
type solveStatus struct {
	Vertexes []vertex       // field 1
	Statuses []vertexStatus // field 2
	Logs     []vertexLog    // field 3
	Warnings []vertexWarn   // field 4
}

// vertex is a Vertex: one step of the build graph.
type vertex struct {
	Digest    string    // 1
	Inputs    []string  // 2
	Name      string    // 3
	Cached    bool      // 4
	Started   time.Time // 5; zero if not started
	Completed time.Time // 6; zero if not completed
	Error     string    // 7
}

// vertexStatus is a VertexStatus: progress of one part of a vertex
// (a transfer, a layer being extracted).
type vertexStatus struct {
	ID        string    // 1
	Vertex    string    // 2
	Name      string    // 3
	Current   int64     // 4
	Total     int64     // 5
	Timestamp time.Time // 6
	Started   time.Time // 7
	Completed time.Time // 8
}

// vertexLog is a VertexLog: a chunk of a vertex's output, not
// necessarily whole lines.
type vertexLog struct {
	Vertex    string    // 1
	Timestamp time.Time // 2
	Stream    int64     // 3: 1 stdout, 2 stderr
	Msg       []byte    // 4
}

// vertexWarn is a VertexWarning (BuildKit ≥ 0.10; Docker 20.10 sends
// none).
type vertexWarn struct {
	Vertex string // 1
	Level  int64  // 2
	Short  []byte // 3
	URL    string // 5
}

// errTrace reports a malformed trace message.
var errTrace = errors.New("malformed BuildKit trace")

// decodeTrace decodes a StatusResponse. Byte fields of the result share
// b's memory.
func decodeTrace(b []byte) (solveStatus, error) {
	var s solveStatus
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			vx, err := decodeVertex(v)
			if err != nil {
				return fmt.Errorf("vertex: %w", err)
			}
			s.Vertexes = append(s.Vertexes, vx)
		case 2:
			st, err := decodeVertexStatus(v)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			s.Statuses = append(s.Statuses, st)
		case 3:
			l, err := decodeVertexLog(v)
			if err != nil {
				return fmt.Errorf("log: %w", err)
			}
			s.Logs = append(s.Logs, l)
		case 4:
			w, err := decodeVertexWarn(v)
			if err != nil {
				return fmt.Errorf("warning: %w", err)
			}
			s.Warnings = append(s.Warnings, w)
		}
		return nil
	})
	return s, err
}

func decodeVertex(b []byte) (vertex, error) {
	var v vertex
	err := fields(b, func(num protowire.Number, typ protowire.Type, val []byte, n uint64) error {
		var err error
		switch {
		case num == 1 && typ == protowire.BytesType:
			v.Digest = string(val)
		case num == 2 && typ == protowire.BytesType:
			v.Inputs = append(v.Inputs, string(val))
		case num == 3 && typ == protowire.BytesType:
			v.Name = string(val)
		case num == 4 && typ == protowire.VarintType:
			v.Cached = n != 0
		case num == 5 && typ == protowire.BytesType:
			v.Started, err = decodeTimestamp(val)
		case num == 6 && typ == protowire.BytesType:
			v.Completed, err = decodeTimestamp(val)
		case num == 7 && typ == protowire.BytesType:
			v.Error = string(val)
		}
		return err
	})
	return v, err
}

func decodeVertexStatus(b []byte) (vertexStatus, error) {
	var s vertexStatus
	err := fields(b, func(num protowire.Number, typ protowire.Type, val []byte, n uint64) error {
		var err error
		switch {
		case num == 1 && typ == protowire.BytesType:
			s.ID = string(val)
		case num == 2 && typ == protowire.BytesType:
			s.Vertex = string(val)
		case num == 3 && typ == protowire.BytesType:
			s.Name = string(val)
		case num == 4 && typ == protowire.VarintType:
			s.Current = int64(n)
		case num == 5 && typ == protowire.VarintType:
			s.Total = int64(n)
		case num == 6 && typ == protowire.BytesType:
			s.Timestamp, err = decodeTimestamp(val)
		case num == 7 && typ == protowire.BytesType:
			s.Started, err = decodeTimestamp(val)
		case num == 8 && typ == protowire.BytesType:
			s.Completed, err = decodeTimestamp(val)
		}
		return err
	})
	return s, err
}

func decodeVertexLog(b []byte) (vertexLog, error) {
	var l vertexLog
	err := fields(b, func(num protowire.Number, typ protowire.Type, val []byte, n uint64) error {
		var err error
		switch {
		case num == 1 && typ == protowire.BytesType:
			l.Vertex = string(val)
		case num == 2 && typ == protowire.BytesType:
			l.Timestamp, err = decodeTimestamp(val)
		case num == 3 && typ == protowire.VarintType:
			l.Stream = int64(n)
		case num == 4 && typ == protowire.BytesType:
			l.Msg = val
		}
		return err
	})
	return l, err
}

func decodeVertexWarn(b []byte) (vertexWarn, error) {
	var w vertexWarn
	err := fields(b, func(num protowire.Number, typ protowire.Type, val []byte, n uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			w.Vertex = string(val)
		case num == 2 && typ == protowire.VarintType:
			w.Level = int64(n)
		case num == 3 && typ == protowire.BytesType:
			w.Short = val
		case num == 5 && typ == protowire.BytesType:
			w.URL = string(val)
		}
		return nil
	})
	return w, err
}

// maxTimestampSeconds bounds the seconds of a decoded Timestamp to the
// range protobuf allows (years 1 to 9999), so that time.Unix cannot
// overflow.
const maxTimestampSeconds = 253402300799

// decodeTimestamp decodes a google.protobuf.Timestamp.
func decodeTimestamp(b []byte) (time.Time, error) {
	var sec, nsec int64
	err := fields(b, func(num protowire.Number, typ protowire.Type, _ []byte, n uint64) error {
		if typ != protowire.VarintType {
			return nil
		}
		switch num {
		case 1:
			sec = int64(n)
		case 2:
			nsec = int64(int32(n))
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	if sec < -62135596800 || sec > maxTimestampSeconds || nsec < 0 || nsec > 999_999_999 {
		return time.Time{}, fmt.Errorf("%w: timestamp out of range", errTrace)
	}
	return time.Unix(sec, nsec).UTC(), nil
}

// fields calls f with each field of the protobuf message b: its number,
// wire type, and value (bytes for BytesType, the number for VarintType
// and the fixed types). Groups are skipped.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, bytes []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errTrace, protowire.ParseError(n))
		}
		b = b[n:]
		var (
			val []byte
			u   uint64
		)
		switch typ {
		case protowire.VarintType:
			u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			u = uint64(v)
		case protowire.Fixed64Type:
			u, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			val, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", errTrace, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, val, u); err != nil {
			return err
		}
	}
	return nil
}
