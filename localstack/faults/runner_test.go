//go:build linux

package faults_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// takeoverReason is what a job whose runner died mid-run ends with.
const takeoverReason = "the runner working on this job stopped"

// testRunnerKilledMidBuild SIGKILLs the runner while its build runs (the
// RUN step waits at a gate that is never opened): a second runner process
// takes the job over once the lease lapses and ends it Failed, naming the
// takeover, since the killed runner had recorded events; the engine stops
// the orphaned build; the next push succeeds.
func testRunnerKilledMidBuild(t *testing.T, e *env) {
	s := start(t, e, "killbuild", options{})
	checkEvents := s.watchEvents(s.st.Config.PubSubHost, "killbuild-events")
	gate := token()
	p := s.pushJob(commit{gate: gate})
	s.waitBuilding(p.JobID)
	s.atGate(p.JobID, gate, 1)
	victim := s.holder(p.JobID)

	killed := time.Now()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.Done()
	if _, err := s.takeoverRunner(); err != nil {
		t.Fatal(err)
	}

	j := s.finished(p.JobID)
	recovery(t, "killed runner's job ended", killed)
	if j.Status != store.StatusFailed || !strings.Contains(j.Error, takeoverReason) {
		t.Errorf("job after its runner was killed: %s %q; want failed, %q", j.Status, j.Error, takeoverReason)
	}
	if ownerPid(j.FinishedBy) == itoa(victim.Pid()) {
		t.Errorf("job finished by %q, the killed runner", j.FinishedBy)
	}
	it := s.iteration(p.JobID)
	if it.Status != event.Failed || !strings.Contains(it.Err.GetMessage(), takeoverReason) ||
		it.Err.GetErrCode() != enumspb.StatusCode_UNKNOWN_ERROR {
		t.Errorf("iteration: %s; want Failed, UNKNOWN_ERROR, naming the takeover", it)
	}
	s.gateIdle(gate) // the engine dropped the orphaned build
	checkEvents(p.JobID, false)

	next := s.pushJob(commit{})
	it = s.succeeded(next.JobID)
	if img := s.image("app"); img != builtImage(it) {
		t.Errorf("deployment runs %s, the next push built %s", img, builtImage(it))
	}
	fault(t, "runner SIGKILLed mid-build; runner-2 took the job over and ended it Failed (UNKNOWN_ERROR, "+
		"\""+takeoverReason+"\"), passing the dead runner's events on to the events topic again (each at least once, in order); "+
		"the engine dropped the orphaned build; the next push deployed", killed)
}

// testRunnerKilledMidDeploy SIGKILLs the runner while Helm waits in a
// pre-upgrade hook that never completes, leaving the release
// pending-upgrade and its release lock held: the job ends Failed (taken
// over) and the next push, on another runner process, recovers the
// release (once the dead runner's release lock expires, after the unit's
// timeout + 1m, runner/internal/deploy marks the abandoned revision
// failed, as it is older than the timeout + 30s) and deploys it at a new
// revision.
func testRunnerKilledMidDeploy(t *testing.T, e *env) {
	s := start(t, e, "killdeploy", options{})
	// The unit's Helm timeout bounds how long the dead runner's release
	// lock and pending revision are respected (timeout + 1m); keep it
	// short. It also bounds how long Helm waits in the hook: the kill
	// must come before that (it comes within a second of the revision
	// showing pending), so not too short for a busy machine. It is the
	// same for every push, as it would be in a real repository.
	const timeout = "45s"
	first := s.pushJob(commit{timeout: timeout})
	s.succeeded(first.JobID)

	stuck := s.pushJob(commit{timeout: timeout, values: "hook:\n  label: " + gateLabel(token()) + "\n  onUpgrade: true"})
	s.waitRelease("app", "pending-upgrade")
	// GitHub shows the deployment in progress (a few seconds: the reports
	// are paced; Helm waits in the hook for the unit's timeout).
	s.githubDeploymentEnds(stuck.JobID, "in_progress")
	victim := s.holder(stuck.JobID)
	killed := time.Now()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.Done()
	// Killed before Helm gave up on the hook (a timeout would have left
	// the revision failed, not pending).
	if revs := s.mustHistory("app"); revs[len(revs)-1].Status != "pending-upgrade" {
		t.Fatalf("release history after the kill: %v; want the last revision pending-upgrade", revs)
	}
	if _, err := s.takeoverRunner(); err != nil {
		t.Fatal(err)
	}
	j := s.finished(stuck.JobID)
	recovery(t, "killed runner's job ended", killed)
	if j.Status != store.StatusFailed || !strings.Contains(j.Error, takeoverReason) {
		t.Errorf("job after its runner was killed: %s %q; want failed, %q", j.Status, j.Error, takeoverReason)
	}
	// On GitHub, the deployment the dead runner started does not stay in
	// progress: the runner that took the job over ended it.
	s.githubDeploymentEnds(stuck.JobID, "error")

	next := s.pushJob(commit{timeout: timeout})
	it := s.succeeded(next.JobID)
	recovery(t, "release recovered and deployed", killed)
	got := s.mustHistory("app")
	want := []revision{{1, "superseded"}, {2, "failed"}, {3, "deployed"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("release history: %v; want %v (the abandoned revision marked failed)", got, want)
	}
	if img := s.image("app"); img != builtImage(it) {
		t.Errorf("deployment runs %s, the recovering push built %s", img, builtImage(it))
	}
	fault(t, "runner SIGKILLed while Helm waited in a hook (release pending-upgrade); runner-2 ended the job Failed "+
		"(UNKNOWN_ERROR, taken over) and its GitHub deployment, in progress, as an error; the next push waited for the dead runner's release lock (timeout + 1m), "+
		"marked the abandoned revision failed and deployed revision 3", killed)
}

// testRunnerTerminatedMidJob sends SIGTERM to the runner while its build
// runs: it hands the job back and exits; the other runner process runs the
// job again from the start and it succeeds, having deployed once.
func testRunnerTerminatedMidJob(t *testing.T, e *env) {
	s := start(t, e, "sigterm", options{})
	checkEvents := s.watchEvents(s.st.Config.PubSubHost, "sigterm-events")
	if _, err := s.st.StartRunner(s.ctx, "runner-2", nil); err != nil {
		t.Fatal(err)
	}
	gate := token()
	p := s.pushJob(commit{gate: gate})
	s.waitBuilding(p.JobID)
	s.atGate(p.JobID, gate, 1)
	victim := s.holder(p.JobID)

	stopped := time.Now()
	if err := victim.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-victim.Done():
	case <-time.After(stepTimeout):
		t.Fatalf("%s did not exit within %s of SIGTERM", victim.Name(), stepTimeout)
	}
	if err := victim.Err(); err != nil {
		t.Errorf("%s exited with %v after SIGTERM; want a clean exit", victim.Name(), err)
	}
	// The job runs again on the other runner, from the start: its build
	// reaches the gate again.
	s.atGate(p.JobID, gate, 2)
	j := s.running(p.JobID)
	if ownerPid(j.LeaseOwner) == "" || ownerPid(j.LeaseOwner) == itoa(victim.Pid()) {
		t.Fatalf("job %s is leased by %q after %s stopped", p.JobID, j.LeaseOwner, victim.Name())
	}
	recovery(t, "handed-back job running again", stopped)
	s.env.gates.open(gate)

	it := s.succeeded(p.JobID)
	recovery(t, "handed-back job deployed", stopped)
	j = s.finished(p.JobID)
	if j.Attempts != 2 {
		t.Errorf("job attempts = %d, want 2 (the handed-back one and the one that finished)", j.Attempts)
	}
	if n := s.deploys(p.JobID); n != 1 {
		t.Errorf("the job deployed %d times, want once", n)
	}
	if got := s.mustHistory("app"); len(got) != 1 || got[0].Status != "deployed" {
		t.Errorf("release history: %v; want one deployed revision", got)
	}
	// The interrupted attempt did not end the iteration: a Skaffold
	// client sees it end once, Succeeded.
	for _, e := range it.Events {
		if dl := e.GetEvent().GetDevLoopEvent(); dl != nil && dl.GetStatus() == event.Failed {
			t.Errorf("the iteration has a DevLoop Failed event (%s) before it succeeded", dl.GetErr().GetErrCode())
		}
	}
	// The events topic had each of the job's events once, in order,
	// though two runners published them.
	checkEvents(p.JobID, true)
	fault(t, "runner SIGTERMed mid-build; it handed the job back and exited 0; runner-2 ran it again from the start "+
		"and it succeeded, deployed once (one iteration, no Failed event; each event once on the events topic)", stopped)
}

// takeoverRunner starts runner-2, to take over the jobs of a runner that
// was killed, on a subscription of its own on the job topic. The Pub/Sub
// emulator does not always notice that a killed subscriber's streaming
// pull is gone and goes on handing it messages, each lost until its ack
// deadline (60 s) passes; on a subscription of its own runner-2 receives
// every job published from now on (a takeover is a republished message).
func (s *scenario) takeoverRunner() (*localstack.Process, error) {
	s.t.Helper()
	const sub = "kgd-runner-2"
	ensureSubscription(s.t, s, s.st.Config.PubSubHost, sub)
	return s.st.StartRunner(s.ctx, "runner-2", []string{"KGD_JOBS_SUBSCRIPTION=" + sub})
}
