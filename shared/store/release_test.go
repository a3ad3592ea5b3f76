package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestLockRelease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	s := e.store
	unlockA, err := s.LockRelease(e.ctx, "default/web", "runner-a", time.Minute, 20*time.Millisecond)
	if err != nil {
		t.Fatalf("LockRelease(a): %v", err)
	}
	// b waits while a holds the lock.
	ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	_, err = s.LockRelease(ctx, "default/web", "runner-b", time.Minute, 20*time.Millisecond)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockRelease(b) while a holds it = %v, want to wait until its context ends", err)
	}
	// Another release is independent.
	if u, err := s.LockRelease(e.ctx, "default/api", "runner-b", time.Minute, 0); err != nil {
		t.Fatalf("LockRelease(other release): %v", err)
	} else {
		u()
	}
	got := make(chan error, 1)
	go func() {
		u, err := s.LockRelease(e.ctx, "default/web", "runner-b", time.Minute, 20*time.Millisecond)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlockA()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("LockRelease(b) after a unlocked: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b did not get the lock after a unlocked")
	}
}

func TestLockReleaseExpires(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, err := firestore.NewClient(ctx, emulatortest.ProjectID(t))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	now := t0
	s, err := store.New(client, newBox(t, 1), store.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockRelease(ctx, "ns/rel", "dead-runner", time.Minute, 0); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(2 * time.Minute) // the holder never unlocked and its hold ran out
	if _, err := s.LockRelease(ctx, "ns/rel", "runner-b", time.Minute, 0); err != nil {
		t.Fatalf("LockRelease after expiry = %v", err)
	}
}
