package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"
)

// health answers GET /healthz for the instance group's auto-healing: 200
// while the runner receives jobs and its Docker Engine answers, 503 with
// what is wrong otherwise, so a VM whose engine died is replaced.
type health struct {
	// receiving is true while the worker pulls jobs.
	receiving atomic.Bool
	// docker pings the Docker Engine.
	docker func(context.Context) error
}

// ServeHTTP implements http.Handler.
func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	body := map[string]any{"ok": true, "server": "runner"}
	var problems []string
	if !h.receiving.Load() {
		problems = append(problems, "not receiving jobs")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := h.docker(ctx); err != nil {
		problems = append(problems, "docker engine: "+err.Error())
	}
	code := http.StatusOK
	if len(problems) > 0 {
		code = http.StatusServiceUnavailable
		body["ok"], body["problems"] = false, problems
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
