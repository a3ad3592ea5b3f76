//go:build linux

package faults_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// branchRelease deploys each branch as a release of its own, so that
// every push is deployed (none supersedes another) and the revisions of
// its release count its deploys.
const branchRelease = "app-{{ .git.branch }}"

// testPubSubRestarted restarts the stack's Pub/Sub emulator (one of the
// scenario's own) while jobs are in flight: one runs, one waits in the
// subscription (its message is lost with the emulator's memory), and two
// pushes arrive while it is down (PublicAPI records them but cannot
// publish them). The topic and subscription are created again, as
// infrastructure would. Every push ends up deployed exactly once: the
// runner's sweeps publish the unpublished and the lost jobs, and its
// Receive loop keeps receiving.
func testPubSubRestarted(t *testing.T, e *env) {
	emu := startEmulator(t, emulator.PubSub)
	s := start(t, e, "pubsub", options{pubSubHost: emu.PubSubHost, env: []string{"KGD_UNCLAIMED_AFTER=20s"}})
	gate := token()
	inFlight := s.pushJob(commit{branch: "b1", release: branchRelease, gate: gate})
	s.atGate(inFlight.JobID, gate, 1)
	waiting := s.pushJob(commit{branch: "b2", release: branchRelease})
	s.job(waiting.JobID, "is published", stepTimeout, func(j *store.Job) bool {
		return j.Status == store.StatusQueued && !j.PublishedAt.IsZero()
	})

	if err := emu.StopService(emulator.PubSub); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	var outage []string // commits pushed while Pub/Sub was down
	for _, b := range []string{"b3", "b4"} {
		p := s.push(commit{branch: b, release: branchRelease})
		for _, d := range p.Deliveries {
			if d.StatusCode >= 200 && d.StatusCode < 300 {
				t.Errorf("push to %s during the outage: PublicAPI answered %d %s; want a failure (job not queued)", b, d.StatusCode, d.Response)
			}
		}
		j := s.jobOf(p.After)
		if !j.PublishedAt.IsZero() {
			t.Errorf("job %s of the outage is marked published", j.ID)
		}
		outage = append(outage, p.After)
	}

	if err := emu.StartService(s.ctx, emulator.PubSub, emulator.RestartOptions{}); err != nil {
		t.Fatal(err)
	}
	ensureQueue(t, s, emu.PubSubHost)
	recovery(t, "Pub/Sub emulator back with the job queue", down)
	s.env.gates.open(gate)
	// PublicAPI's Pub/Sub client may still be reconnecting: it records
	// the job and, if it cannot publish it yet, the runner's sweep does.
	after := s.push(commit{branch: "b5", release: branchRelease})

	jobs := map[string]string{"b1": inFlight.JobID, "b2": waiting.JobID, "b5": s.jobOf(after.After).ID}
	for i, sha := range outage {
		jobs[[]string{"b3", "b4"}[i]] = s.jobOf(sha).ID
	}
	for _, b := range []string{"b1", "b2", "b3", "b4", "b5"} {
		j := s.finished(jobs[b])
		if j.Status != store.StatusSucceeded {
			t.Errorf("job of %s: %s %q; want succeeded", b, j.Status, j.Error)
		}
		if revs := s.mustHistory("app-" + b); len(revs) != 1 || revs[0].Status != "deployed" {
			t.Errorf("release app-%s: %v; want deployed once", b, revs)
		}
	}
	fault(t, "Pub/Sub emulator restarted (topic and messages lost) with a job running, one queued and two pushes "+
		"during the outage (PublicAPI answered 503); the sweeps republished them: all 5 deployed exactly once", down)
}

// testFirestoreRestarted restarts the stack's Firestore emulator (the
// scenario's own, behind a TCP proxy) while a job runs and another waits.
// The emulator keeps its data in memory only and its --export-on-exit
// flag writes nothing when run as the stack runs it, so the restart keeps
// the data the way an operator would: the proxy cuts every client off
// (connections refused, open ones closed), the data is exported through
// the emulator's export endpoint, the emulator stops and starts again
// importing it, and the proxy lets clients back. No job is lost (each
// ends), none runs twice (a release has at most one revision per
// job), the waiting job and a push after the restart succeed, and the
// job in flight either finishes or ends with the reason it was stopped.
func testFirestoreRestarted(t *testing.T, e *env) {
	emu := startEmulator(t, emulator.Firestore)
	px := startProxy(t, emu.FirestoreHost)
	s := start(t, e, "firestore", options{firestoreHost: px.addr})
	gate := token()
	inFlight := s.pushJob(commit{branch: "f1", release: branchRelease, gate: gate})
	s.atGate(inFlight.JobID, gate, 1)
	waiting := s.pushJob(commit{branch: "f2", release: branchRelease})
	s.job(waiting.JobID, "is published", stepTimeout, func(j *store.Job) bool { return !j.PublishedAt.IsZero() })

	down := time.Now()
	px.pause()
	dir := t.TempDir()
	export, err := emulator.ExportFirestore(s.ctx, emu.FirestoreHost, s.st.Config.Project, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.StopService(emulator.Firestore); err != nil {
		t.Fatal(err)
	}
	if err := emu.StartService(s.ctx, emulator.Firestore, emulator.RestartOptions{FirestoreImport: export}); err != nil {
		t.Fatal(err)
	}
	px.resume(t)
	recovery(t, "Firestore emulator back with its data", down)
	s.env.gates.open(gate)
	// The functions' Firestore client reconnects with a backoff; until
	// it has, PublicAPI answers 503 ("redeliver later"), as it should.
	// Push once PrivateAPI reads Firestore again.
	s.waitFor("the functions to read Firestore again", stepTimeout, func(ctx context.Context) (bool, error) {
		_, err := s.d.Track(ctx, s.owner, s.name)
		return err == nil, err
	})
	after := s.pushJob(commit{branch: "f3", release: branchRelease})

	for b, id := range map[string]string{"f1": inFlight.JobID, "f2": waiting.JobID, "f3": after.JobID} {
		j := s.finished(id)
		revs := s.mustHistory("app-" + b)
		switch {
		case j.Status == store.StatusSucceeded:
			if len(revs) != 1 || revs[0].Status != "deployed" {
				t.Errorf("release app-%s of a succeeded job: %v; want deployed once", b, revs)
			}
		case b == "f1" && j.Status == store.StatusFailed:
			t.Logf("the job in flight during the restart ended failed: %s", j.Error)
			if len(revs) > 1 {
				t.Errorf("release app-%s: %v; want at most one revision", b, revs)
			}
		default:
			t.Errorf("job of %s: %s %q; want succeeded", b, j.Status, j.Error)
		}
	}
	fault(t, "Firestore emulator restarted (clients cut off, data exported and imported) with a job running and one "+
		"queued; every job ended, none deployed twice, the queued one and a later push succeeded", down)
}

// startEmulator starts an emulator of the scenario's own, which it may
// stop and start again; it stops with the test.
func startEmulator(t *testing.T, svc emulator.Service) *emulator.Emulators {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), string(svc)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	emu, err := emulator.Start(ctx, emulator.Options{Services: []emulator.Service{svc}, Log: f, ReadyTimeout: stepTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		emu.Stop()
		f.Close()
	})
	return emu
}

// ensureQueue creates the stack's job queue on the Pub/Sub emulator at
// host, as the infrastructure (terraform; the functions at start on the
// emulator) does.
func ensureQueue(t *testing.T, s *scenario, host string) {
	t.Helper()
	ps, err := pubsub.NewClient(s.ctx, s.st.Config.Project, option.WithEndpoint(host), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if err := queue.Ensure(s.ctx, ps, queue.DefaultNames(s.st.Config.Project), queue.EnsureOptions{}); err != nil {
		t.Fatal(err)
	}
}

// ensureSubscription creates another subscription, name, on the stack's
// job topic on the Pub/Sub emulator at host: a runner given it
// (KGD_JOBS_SUBSCRIPTION) receives every job message too.
func ensureSubscription(t *testing.T, s *scenario, host, name string) {
	t.Helper()
	ps, err := pubsub.NewClient(s.ctx, s.st.Config.Project, option.WithEndpoint(host), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	n := queue.DefaultNames(s.st.Config.Project)
	n.Subscription = name
	n.DeadLetterSubscription = name + "-dead-letters"
	if err := queue.Ensure(s.ctx, ps, n, queue.EnsureOptions{}); err != nil {
		t.Fatal(err)
	}
}

// proxy forwards TCP connections on a loopback port to a backend; pause
// cuts every client off (connections refused, open ones closed) until
// resume, as a restarting server does.
type proxy struct {
	addr, backend string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, backend string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: l.Addr().String(), backend: backend, l: l, conns: map[net.Conn]bool{}}
	go p.serve(l)
	t.Cleanup(p.pause)
	return p
}

func (p *proxy) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.l == nil { // paused meanwhile
		p.mu.Unlock()
		c.Close()
		b.Close()
		return
	}
	p.conns[c], p.conns[b] = true, true
	p.mu.Unlock()
	var once sync.Once
	done := func() {
		once.Do(func() {
			c.Close()
			b.Close()
			p.mu.Lock()
			delete(p.conns, c)
			delete(p.conns, b)
			p.mu.Unlock()
		})
	}
	go func() { io.Copy(b, c); done() }()
	io.Copy(c, b)
	done()
}

// pause closes the listener and every open connection.
func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// resume listens on the proxy's port again.
func (p *proxy) resume(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy: listen on %s again: %v", p.addr, err)
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go p.serve(l)
}

// watchEvents subscribes to the scenario's events topic (on the emulator
// at host) before anything happens, and returns a check to call once job
// id has ended: the topic had every event the job stored, in order —
// exactly once, or, after a runner was killed, at least once (the runner
// that took the job over passes the dead one's events on again).
func (s *scenario) watchEvents(host, subscription string) func(id string, exactlyOnce bool) {
	s.t.Helper()
	ps, err := pubsub.NewClient(s.ctx, s.st.Config.Project, option.WithEndpoint(host), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { ps.Close() })
	if err := localstack.SubscribeEvents(s.ctx, ps, s.st.Config.Project, subscription); err != nil {
		s.t.Fatal(err)
	}
	return func(id string, exactlyOnce bool) {
		s.t.Helper()
		batches, err := s.store.JobBatches(s.ctx, id)
		if err != nil {
			s.t.Fatal(err)
		}
		n := localstack.Sequences(batches)
		ctx, cancel := context.WithTimeout(s.ctx, stepTimeout)
		defer cancel()
		got, err := localstack.ReceiveEvents(ctx, ps, subscription, func(got map[string][]localstack.TopicEvent) bool {
			return len(localstack.FirstOccurrences(got[id])) >= n
		})
		if err != nil {
			s.t.Fatalf("events topic: %d distinct of the job's %d events before %v", len(localstack.FirstOccurrences(got[id])), n, err)
		}
		events := got[id]
		if !exactlyOnce {
			events = localstack.FirstOccurrences(events)
		}
		if err := localstack.CheckTopicEvents(events, batches); err != nil {
			s.t.Errorf("events topic, job %s: %v", id, err)
		}
	}
}
