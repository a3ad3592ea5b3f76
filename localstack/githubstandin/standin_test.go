package githubstandin_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

// received is one request a test receiver got.
type received struct {
	header http.Header
	body   []byte
}

// receiver records webhook deliveries and answers 202.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []received
	seen chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{seen: make(chan struct{}, 10)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: b})
		rc.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"ok":true}`)
		rc.seen <- struct{}{}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) last(t *testing.T) received {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.got) == 0 {
		t.Fatal("no delivery received")
	}
	return rc.got[len(rc.got)-1]
}

func newStandin(t *testing.T) *githubstandin.Server {
	t.Helper()
	s, err := githubstandin.New(githubstandin.Config{ClientID: "cid", ClientSecret: "csecret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// createHook creates a hook through the REST API, as PrivateAPI does.
func createHook(t *testing.T, s *githubstandin.Server, owner, name, token, hookURL, contentType, secret string) int64 {
	t.Helper()
	body := fmt.Sprintf(`{"name":"web","active":true,"events":["push"],"config":{"url":%q,"content_type":%q,"secret":%q,"insecure_ssl":"1"}}`,
		hookURL, contentType, secret)
	req, _ := http.NewRequest("POST", s.APIURL+"repos/"+owner+"/"+name+"/hooks", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID int64 `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create hook = %s, %v", resp.Status, err)
	}
	return out.ID
}

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestPushDelivery(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	rc := newReceiver(t)
	if _, created, err := s.CreateRepo("octo", "app", "octo", false); err != nil || !created {
		t.Fatalf("CreateRepo = %v, %v", created, err)
	}
	const secret = "hook-secret"
	hookID := createHook(t, s, "octo", "app", s.Token("octo"), rc.URL+"/hook", "json", secret)
	ctx := context.Background()

	first, err := s.Push(ctx, "octo", "app", githubstandin.Commit{Message: "first", Files: map[string][]byte{"a.txt": []byte("1\n")}})
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if len(first.Deliveries) != 1 || first.Deliveries[0].StatusCode != http.StatusAccepted || first.Deliveries[0].HookID != hookID {
		t.Fatalf("deliveries = %+v, want one answered 202 by hook %d", first.Deliveries, hookID)
	}
	got := rc.last(t)

	t.Run("headers", func(t *testing.T) {
		h := got.header
		for name, want := range map[string]string{
			"X-GitHub-Event": "push", "X-GitHub-Hook-ID": fmt.Sprint(hookID), "Content-Type": "application/json",
			"X-GitHub-Hook-Installation-Target-Type": "repository",
		} {
			if h.Get(name) != want {
				t.Errorf("%s = %q, want %q", name, h.Get(name), want)
			}
		}
		if !guidRE.MatchString(h.Get("X-GitHub-Delivery")) || h.Get("X-GitHub-Delivery") != first.Deliveries[0].GUID {
			t.Errorf("X-GitHub-Delivery = %q, want the delivery's random GUID %q", h.Get("X-GitHub-Delivery"), first.Deliveries[0].GUID)
		}
		if !strings.HasPrefix(h.Get("User-Agent"), "GitHub-Hookshot/") {
			t.Errorf("User-Agent = %q", h.Get("User-Agent"))
		}
		if err := webhook.Verify([]byte(secret), got.body, h.Get(webhook.SignatureHeader)); err != nil {
			t.Errorf("X-Hub-Signature-256 does not verify with the hook secret: %v", err)
		}
		if err := webhook.Verify([]byte("other"), got.body, h.Get(webhook.SignatureHeader)); err == nil {
			t.Errorf("X-Hub-Signature-256 verifies with another secret")
		}
		m := hmac.New(sha1.New, []byte(secret))
		m.Write(got.body)
		if want := "sha1=" + hex.EncodeToString(m.Sum(nil)); h.Get("X-Hub-Signature") != want {
			t.Errorf("X-Hub-Signature = %q, want %q", h.Get("X-Hub-Signature"), want)
		}
	})

	t.Run("payload-parses", func(t *testing.T) {
		p, err := webhook.ParsePush(got.body)
		if err != nil {
			t.Fatalf("ParsePush: %v", err)
		}
		if p.PushedAt.IsZero() || time.Since(p.PushedAt) > time.Hour {
			t.Errorf("push time %v, want about now (repository.pushed_at)", p.PushedAt)
		}
		want := webhook.Push{Ref: "refs/heads/main", Before: strings.Repeat("0", 40), After: first.After, Created: true, PushedAt: p.PushedAt, Pusher: "octo"}
		if p != want {
			t.Errorf("ParsePush = %+v, want %+v", p, want)
		}
	})

	t.Run("payload-shape", func(t *testing.T) {
		// Every key of a real recorded push event that we send has the
		// same JSON type as in the recording, and the keys consumers
		// read are all present.
		recorded, err := os.ReadFile("../../functions/webhook/testdata/push_branch.json")
		if err != nil {
			t.Fatal(err)
		}
		var rec, ours map[string]any
		if err := json.Unmarshal(recorded, &rec); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got.body, &ours); err != nil {
			t.Fatal(err)
		}
		compareTypes(t, "", rec, ours)
		for _, k := range []string{"ref", "before", "after", "created", "deleted", "forced", "base_ref", "compare",
			"commits", "head_commit", "repository", "pusher", "sender"} {
			if _, ok := ours[k]; !ok {
				t.Errorf("payload lacks %q", k)
			}
		}
		repo := ours["repository"].(map[string]any)
		for _, k := range []string{"id", "name", "full_name", "owner", "html_url", "clone_url", "default_branch", "private", "pushed_at"} {
			if _, ok := repo[k]; !ok {
				t.Errorf("payload lacks repository.%s", k)
			}
		}
		if repo["full_name"] != "octo/app" || repo["clone_url"] != s.URL+"octo/app.git" || repo["default_branch"] != "main" {
			t.Errorf("repository = %v", repo)
		}
		if owner := repo["owner"].(map[string]any); owner["login"] != "octo" {
			t.Errorf("repository.owner = %v", owner)
		}
		head := ours["head_commit"].(map[string]any)
		if head["id"] != first.After || head["message"] != "first" || fmt.Sprint(head["added"]) != "[a.txt]" {
			t.Errorf("head_commit = %v", head)
		}
	})

	t.Run("second-push", func(t *testing.T) {
		second, err := s.Push(ctx, "octo", "app", githubstandin.Commit{Message: "second",
			Files: map[string][]byte{"a.txt": []byte("2\n"), "b.txt": []byte("b\n")}})
		if err != nil {
			t.Fatal(err)
		}
		var ev githubstandin.PushEvent
		if err := json.Unmarshal(rc.last(t).body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Before != first.After || ev.After != second.After || ev.Created || len(ev.Commits) != 1 {
			t.Fatalf("event before=%s after=%s created=%v commits=%d; want %s→%s, 1 commit", ev.Before, ev.After, ev.Created, len(ev.Commits), first.After, second.After)
		}
		c := ev.Commits[0]
		if fmt.Sprint(c.Added, c.Modified, c.Removed) != "[b.txt] [a.txt] []" || c.Author.Username != "octo" {
			t.Errorf("commit = %+v", c)
		}
	})

	t.Run("redeliver", func(t *testing.T) {
		d, err := s.Redeliver(ctx, "octo", "app", first.Deliveries[0].GUID)
		if err != nil {
			t.Fatal(err)
		}
		again := rc.last(t)
		if !d.Redelivery || again.header.Get("X-GitHub-Delivery") != first.Deliveries[0].GUID || !bytes.Equal(again.body, got.body) {
			t.Errorf("redelivery %+v: delivery id %q, same body %v", d, again.header.Get("X-GitHub-Delivery"), bytes.Equal(again.body, got.body))
		}
	})

	t.Run("form", func(t *testing.T) {
		form := newReceiver(t)
		createHook(t, s, "octo", "app", s.Token("octo"), form.URL+"/form", "form", secret)
		if _, err := s.Push(ctx, "octo", "app", githubstandin.Commit{Files: map[string][]byte{"c.txt": []byte("c")}}); err != nil {
			t.Fatal(err)
		}
		r := form.last(t)
		if r.header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			t.Errorf("Content-Type = %q", r.header.Get("Content-Type"))
		}
		if err := webhook.Verify([]byte(secret), r.body, r.header.Get(webhook.SignatureHeader)); err != nil {
			t.Errorf("form body signature: %v", err)
		}
		v, err := url.ParseQuery(string(r.body))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := webhook.ParsePush([]byte(v.Get("payload"))); err != nil {
			t.Errorf("form payload: %v", err)
		}
	})
}

// compareTypes reports keys present in both that differ in JSON type,
// recursively (arrays by their first elements).
func compareTypes(t *testing.T, path string, want, got any) {
	t.Helper()
	if want == nil || got == nil {
		return // null in one of them: GitHub sends null for many optional fields
	}
	wt, gt := fmt.Sprintf("%T", want), fmt.Sprintf("%T", got)
	if wt != gt {
		t.Errorf("%s: recorded payload has %s, ours %s", path, wt, gt)
		return
	}
	switch w := want.(type) {
	case map[string]any:
		g := got.(map[string]any)
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if gv, ok := g[k]; ok {
				compareTypes(t, path+"."+k, w[k], gv)
			}
		}
	case []any:
		g := got.([]any)
		if len(w) > 0 && len(g) > 0 {
			compareTypes(t, path+"[0]", w[0], g[0])
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	if _, _, err := s.CreateRepo("octo", "app", "", false); err != nil {
		t.Fatal(err)
	}
	createHook(t, s, "octo", "app", s.Token("octo"), "http://192.0.2.1:8080/hook", "json", "x")
	res, err := s.Push(context.Background(), "octo", "app", githubstandin.Commit{Files: map[string][]byte{"a": []byte("a")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deliveries) != 1 || res.Deliveries[0].StatusCode != 0 || !strings.Contains(res.Deliveries[0].Error, "loopback") {
		t.Errorf("delivery to a non-loopback address = %+v, want refused", res.Deliveries)
	}
}

// git runs git with no user configuration and, with a token, the
// runner's way of sending it (an Authorization header).
func git(t *testing.T, dir, token string, args ...string) error {
	t.Helper()
	if token != "" {
		auth := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))
		args = append([]string{"-c", "http.extraHeader=" + auth}, args...)
	}
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t.invalid")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func TestGit(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	rc := newReceiver(t)
	ctx := context.Background()
	for _, r := range []struct {
		name    string
		private bool
	}{{"public", false}, {"secret", true}} {
		if _, _, err := s.CreateRepo("octo", r.name, "octo", r.private); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Push(ctx, "octo", r.name, githubstandin.Commit{Files: map[string][]byte{"README": []byte(r.name)}}); err != nil {
			t.Fatal(err)
		}
	}
	admin, stranger := s.Token("octo"), s.Token("mallory")

	for _, c := range []struct {
		repo, token string
		ok          bool
	}{
		{"public", "", true}, {"public", stranger, true},
		{"secret", "", false}, {"secret", stranger, false}, {"secret", admin, true},
		{"missing", admin, false},
	} {
		dir := t.TempDir()
		err := git(t, dir, c.token, "clone", "--quiet", s.URL+"octo/"+c.repo+".git", "w")
		if (err == nil) != c.ok {
			t.Errorf("clone %s with token %q: %v, want success %v", c.repo, c.token, err, c.ok)
		}
	}

	// A push over HTTP by the admin is delivered like GitHub delivers it.
	createHook(t, s, "octo", "public", admin, rc.URL, "json", "k")
	dir := t.TempDir()
	if err := git(t, dir, admin, "clone", "--quiet", s.URL+"octo/public.git", "w"); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "w")
	if err := os.WriteFile(filepath.Join(work, "new.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := git(t, work, "", "add", "-A"); err != nil {
		t.Fatal(err)
	}
	if err := git(t, work, "", "commit", "--quiet", "-m", "by hand"); err != nil {
		t.Fatal(err)
	}
	if err := git(t, work, stranger, "push", "--quiet", "origin", "HEAD:refs/heads/feature/x"); err == nil {
		t.Errorf("a stranger could push")
	}
	if err := git(t, work, admin, "push", "--quiet", "origin", "HEAD:refs/heads/feature/x"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rc.seen:
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery after git push")
	}
	var ev githubstandin.PushEvent
	if err := json.Unmarshal(rc.last(t).body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Ref != "refs/heads/feature/x" || !ev.Created || ev.Pusher.Name != "octo" || len(ev.Commits) != 1 || ev.HeadCommit.Message != "by hand" {
		t.Errorf("event after git push: ref=%s created=%v pusher=%s commits=%d head=%+v", ev.Ref, ev.Created, ev.Pusher.Name, len(ev.Commits), ev.HeadCommit)
	}
	if _, err := webhook.ParsePush(rc.last(t).body); err != nil {
		t.Errorf("ParsePush: %v", err)
	}
}
