package localstack_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

var updateCLI = flag.Bool("update-cli", false, "rewrite localstack/testdata/cli/*.golden with what kgd prints")

// buildKGD builds the kgd command line into a directory of the test's own
// (with -race when the test is, as buildBinaries does).
func buildKGD(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kgd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/kube-git-deploy/kube-git-deploy/kgd")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build kgd: %v\n%s", err, out)
	}
	return bin
}

// kgdRun is what one run of kgd printed and its exit code.
type kgdRun struct {
	stdout, stderr string
	code           int
}

func (r kgdRun) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

// kgdEnv is the environment kgd runs with: the stack's URLs, nothing of
// the developer's own kgd settings.
func kgdEnv(apiURL, privateURL string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KGD_") && !strings.HasPrefix(kv, "NO_COLOR=") {
			env = append(env, kv)
		}
	}
	return append(env, "KGD_API_URL="+apiURL, "KGD_PRIVATE_API_URL="+privateURL)
}

// TestCLI runs the real kgd binary against the whole system (startStack):
// the job table, a job's events printed as skaffold dev prints them, JSON
// output, the exit codes, starting jobs and following them, the state,
// the deploy policy, sign-in and tracking.
func TestCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin := buildKGD(t)
	st, d := startStack(t, ctx, t.Output())
	env := kgdEnv(st.URLs.APIHTTP, st.URLs.PrivateAPI)
	kgd := func(t *testing.T, args ...string) kgdRun {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := kgdRun{stdout: stdout.String(), stderr: stderr.String()}
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			r.code = ee.ExitCode()
		case err != nil:
			t.Fatalf("kgd %s: %v", strings.Join(args, " "), err)
		}
		return r
	}
	// mustKGD runs kgd and wants exit code want.
	mustKGD := func(t *testing.T, want int, args ...string) kgdRun {
		t.Helper()
		r := kgd(t, args...)
		if r.code != want {
			t.Fatalf("kgd %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, want, r)
		}
		return r
	}

	const owner, repo, full = "demo", "hello", "demo/hello"
	push := func(t *testing.T, message string, edit func(map[string][]byte)) *demo.Pushed {
		t.Helper()
		files, err := demo.Files(ctx, st.URLs.Registry, owner, repo, message)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(files)
		}
		p, err := d.Push(ctx, owner, repo, "main", message, files)
		if err != nil || p.JobID == "" {
			t.Fatalf("push %q: %v %+v", message, err, p)
		}
		return p
	}
	// waitRecord waits until job id's record is final (right after its
	// iteration's last event) and returns it.
	waitRecord := func(t *testing.T, id string) *jobspb.Job {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 4*time.Minute)
		defer wcancel()
		if _, err := d.WaitForJob(wctx, full, id, nil); err != nil {
			t.Fatalf("events of job %s: %v", id, err)
		}
		for {
			var j jobspb.Job
			req, _ := http.NewRequestWithContext(wctx, http.MethodGet, st.URLs.APIHTTP+"kgd/v1/repositories/demo/hello/jobs/"+id, nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && protojson.Unmarshal(raw, &j) == nil {
					switch store.JobStatus(j.GetStatus()) {
					case store.StatusSucceeded, store.StatusFailed, store.StatusCanceled:
						return &j
					}
				}
			}
			select {
			case <-wctx.Done():
				t.Fatalf("job %s has no final record: %v (last %v)", id, wctx.Err(), &j)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	good := push(t, "first", nil)
	goodJob := waitRecord(t, good.JobID)
	if goodJob.GetStatus() != string(store.StatusSucceeded) {
		t.Fatalf("the first push's job: %v", goodJob)
	}
	broken := push(t, "broken", func(files map[string][]byte) {
		files["kube-git-deploy.toml"] = []byte("[hello]\n[[docker]]\ndirectory = \"./app\n")
	})
	brokenJob := waitRecord(t, broken.JobID)
	if brokenJob.GetStatus() != string(store.StatusFailed) {
		t.Fatalf("the broken push's job: %v", brokenJob)
	}

	norm := &normaliser{}
	norm.add(good.After, "<sha-first>")
	norm.add(broken.After, "<sha-broken>")
	norm.add(good.After[:7], "<sha7-first>")
	norm.add(broken.After[:7], "<sha7-broken>")
	norm.add(good.JobID, "<job-first>")
	norm.add(broken.JobID, "<job-broken>")
	norm.add(st.URLs.Registry, "<registry>")
	norm.add(store.DefaultNamespace(owner, repo), "<namespace>")

	t.Run("jobs", func(t *testing.T) {
		r := mustKGD(t, 0, "jobs", "-r", full)
		checkGolden(t, "jobs.golden", norm.apply(r.stdout))
	})
	t.Run("events", func(t *testing.T) {
		r := mustKGD(t, 0, "events", "-r", full, "--job", good.JobID)
		checkGolden(t, "events.golden", norm.apply(dropBuildOutput(r.stdout)))
		// Without --job: the latest job, the broken one.
		r = mustKGD(t, 1, "events", "-r", full)
		if !strings.Contains(r.stdout, "Job "+broken.JobID+" of demo/hello failed") {
			t.Errorf("kgd events of the latest job:\n%s", r)
		}
	})
	t.Run("events-failed", func(t *testing.T) {
		r := mustKGD(t, 1, "events", "-r", full, "--job", broken.JobID)
		checkGolden(t, "events-failed.golden", norm.apply(r.stdout))
		if r.stderr != "" {
			t.Errorf("a failed job's events wrote to stderr:\n%s", r)
		}
	})
	t.Run("json", func(t *testing.T) {
		var list jobspb.ListJobsResponse
		r := mustKGD(t, 0, "jobs", "-r", full, "-o", "json")
		if err := protojson.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.GetJobs()) != 2 || list.GetJobs()[0].GetId() != broken.JobID {
			t.Errorf("kgd jobs -o json (%v):\n%s", err, r)
		}
		var job jobspb.Job
		r = mustKGD(t, 0, "job", good.JobID, "-r", full, "-o", "json")
		if err := protojson.Unmarshal([]byte(r.stdout), &job); err != nil || job.GetCommit() != good.After || job.GetImages()["hello"] == "" {
			t.Errorf("kgd job -o json (%v):\n%s", err, r)
		}
		var repos jobspb.ListRepositoriesResponse
		r = mustKGD(t, 0, "repos", "-o", "json")
		if err := protojson.Unmarshal([]byte(r.stdout), &repos); err != nil || len(repos.GetRepositories()) != 1 {
			t.Errorf("kgd repos -o json (%v):\n%s", err, r)
		}
		var state v2pb.State
		r = mustKGD(t, 0, "state", "-r", full, "-o", "json")
		if err := protojson.Unmarshal([]byte(r.stdout), &state); err != nil || state.GetMetadata().GetRunID() != broken.JobID {
			t.Errorf("kgd state -o json (%v):\n%s", err, r)
		}
		// Events: one proto.v2.Event per line, the job's only.
		r = mustKGD(t, 0, "events", "-r", full, "--job", good.JobID, "-o", "json")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		var last *v2pb.Event
		for i, l := range lines {
			e := &v2pb.Event{}
			if err := protojson.Unmarshal([]byte(l), e); err != nil {
				t.Fatalf("kgd events -o json line %d: %v\n%s", i+1, err, l)
			}
			if i == 0 && e.GetMetaEvent().GetMetadata().GetRunID() != good.JobID {
				t.Errorf("first event is not the job's MetaEvent: %s", l)
			}
			last = e
		}
		if te := last.GetTaskEvent(); te.GetTask() != "DevLoop" || te.GetStatus() != "Succeeded" {
			t.Errorf("last event is not the DevLoop's end: %v", last)
		}
		// A failed job's events in JSON: exit 1, its final line on stderr.
		r = mustKGD(t, 1, "events", "-r", full, "--job", broken.JobID, "-o", "json")
		if !strings.HasPrefix(r.stderr, "kgd: Job "+broken.JobID+" of demo/hello failed") {
			t.Errorf("kgd events -o json of a failed job:\n%s", r)
		}
	})
	t.Run("exit-codes", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			args   []string
			code   int
			stderr string
		}{
			{"job-not-found", []string{"job", "nope", "-r", full}, 3, "kgd: "},
			{"repository-not-tracked", []string{"jobs", "-r", "demo/nope"}, 3, "kgd: "},
			{"unknown-command", []string{"frobnicate"}, 2, `kgd: unknown command "frobnicate"`},
			{"bad-flag-value", []string{"jobs", "-r", full, "--limit", "many"}, 2, "kgd: invalid argument"},
			{"no-repository", []string{"jobs"}, 2, "kgd: no repository: pass -r OWNER/NAME or set KGD_REPOSITORY"},
			{"bad-repository", []string{"jobs", "-r", "nope"}, 2, "kgd: \"nope\" is not a repository"},
			{"missing-argument", []string{"job", "-r", full}, 2, "kgd: kgd job takes one job id"},
			{"logs-of-failed-job", []string{"logs", broken.JobID, "-r", full}, 1, ""},
			{"logs-of-succeeded-job", []string{"logs", good.JobID, "-r", full}, 0, ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := mustKGD(t, tt.code, tt.args...)
				if !strings.HasPrefix(r.stderr, tt.stderr) || strings.Count(r.stderr, "\n") > 1 {
					t.Errorf("stderr is not one line starting %q:\n%s", tt.stderr, r)
				}
			})
		}
	})
	t.Run("logs", func(t *testing.T) {
		r := mustKGD(t, 0, "logs", good.JobID, "-r", full)
		for _, want := range []string{"Job " + good.JobID + " of demo/hello", "Build " + st.URLs.Registry + "/demo/hello succeeded", "Job succeeded"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("kgd logs lacks %q:\n%s", want, r)
			}
		}
	})
	t.Run("repos", func(t *testing.T) {
		r := mustKGD(t, 0, "repos")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "REPOSITORY") || !strings.HasPrefix(lines[1], "demo/hello") ||
			!strings.Contains(lines[1], broken.JobID) || !strings.Contains(lines[1], "failed") {
			t.Errorf("kgd repos:\n%s", r)
		}
	})
	t.Run("state", func(t *testing.T) {
		r := mustKGD(t, 0, "state", "-r", full)
		for _, want := range []string{"Job", broken.JobID, "Commit", broken.After, "Auto", "build on, deploy on"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("kgd state lacks %q:\n%s", want, r)
			}
		}
	})
	t.Run("rerun", func(t *testing.T) {
		r := mustKGD(t, 0, "rerun", good.JobID, "-r", full, "--wait")
		m := regexp.MustCompile(`(?m)^Started job (\S+) of demo/hello: rerun of ` + regexp.QuoteMeta(good.JobID) + `, ` + good.After[:7] + ` on main`).FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("kgd rerun --wait:\n%s", r)
		}
		if !regexp.MustCompile(`(?m)^Job `+regexp.QuoteMeta(m[1])+` of demo/hello succeeded in \S+$`).MatchString(r.stdout) ||
			!strings.Contains(r.stdout, "Build ["+st.URLs.Registry+"/demo/hello] succeeded") ||
			!strings.Contains(r.stdout, "Waiting for deployments to stabilize...") {
			t.Errorf("kgd rerun --wait did not follow the job to its end:\n%s", r)
		}
		j := waitRecord(t, m[1])
		if j.GetTrigger() != "rerun" || j.GetSourceJob() != good.JobID || j.GetStatus() != string(store.StatusSucceeded) {
			t.Errorf("rerun job %v", j)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		r := mustKGD(t, 0, "rollback", good.JobID, "-r", full, "-w", "-o", "json")
		var j jobspb.Job
		if err := protojson.Unmarshal([]byte(r.stdout), &j); err != nil || j.GetTrigger() != "rollback" ||
			j.GetStatus() != string(store.StatusSucceeded) || j.GetImages()["hello"] != goodJob.GetImages()["hello"] {
			t.Errorf("kgd rollback -w -o json (%v):\n%s", err, r)
		}
	})
	t.Run("deploy", func(t *testing.T) {
		r := mustKGD(t, 0, "deploy", "-r", full, "--branch", "main", "--commit", good.After[:7])
		if !strings.Contains(r.stdout, "Started job ") || !strings.Contains(r.stdout, "kgd events -f -r demo/hello --job ") {
			t.Fatalf("kgd deploy:\n%s", r)
		}
		id := strings.Fields(strings.TrimPrefix(r.stdout, "Started job "))[0]
		r = mustKGD(t, 0, "events", "-f", "-r", full, "--job", id)
		if !strings.Contains(r.stdout, "Job "+id+" of demo/hello succeeded in ") {
			t.Errorf("kgd events -f of the deploy:\n%s", r)
		}
		// Its record, which follows its last event, is final before the
		// next subtest looks for a running job.
		if j := waitRecord(t, id); j.GetTrigger() != "deploy" || j.GetCommit() != good.After {
			t.Errorf("deploy job %v", j)
		}
	})
	t.Run("follow-next", func(t *testing.T) {
		// kgd events -f with no job running waits for the next to start
		// and follows it to its end.
		cmd := exec.CommandContext(ctx, bin, "events", "-f", "-r", full)
		cmd.Env = env
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		if !sc.Scan() || !strings.HasPrefix(sc.Text(), "Waiting for the next job of demo/hello") {
			t.Fatalf("kgd events -f: %q %v", sc.Text(), sc.Err())
		}
		go io.Copy(io.Discard, stderr)
		p := push(t, "followed", nil)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("kgd events -f: %v\n%s", err, stdout.String())
		}
		if !strings.Contains(stdout.String(), "Job "+p.JobID+" of demo/hello succeeded in ") {
			t.Errorf("kgd events -f:\n%s", stdout.String())
		}
	})
	t.Run("auto", func(t *testing.T) {
		for _, tt := range []struct{ args, want string }{
			{"auto deploy off", "Automatic deploys of demo/hello are now off"},
			{"auto deploy off", "Automatic deploys of demo/hello were already off"},
			{"auto deploy on", "Automatic deploys of demo/hello are now on"},
		} {
			r := mustKGD(t, 0, append(strings.Fields(tt.args), "-r", full)...)
			if strings.TrimSpace(r.stdout) != tt.want {
				t.Errorf("kgd %s: %q, want %q", tt.args, r.stdout, tt.want)
			}
		}
		r := mustKGD(t, 0, "execute", "build", "-r", full)
		if strings.TrimSpace(r.stdout) != "Nothing was pending for demo/hello" {
			t.Errorf("kgd execute build with nothing pending:\n%s", r)
		}
	})
	t.Run("policy", func(t *testing.T) {
		ns := store.DefaultNamespace(owner, repo)
		r := mustKGD(t, 0, "policy", full)
		if !regexp.MustCompile(`(?m)^Namespaces +` + regexp.QuoteMeta(ns) + `$`).MatchString(r.stdout) {
			t.Errorf("kgd policy:\n%s", r)
		}
		r = mustKGD(t, 0, "policy", full, "--namespace", ns, "--create-namespaces", "--operator", "ops@example.com")
		if !regexp.MustCompile(`(?m)^Operators +ops@example.com$`).MatchString(r.stdout) {
			t.Errorf("kgd policy --operator:\n%s", r)
		}
		var tracked struct {
			FullName string `json:"full_name"`
			Policy   struct {
				Namespaces       []string `json:"namespaces"`
				CreateNamespaces bool     `json:"create_namespaces"`
				Operators        []string `json:"operators"`
			} `json:"policy"`
		}
		r = mustKGD(t, 0, "policy", full, "-o", "json")
		if err := json.Unmarshal([]byte(r.stdout), &tracked); err != nil || tracked.FullName != full || !tracked.Policy.CreateNamespaces ||
			len(tracked.Policy.Operators) != 1 || len(tracked.Policy.Namespaces) != 1 {
			t.Errorf("kgd policy -o json (%v):\n%s", err, r)
		}
		mustKGD(t, 2, "policy", full, "--set", "-", "--adopt")
	})
	t.Run("login", func(t *testing.T) {
		// Not on a terminal kgd prints the URL and returns; a browser (the
		// demo's client, which the GitHub stand-in signs in at once)
		// completes it.
		r := mustKGD(t, 0, "login")
		u := regexp.MustCompile(`(?m)^  (http\S+)$`).FindStringSubmatch(r.stdout)
		if u == nil {
			t.Fatalf("kgd login printed no URL:\n%s", r)
		}
		resp, err := d.Client.Get(u[1])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var cb struct {
			OK    bool   `json:"ok"`
			Login string `json:"login"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&cb); err != nil || !cb.OK || cb.Login != "demo" {
			t.Errorf("the callback after kgd login's URL: %v %+v", err, cb)
		}
	})
	t.Run("untrack-track", func(t *testing.T) {
		r := mustKGD(t, 0, "untrack", full)
		if strings.TrimSpace(r.stdout) != "Stopped tracking demo/hello (its job history is kept)" {
			t.Errorf("kgd untrack:\n%s", r)
		}
		mustKGD(t, 3, "jobs", "-r", full)
		r = mustKGD(t, 0, "track", full)
		if !strings.HasPrefix(r.stdout, "Tracking demo/hello") {
			t.Errorf("kgd track:\n%s", r)
		}
		r = mustKGD(t, 0, "track", full)
		if strings.TrimSpace(r.stdout) != "demo/hello is already tracked" {
			t.Errorf("kgd track of a tracked repository:\n%s", r)
		}
	})
}

// normaliser replaces what differs from run to run (ids, commits,
// digests, ports, times) with placeholders, so output compares with a
// golden file.
type normaliser struct{ pairs []string }

func (n *normaliser) add(old, placeholder string) { n.pairs = append(n.pairs, old, placeholder) }

var (
	digestRE = regexp.MustCompile(`sha256:[0-9a-f]{64}`)
	// durationRE matches kgd's ages and durations: 850ms is never
	// printed; 3.2s, 42s, 2m05s, 1h02m, 12m, 5h, 3d are.
	durationRE = regexp.MustCompile(`\b(\d+\.\d+s|\d+m\d\ds|\d+h\d\dm|\d+[smhd])\b`)
	spacesRE   = regexp.MustCompile(` {2,}`)
)

// apply normalises s; runs of spaces become two, as column widths depend
// on the replaced values.
func (n *normaliser) apply(s string) string {
	s = strings.NewReplacer(n.pairs...).Replace(s)
	s = digestRE.ReplaceAllString(s, "sha256:<digest>")
	s = durationRE.ReplaceAllString(s, "<t>")
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.TrimRight(spacesRE.ReplaceAllString(l, "  "), " "))
	}
	return strings.Join(out, "\n")
}

// dropBuildOutput removes the builder's own output from kgd events' text
// (its lines depend on the builder and its cache), keeping kgd's lines
// around it and the runner's "Built <image>" line; and the rollout's
// progress lines, whose number varies.
func dropBuildOutput(s string) string {
	var out []string
	building := false
	for _, l := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(l, "Building ["):
			building = true
		case strings.HasPrefix(l, "Build ["):
			building = false
		case building && !strings.HasPrefix(l, "Built "):
			continue
		case strings.HasPrefix(l, " - ") && !strings.HasSuffix(l, " is ready."):
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// checkGolden compares got with testdata/cli/name, or rewrites the file
// with -update-cli.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "cli", name)
	if *updateCLI {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestCLI -update-cli to write it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}
