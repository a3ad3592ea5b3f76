package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// marshal writes protobuf JSON as the API's gateway does: proto field
// names, every field present.
var marshal = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// writeProto writes m as one JSON object, indented for a single object or
// on one line for a stream (NDJSON). protojson's spacing is made stable by
// re-indenting.
func writeProto(w io.Writer, m proto.Message, line bool) error {
	b, err := marshal.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return writeRaw(w, b, line)
}

// writeRaw writes a JSON value, indented or on one line.
func writeRaw(w io.Writer, raw []byte, line bool) error {
	var buf bytes.Buffer
	var err error
	if line {
		err = json.Compact(&buf, raw)
	} else {
		err = json.Indent(&buf, raw, "", "  ")
	}
	if err != nil {
		return fmt.Errorf("format JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}
