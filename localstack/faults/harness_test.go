//go:build linux

package faults_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// Deadlines of the waits. They are generous on purpose: on a busy
// two-core machine running every package's tests at once, a job that
// takes ten seconds alone can take a minute. No assertion depends on
// them; they only bound a hang.
const (
	scenarioTimeout = 12 * time.Minute
	jobTimeout      = 6 * time.Minute // a job, from push to its end
	stepTimeout     = 3 * time.Minute // one step of a job, a daemon's start
	poll            = 250 * time.Millisecond
)

// lease is the runners' claim lease in every scenario (KGD_LEASE): short,
// so that a job whose runner died is taken over within seconds (the
// sweep runs every lease), and long enough to be renewed in time (every
// third of it) on a busy machine.
const lease = 6 * time.Second

// baseEnv is the binaries' environment in every scenario, over the
// stack's.
var baseEnv = []string{
	"KGD_LEASE=" + lease.String(),
	// Only the sweeps of the runner put lost jobs back: no redelivery of
	// failed webhook deliveries through GitHub's API.
	"KGD_REDELIVER_INTERVAL=0",
	// A data race in a real binary stops it, and with it the scenario.
	"GORACE=halt_on_error=1",
}

// options configures a scenario's stack.
type options struct {
	// kubeconfig is the cluster to deploy to; "" is the shared one.
	kubeconfig string
	// firestoreHost and pubSubHost are the emulators; "" the shared ones.
	firestoreHost, pubSubHost string
	// dockerHost is the Docker Engine of the runners; "" the one the
	// scenarios share (env.dockerHost).
	dockerHost string
	// env is more environment for the binaries, over baseEnv.
	env []string
}

// scenario is one fault scenario's running stack with the repository
// owner/name created, signed in and tracked.
type scenario struct {
	t     *testing.T
	ctx   context.Context
	env   *env
	st    *localstack.Stack
	d     *demo.Demo
	store *store.Store
	kube  kubernetes.Interface

	owner, name, full string
	namespace         string
}

// start starts a stack for the scenario, with a repository named after
// it: its namespace (and image repository) is its own.
func start(t *testing.T, e *env, name string, o options) *scenario {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	t.Cleanup(cancel)
	cfg, err := localstack.LoadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ports = localstack.Ports{}
	cfg.Project = emulatortest.ProjectID(t)
	cfg.FirestoreHost = cmp.Or(o.firestoreHost, emulatortest.FirestoreHost(t))
	cfg.PubSubHost = cmp.Or(o.pubSubHost, emulatortest.PubSubHost(t))
	cfg.BinDir = e.binDir
	cfg.LogDir = t.TempDir()
	cfg.Kubeconfig = o.kubeconfig
	if cfg.Kubeconfig == "" {
		cfg.Kubeconfig = e.cluster(t).Kubeconfig
	}
	dockerHost := cmp.Or(o.dockerHost, e.dockerHost(t))
	cfg.Env = append(slices.Clone(baseEnv), "DOCKER_HOST="+dockerHost)
	cfg.Env = append(cfg.Env, o.env...)
	st, err := localstack.Start(ctx, cfg, t.Output())
	if err != nil {
		t.Fatalf("start the stack: %v", err)
	}
	t.Cleanup(func() { st.Stop() })
	if st.DockerWarning != "" {
		t.Fatalf("no Docker Engine: %s", st.DockerWarning)
	}

	s := &scenario{t: t, ctx: ctx, env: e, st: st, d: demo.New(st.URLs), owner: "faults", name: name}
	s.full = s.owner + "/" + s.name
	s.namespace = store.DefaultNamespace(s.owner, s.name)
	s.store = newStore(t, ctx, cfg.Project, cfg.FirestoreHost, cfg.EncryptionKey)
	rest, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if s.kube, err = kubernetes.NewForConfig(rest); err != nil {
		t.Fatal(err)
	}

	if _, err := s.d.CreateRepo(ctx, s.owner, s.name, "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.d.SignIn(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.d.Track(ctx, s.owner, s.name); err != nil {
		t.Fatal(err)
	}
	return s
}

// newStore returns a store on the Firestore emulator at host, for reading
// what the stack recorded. Its own connection (rather than
// FIRESTORE_EMULATOR_HOST) lets a scenario use an emulator of its own.
func newStore(t *testing.T, ctx context.Context, project, host, key string) *store.Store {
	t.Helper()
	conn, err := grpc.NewClient(host, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(emulatorOwner{}))
	if err != nil {
		t.Fatal(err)
	}
	fs, err := firestore.NewClient(ctx, project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	k, err := secret.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	box, err := secret.NewBox(k)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(fs, box)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// emulatorOwner authenticates as the Firestore emulator's administrator,
// as the client library does with FIRESTORE_EMULATOR_HOST.
type emulatorOwner struct{}

func (emulatorOwner) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}

func (emulatorOwner) RequireTransportSecurity() bool { return false }

// token returns a random lowercase token, for gates and unique content.
func token() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// commit describes what a push changes in the scenario's repository: the
// app (an image FROM scratch) and its chart (a Deployment, and a hook Job
// when asked).
type commit struct {
	// branch pushed to; default main.
	branch string
	// gate, when set, makes the image build wait in the middle until the
	// scenario opens the gate of that token (see gates).
	gate string
	// values is the push's values file (deploy/push.yaml), over the
	// chart's values.yaml.
	values string
	// release is the Helm release (a template of kube-git-deploy.toml);
	// default "app".
	release string
	// timeout is the unit's Helm timeout; default 5m.
	timeout string
	// atomic rolls back a failed upgrade.
	atomic bool
}

const chartYAML = `apiVersion: v2
name: app
version: 0.1.0
`

// valuesYAML are the chart's defaults. hook, when set, is a pre-install
// (and pre-upgrade, with hookOnUpgrade) hook Job whose pod can only run
// on a node labelled hook.label=open: it never completes unless a
// scenario labels the node, so Helm waits in it, with the release
// pending-install or pending-upgrade.
const valuesYAML = `image:
  repository: app
  tag: latest
  digest: ""
replicas: 1
nodeSelector: {}
hook:
  label: ""
  onUpgrade: false
`

const deploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      {{- with .Values.nodeSelector }}
      nodeSelector: {{ toJson . }}
      {{- end }}
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}{{ with .Values.image.digest }}@{{ . }}{{ end }}"
`

const hookYAML = `{{- if .Values.hook.label }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-hook
  annotations:
    helm.sh/hook: pre-install{{ if .Values.hook.onUpgrade }},pre-upgrade{{ end }}
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector:
        {{ .Values.hook.label }}: open
      containers:
        - name: hook
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
{{- end }}
`

// gateLabel is the node label that opens the hook of token.
func gateLabel(token string) string { return "faults.kube-git-deploy.dev/gate-" + token }

// files returns the repository's files for c.
func (s *scenario) files(c commit) map[string][]byte {
	dockerfile := "FROM scratch\nCOPY message.txt /message.txt\n"
	files := map[string][]byte{
		"app/message.txt":                  []byte("push " + token() + "\n"),
		"deploy/Chart.yaml":                []byte(chartYAML),
		"deploy/values.yaml":               []byte(valuesYAML),
		"deploy/templates/deployment.yaml": []byte(deploymentYAML),
		"deploy/templates/hook.yaml":       []byte(hookYAML),
		"deploy/push.yaml":                 []byte(c.values + "\n"),
	}
	if c.gate != "" {
		dockerfile += "ADD " + s.env.gates.ref(c.gate) + " /gate\n"
	}
	files["app/Dockerfile"] = []byte(dockerfile)
	toml := fmt.Sprintf(`[app]
[app.docker]
directory = "app"
tag = "%s/%s/%s:{{ .git.shortSha }}"
[app.helm]
chart = "deploy"
release = "%s"
values = ["deploy/push.yaml"]
timeout = "%s"
atomic = %t
`, s.st.URLs.Registry, s.owner, s.name, cmp.Or(c.release, "app"), cmp.Or(c.timeout, "5m"), c.atomic)
	files["kube-git-deploy.toml"] = []byte(toml)
	return files
}

// push commits c and has the stand-in deliver the push to PublicAPI; the
// result's JobID is empty if PublicAPI did not answer with a job.
func (s *scenario) push(c commit) *demo.Pushed {
	s.t.Helper()
	p, err := s.d.Push(s.ctx, s.owner, s.name, cmp.Or(c.branch, "main"), "push "+token(), s.files(c))
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

// pushJob is push for a push that must become a job.
func (s *scenario) pushJob(c commit) *demo.Pushed {
	s.t.Helper()
	p := s.push(c)
	if p.JobID == "" {
		s.t.Fatalf("push %.7s: no job; deliveries %+v", p.After, p.Deliveries)
	}
	return p
}

// waitFor polls cond every poll until it returns true, fails or timeout
// passes; errors of cond are only reported at the end if it never held
// (the service it asks may be the one that is down).
func (s *scenario) waitFor(what string, timeout time.Duration, cond func(context.Context) (bool, error)) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("%s: not within %s (last error: %v)", what, timeout, last)
		case <-tick.C:
		}
	}
}

// job waits until job id satisfies cond and returns it. If it never
// does, the failure shows the job's record and last log lines.
func (s *scenario) job(id, what string, timeout time.Duration, cond func(*store.Job) bool) *store.Job {
	s.t.Helper()
	var j *store.Job
	ok := false
	defer func() {
		if !ok {
			s.dumpJob(id, j)
		}
	}()
	s.waitFor("job "+id+" "+what, timeout, func(ctx context.Context) (bool, error) {
		got, err := s.store.Job(ctx, id)
		if err != nil {
			return false, err
		}
		j = got
		return cond(got), nil
	})
	ok = true
	return j
}

// dumpJob logs job id's record (as last read) and the last lines of its
// v2 log, to explain a job that did not get where a scenario waited.
func (s *scenario) dumpJob(id string, j *store.Job) {
	if j != nil {
		s.t.Logf("job %s: status %s, attempts %d, lease %q until %s, error %q", id, j.Status, j.Attempts, j.LeaseOwner,
			j.LeaseExpires.Format(time.RFC3339), j.Error)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := s.store.JobEvents(ctx, id)
	if err != nil {
		s.t.Logf("job %s: events: %v", id, err)
		return
	}
	var lines []string
	for _, e := range h.V2 {
		if l := e.GetSkaffoldLogEvent(); l != nil {
			lines = append(lines, l.GetTaskId()+" "+strings.TrimSpace(l.GetMessage()))
		} else if te := e.GetTaskEvent(); te != nil {
			lines = append(lines, te.GetId()+" "+te.GetStatus())
		}
	}
	s.t.Logf("job %s: last of %d events:\n%s", id, len(h.V2), strings.Join(lines[max(0, len(lines)-25):], "\n"))
}

// finished waits until job id has ended and returns it.
func (s *scenario) finished(id string) *store.Job {
	s.t.Helper()
	return s.job(id, "ends", jobTimeout, func(j *store.Job) bool { return j.Status.Finished() })
}

// running waits until job id is claimed and running and returns it.
func (s *scenario) running(id string) *store.Job {
	s.t.Helper()
	return s.job(id, "runs", jobTimeout, func(j *store.Job) bool { return j.Status == store.StatusRunning && j.LeaseOwner != "" })
}

// jobOf waits until the stack recorded a job for commit sha (also one
// PublicAPI did not answer with, as during an outage) and returns it.
func (s *scenario) jobOf(sha string) *store.Job {
	s.t.Helper()
	var j *store.Job
	s.waitFor("a job for "+sha[:7], stepTimeout, func(ctx context.Context) (bool, error) {
		jobs, err := s.store.Jobs(ctx, s.owner, s.name, 50)
		if err != nil {
			return false, err
		}
		for _, o := range jobs {
			if o.SHA == sha && o.DeployOf == "" {
				j = &o
				return true, nil
			}
		}
		return false, nil
	})
	return j
}

// iteration follows job id's events on the API until its iteration ends.
func (s *scenario) iteration(id string) *demo.Iteration {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, jobTimeout)
	defer cancel()
	it, err := s.d.WaitForJob(ctx, s.full, id, nil)
	if err != nil {
		s.t.Fatalf("events of job %s: %v", id, err)
	}
	return it
}

// waitEvent follows the API's event stream until an event of job id
// matches.
func (s *scenario) waitEvent(id, what string, match func(*v1pb.LogEntry) bool) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, jobTimeout)
	defer cancel()
	in, found := false, false
	err := s.d.Events(ctx, s.full, func(e *v1pb.LogEntry) bool {
		if meta := e.GetEvent().GetMetaEvent(); meta != nil {
			in = meta.GetMetadata().GetAdditional()[event.KeyJobID] == id
			return true
		}
		found = in && match(e)
		return !found
	})
	if !found {
		s.t.Fatalf("job %s: no event %s: %v", id, what, err)
	}
}

// waitBuilding waits for job id's Build "In Progress" event.
func (s *scenario) waitBuilding(id string) {
	s.t.Helper()
	s.waitEvent(id, `Build "In Progress"`, func(e *v1pb.LogEntry) bool {
		return e.GetEvent().GetBuildEvent().GetStatus() == event.InProgress
	})
}

// waitLog follows the v2 events until a log line of task (e.g.
// event.TaskDeploy) of iteration n starts with prefix.
func (s *scenario) waitLog(n int, task, prefix string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, jobTimeout)
	defer cancel()
	id := task + "-" + strconv.Itoa(n)
	found := false
	err := s.d.EventsV2(ctx, s.full, func(e *v2pb.Event) bool {
		l := e.GetSkaffoldLogEvent()
		found = l.GetTaskId() == id && strings.HasPrefix(l.GetMessage(), prefix)
		return !found
	})
	if !found {
		s.t.Fatalf("no %s log of iteration %d starting %q: %v", task, n, prefix, err)
	}
}

// atGate waits until job's build (its n-th attempt) waits at gate token:
// the build is really under way.
func (s *scenario) atGate(job, token string, n int) {
	s.t.Helper()
	s.waitFor(fmt.Sprintf("build %d of job %s to reach gate %s", n, job, token), jobTimeout, func(ctx context.Context) (bool, error) {
		if s.env.gates.reached(token, n) {
			return true, nil
		}
		// A job that ends first fails the wait at once, with its reason.
		if j, err := s.store.Job(ctx, job); err == nil && j.Status.Finished() {
			s.t.Fatalf("job %s ended %s (%s) before its build reached gate %s", job, j.Status, j.Error, token)
		}
		return false, nil
	})
}

// gateIdle waits until no build waits at gate token: an abandoned build
// was stopped by the engine.
func (s *scenario) gateIdle(token string) {
	s.t.Helper()
	s.waitFor("the build at gate "+token+" to be dropped", stepTimeout, func(context.Context) (bool, error) {
		return s.env.gates.idle(token), nil
	})
}

// openHookGate labels every node so that the hook Jobs of token run.
func (s *scenario) openHookGate(token string) {
	s.t.Helper()
	nodes, err := s.kube.CoreV1().Nodes().List(s.ctx, metav1.ListOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, n := range nodes.Items {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"open"}}}`, gateLabel(token))
		if _, err := s.kube.CoreV1().Nodes().Patch(s.ctx, n.Name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
			s.t.Fatal(err)
		}
	}
}

// holder returns the runner process holding job id's lease.
func (s *scenario) holder(id string) *localstack.Process {
	s.t.Helper()
	j := s.running(id)
	_, pid, _ := strings.Cut(j.LeaseOwner, "/")
	for _, name := range s.runners() {
		if p := s.st.Process(name); p != nil && strconv.Itoa(p.Pid()) == pid {
			return p
		}
	}
	s.t.Fatalf("job %s is leased by %q, none of the stack's runners", id, j.LeaseOwner)
	return nil
}

// ownerPid returns the process id in a lease owner ("host/pid").
func ownerPid(owner string) string {
	_, pid, _ := strings.Cut(owner, "/")
	return pid
}

func itoa(n int) string { return strconv.Itoa(n) }

// with returns the scenario for subtest t.
func (s *scenario) with(t *testing.T) *scenario {
	c := *s
	c.t = t
	return &c
}

// runners lists the names of the stack's runner processes.
func (s *scenario) runners() []string {
	names := []string{"runner"}
	for i := 2; i < 10; i++ {
		names = append(names, "runner-"+strconv.Itoa(i))
	}
	return names
}

// revision is one Helm revision of a release, from its storage secret.
type revision struct {
	Version int
	Status  string
}

func (r revision) String() string { return fmt.Sprintf("%d:%s", r.Version, r.Status) }

// history returns release's revisions in order, read from Helm's secrets.
func (s *scenario) history(ctx context.Context, release string) ([]revision, error) {
	secrets, err := s.kube.CoreV1().Secrets(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + release})
	if err != nil {
		return nil, err
	}
	var revs []revision
	for _, sec := range secrets.Items {
		v, err := strconv.Atoi(sec.Labels["version"])
		if err != nil {
			return nil, fmt.Errorf("secret %s: version %q", sec.Name, sec.Labels["version"])
		}
		revs = append(revs, revision{Version: v, Status: sec.Labels["status"]})
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i].Version < revs[j].Version })
	return revs, nil
}

// mustHistory is history for a cluster that answers.
func (s *scenario) mustHistory(release string) []revision {
	s.t.Helper()
	revs, err := s.history(s.ctx, release)
	if err != nil {
		s.t.Fatal(err)
	}
	return revs
}

// waitRelease waits until release's last revision has status.
func (s *scenario) waitRelease(release, status string) []revision {
	s.t.Helper()
	var revs []revision
	s.waitFor("release "+release+" "+status, jobTimeout, func(ctx context.Context) (bool, error) {
		var err error
		revs, err = s.history(ctx, release)
		return err == nil && len(revs) > 0 && revs[len(revs)-1].Status == status, err
	})
	return revs
}

// image returns the image the Deployment of release runs.
func (s *scenario) image(release string) string {
	s.t.Helper()
	dep, err := s.kube.AppsV1().Deployments(s.namespace).Get(s.ctx, release, metav1.GetOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return dep.Spec.Template.Spec.Containers[0].Image
}

// builtImage returns the image job id built, as its iteration's build
// event reports it ("tag@digest").
func builtImage(it *demo.Iteration) string {
	for _, e := range it.Events {
		if b := e.GetEvent().GetBuildEvent(); b != nil && b.GetStatus() == event.Complete {
			if _, ref, ok := strings.Cut(e.GetEntry(), "("); ok {
				return strings.TrimSuffix(ref, ")")
			}
		}
	}
	return ""
}

// succeeded checks that job id succeeded and returns its iteration.
func (s *scenario) succeeded(id string) *demo.Iteration {
	s.t.Helper()
	j := s.finished(id)
	it := s.iteration(id)
	if j.Status != store.StatusSucceeded || it.Status != event.Succeeded {
		s.t.Fatalf("job %s is %s (%s), %s; want succeeded", id, j.Status, j.Error, it)
	}
	return it
}

// deploys counts how often job id deployed: the Succeeded events of its
// v2 Deploy task (task ids carry the job's iteration, so other jobs'
// events interleaved in the stream do not count).
func (s *scenario) deploys(id string) int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, jobTimeout)
	defer cancel()
	evs, err := s.d.JobEventsV2(ctx, s.full, id)
	if err != nil {
		s.t.Fatal(err)
	}
	n, task := 0, ""
	for _, e := range evs {
		if meta := e.GetMetaEvent(); meta != nil && task == "" {
			task = event.TaskDeploy + "-" + meta.GetMetadata().GetAdditional()[event.KeyIteration]
		}
		if te := e.GetTaskEvent(); te != nil && te.GetId() == task && te.GetStatus() == event.V2Succeeded {
			n++
		}
	}
	return n
}

// recovery logs a step of the recovery from a fault: what was observed,
// and how long after the fault.
func recovery(t *testing.T, what string, since time.Time) time.Duration {
	t.Helper()
	d := time.Since(since).Round(100 * time.Millisecond)
	t.Logf("step %s: %s after %s", t.Name(), what, d)
	return d
}

// fault logs the scenario's summary line, "FAULT <name>: <what
// happened>; recovered in <duration>", the duration from the fault to the
// outcome that shows full recovery (usually the next push deployed).
// docs/faults.md tabulates these lines.
func fault(t *testing.T, happened string, since time.Time) {
	t.Helper()
	_, name, _ := strings.Cut(t.Name(), "/") // without TestFaults/
	t.Logf("FAULT %s: %s; recovered in %s", name, happened, time.Since(since).Round(100*time.Millisecond))
}

// githubDeploymentEnds waits until job id has deployments on the GitHub
// stand-in (found by the job in their payload) and the latest status of
// each is state.
func (s *scenario) githubDeploymentEnds(id, state string) {
	s.t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for {
		var found, ended int
		for _, d := range s.st.GitHub.Deployments(s.owner, s.name) {
			var payload struct {
				Job string `json:"job"`
			}
			if json.Unmarshal(d.Payload, &payload) != nil || payload.Job != id {
				continue
			}
			found++
			if n := len(d.Statuses); n > 0 && d.Statuses[n-1].State == state {
				ended++
			}
		}
		if found > 0 && ended == found {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("GitHub: %d of job %s's %d deployments ended %s after %s", ended, id, found, state, stepTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
