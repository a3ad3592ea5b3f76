//go:build linux

package faults_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// gates holds image builds in the middle until a scenario lets them go
// on, so that a fault strikes while a build really runs, whatever the
// timing. A gated Dockerfile ADDs a URL of this server
// (ADD http://127.0.0.1:PORT/gate/TOKEN /gate): the Docker Engine
// downloads it itself, from the host, with either builder and without a
// network for containers, and the server answers only once the gate of
// TOKEN is opened. Until then the build waits in that step; if the build
// is abandoned (its runner died, the engine stopped) the download ends.
type gates struct {
	url string

	mu      sync.Mutex
	arrived map[string]int           // downloads started, by token
	waiting map[string]int           // downloads waiting now, by token
	opened  map[string]chan struct{} // closed when the gate opens
}

func startGates(t *testing.T) *gates {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gates{url: "http://" + l.Addr().String() + "/gate/",
		arrived: map[string]int{}, waiting: map[string]int{}, opened: map[string]chan struct{}{}}
	srv := &http.Server{Handler: http.HandlerFunc(g.serve), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return g
}

// openCh returns the channel closed when gate token opens; g.mu is held.
func (g *gates) openCh(token string) chan struct{} {
	if g.opened[token] == nil {
		g.opened[token] = make(chan struct{})
	}
	return g.opened[token]
}

func (g *gates) serve(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, "/gate/")
	if !ok || token == "" {
		http.NotFound(w, r)
		return
	}
	g.mu.Lock()
	g.arrived[token]++
	g.waiting[token]++
	open := g.openCh(token)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.waiting[token]--
		g.mu.Unlock()
	}()
	select {
	case <-open:
		fmt.Fprintf(w, "gate %s opened\n", token)
	case <-r.Context().Done():
	}
}

// ref returns the URL a Dockerfile ADDs to wait at gate token.
func (g *gates) ref(token string) string { return g.url + token }

// reached reports whether the n-th build (attempt) of token waits at its
// gate now.
func (g *gates) reached(token string, n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.arrived[token] >= n && g.waiting[token] > 0
}

// idle reports whether no build waits at gate token.
func (g *gates) idle(token string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting[token] == 0
}

// open lets every build at gate token, now and later, go on.
func (g *gates) open(token string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.openCh(token))
}
