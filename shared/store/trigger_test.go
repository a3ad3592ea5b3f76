package store_test

import (
	"errors"
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestSetTrigger(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	if err := e.store.TrackRepository(e.ctx, store.Repository{Owner: "Octo", Name: "App", WebhookSecret: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		trigger     store.Trigger
		enabled     bool
		wantChanged bool
		want        store.Triggers
	}{
		{store.TriggerBuild, true, false, store.Triggers{AutoBuild: true, AutoDeploy: true, AutoSync: true}},
		{store.TriggerBuild, false, true, store.Triggers{AutoBuild: false, AutoDeploy: true, AutoSync: true}},
		{store.TriggerBuild, false, false, store.Triggers{AutoBuild: false, AutoDeploy: true, AutoSync: true}},
		{store.TriggerDeploy, false, true, store.Triggers{AutoBuild: false, AutoDeploy: false, AutoSync: true}},
		{store.TriggerSync, false, true, store.Triggers{}},
		{store.TriggerBuild, true, true, store.Triggers{AutoBuild: true}},
	}
	for i, s := range steps {
		changed, err := e.store.SetTrigger(e.ctx, "octo", "app", s.trigger, s.enabled)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		r, err := e.store.Repository(e.ctx, "octo", "app")
		if err != nil {
			t.Fatal(err)
		}
		if changed != s.wantChanged || r.Triggers != s.want {
			t.Errorf("step %d (%s=%t): changed %t, triggers %+v; want %t, %+v", i, s.trigger, s.enabled, changed, r.Triggers, s.wantChanged, s.want)
		}
	}
	if _, err := e.store.SetTrigger(e.ctx, "octo", "none", store.TriggerBuild, false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("untracked: %v, want ErrNotFound", err)
	}
	if _, err := e.store.SetTrigger(e.ctx, "octo", "app", "test", false); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("unknown trigger: %v, want ErrInvalid", err)
	}
}

func TestLatestState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	if _, _, _, err := e.store.LatestState(e.ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no states: %v, want ErrNotFound", err)
	}
	f := event.NewFactory(event.Job{ID: "j"}, event.Plan{}, nil)
	for _, r := range []struct{ owner, name, job string }{{"octo", "one", "j1"}, {"Octo", "Two", "j2"}, {"octo", "one", "j3"}} {
		if err := e.store.PutState(e.ctx, r.owner, r.name, r.job, 1, f.NewV1State(event.Triggers{}), nil); err != nil {
			t.Fatal(err)
		}
		owner, name, st, err := e.store.LatestState(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if owner != "octo" || name != r.name && name != "two" || st.JobID != r.job || st.V1.GetDeployState() == nil {
			t.Errorf("after %s: latest = %s/%s job %s", r.job, owner, name, st.JobID)
		}
	}
}

func TestUpdateState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	if err := e.store.UpdateState(e.ctx, "octo", "none", func(*store.RepoState) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no state: %v, want ErrNotFound", err)
	}
	f := event.NewFactory(event.Job{ID: "j"}, event.Plan{}, nil)
	if err := e.store.PutState(e.ctx, "octo", "app", "j1", 3, f.NewV1State(event.Triggers{}), f.NewV2State(event.Triggers{})); err != nil {
		t.Fatal(err)
	}
	err := e.store.UpdateState(e.ctx, "octo", "app", func(st *store.RepoState) error {
		st.V1.DeployState.Status = "Custom"
		st.V2.DeployState.Status = "Custom2"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.store.State(e.ctx, "octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	if st.V1.GetDeployState().GetStatus() != "Custom" || st.V2.GetDeployState().GetStatus() != "Custom2" || st.JobID != "j1" || st.Iteration != 3 || st.Version != 2 {
		t.Errorf("after UpdateState: %+v", st)
	}
	boom := errors.New("boom")
	if err := e.store.UpdateState(e.ctx, "octo", "app", func(*store.RepoState) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("fn's error: %v", err)
	}
}
