//go:build linux

package faults_test

import (
	"strings"
	"testing"
	"time"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// testTwoRunnersOneRelease has two runner processes deploy the same
// release at once (two branches of a repository whose unit deploys one
// release): the first holds the release lock while Helm waits in a
// pre-install hook; the second waits for the lock rather than failing
// with Helm's "another operation is in progress"; once the hook runs both
// succeed, as revisions 1 and 2.
func testTwoRunnersOneRelease(t *testing.T, e *env) {
	s := start(t, e, "contend", options{})
	hook := token()
	values := "hook:\n  label: " + gateLabel(hook)
	one := s.pushJob(commit{branch: "one", values: values})
	j1 := s.running(one.JobID)
	s.waitRelease("app", "pending-install")
	// Another runner, for the second push: the first is busy. It has a
	// subscription of its own on the job topic, so that it receives the
	// second push whatever the first runner's streaming pull holds (the
	// emulator may hand a busy subscriber messages it cannot take yet);
	// the job's claim keeps either from running a job the other runs.
	sub := "kgd-runner-2"
	ensureSubscription(t, s, s.st.Config.PubSubHost, sub)
	if _, err := s.st.StartRunner(s.ctx, "runner-2", []string{"KGD_JOBS_SUBSCRIPTION=" + sub}); err != nil {
		t.Fatal(err)
	}
	two := s.pushJob(commit{branch: "two", values: values})
	j2 := s.running(two.JobID)
	if ownerPid(j1.LeaseOwner) == ownerPid(j2.LeaseOwner) {
		t.Fatalf("both jobs run on %s; want one each on two runners", j1.LeaseOwner)
	}
	s.waitLog(j2.Iteration, event.TaskDeploy, "Waiting for the release lock")
	if revs := s.mustHistory("app"); len(revs) != 1 || revs[0].Status != "pending-install" {
		t.Fatalf("release history while the first deploy waits in its hook: %v; want [1:pending-install]", revs)
	}

	opened := time.Now()
	s.openHookGate(hook)
	s.succeeded(one.JobID)
	it2 := s.succeeded(two.JobID)
	recovery(t, "both deploys done once the lock holder went on", opened)
	got := s.mustHistory("app")
	if len(got) != 2 || got[0] != (revision{1, "superseded"}) || got[1] != (revision{2, "deployed"}) {
		t.Errorf("release history: %v; want [1:superseded 2:deployed]", got)
	}
	if s.deploys(one.JobID) != 1 || s.deploys(two.JobID) != 1 {
		t.Errorf("deploys: %d and %d; want one each", s.deploys(one.JobID), s.deploys(two.JobID))
	}
	f1, f2 := s.finished(one.JobID), s.finished(two.JobID)
	if ownerPid(f1.FinishedBy) == ownerPid(f2.FinishedBy) {
		t.Errorf("both jobs finished by %s", f1.FinishedBy)
	}
	if img := s.image("app"); img != builtImage(it2) {
		t.Errorf("deployment runs %s; want the second deploy's %s", img, builtImage(it2))
	}
	fault(t, "two runners deployed one release at once; the second waited for the release lock (no \"another "+
		"operation is in progress\"); both succeeded as revisions 1 and 2 once the first's hook ran", opened)
}

// testAtomicRollback deploys a unit with atomic = true, then pushes
// upgrades that fail: the release is rolled back to the previous
// revision (Helm history: the failed revision, then a rollback deployed),
// the Deployment runs the previous image again, and the job ends Failed.
func testAtomicRollback(t *testing.T, e *env) {
	s := start(t, e, "atomic", options{})
	first := s.pushJob(commit{atomic: true})
	good := builtImage(s.succeeded(first.JobID))

	// Each failing upgrade must leave the release rolled back: its last
	// revision deployed, the one before it failed, the image the good one.
	rolledBack := func(s *scenario, before int) {
		s.t.Helper()
		revs := s.mustHistory("app")
		n := len(revs)
		if n != before+2 || revs[n-2].Status != "failed" || revs[n-1].Status != "deployed" {
			s.t.Errorf("release history: %v; want %d revisions, the failed upgrade then its rollback deployed", revs, before+2)
		}
		if img := s.image("app"); img != good {
			s.t.Errorf("deployment runs %s after the rollback; want the good deploy's %s", img, good)
		}
	}

	t.Run("apply-fails", func(t *testing.T) {
		s := s.with(t)
		start := time.Now()
		before := len(s.mustHistory("app"))
		// Rejected by the API server when Helm applies it.
		p := s.pushJob(commit{atomic: true, values: "replicas: -1"})
		j := s.finished(p.JobID)
		it := s.iteration(p.JobID)
		if j.Status != store.StatusFailed || it.Err.GetErrCode() != enumspb.StatusCode_DEPLOY_HELM_USER_ERR {
			t.Errorf("job: %s %q, %s; want failed with DEPLOY_HELM_USER_ERR", j.Status, j.Error, it)
		}
		if !strings.Contains(it.Err.GetMessage(), "rolled back") {
			t.Errorf("error message %q does not say the release was rolled back", it.Err.GetMessage())
		}
		rolledBack(s, before)
		fault(t, "atomic upgrade rejected by the API server (replicas: -1); job Failed with DEPLOY_HELM_USER_ERR "+
			"saying it was rolled back; release back on the previous image", start)
	})

	t.Run("rollout-fails", func(t *testing.T) {
		s := s.with(t)
		start := time.Now()
		before := len(s.mustHistory("app"))
		// Applied, but its pod can never be scheduled. With atomic = true
		// Helm waits for the rollout (as helm --atomic implies --wait), up
		// to the unit's timeout, and rolls back when it times out.
		p := s.pushJob(commit{atomic: true, timeout: "20s", values: "nodeSelector:\n  faults.kube-git-deploy.dev/never: \"true\""})
		j := s.finished(p.JobID)
		it := s.iteration(p.JobID)
		if j.Status != store.StatusFailed || it.Err.GetErrCode() != enumspb.StatusCode_DEPLOY_HELM_USER_ERR {
			t.Errorf("job: %s %q, %s; want failed with DEPLOY_HELM_USER_ERR", j.Status, j.Error, it)
		}
		if !strings.Contains(it.Err.GetMessage(), "rolled back") {
			t.Errorf("error message %q does not say the release was rolled back", it.Err.GetMessage())
		}
		rolledBack(s, before)
		fault(t, "atomic upgrade whose pods never schedule; Helm waited the unit's timeout (20s), marked the revision "+
			"failed and rolled back; job Failed with DEPLOY_HELM_USER_ERR saying so; release back on the previous image", start)
	})
}
