package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		log     func(l *slog.Logger)
		wantSev string
		wantMsg string
		trace   string
	}{
		{"info", func(l *slog.Logger) { l.Info("job started", KeyJobID, "j1") }, "INFO", "job started", ""},
		{"warn", func(l *slog.Logger) { l.Warn("slow") }, "WARNING", "slow", ""},
		{"error-with-trace", func(l *slog.Logger) {
			l.ErrorContext(WithTrace(context.Background(), "abc"), "boom")
		}, "ERROR", "boom", "projects/p1/traces/abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(New(&buf, Options{Project: "p1"}).With("component", "test"))
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("log line %q is not JSON: %v", buf.String(), err)
			}
			if got["severity"] != tt.wantSev || got["message"] != tt.wantMsg || got["component"] != "test" {
				t.Errorf("log line = %v, want severity %q message %q component test", got, tt.wantSev, tt.wantMsg)
			}
			if tr, _ := got["logging.googleapis.com/trace"].(string); tr != tt.trace {
				t.Errorf("trace = %q, want %q", tr, tt.trace)
			}
			if _, ok := got["logging.googleapis.com/sourceLocation"]; !ok {
				t.Errorf("log line lacks sourceLocation: %v", got)
			}
		})
	}
}

func TestTraceFromHeader(t *testing.T) {
	tests := []struct{ cloud, parent, want string }{
		{"105445aa7843bc8bf206b12000100000/1;o=1", "", "105445aa7843bc8bf206b12000100000"},
		{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"", "garbage", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		if got := TraceFromHeader(tt.cloud, tt.parent); got != tt.want {
			t.Errorf("TraceFromHeader(%q, %q) = %q, want %q", tt.cloud, tt.parent, got, tt.want)
		}
	}
}
