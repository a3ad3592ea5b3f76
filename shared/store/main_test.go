package store_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore) }

// t0 is the fixed "now" of the tests; whole seconds, as Firestore keeps
// microseconds only.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// testTimeout bounds every test; the slowest (10,000 events) needs a few
// seconds on a shared two-core machine.
const testTimeout = 2 * time.Minute

type env struct {
	ctx    context.Context
	client *firestore.Client
	box    *secret.Box
	store  *store.Store
}

// newEnv connects to the emulator in a project of the test's own and
// returns a Store with a fixed clock.
func newEnv(t testing.TB, timeout time.Duration) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	client, err := firestore.NewClient(ctx, emulatortest.ProjectID(t))
	if err != nil {
		t.Fatalf("firestore.NewClient: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	box := newBox(t, 1)
	s, err := store.New(client, box, store.WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatalf("store.New: %v", err)
	}
	return &env{ctx: ctx, client: client, box: box, store: s}
}

func testKey(seed byte) []byte {
	k := make([]byte, secret.KeySize)
	for i := range k {
		k[i] = seed * byte(i+1)
	}
	return k
}

func newBox(t testing.TB, seed byte, previous ...[]byte) *secret.Box {
	t.Helper()
	b, err := secret.NewBox(testKey(seed), previous...)
	if err != nil {
		t.Fatalf("secret.NewBox: %v", err)
	}
	return b
}

func (e *env) track(t testing.TB, owner, name string) {
	t.Helper()
	err := e.store.TrackRepository(e.ctx, store.Repository{
		Owner: owner, Name: name, HookID: 42, WebhookSecret: []byte("hook-secret-" + owner + "-" + name), TrackedBy: owner,
	})
	if err != nil {
		t.Fatalf("TrackRepository(%s/%s): %v", owner, name, err)
	}
}

func (e *env) createJob(t testing.TB, j store.Job) *store.Job {
	t.Helper()
	got, err := e.store.CreateJob(e.ctx, j)
	if err != nil {
		t.Fatalf("CreateJob(%+v): %v", j, err)
	}
	return got
}

// claimedJob creates j and claims it as a runner starting it would, so
// it has its iteration: jobs that record images or events are running.
func (e *env) claimedJob(t testing.TB, j store.Job) *store.Job {
	t.Helper()
	created := e.createJob(t, j)
	claimed, err := e.store.ClaimJob(e.ctx, created.ID, "test-runner", time.Hour, t0)
	if err != nil {
		t.Fatalf("ClaimJob(%s): %v", created.ID, err)
	}
	return claimed
}

// count returns the number of documents in a collection, optionally only
// those whose field equals value.
func (e *env) count(t testing.TB, collection, field string, value any) int {
	t.Helper()
	q := e.client.Collection(collection).Query
	if field != "" {
		q = q.Where(field, "==", value)
	}
	docs, err := q.Documents(e.ctx).GetAll()
	if err != nil {
		t.Fatalf("query %s: %v", collection, err)
	}
	return len(docs)
}

// logLine returns the v1 and v2 form of build output line i.
func logLine(i int) (*v1pb.LogEntry, *v2pb.Event) {
	ts := timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond))
	msg := "Step " + strconv.Itoa(i) + "/10000 : RUN make build\n"
	return &v1pb.LogEntry{Timestamp: ts, Entry: msg},
		&v2pb.Event{Timestamp: ts, EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{
			TaskId: "Build-1", SubtaskId: "app", Level: v2pb.LogLevel_STANDARD, Message: msg,
		}}}
}
