package store_test

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"

	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestNew(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	tests := []struct {
		name   string
		client *firestore.Client
		box    *secret.Box
		opts   []store.Option
	}{
		{name: "nil-client", client: nil, box: e.box},
		{name: "nil-box", client: e.client, box: nil},
		{name: "nil-clock", client: e.client, box: e.box, opts: []store.Option{store.WithClock(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := store.New(tt.client, tt.box, tt.opts...)
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("New() = %v, %v; want ErrInvalid", s, err)
			}
		})
	}
}

func TestTrackRepository(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store

	in := store.Repository{
		Owner: "Alice", Name: "Web-App", HookID: 7, WebhookSecret: []byte("s3cret"),
		TrackedBy: "alice", TrackedByCaller: "alice@example.com", TrackedAt: t0.Add(-time.Hour),
	}
	if err := s.TrackRepository(e.ctx, in); err != nil {
		t.Fatalf("TrackRepository: %v", err)
	}
	want := in
	want.Triggers = store.DefaultTriggers()
	want.NextIteration = 1
	want.Policy = store.DefaultPolicy("Alice", "Web-App") // none given
	for _, lookup := range [][2]string{{"Alice", "Web-App"}, {"alice", "web-app"}, {"ALICE", "WEB-APP"}} {
		got, err := s.Repository(e.ctx, lookup[0], lookup[1])
		if err != nil {
			t.Fatalf("Repository(%s/%s): %v", lookup[0], lookup[1], err)
		}
		if diff := cmp.Diff(want, *got); diff != "" {
			t.Errorf("Repository(%s/%s) mismatch (-want +got):\n%s", lookup[0], lookup[1], diff)
		}
	}

	errTests := []struct {
		name string
		repo store.Repository
		want error
	}{
		{name: "again", repo: in, want: store.ErrAlreadyExists},
		{name: "again-other-case", repo: store.Repository{Owner: "alice", Name: "WEB-app", WebhookSecret: []byte("x")}, want: store.ErrAlreadyExists},
		{name: "empty-secret", repo: store.Repository{Owner: "bob", Name: "app"}, want: store.ErrInvalid},
		{name: "empty-owner", repo: store.Repository{Name: "app", WebhookSecret: []byte("x")}, want: store.ErrInvalid},
		{name: "slash-in-name", repo: store.Repository{Owner: "bob", Name: "a/b", WebhookSecret: []byte("x")}, want: store.ErrInvalid},
		{name: "tilde-in-owner", repo: store.Repository{Owner: "bob~x", Name: "app", WebhookSecret: []byte("x")}, want: store.ErrInvalid},
		{name: "dot-dot", repo: store.Repository{Owner: "bob", Name: "..", WebhookSecret: []byte("x")}, want: store.ErrInvalid},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.TrackRepository(e.ctx, tt.repo); !errors.Is(err, tt.want) {
				t.Fatalf("TrackRepository() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRepositories(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store

	got, err := s.Repositories(e.ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("Repositories() on an empty project = %v, %v; want none", got, err)
	}
	for _, r := range [][2]string{{"zed", "app"}, {"Alice", "zoo"}, {"alice", "Beta"}, {"bob", "app"}} {
		e.track(t, r[0], r[1])
	}
	got, err = s.Repositories(e.ctx)
	if err != nil {
		t.Fatalf("Repositories: %v", err)
	}
	var keys, names []string
	for _, r := range got {
		keys = append(keys, r.Key())
		names = append(names, r.Owner+"/"+r.Name)
		if want := "hook-secret-" + r.Owner + "-" + r.Name; string(r.WebhookSecret) != want {
			t.Errorf("%s: WebhookSecret = %q, want %q", r.Key(), r.WebhookSecret, want)
		}
	}
	if diff := cmp.Diff([]string{"alice~beta", "alice~zoo", "bob~app", "zed~app"}, keys); diff != "" {
		t.Errorf("Repositories() keys (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"alice/Beta", "Alice/zoo", "bob/app", "zed/app"}, names); diff != "" {
		t.Errorf("Repositories() display names (-want +got):\n%s", diff)
	}
}

func TestSetTriggers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")

	tests := []struct {
		name string
		set  store.Triggers
	}{
		{name: "build-off", set: store.Triggers{AutoDeploy: true, AutoSync: true}},
		{name: "all-off", set: store.Triggers{}},
		{name: "all-on", set: store.DefaultTriggers()},
		{name: "sync-only", set: store.Triggers{AutoSync: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SetTriggers(e.ctx, "Alice", "APP", tt.set); err != nil {
				t.Fatalf("SetTriggers: %v", err)
			}
			r, err := s.Repository(e.ctx, "alice", "app")
			if err != nil {
				t.Fatalf("Repository: %v", err)
			}
			if diff := cmp.Diff(tt.set, r.Triggers); diff != "" {
				t.Errorf("Triggers (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("missing-field-reads-as-on", func(t *testing.T) {
		ref := e.client.Collection(store.RepositoriesCollection).Doc("alice~app")
		if _, err := ref.Update(e.ctx, []firestore.Update{{Path: "triggers", Value: map[string]any{"auto_build": false}}}); err != nil {
			t.Fatal(err)
		}
		r, err := s.Repository(e.ctx, "alice", "app")
		if err != nil {
			t.Fatalf("Repository: %v", err)
		}
		if diff := cmp.Diff(store.Triggers{AutoDeploy: true, AutoSync: true}, r.Triggers); diff != "" {
			t.Errorf("Triggers (-want +got):\n%s", diff)
		}
	})
	t.Run("not-tracked", func(t *testing.T) {
		if err := s.SetTriggers(e.ctx, "bob", "app", store.Triggers{}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("SetTriggers(untracked) = %v, want ErrNotFound", err)
		}
	})
}

func TestRepositoryPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	custom := store.Policy{
		Namespaces: []string{"web", "web-canary"}, ClusterScoped: true, AllowKinds: []string{"Role", "rbac.authorization.k8s.io/RoleBinding"},
		Adopt: true, ServiceAccount: "web/deployer", Operators: []string{"ops@example.com"},
	}
	if err := s.TrackRepository(e.ctx, store.Repository{Owner: "alice", Name: "app", WebhookSecret: []byte("s"), Policy: custom}); err != nil {
		t.Fatalf("TrackRepository with a policy: %v", err)
	}
	r, err := s.Repository(e.ctx, "alice", "app")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(custom, r.Policy); diff != "" {
		t.Errorf("stored policy (-want +got):\n%s", diff)
	}

	replaced := store.Policy{Namespaces: []string{"other"}, CreateNamespaces: true}
	if err := s.SetPolicy(e.ctx, "ALICE", "App", replaced); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	if r, err = s.Repository(e.ctx, "alice", "app"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(replaced, r.Policy, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("policy after SetPolicy (-want +got):\n%s", diff)
	}
	for name, p := range map[string]store.Policy{
		"no-namespace":  {},
		"bad-namespace": {Namespaces: []string{"Not_DNS"}},
	} {
		if err := s.SetPolicy(e.ctx, "alice", "app", p); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("SetPolicy(%s) = %v, want ErrInvalid", name, err)
		}
	}
	if err := s.TrackRepository(e.ctx, store.Repository{Owner: "bob", Name: "app", WebhookSecret: []byte("s"),
		Policy: store.Policy{Namespaces: []string{"UPPER"}}}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("TrackRepository with an invalid policy = %v, want ErrInvalid", err)
	}
	if err := s.SetPolicy(e.ctx, "bob", "app", replaced); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetPolicy(untracked) = %v, want ErrNotFound", err)
	}
	// A document written before policies existed reads as the default.
	if _, err := e.client.Collection(store.RepositoriesCollection).Doc("alice~app").Update(e.ctx, []firestore.Update{{Path: "policy", Value: firestore.Delete}}); err != nil {
		t.Fatal(err)
	}
	if r, err = s.Repository(e.ctx, "alice", "app"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(store.DefaultPolicy("alice", "app"), r.Policy); diff != "" {
		t.Errorf("policy of an old document (-want +got):\n%s", diff)
	}
}

func TestSetGitHubReports(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	reportsOn := func() bool {
		t.Helper()
		r, err := s.Repository(e.ctx, "alice", "app")
		if err != nil {
			t.Fatal(err)
		}
		return !r.GitHubReportsOff
	}
	if !reportsOn() {
		t.Fatal("a newly tracked repository has GitHub reports off, want on")
	}
	for _, on := range []bool{false, true, false} {
		if err := s.SetGitHubReports(e.ctx, "ALICE", "App", on); err != nil {
			t.Fatalf("SetGitHubReports(%v): %v", on, err)
		}
		if got := reportsOn(); got != on {
			t.Errorf("after SetGitHubReports(%v) reports on = %v", on, got)
		}
	}
	if err := s.SetGitHubReports(e.ctx, "bob", "app", true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetGitHubReports(untracked) = %v, want ErrNotFound", err)
	}
}

func TestUntrackRepositoryKeepsHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	e.track(t, "alice", "app")
	job := e.claimedJob(t, store.Job{Owner: "alice", Name: "app", SHA: "abc", DeliveryID: "d-1", Trigger: "push"})
	v1, v2 := logLine(1)
	if err := s.AppendEvents(e.ctx, store.EventBatch{Job: job.JobRef(), V1: []*v1pb.LogEntry{v1}, V2: []*v2pb.Event{v2}}); err != nil {
		t.Fatalf("AppendEvents: %v", err)
	}
	if err := s.PutState(e.ctx, "alice", "app", job.ID, job.Iteration, &v1pb.State{}, &v2pb.State{}); err != nil {
		t.Fatalf("PutState: %v", err)
	}

	if err := s.UntrackRepository(e.ctx, "Alice", "App"); err != nil {
		t.Fatalf("UntrackRepository: %v", err)
	}
	if err := s.UntrackRepository(e.ctx, "alice", "app"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UntrackRepository again = %v, want ErrNotFound", err)
	}
	if _, err := s.Repository(e.ctx, "alice", "app"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Repository(untracked) = %v, want ErrNotFound", err)
	}

	// History survives.
	if got, err := s.Job(e.ctx, job.ID); err != nil || got.SHA != "abc" {
		t.Errorf("Job after untrack = %+v, %v", got, err)
	}
	if jobs, err := s.Jobs(e.ctx, "alice", "app", 10); err != nil || len(jobs) != 1 {
		t.Errorf("Jobs after untrack = %d jobs, %v; want 1", len(jobs), err)
	}
	if h, err := s.JobEvents(e.ctx, job.ID); err != nil || len(h.V1) != 1 || len(h.V2) != 1 {
		t.Errorf("JobEvents after untrack = %+v, %v; want one event of each", h, err)
	}
	if st, err := s.State(e.ctx, "alice", "app"); err != nil || st.JobID != job.ID {
		t.Errorf("State after untrack = %+v, %v", st, err)
	}

	// Tracking again continues the iterations.
	e.track(t, "alice", "app")
	r, err := s.Repository(e.ctx, "alice", "app")
	if err != nil {
		t.Fatalf("Repository: %v", err)
	}
	if r.NextIteration != 2 {
		t.Errorf("NextIteration after re-tracking = %d, want 2", r.NextIteration)
	}
	if j := e.claimedJob(t, store.Job{Owner: "alice", Name: "app", DeliveryID: "d-3"}); j.Iteration != 2 {
		t.Errorf("Iteration after re-tracking = %d, want 2", j.Iteration)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	const alice, bob = "alice@example.com", "bob@example.com"

	if _, err := s.Token(e.ctx, alice, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Token(missing) = %v, want ErrNotFound", err)
	}
	first := store.Token{Caller: alice, Login: "Alice", AccessToken: "gho_first", Scopes: []string{"repo", "admin:repo_hook"}}
	if err := s.PutToken(e.ctx, first); err != nil {
		t.Fatalf("PutToken: %v", err)
	}
	want := first
	want.CreatedAt = t0 // from the store's clock
	got, err := s.Token(e.ctx, "Alice@Example.com", "alice")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if diff := cmp.Diff(want, *got); diff != "" {
		t.Errorf("Token mismatch (-want +got):\n%s", diff)
	}
	if _, err := e.client.Collection(store.TokensCollection).Doc(store.TokenKey(alice, "alice")).Get(e.ctx); err != nil {
		t.Errorf("token document %s: %v", store.TokenKey(alice, "alice"), err)
	}

	second := store.Token{Caller: alice, Login: "alice", AccessToken: "gho_second", Scopes: []string{"repo"}, CreatedAt: t0.Add(time.Hour)}
	if err := s.PutToken(e.ctx, second); err != nil {
		t.Fatalf("PutToken (overwrite): %v", err)
	}
	got, err = s.Token(e.ctx, alice, "ALICE")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if diff := cmp.Diff(second, *got); diff != "" {
		t.Errorf("Token after overwrite (-want +got):\n%s", diff)
	}

	// Another caller signing in as the same GitHub user gets a token of its
	// own and leaves alice's alone.
	bobs := store.Token{Caller: bob, Login: "alice", AccessToken: "gho_bobs", CreatedAt: t0.Add(2 * time.Hour)}
	if err := s.PutToken(e.ctx, bobs); err != nil {
		t.Fatalf("PutToken (other caller): %v", err)
	}
	if got, err := s.Token(e.ctx, alice, "alice"); err != nil || got.AccessToken != "gho_second" {
		t.Errorf("alice's token after bob signed in as alice = %v, %v; want gho_second", got, err)
	}
	if got, err := s.Token(e.ctx, bob, "alice"); err != nil || got.AccessToken != "gho_bobs" {
		t.Errorf("bob's token of alice = %v, %v; want gho_bobs", got, err)
	}
	if _, err := s.Token(e.ctx, "carol@example.com", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a third caller's token of alice = %v, want ErrNotFound", err)
	}

	errTests := []struct {
		name string
		tok  store.Token
	}{
		{name: "empty-caller", tok: store.Token{Login: "bob", AccessToken: "x"}},
		{name: "blank-caller", tok: store.Token{Caller: "  ", Login: "bob", AccessToken: "x"}},
		{name: "empty-login", tok: store.Token{Caller: bob, AccessToken: "x"}},
		{name: "bad-login", tok: store.Token{Caller: bob, Login: "a/b", AccessToken: "x"}},
		{name: "empty-token", tok: store.Token{Caller: bob, Login: "bob"}},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.PutToken(e.ctx, tt.tok); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("PutToken() = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := s.Token(e.ctx, "", "alice"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Token without a caller = %v, want ErrInvalid", err)
	}
}

// TestRepositoryToken is the runner's read: the token a repository was
// tracked with, by its tracker and login, never another caller's.
func TestRepositoryToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	const alice, bob = "alice@example.com", "bob@example.com"
	for _, tok := range []store.Token{
		{Caller: alice, Login: "alice", AccessToken: "gho_alice"},
		{Caller: bob, Login: "bob", AccessToken: "gho_bob", CreatedAt: t0.Add(time.Hour)},
		{Caller: bob, Login: "alice", AccessToken: "gho_bob_as_alice", CreatedAt: t0.Add(2 * time.Hour)},
	} {
		if err := s.PutToken(e.ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []store.Repository{
		{Owner: "alice", Name: "app", TrackedBy: "alice", TrackedByCaller: "Alice@Example.com"},
		{Owner: "bob", Name: "app", TrackedBy: "Alice", TrackedByCaller: bob},
		{Owner: "old", Name: "app", TrackedBy: "alice"}, // tracked before callers were recorded
		{Owner: "gone", Name: "app", TrackedBy: "carol", TrackedByCaller: alice},
	} {
		r.HookID, r.WebhookSecret = 1, []byte("s")
		if err := s.TrackRepository(e.ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		owner, wantCaller, wantToken string
		wantErr                      error
	}{
		{"alice", alice, "gho_alice", nil},
		{"bob", bob, "gho_bob_as_alice", nil},
		{"old", "", "", store.ErrNotFound},
		{"gone", alice, "", store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.owner, func(t *testing.T) {
			r, err := s.Repository(e.ctx, tt.owner, "app")
			if err != nil {
				t.Fatal(err)
			}
			if r.TrackedByCaller != tt.wantCaller {
				t.Errorf("TrackedByCaller = %q, want %q", r.TrackedByCaller, tt.wantCaller)
			}
			tok, err := s.RepositoryToken(e.ctx, r)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("RepositoryToken = %v, %v; want %v", tok, err, tt.wantErr)
				}
				return
			}
			if err != nil || tok.AccessToken != tt.wantToken {
				t.Fatalf("RepositoryToken = %v, %v; want %s", tok, err, tt.wantToken)
			}
		})
	}
	if _, err := s.RepositoryToken(e.ctx, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RepositoryToken(nil) = %v, want ErrNotFound", err)
	}
}

// TestSecretsAtRest reads the raw documents: no plaintext secret may be in
// them, and a sealed value moved to another document must not open.
func TestSecretsAtRest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	const hookSecret, accessToken = "hook-secret-6f1d2e", "gho_16C7e42F292c6912E7710c838347Ae178B4a"
	const caller, otherCaller = "ops@example.com", "mallory@example.com"
	for _, owner := range []string{"alice", "bob"} {
		err := s.TrackRepository(e.ctx, store.Repository{Owner: owner, Name: "app", WebhookSecret: []byte(hookSecret + owner)})
		if err != nil {
			t.Fatalf("TrackRepository: %v", err)
		}
		if err := s.PutToken(e.ctx, store.Token{Caller: caller, Login: owner, AccessToken: accessToken + owner}); err != nil {
			t.Fatalf("PutToken: %v", err)
		}
	}

	raw := func(t *testing.T, collection, id string) map[string]any {
		t.Helper()
		snap, err := e.client.Collection(collection).Doc(id).Get(e.ctx)
		if err != nil {
			t.Fatalf("get raw %s/%s: %v", collection, id, err)
		}
		return snap.Data()
	}
	for _, doc := range []struct{ collection, id, field, plaintext string }{
		{store.RepositoriesCollection, "alice~app", "webhook_secret", hookSecret},
		{store.TokensCollection, store.TokenKey(caller, "alice"), "token", accessToken},
	} {
		t.Run("plaintext-absent-"+doc.collection, func(t *testing.T) {
			data := raw(t, doc.collection, doc.id)
			if _, ok := data[doc.field].([]byte); !ok {
				t.Fatalf("raw field %s is %T, want sealed bytes", doc.field, data[doc.field])
			}
			assertAbsent(t, data, doc.plaintext)
		})
	}

	moves := []struct {
		name, collection, from, to, field string
		read                              func() error
	}{
		{"webhook-secret", store.RepositoriesCollection, "alice~app", "bob~app", "webhook_secret", func() error {
			_, err := s.Repository(e.ctx, "bob", "app")
			return err
		}},
		{"token", store.TokensCollection, store.TokenKey(caller, "alice"), store.TokenKey(caller, "bob"), "token", func() error {
			_, err := s.Token(e.ctx, caller, "bob")
			return err
		}},
		// Copying a token to another caller's document for the same login
		// does not hand it over either.
		{"token-to-another-caller", store.TokensCollection, store.TokenKey(caller, "alice"), store.TokenKey(otherCaller, "alice"), "token", func() error {
			_, err := s.Token(e.ctx, otherCaller, "alice")
			return err
		}},
	}
	for _, mv := range moves {
		t.Run("moved-"+mv.name+"-does-not-open", func(t *testing.T) {
			sealed := raw(t, mv.collection, mv.from)[mv.field]
			doc := e.client.Collection(mv.collection).Doc(mv.to)
			if mv.name == "token-to-another-caller" {
				// The other caller's document does not exist yet: forge it whole.
				data := raw(t, mv.collection, mv.from)
				data["caller"] = otherCaller
				if _, err := doc.Set(e.ctx, data); err != nil {
					t.Fatal(err)
				}
			}
			_, err := doc.Update(e.ctx, []firestore.Update{{Path: mv.field, Value: sealed}})
			if err != nil {
				t.Fatal(err)
			}
			if err := mv.read(); !errors.Is(err, secret.ErrDecrypt) {
				t.Fatalf("reading %s/%s with %s's sealed %s = %v, want secret.ErrDecrypt", mv.collection, mv.to, mv.from, mv.field, err)
			}
		})
	}

	t.Run("key-rotation", func(t *testing.T) {
		rotated, err := store.New(e.client, newBox(t, 2, testKey(1)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := rotated.Token(e.ctx, caller, "alice")
		if err != nil || got.AccessToken != accessToken+"alice" {
			t.Fatalf("Token with rotated keys = %v, %v", got, err)
		}
		other, err := store.New(e.client, newBox(t, 3))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Token(e.ctx, caller, "alice"); !errors.Is(err, secret.ErrDecrypt) {
			t.Fatalf("Token with an unrelated key = %v, want secret.ErrDecrypt", err)
		}
	})
}

// assertAbsent fails if any string or byte value in v contains s.
func assertAbsent(t *testing.T, v any, s string) {
	t.Helper()
	switch v := v.(type) {
	case string:
		if strings.Contains(v, s) {
			t.Errorf("raw document contains the plaintext in %q", v)
		}
	case []byte:
		if bytes.Contains(v, []byte(s)) {
			t.Errorf("raw document contains the plaintext in bytes")
		}
	case map[string]any:
		for _, x := range v {
			assertAbsent(t, x, s)
		}
	case []any:
		for _, x := range v {
			assertAbsent(t, x, s)
		}
	}
}

func TestRecordDeployed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	e.track(t, "alice", "app")
	if err := e.store.RecordDeployed(e.ctx, "Alice", "App", []string{"api", "web"}, "sha-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.RecordDeployed(e.ctx, "alice", "app", []string{"web"}, "sha-2"); err != nil {
		t.Fatal(err)
	}
	r, err := e.store.Repository(e.ctx, "alice", "app")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"api": "sha-1", "web": "sha-2"}; !maps.Equal(r.Deployed, want) {
		t.Errorf("Deployed = %v, want %v", r.Deployed, want)
	}
	if err := e.store.RecordDeployed(e.ctx, "alice", "gone", []string{"api"}, "x"); err != nil {
		t.Errorf("RecordDeployed(untracked) = %v, want nil", err)
	}
	if err := e.store.RecordDeployed(e.ctx, "alice", "app", []string{"a.b"}, "x"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("RecordDeployed(dotted unit) = %v, want ErrInvalid", err)
	}
}
