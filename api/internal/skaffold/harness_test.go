package skaffold_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/feed"
	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

const testTimeout = 2 * time.Minute

// backend is one test's Firestore project, store and job queue, shared by
// the API instances the test starts.
type backend struct {
	t       testing.TB
	ctx     context.Context
	project string
	store   *store.Store
	fs      *firestore.Client
	ps      *pubsub.Client
	names   queue.Names
	pub     *queue.Publisher
}

func newBackend(t testing.TB) *backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	project := emulatortest.ProjectID(t)
	fs, err := firestore.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	key := make([]byte, secret.KeySize)
	box, err := secret.NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(fs, box)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	names := queue.DefaultNames(project)
	if err := queue.Ensure(ctx, ps, names, queue.EnsureOptions{}); err != nil {
		t.Fatal(err)
	}
	pub := queue.NewPublisher(ps, names.Topic)
	t.Cleanup(pub.Stop)
	return &backend{t: t, ctx: ctx, project: project, store: st, fs: fs, ps: ps, names: names, pub: pub}
}

// track records a tracked repository with the given triggers.
func (b *backend) track(owner, name string, trig store.Triggers) {
	b.t.Helper()
	err := b.store.TrackRepository(b.ctx, store.Repository{Owner: owner, Name: name, HookID: 1, WebhookSecret: []byte("s"), TrackedBy: "octocat", Triggers: trig})
	if err != nil {
		b.t.Fatal(err)
	}
}

// appendV1 writes one events document of job with one v1 and one v2 event
// whose entry / log message is text.
func (b *backend) append(ref store.JobRef, chunk int, texts ...string) {
	b.t.Helper()
	batch := store.EventBatch{Job: ref, Chunk: chunk}
	for _, s := range texts {
		batch.V1 = append(batch.V1, &v1pb.LogEntry{Entry: s})
		batch.V2 = append(batch.V2, &v2pb.Event{EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{Message: s}}})
	}
	// The Firestore emulator, on a machine busy with other tests, once
	// answered a commit Canceled ("call already cancelled"): retry a
	// transport failure (the JobWriter does the same in the runner), and
	// count a retry that finds the chunk as written.
	for attempt := 1; ; attempt++ {
		err := b.store.AppendEvents(b.ctx, batch)
		switch code := status.Code(err); {
		case err == nil, attempt > 1 && errors.Is(err, store.ErrAlreadyExists):
			return
		case attempt < 5 && (code == codes.Canceled || code == codes.Unavailable || code == codes.DeadlineExceeded || code == codes.Aborted) && b.ctx.Err() == nil:
			b.t.Logf("append events of job %s chunk %d: %v; retrying", ref.ID, chunk, err)
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		default:
			b.t.Fatal(err)
		}
	}
}

// received returns the next message published on the job topic.
func (b *backend) received(timeout time.Duration) (job.Message, bool) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	var got job.Message
	var ok bool
	var once sync.Once
	sub := b.ps.Subscriber(b.names.SubscriptionName())
	err := sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		once.Do(func() {
			msg, err := job.Decode(m.Data)
			if err != nil {
				b.t.Errorf("decode job message: %v", err)
			}
			got, ok = msg, true
			cancel()
		})
	})
	if err != nil && ctx.Err() == nil {
		b.t.Fatal(err)
	}
	return got, ok
}

// api is one running API instance: the real gRPC server and the real
// gateway on loopback ports.
type api struct {
	svc     *skaffold.Service
	feed    *feed.Feed
	grpc    *grpc.Server
	http    *http.Server
	conn    *grpc.ClientConn
	v1      v1pb.SkaffoldServiceClient
	v2      v2pb.SkaffoldV2ServiceClient
	httpURL string
	once    sync.Once
}

type apiOptions struct {
	maxLag       int
	writeTimeout time.Duration
	auth         caller.Mode // default local
	operators    []string
	handle       bool
	// Stream settings (0: the service's defaults).
	maxStreams       int
	replayIterations int
	trackCheck       time.Duration
	maxHistory       int
	now              func() time.Time // the service's clock
}

func (b *backend) startAPI(opts apiOptions) *api {
	b.t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := feed.New(b.store, feed.Options{MaxLag: opts.maxLag, LagGrace: 200 * time.Millisecond, Linger: time.Second, MaxHistory: opts.maxHistory}, log)
	if opts.auth == "" {
		opts.auth = caller.ModeLocal
	}
	svc, err := skaffold.New(b.store, b.pub, f, log, skaffold.Options{Auth: opts.auth, Operators: opts.operators, HandleEnabled: opts.handle,
		MaxStreams: opts.maxStreams, ReplayIterations: opts.replayIterations, TrackCheck: opts.trackCheck, Now: opts.now})
	if err != nil {
		b.t.Fatal(err)
	}
	gs := grpc.NewServer()
	svc.Register(gs)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.t.Fatal(err)
	}
	go gs.Serve(gl)
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.t.Fatal(err)
	}
	h, err := skaffold.NewHTTPHandler(context.Background(), conn, skaffold.HTTPOptions{StreamWriteTimeout: opts.writeTimeout, Export: svc.ExportHandler()})
	if err != nil {
		b.t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(hl)
	a := &api{svc: svc, feed: f, grpc: gs, http: hs, conn: conn, httpURL: "http://" + hl.Addr().String()}
	// Clients of the test dial the gRPC port like any other client.
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.t.Fatal(err)
	}
	a.v1, a.v2 = v1pb.NewSkaffoldServiceClient(cc), v2pb.NewSkaffoldV2ServiceClient(cc)
	b.t.Cleanup(func() { cc.Close(); a.stop() })
	return a
}

// stop shuts the instance down as main does on SIGTERM.
func (a *api) stop() {
	a.once.Do(func() {
		a.svc.StopStreams()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.http.Shutdown(ctx)
		a.grpc.GracefulStop()
		a.conn.Close()
		a.feed.Close()
	})
}

func scoped(ctx context.Context, repo string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, skaffold.ScopeKey, repo)
}

// httpStream is one HTTP event stream, read line by line.
type httpStream struct {
	resp *http.Response
	r    *bufio.Reader
}

func (a *api) openStream(t testing.TB, ctx context.Context, path string) *httpStream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.httpURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &httpStream{resp: resp, r: bufio.NewReader(resp.Body)}
}

// frame is one line of a streamed response.
type frame struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (s *httpStream) next(t *testing.T) (frame, string) {
	t.Helper()
	line, err := s.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read stream line: %v (got %q)", err, line)
	}
	var f frame
	if err := json.Unmarshal([]byte(line), &f); err != nil {
		t.Fatalf("stream line %q is not JSON: %v", line, err)
	}
	return f, line
}

// entries reads n v1 frames and returns their entry texts.
func (s *httpStream) entries(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		f, line := s.next(t)
		if f.Error != nil {
			t.Fatalf("stream error frame: %s", line)
		}
		var le struct {
			Entry string `json:"entry"`
		}
		if err := json.Unmarshal(f.Result, &le); err != nil {
			t.Fatal(err)
		}
		out = append(out, le.Entry)
	}
	return out
}

// v1Entries reads n entries from a gRPC v1 stream.
func v1Entries(t *testing.T, s grpc.ServerStreamingClient[v1pb.LogEntry], n int) []string {
	t.Helper()
	var out []string
	for range n {
		e, err := s.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		out = append(out, e.GetEntry())
	}
	return out
}

func texts(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

func newReader(resp *http.Response) *bufio.Reader { return bufio.NewReader(resp.Body) }

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

// storedEvent is one v1 event as stored, with its batch's commit time.
type storedEvent struct {
	text    string
	created time.Time
}

// stored returns the v1 events of every stored events document in the
// documented order of a stream of all repositories: by commit time
// (created), ties broken by document id.
func (b *backend) stored() []storedEvent {
	b.t.Helper()
	snaps, err := b.fs.Collection(store.EventsCollection).Documents(b.ctx).GetAll()
	if err != nil {
		b.t.Fatal(err)
	}
	type doc struct {
		id      string
		created time.Time
		v1      [][]byte
	}
	var docs []doc
	for _, snap := range snaps {
		var d struct {
			Created time.Time `firestore:"created"`
			V1      [][]byte  `firestore:"v1"`
		}
		if err := snap.DataTo(&d); err != nil {
			b.t.Fatal(err)
		}
		docs = append(docs, doc{snap.Ref.ID, d.Created, d.V1})
	}
	slices.SortFunc(docs, func(x, y doc) int {
		if c := x.created.Compare(y.created); c != 0 {
			return c
		}
		return strings.Compare(x.id, y.id)
	})
	var out []storedEvent
	for _, d := range docs {
		for _, raw := range d.v1 {
			e := new(v1pb.LogEntry)
			if err := proto.Unmarshal(raw, e); err != nil {
				b.t.Fatal(err)
			}
			out = append(out, storedEvent{e.GetEntry(), d.created})
		}
	}
	return out
}

// storeOrder returns the texts of stored() : tests compare a stream of
// all repositories with it rather than with the order they wrote in,
// which two writes in the same millisecond (the emulator's resolution)
// would not keep.
func (b *backend) storeOrder() []string {
	b.t.Helper()
	var out []string
	for _, e := range b.stored() {
		out = append(out, e.text)
	}
	return out
}

// claimedJob creates a job of owner/name and claims it as a runner
// starting it would, which gives it the repository's next iteration.
func (b *backend) claimedJob(owner, name, delivery string) *store.Job {
	b.t.Helper()
	j, err := b.store.CreateJob(b.ctx, store.Job{Owner: owner, Name: name, DeliveryID: delivery})
	if err != nil {
		b.t.Fatal(err)
	}
	claimed, err := b.store.ClaimJob(b.ctx, j.ID, "test-runner", time.Hour, time.Now())
	if err != nil {
		b.t.Fatal(err)
	}
	return claimed
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: for state that becomes true asynchronously.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
