package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

const testGUID = "8d1c2f10-1b2c-11f0-8a4e-3f7c1d2e4b5a"

func TestClaimRedeliveryOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	r := store.Redelivery{Owner: "Octo", Name: "App", GUID: testGUID, HookID: 42, DeliveryID: 12000000007}

	// Runners sweeping at the same moment race for the same attempt:
	// exactly one may redeliver.
	const claimers = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		won     []string
		refused int
		other   []error
	)
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r
			c.ClaimedBy = fmt.Sprintf("runner-%d", i)
			err := e.store.ClaimRedelivery(e.ctx, c)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, c.ClaimedBy)
			case errors.Is(err, store.ErrAlreadyExists):
				refused++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 || refused != claimers-1 || len(other) != 0 {
		t.Fatalf("%d concurrent claims: won by %v, %d refused, other errors %v; want one winner", claimers, won, refused, other)
	}

	key := store.RedeliveryKey("octo", "app", testGUID, 0)
	if want := "octo~app~" + testGUID + "~0"; key != want {
		t.Errorf("RedeliveryKey = %q, want %q", key, want)
	}
	snap, err := e.client.Collection(store.RedeliveriesCollection).Doc(key).Get(e.ctx)
	if err != nil {
		t.Fatalf("claim document: %v", err)
	}
	d := snap.Data()
	if d["repo"] != "octo~app" || d["guid"] != testGUID || d["attempt"] != int64(0) || d["hook_id"] != int64(42) ||
		d["delivery_id"] != int64(12000000007) || d["claimed_by"] != won[0] {
		t.Errorf("claim document = %v", d)
	}
	if at, _ := d["claimed_at"].(time.Time); !at.Equal(t0) {
		t.Errorf("claimed_at = %v, want the store clock's %v", d["claimed_at"], t0)
	}
	if exp, _ := d["expire_at"].(time.Time); !exp.Equal(t0.Add(store.RedeliveryTTL)) {
		t.Errorf("expire_at (TTL) = %v, want %v", d["expire_at"], t0.Add(store.RedeliveryTTL))
	}

	// The repository name's case does not make another claim.
	if err := e.store.ClaimRedelivery(e.ctx, store.Redelivery{Owner: "octo", Name: "app", GUID: testGUID}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("claim in other case = %v, want ErrAlreadyExists", err)
	}
	// The next attempt, another repository and another GUID are other claims.
	for _, c := range []store.Redelivery{
		{Owner: "Octo", Name: "App", GUID: testGUID, Attempt: 1},
		{Owner: "Octo", Name: "Other", GUID: testGUID},
		{Owner: "Octo", Name: "App", GUID: "other-guid"},
	} {
		if err := e.store.ClaimRedelivery(e.ctx, c); err != nil {
			t.Errorf("ClaimRedelivery(%+v) = %v, want nil", c, err)
		}
	}
	if n := e.count(t, store.RedeliveriesCollection, "", nil); n != 4 {
		t.Errorf("%d claim documents, want 4", n)
	}
}

func TestReleaseRedelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	r := store.Redelivery{Owner: "octo", Name: "app", GUID: testGUID, Attempt: 2, ClaimedAt: t0.Add(time.Hour)}
	if err := e.store.ClaimRedelivery(e.ctx, r); err != nil {
		t.Fatal(err)
	}
	snap, err := e.client.Collection(store.RedeliveriesCollection).Doc(store.RedeliveryKey("octo", "app", testGUID, 2)).Get(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if exp, _ := snap.Data()["expire_at"].(time.Time); !exp.Equal(r.ClaimedAt.Add(store.RedeliveryTTL)) {
		t.Errorf("expire_at = %v, want ClaimedAt + RedeliveryTTL", snap.Data()["expire_at"])
	}
	if err := e.store.ReleaseRedelivery(e.ctx, "Octo", "App", testGUID, 2); err != nil {
		t.Fatalf("ReleaseRedelivery: %v", err)
	}
	if err := e.store.ClaimRedelivery(e.ctx, r); err != nil {
		t.Errorf("claim after release = %v, want nil", err)
	}
	if err := e.store.ReleaseRedelivery(e.ctx, "octo", "app", "never-claimed", 0); err != nil {
		t.Errorf("release of no claim = %v, want nil", err)
	}
}

func TestRedeliveryInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testTimeout)
	for _, r := range []store.Redelivery{
		{Owner: "", Name: "app", GUID: testGUID},
		{Owner: "octo", Name: "a/b", GUID: testGUID},
		{Owner: "octo", Name: "app", GUID: ""},
		{Owner: "octo", Name: "app", GUID: "../x"},
		{Owner: "octo", Name: "app", GUID: testGUID, Attempt: -1},
	} {
		if err := e.store.ClaimRedelivery(e.ctx, r); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ClaimRedelivery(%+v) = %v, want ErrInvalid", r, err)
		}
		if err := e.store.ReleaseRedelivery(e.ctx, r.Owner, r.Name, r.GUID, r.Attempt); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ReleaseRedelivery(%+v) = %v, want ErrInvalid", r, err)
		}
	}
}
