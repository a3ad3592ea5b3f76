// Package logging provides the log/slog handler every kube-git-deploy binary
// uses: JSON lines with the field names Cloud Logging understands
// (severity, message, time, logging.googleapis.com/trace and
// logging.googleapis.com/sourceLocation), so logs are structured in the
// cloud and readable locally.
package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
)

// Fixed attribute keys, so logs can be searched the same way everywhere.
const (
	KeyRepo       = "repo"
	KeyDeliveryID = "delivery_id"
	KeyJobID      = "job_id"
	KeyCommitSHA  = "commit_sha"
	KeyPhase      = "phase"
	KeyEventType  = "event_type"
	KeyDurationMS = "duration_ms"
	KeyErr        = "err"
)

// Options configures New.
type Options struct {
	// Level is the minimum level logged; the zero value is Info.
	Level slog.Leveler
	// Project is the Google Cloud project id, used to expand trace ids into
	// the full resource name Cloud Logging links. Empty leaves them bare.
	Project string
}

// New returns a logger writing Cloud Logging JSON lines to w.
func New(w io.Writer, opts Options) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		AddSource:   true,
		Level:       opts.Level,
		ReplaceAttr: replaceAttr,
	})
	return slog.New(&traceHandler{Handler: h, project: opts.Project})
}

// Severity names Cloud Logging uses for slog's levels.
func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	default:
		return "DEBUG"
	}
}

func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "message"
	case slog.LevelKey:
		a.Key = "severity"
		if l, ok := a.Value.Any().(slog.Level); ok {
			a.Value = slog.StringValue(severity(l))
		}
	case slog.SourceKey:
		a.Key = "logging.googleapis.com/sourceLocation"
	}
	return a
}

type traceKey struct{}

// WithTrace returns a context whose log records carry the trace id (from
// an X-Cloud-Trace-Context or traceparent header), so Cloud Logging groups
// a request's lines.
func WithTrace(ctx context.Context, traceID string) context.Context {
	if traceID == "" {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, traceID)
}

// TraceFromHeader extracts the trace id from an X-Cloud-Trace-Context value
// ("TRACE_ID/SPAN_ID;o=1") or a W3C traceparent ("00-TRACE_ID-SPAN_ID-01").
func TraceFromHeader(cloudTrace, traceparent string) string {
	if cloudTrace != "" {
		id, _, _ := strings.Cut(cloudTrace, "/")
		return id
	}
	if parts := strings.Split(traceparent, "-"); len(parts) == 4 {
		return parts[1]
	}
	return ""
}

// traceHandler adds the context's trace id to every record.
type traceHandler struct {
	slog.Handler
	project string
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := ctx.Value(traceKey{}).(string); ok {
		if h.project != "" {
			id = "projects/" + h.project + "/traces/" + id
		}
		r.AddAttrs(slog.String("logging.googleapis.com/trace", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &traceHandler{Handler: h.Handler.WithAttrs(attrs), project: h.project}
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	return &traceHandler{Handler: h.Handler.WithGroup(name), project: h.project}
}
