package oauth

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
)

func TestState(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	clock := now
	if _, err := New(Config{
		ClientID: "id", ClientSecret: "s", WebURL: "https://github.example/", RedirectURL: "http://localhost:5000/cb",
		StateKey: []byte(strings.Repeat("k", 32)),
	}, nil, nil, nil, nil, nil); err == nil {
		t.Fatal("New without a store succeeded")
	}
	identify := func(*http.Request) (caller.Identity, error) { return caller.Local, nil }
	if _, err := New(Config{
		ClientID: "id", ClientSecret: "s", WebURL: "https://github.example/", RedirectURL: "http://localhost:5000/cb",
		StateKey: []byte(strings.Repeat("k", 32)),
	}, struct{ Store }{}, func(string) *github.Client { return nil }, http.DefaultClient,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err == nil {
		t.Fatal("New without identify succeeded")
	}
	h, err := New(Config{
		ClientID: "id", ClientSecret: "s", WebURL: "https://github.example/", RedirectURL: "http://localhost:5000/cb",
		StateKey: []byte(strings.Repeat("k", 32)), Identify: identify,
	}, struct{ Store }{}, func(string) *github.Client { return nil }, http.DefaultClient,
		slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	state := h.signState("FLOWID", now.Add(10*time.Minute))
	other, _ := New(Config{ClientID: "id", ClientSecret: "s", WebURL: "https://x/", RedirectURL: "http://x/cb",
		StateKey: []byte(strings.Repeat("z", 32)), Identify: identify}, struct{ Store }{}, func(string) *github.Client { return nil },
		http.DefaultClient, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return clock })

	tests := []struct {
		name    string
		h       *Handler
		state   string
		at      time.Time
		wantID  string
		wantErr bool
	}{
		{"valid", h, state, now, "FLOWID", false},
		{"last-second", h, state, now.Add(10 * time.Minute), "FLOWID", false},
		{"expired", h, state, now.Add(10*time.Minute + time.Second), "", true},
		{"other-key", other, state, now, "", true},
		{"id-swapped", h, "OTHER" + state[len("FLOWID"):], now, "", true},
		{"expiry-extended", h, strings.Replace(state, ".", ".9", 1), now, "", true},
		{"two-parts", h, "a.b", now, "", true},
		{"empty", h, "", now, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock = tt.at
			id, err := tt.h.checkState(tt.state)
			if (err != nil) != tt.wantErr || id != tt.wantID {
				t.Errorf("checkState = %q, %v; want %q, error %v", id, err, tt.wantID, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadState) {
				t.Errorf("error %v does not wrap ErrBadState", err)
			}
		})
	}
}
