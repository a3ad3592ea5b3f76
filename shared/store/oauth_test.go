package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestOAuthState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	st := store.OAuthState{ID: "flow-1", Verifier: "verifier-secret-value", ExpiresAt: t0.Add(10 * time.Minute), Caller: "alice@example.com"}
	if err := s.PutOAuthState(e.ctx, st); err != nil {
		t.Fatalf("PutOAuthState: %v", err)
	}
	if err := s.PutOAuthState(e.ctx, st); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("PutOAuthState twice = %v, want ErrAlreadyExists", err)
	}
	snap, err := e.client.Collection(store.OAuthStatesCollection).Doc("flow-1").Get(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := snap.Data()["verifier"].([]byte); len(v) == 0 || string(v) == st.Verifier {
		t.Errorf("raw verifier %q is not sealed", v)
	}

	got, err := s.ConsumeOAuthState(e.ctx, "flow-1", t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("ConsumeOAuthState: %v", err)
	}
	if diff := cmp.Diff(&st, got); diff != "" {
		t.Errorf("ConsumeOAuthState (-want +got):\n%s", diff)
	}
	if _, err := s.ConsumeOAuthState(e.ctx, "flow-1", t0.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ConsumeOAuthState replayed = %v, want ErrNotFound", err)
	}

	expired := store.OAuthState{ID: "flow-2", Verifier: "v", ExpiresAt: t0, Caller: "local"}
	if err := s.PutOAuthState(e.ctx, expired); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeOAuthState(e.ctx, "flow-2", t0.Add(time.Second)); !errors.Is(err, store.ErrExpired) {
		t.Errorf("ConsumeOAuthState expired = %v, want ErrExpired", err)
	}
	if _, err := s.ConsumeOAuthState(e.ctx, "flow-2", t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired state was not deleted: %v", err)
	}
	for _, bad := range []string{"", "a/b", "../x"} {
		if _, err := s.ConsumeOAuthState(e.ctx, bad, t0); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ConsumeOAuthState(%q) = %v, want ErrInvalid", bad, err)
		}
	}

	// Every flow records who started it: the callback has no other way
	// to know whose token it obtains.
	if err := s.PutOAuthState(e.ctx, store.OAuthState{ID: "flow-3", Verifier: "v", ExpiresAt: t0.Add(time.Minute)}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("PutOAuthState without a caller = %v, want ErrInvalid", err)
	}
	// A flow stored before callers were recorded is consumed and refused.
	if _, err := e.client.Collection(store.OAuthStatesCollection).Doc("flow-4").Create(e.ctx, map[string]any{
		"verifier": []byte("x"), "expires_at": t0.Add(time.Minute),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeOAuthState(e.ctx, "flow-4", t0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("ConsumeOAuthState of a flow without a caller = %v, want ErrInvalid", err)
	}
	if _, err := s.ConsumeOAuthState(e.ctx, "flow-4", t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a flow without a caller was not deleted: %v", err)
	}
}

func TestLatestToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	const me, other = "me@example.com", "other@example.com"
	if _, err := s.LatestToken(e.ctx, me); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LatestToken with none = %v, want ErrNotFound", err)
	}
	for i, login := range []string{"alice", "bob", "carol"} {
		tok := store.Token{Caller: me, Login: login, AccessToken: "tok-" + login, CreatedAt: t0.Add(time.Duration([]int{1, 3, 2}[i]) * time.Minute)}
		if err := s.PutToken(e.ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	// Another caller's newer token is never "the latest" of me.
	if err := s.PutToken(e.ctx, store.Token{Caller: other, Login: "dave", AccessToken: "tok-dave", CreatedAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.LatestToken(e.ctx, "Me@Example.com")
	if err != nil {
		t.Fatalf("LatestToken: %v", err)
	}
	if got.Login != "bob" || got.AccessToken != "tok-bob" || got.Caller != me {
		t.Errorf("LatestToken = %s/%s/%s, want %s/bob/tok-bob", got.Caller, got.Login, got.AccessToken, me)
	}
	if got, err := s.LatestToken(e.ctx, other); err != nil || got.Login != "dave" {
		t.Errorf("LatestToken(other) = %v, %v; want dave", got, err)
	}
	if _, err := s.LatestToken(e.ctx, "nobody@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LatestToken of a caller without tokens = %v, want ErrNotFound", err)
	}
	if _, err := s.LatestToken(e.ctx, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("LatestToken without a caller = %v, want ErrInvalid", err)
	}
}

func TestMarkJobPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	j := e.createJob(t, store.Job{Owner: "alice", Name: "app", Ref: "refs/heads/main", SHA: "s1", Trigger: "push", DeliveryID: "d1"})
	if !j.PublishedAt.IsZero() {
		t.Fatalf("new job already published at %v", j.PublishedAt)
	}
	if err := e.store.MarkJobPublished(e.ctx, j.ID, "msg-7", t0.Add(time.Second)); err != nil {
		t.Fatalf("MarkJobPublished: %v", err)
	}
	got, err := e.store.Job(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.MessageID != "msg-7" || !got.PublishedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("job after MarkJobPublished: message %q at %v", got.MessageID, got.PublishedAt)
	}
	if err := e.store.MarkJobPublished(e.ctx, "missing", "m", t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkJobPublished(missing) = %v, want ErrNotFound", err)
	}
}
