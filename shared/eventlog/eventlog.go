// Package eventlog writes stored Skaffold events in the JSON formats other
// tools read, one JSON object per line (NDJSON):
//
//   - Envelope: the event envelope of Skaffold's event API articles (seed
//     002): {"apiVersion":"skaffold.dev/v1alpha2","kind":"Event",
//     "event_id":<the job>,"event":{"sequence":N,"timestamp":…,
//     "buildEvent"|"deployEvent":{…}}}. Only build and deploy events have
//     an envelope: buildEvent {image, status, log, artifact {imageName, tag,
//     digest}} for each artifact's status and its build output, deployEvent
//     {status, deployer, manifests} for the deploy's status. Statuses are
//     IN_PROGRESS, SUCCEEDED, FAILED and CANCELED; the sequence is the
//     repository's event sequence number (the API's kgd_sequence); a failed
//     build's reason is its last log line; manifests are the resources the
//     deploy applied and checked (kind/name).
//   - SkaffoldV1 and SkaffoldV2: the lines Skaffold's --event-log-file
//     writes (F and F.v2): each v1 LogEntry or v2 Event in protobuf's JSON
//     mapping with lowerCamel names and default values left out.
//
// A Writer keeps what an envelope needs from earlier events of the same
// job (the resources a deploy checked), so a job's batches must reach it
// in order; batches of several jobs may interleave.
package eventlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Format is an output format.
type Format string

// The formats.
const (
	Envelope   Format = "envelope"
	SkaffoldV1 Format = "skaffold"
	SkaffoldV2 Format = "skaffold-v2"
)

// Formats lists every format, the default first.
var Formats = []Format{Envelope, SkaffoldV1, SkaffoldV2}

// ParseFormat returns the format named s ("" is Envelope).
func ParseFormat(s string) (Format, error) {
	if s == "" {
		return Envelope, nil
	}
	if f := Format(s); slices.Contains(Formats, f) {
		return f, nil
	}
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return "", fmt.Errorf("unknown format %q (one of %s)", s, strings.Join(names, ", "))
}

// EnvelopeAPIVersion and EnvelopeKind are every envelope's apiVersion and
// kind.
const (
	EnvelopeAPIVersion = "skaffold.dev/v1alpha2"
	EnvelopeKind       = "Event"
)

// Event is one envelope.
type Event struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// EventID is the run the event belongs to: the job's id.
	EventID string `json:"event_id"`
	Event   Body   `json:"event"`
}

// Body is an envelope's event: exactly one of BuildEvent and DeployEvent
// is set.
type Body struct {
	Sequence    int64        `json:"sequence"`
	Timestamp   string       `json:"timestamp"`
	BuildEvent  *BuildEvent  `json:"buildEvent,omitempty"`
	DeployEvent *DeployEvent `json:"deployEvent,omitempty"`
}

// BuildEvent is an artifact's build status or a line of its output.
type BuildEvent struct {
	Image    string    `json:"image"`
	Status   string    `json:"status"`
	Log      string    `json:"log,omitempty"`
	Artifact *Artifact `json:"artifact,omitempty"`
}

// Artifact is what a successful build pushed.
type Artifact struct {
	ImageName string `json:"imageName"`
	Tag       string `json:"tag"`
	Digest    string `json:"digest,omitempty"`
}

// DeployEvent is the deploy's status.
type DeployEvent struct {
	Status    string   `json:"status"`
	Deployer  string   `json:"deployer"`
	Manifests []string `json:"manifests,omitempty"`
}

// Deployer is every deploy event's deployer.
const Deployer = "helm"

// Envelope statuses.
const (
	StatusInProgress = "IN_PROGRESS"
	StatusSucceeded  = "SUCCEEDED"
	StatusFailed     = "FAILED"
	StatusCanceled   = "CANCELED"
)

var envelopeStatus = map[string]string{
	event.InProgress: StatusInProgress,
	event.Complete:   StatusSucceeded,
	event.Succeeded:  StatusSucceeded,
	event.Failed:     StatusFailed,
	event.Canceled:   StatusCanceled,
}

// Converter turns a job's stored events into envelopes; its zero value is
// ready to use. It remembers, per job, the resources checked so far.
type Converter struct {
	resources map[string][]string // job id → kind/name, in order checked
}

// Envelopes returns the envelopes of batch b, ordered by sequence number
// (v1 before v2 for a batch stored without them).
func (c *Converter) Envelopes(b store.EventBatch) []Event {
	type item struct {
		seq int64
		v1  *v1pb.LogEntry
		v2  *v2pb.Event
	}
	var items []item
	for i, e := range b.V1 {
		items = append(items, item{seq: seqAt(b.V1Seq, i), v1: e})
	}
	for i, e := range b.V2 {
		items = append(items, item{seq: seqAt(b.V2Seq, i), v2: e})
	}
	slices.SortStableFunc(items, func(x, y item) int {
		switch {
		case x.seq < y.seq:
			return -1
		case x.seq > y.seq:
			return 1
		}
		return 0
	})
	var out []Event
	for _, it := range items {
		var body *Body
		if it.v1 != nil {
			body = c.fromV1(b.Job.ID, it.v1)
		} else {
			body = fromV2(it.v2)
		}
		if body == nil {
			continue
		}
		body.Sequence = it.seq
		out = append(out, Event{APIVersion: EnvelopeAPIVersion, Kind: EnvelopeKind, EventID: b.Job.ID, Event: *body})
	}
	return out
}

func seqAt(seqs []int64, i int) int64 {
	if i < len(seqs) {
		return seqs[i]
	}
	return 0
}

func timestamp(t interface{ AsTime() time.Time }) string {
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func (c *Converter) fromV1(job string, e *v1pb.LogEntry) *Body {
	ev := e.GetEvent()
	switch {
	case ev.GetDevLoopEvent() != nil:
		if st := ev.GetDevLoopEvent().GetStatus(); st != event.InProgress {
			delete(c.resources, job) // the iteration ended (a deploy may not have)
		}
		return nil
	case ev.GetResourceStatusCheckEvent() != nil:
		r := ev.GetResourceStatusCheckEvent().GetResource()
		if c.resources == nil {
			c.resources = map[string][]string{}
		}
		if r != "" && !slices.Contains(c.resources[job], r) {
			c.resources[job] = append(c.resources[job], r)
		}
		return nil
	case ev.GetBuildEvent() != nil:
		b := ev.GetBuildEvent()
		st, ok := envelopeStatus[b.GetStatus()]
		if !ok {
			return nil
		}
		be := &BuildEvent{Image: b.GetArtifact(), Status: st}
		if ref := event.BuiltRef(e); ref != "" {
			tag, digest, _ := strings.Cut(ref, "@")
			be.Artifact = &Artifact{ImageName: b.GetArtifact(), Tag: tag, Digest: digest}
		}
		if st == StatusFailed {
			be.Log = b.GetErr()
		}
		return &Body{Timestamp: timestamp(e.GetTimestamp()), BuildEvent: be}
	case ev.GetDeployEvent() != nil:
		st, ok := envelopeStatus[ev.GetDeployEvent().GetStatus()]
		if !ok {
			return nil
		}
		de := &DeployEvent{Status: st, Deployer: Deployer}
		if st != StatusInProgress {
			de.Manifests = c.resources[job]
			delete(c.resources, job) // the job's deploy ended
		}
		return &Body{Timestamp: timestamp(e.GetTimestamp()), DeployEvent: de}
	}
	return nil
}

// fromV2 returns the envelope of a line of build output: a v2
// SkaffoldLogEvent of a Build task, whose subtask is the artifact.
func fromV2(e *v2pb.Event) *Body {
	l := e.GetSkaffoldLogEvent()
	if l == nil || !strings.HasPrefix(l.GetTaskId(), event.TaskBuild) || l.GetSubtaskId() == "" || l.GetSubtaskId() == event.SubtaskNone {
		return nil
	}
	return &Body{Timestamp: timestamp(e.GetTimestamp()), BuildEvent: &BuildEvent{
		Image: l.GetSubtaskId(), Status: StatusInProgress, Log: strings.TrimRight(l.GetMessage(), "\n"),
	}}
}

// Writer writes batches in one format.
type Writer struct {
	w    io.Writer
	f    Format
	conv Converter
	buf  bytes.Buffer
}

// NewWriter returns a writer of format f to w.
func NewWriter(w io.Writer, f Format) *Writer {
	return &Writer{w: w, f: f}
}

// skaffoldJSON is --event-log-file's encoding: golang/protobuf's jsonpb
// defaults (lowerCamel names, enum names, defaults left out).
var skaffoldJSON = protojson.MarshalOptions{}

// WriteBatch writes the lines of one batch.
func (w *Writer) WriteBatch(b store.EventBatch) error {
	w.buf.Reset()
	switch w.f {
	case Envelope:
		for _, e := range w.conv.Envelopes(b) {
			line, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode event of job %s: %w", b.Job.ID, err)
			}
			w.buf.Write(line)
			w.buf.WriteByte('\n')
		}
	case SkaffoldV1:
		for _, e := range b.V1 {
			if err := w.protoLine(e); err != nil {
				return fmt.Errorf("encode v1 event of job %s: %w", b.Job.ID, err)
			}
		}
	case SkaffoldV2:
		for _, e := range b.V2 {
			if err := w.protoLine(e); err != nil {
				return fmt.Errorf("encode v2 event of job %s: %w", b.Job.ID, err)
			}
		}
	default:
		return fmt.Errorf("unknown format %q", w.f)
	}
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		return fmt.Errorf("write events of job %s: %w", b.Job.ID, err)
	}
	return nil
}

// protoLine appends m as one compact line (protojson's spacing varies on
// purpose; the compacted form does not).
func (w *Writer) protoLine(m proto.Message) error {
	b, err := skaffoldJSON.Marshal(m)
	if err != nil {
		return err
	}
	if err := json.Compact(&w.buf, b); err != nil {
		return err
	}
	w.buf.WriteByte('\n')
	return nil
}

// LogTo returns a store.WriterOptions.Written that logs the envelope of
// each stored event to log, one record per event: message "event" and the
// envelope's fields as attributes (apiVersion, kind, event_id, event), so
// that with Cloud Logging's JSON format they are the entry's jsonPayload
// and log-based metrics can count, say, jsonPayload.event.deployEvent.status
// = "FAILED". The repository is attributed too (repo). It is safe for
// concurrent use by the writers of several jobs.
func LogTo(log *slog.Logger) func(store.EventBatch) {
	var mu sync.Mutex
	var c Converter
	return func(b store.EventBatch) {
		mu.Lock()
		envs := c.Envelopes(b)
		mu.Unlock()
		for _, e := range envs {
			log.LogAttrs(context.Background(), slog.LevelInfo, "event",
				slog.String("apiVersion", e.APIVersion), slog.String("kind", e.Kind), slog.String("event_id", e.EventID),
				slog.Any("event", e.Event), slog.String("repo", b.Job.Owner+"/"+b.Job.Name))
		}
	}
}
