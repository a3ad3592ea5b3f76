// Package web adapts error-returning HTTP handlers to net/http for the
// kube-git-deploy functions: every response is JSON with an "ok" field, and
// errors become {"ok":false,"error":"<public message>"} with a fitting
// status. Internal causes are logged, never sent: a response can carry no
// stack trace, token or secret.
package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
)

// Error is an error with the HTTP status and the public message to answer
// with. Err, the cause, is logged but never sent.
type Error struct {
	Status int
	Msg    string
	Err    error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the status, a public message formatted from
// format and args, and the cause err (which may be nil).
func Errorf(status int, err error, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...), Err: err}
}

// HandlerFunc is an HTTP handler that returns its error instead of writing
// it; Handler writes it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handler adapts h: an *Error is answered with its status and message, any
// other error with 500 "internal error"; server errors are logged with the
// cause, and a panic is answered like an unclassified error.
func Handler(log *slog.Logger, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := logging.WithTrace(r.Context(), logging.TraceFromHeader(r.Header.Get("X-Cloud-Trace-Context"), r.Header.Get("traceparent")))
		r = r.WithContext(ctx)
		defer func() {
			if p := recover(); p != nil {
				log.ErrorContext(ctx, "handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		err := h(w, r)
		if err == nil {
			return
		}
		status, msg := http.StatusInternalServerError, "internal error"
		var e *Error
		if errors.As(err, &e) {
			status, msg = e.Status, e.Msg
		}
		if status >= 500 {
			log.ErrorContext(ctx, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, logging.KeyErr, err.Error())
		} else {
			log.InfoContext(ctx, "request rejected", "method", r.Method, "path", r.URL.Path, "status", status, logging.KeyErr, err.Error())
		}
		writeError(w, status, msg)
	})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	_ = JSON(w, status, map[string]any{"ok": false, "error": msg})
}

// Reject answers r with status and the public message msg in the JSON
// error shape, {"ok":false,"error":msg}; it is loopback.Guard's Reject for
// the functions.
func Reject(w http.ResponseWriter, _ *http.Request, status int, msg string) {
	writeError(w, status, msg)
}

// JSON writes v as the JSON response body with the given status.
func JSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadBody reads the whole request body, refusing more than max bytes
// with 413 before reading further than max+1 bytes.
func ReadBody(r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, Errorf(http.StatusRequestEntityTooLarge, nil, "request body larger than %d bytes", max)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, err, "could not read request body")
	}
	if int64(len(b)) > max {
		return nil, Errorf(http.StatusRequestEntityTooLarge, nil, "request body larger than %d bytes", max)
	}
	return b, nil
}

// NotFound answers every request it gets with 404 in the JSON shape.
func NotFound(w http.ResponseWriter, r *http.Request) error {
	return Errorf(http.StatusNotFound, nil, "no such endpoint: %s %s", r.Method, r.URL.Path)
}

// Mux wraps http.ServeMux so that unknown paths and wrong methods are
// answered in the JSON shape rather than the mux's plain text.
type Mux struct {
	mux *http.ServeMux
	log *slog.Logger
}

// NewMux returns an empty Mux.
func NewMux(log *slog.Logger) *Mux { return &Mux{mux: http.NewServeMux(), log: log} }

// Handle registers h for a Go 1.22 pattern such as "GET /healthz".
func (m *Mux) Handle(pattern string, h HandlerFunc) { m.mux.Handle(pattern, Handler(m.log, h)) }

// ServeHTTP implements http.Handler.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := m.mux.Handler(r)
	if pattern == "" {
		// No route: the mux would write plain text 404 or 405.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
			return
		}
		Handler(m.log, NotFound).ServeHTTP(w, r)
		return
	}
	m.mux.ServeHTTP(w, r)
}

// statusRecorder captures the status and headers ServeMux's fallback
// handlers write, discarding their plain-text body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(status int)      { s.status = status }
