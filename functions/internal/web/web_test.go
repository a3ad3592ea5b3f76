package web

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMux(t *testing.T) {
	m := NewMux(slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.Handle("GET /ok", func(w http.ResponseWriter, r *http.Request) error {
		return JSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	m.Handle("GET /public", func(w http.ResponseWriter, r *http.Request) error {
		return Errorf(http.StatusConflict, errors.New("internal detail token=abc"), "already tracked")
	})
	m.Handle("GET /internal", func(w http.ResponseWriter, r *http.Request) error {
		return errors.New("dial tcp 10.0.0.1: secret=xyz")
	})
	m.Handle("GET /panic", func(w http.ResponseWriter, r *http.Request) error { panic("boom with secret") })
	m.Handle("POST /body", func(w http.ResponseWriter, r *http.Request) error {
		b, err := ReadBody(r, 8)
		if err != nil {
			return err
		}
		return JSON(w, http.StatusOK, map[string]any{"ok": true, "n": len(b)})
	})
	tests := []struct {
		method, path, body string
		want               int
		wantErr            string
	}{
		{"GET", "/ok", "", 200, ""},
		{"GET", "/public", "", 409, "already tracked"},
		{"GET", "/internal", "", 500, "internal error"},
		{"GET", "/panic", "", 500, "internal error"},
		{"GET", "/missing", "", 404, "no such endpoint: GET /missing"},
		{"DELETE", "/ok", "", 405, "method DELETE not allowed on /ok"},
		{"POST", "/body", "12345678", 200, ""},
		{"POST", "/body", "123456789", 413, "request body larger than 8 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path+tt.body, func(t *testing.T) {
			rec := httptest.NewRecorder()
			m.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.want {
				t.Errorf("status = %d, want %d", rec.Code, tt.want)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not JSON", rec.Body.String())
			}
			if tt.wantErr == "" {
				if body["ok"] != true {
					t.Errorf("body = %v, want ok", body)
				}
				return
			}
			if body["ok"] != false || body["error"] != tt.wantErr {
				t.Errorf("body = %v, want ok false and error %q", body, tt.wantErr)
			}
			for _, leak := range []string{"token=abc", "secret", "10.0.0.1", "goroutine"} {
				if strings.Contains(rec.Body.String(), leak) {
					t.Errorf("body %q leaks %q", rec.Body.String(), leak)
				}
			}
		})
	}
}

func TestReject(t *testing.T) {
	rec := httptest.NewRecorder()
	Reject(rec, httptest.NewRequest("POST", "/", nil), http.StatusUnsupportedMediaType, "send JSON")
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 415 || body["ok"] != false || body["error"] != "send JSON" {
		t.Errorf("Reject wrote %d %s", rec.Code, rec.Body)
	}
}
