package demo_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/kube-git-deploy/kube-git-deploy/functions/app"
	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/repoconfig"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

const testKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// newStack runs the real functions (app.New, as the functions binary
// builds them) on the emulators, with the GitHub stand-in as GitHub, and
// returns a Demo pointed at them and the stand-in.
func newStack(t *testing.T) (*demo.Demo, *githubstandin.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	gh, err := githubstandin.New(githubstandin.Config{ClientID: "cid", ClientSecret: "csecret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := gh.Start(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	project := emulatortest.ProjectID(t)
	ps, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if err := queue.Ensure(ctx, ps, queue.DefaultNames(project), queue.EnsureOptions{}); err != nil {
		t.Fatal(err)
	}
	private := httptest.NewUnstartedServer(nil)
	public := httptest.NewUnstartedServer(nil)
	vars := map[string]string{
		"GOOGLE_CLOUD_PROJECT": project, "KGD_ENCRYPTION_KEY": testKey,
		"PUBLIC_HTTP_HOST":  "http://" + public.Listener.Addr().String(),
		"PRIVATE_HTTP_HOST": "http://" + private.Listener.Addr().String(),
		"GITHUB_CLIENT_ID":  "cid", "GITHUB_CLIENT_SECRET": "csecret",
		"GITHUB_API_URL": gh.APIURL, "GITHUB_WEB_URL": gh.URL,
	}
	cfg, err := app.LoadConfig(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	private.Config.Handler, public.Config.Handler = a.Private, a.Public
	private.Start()
	public.Start()
	t.Cleanup(private.Close)
	t.Cleanup(public.Close)
	d := demo.New(localstack.URLs{PrivateAPI: private.URL + "/", PublicAPI: public.URL + "/", GitHub: gh.URL, GitHubAPI: gh.APIURL})
	return d, gh
}

// TestSteps runs the demo's steps against the real functions: the
// stand-in's OAuth flow, hook creation and signed push deliveries must be
// what PrivateAPI and PublicAPI accept from GitHub.
func TestSteps(t *testing.T) {
	t.Parallel()
	d, gh := newStack(t)
	ctx := context.Background()

	created, err := d.CreateRepo(ctx, "demo", "hello", "demo")
	if err != nil || !created {
		t.Fatalf("CreateRepo = %v, %v", created, err)
	}
	if created, err := d.CreateRepo(ctx, "demo", "hello", "demo"); err != nil || created {
		t.Fatalf("CreateRepo again = %v, %v; want it found", created, err)
	}
	scopes, err := d.SignIn(ctx, "demo")
	if err != nil {
		t.Fatalf("SignIn: %v", err)
	}
	if !strings.Contains(scopes, "admin:repo_hook") {
		t.Errorf("scopes = %q", scopes)
	}
	already, err := d.Track(ctx, "demo", "hello")
	if err != nil || already {
		t.Fatalf("Track = %v, %v", already, err)
	}
	if already, err := d.Track(ctx, "demo", "hello"); err != nil || !already {
		t.Fatalf("Track again = %v, %v; want already tracked", already, err)
	}
	hooks := gh.Hooks("demo", "hello")
	if len(hooks) != 1 || hooks[0].Secret == "" || !strings.HasPrefix(hooks[0].URL, d.URLs.PublicAPI) {
		t.Fatalf("hooks = %+v, want one signed hook to PublicAPI", hooks)
	}

	files := map[string][]byte{"kube-git-deploy.toml": []byte(demo.ConfigFile("localhost:5005", "demo", "hello")), "README.md": []byte("hi\n")}
	first, err := d.Push(ctx, "demo", "hello", "main", "first", files)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if len(first.Deliveries) != 1 || first.Deliveries[0].StatusCode != http.StatusAccepted || first.JobID == "" {
		t.Fatalf("first push deliveries = %+v, job %q; want 202 with a job id", first.Deliveries, first.JobID)
	}
	second, err := d.Push(ctx, "demo", "hello", "main", "second", map[string][]byte{"README.md": []byte("again\n")})
	if err != nil {
		t.Fatal(err)
	}
	if second.Before != first.After || second.JobID == "" || second.JobID == first.JobID {
		t.Errorf("second push = %+v; want a new job after %s", second, first.After)
	}

	// A redelivery is recognised as such: no second job.
	dl, err := gh.Redeliver(ctx, "demo", "hello", first.Deliveries[0].GUID)
	if err != nil {
		t.Fatal(err)
	}
	var ans struct {
		Duplicate bool   `json:"duplicate"`
		JobID     string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(dl.Response), &ans); err != nil || dl.StatusCode != http.StatusOK || !ans.Duplicate || ans.JobID != first.JobID {
		t.Errorf("redelivery answered %d %s; want 200 duplicate of job %s", dl.StatusCode, dl.Response, first.JobID)
	}

	// Untracked, the hook is gone: a push is delivered nowhere.
	if err := d.Untrack(ctx, "demo", "hello"); err != nil {
		t.Fatalf("Untrack: %v", err)
	}
	if n := len(gh.Hooks("demo", "hello")); n != 0 {
		t.Errorf("%d hooks after untrack", n)
	}
	third, err := d.Push(ctx, "demo", "hello", "main", "third", map[string][]byte{"README.md": nil})
	if err != nil {
		t.Fatal(err)
	}
	if len(third.Deliveries) != 0 || third.JobID != "" {
		t.Errorf("push after untrack = %+v; want no delivery", third)
	}
}

func TestSignInAsStranger(t *testing.T) {
	t.Parallel()
	d, _ := newStack(t)
	ctx := context.Background()
	if _, err := d.CreateRepo(ctx, "demo", "hello", "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SignIn(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	// GitHub hides repositories a user cannot administer.
	if _, err := d.Track(ctx, "demo", "hello"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Track by a non-admin = %v, want GitHub's 404", err)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	files, err := demo.Files(context.Background(), "localhost:5005", "demo", "hello", "hi there")
	if err != nil {
		t.Fatalf("Files: %v", err)
	}
	for _, p := range []string{"app/main.go", "app/go.mod", "app/hello", "app/Dockerfile", "app/message.txt",
		"deploy/Chart.yaml", "deploy/values.yaml", "deploy/templates/deployment.yaml", "kube-git-deploy.toml", "README.md"} {
		if _, ok := files[p]; !ok {
			t.Errorf("no %s", p)
		}
	}
	if !bytes.HasPrefix(files["app/Dockerfile"], []byte("#")) || !bytes.Contains(files["app/Dockerfile"], []byte("\nFROM scratch\n")) {
		t.Errorf("Dockerfile:\n%s", files["app/Dockerfile"])
	}
	if string(files["app/message.txt"]) != "hi there\n" {
		t.Errorf("message.txt = %q", files["app/message.txt"])
	}
	// The binary runs FROM scratch: a static Linux executable.
	bin, err := elf.NewFile(bytes.NewReader(files["app/hello"]))
	if err != nil {
		t.Fatalf("app/hello is not ELF: %v", err)
	}
	for _, p := range bin.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("app/hello is dynamically linked (%v)", p.Type)
		}
	}

	// The configuration is valid and names files that exist.
	cfg, err := repoconfig.Parse(files["kube-git-deploy.toml"], repoconfig.Vars{SHA: strings.Repeat("ab", 20), Branch: "main",
		Ref: "refs/heads/main", Owner: "demo", Name: "hello"})
	if err != nil {
		t.Fatalf("kube-git-deploy.toml: %v", err)
	}
	if len(cfg.Units) != 1 || cfg.Units[0].Docker == nil || cfg.Units[0].Helm == nil ||
		cfg.Units[0].Docker.Tag != "localhost:5005/demo/hello:abababa" || cfg.Units[0].Helm.Chart != "deploy" {
		t.Fatalf("units = %+v", cfg.Units)
	}
	fsys := fstest.MapFS{}
	for p, b := range files {
		fsys[p] = &fstest.MapFile{Data: b}
	}
	if err := cfg.CheckFiles(fsys); err != nil {
		t.Errorf("CheckFiles: %v", err)
	}
}
