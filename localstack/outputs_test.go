package localstack_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-github/v60/github"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kube-git-deploy/kube-git-deploy/localstack"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
	sinkpb "github.com/kube-git-deploy/kube-git-deploy/proto/sink/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// hookKey signs the webhook sink's deliveries in the end-to-end test.
const hookKey = "e2e-webhook-sink-key-0123456789"

// hookReceiver is an operator's webhook sink: it checks each delivery's
// signature (the way a receiver would, with crypto/hmac) and records the
// envelopes' sequence numbers per job, and the delivery ids.
type hookReceiver struct {
	*httptest.Server
	mu         sync.Mutex
	seqs       map[string][]int64 // job → envelope sequences, as received
	deliveries map[string]int     // X-KGD-Delivery → times received
	bad        []string           // what was wrong with a request
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{seqs: map[string][]int64{}, deliveries: map[string]int{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(hookKey))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		h.mu.Lock()
		defer h.mu.Unlock()
		if !hmac.Equal([]byte(r.Header.Get("X-KGD-Signature-256")), []byte(want)) {
			h.bad = append(h.bad, "bad signature on delivery "+r.Header.Get("X-KGD-Delivery"))
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		h.deliveries[r.Header.Get("X-KGD-Delivery")]++
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var env struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				EventID    string `json:"event_id"`
				Event      struct {
					Sequence int64 `json:"sequence"`
				} `json:"event"`
			}
			if err := json.Unmarshal(sc.Bytes(), &env); err != nil || env.Kind != "Event" || env.EventID != r.Header.Get("X-KGD-Job") {
				h.bad = append(h.bad, "bad envelope "+sc.Text())
				continue
			}
			h.seqs[env.EventID] = append(h.seqs[env.EventID], env.Event.Sequence)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) job(id string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.seqs[id]...)
}

// grpcReceiver is an operator's kgd.sink.v1.EventSink: it records the v2
// events' sequence numbers per job (from the stream's metadata), and
// acknowledges each stream.
type grpcReceiver struct {
	sinkpb.UnimplementedEventSinkServer
	addr string
	mu   sync.Mutex
	seqs map[string][]int64
	bad  []string
}

func newGRPCReceiver(t *testing.T) *grpcReceiver {
	g := &grpcReceiver{seqs: map[string][]int64{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = l.Addr().String()
	srv := grpc.NewServer()
	sinkpb.RegisterEventSinkServer(srv, g)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return g
}

func (g *grpcReceiver) Send(stream grpc.ClientStreamingServer[v2pb.Event, emptypb.Empty]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	job := strings.Join(md.Get("kgd-job"), ",")
	var seqs []int64
	for {
		e, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err // not acknowledged: the runner sends them again
		}
		seqs = append(seqs, e.GetKgdSequence())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(md.Get("kgd-repository")) != 1 || job == "" {
		g.bad = append(g.bad, "stream without kgd-repository or kgd-job metadata")
	}
	g.seqs[job] = append(g.seqs[job], seqs...)
	return stream.SendAndClose(&emptypb.Empty{})
}

func (g *grpcReceiver) job(id string) []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int64(nil), g.seqs[id]...)
}

// outputs is what checkOutputs needs of the end-to-end test.
type outputs struct {
	st      *localstack.Stack
	fs      *firestore.Client
	ps      *pubsub.Client
	hooks   *hookReceiver
	streams *grpcReceiver
	api     func(t *testing.T, method, path, body string) (int, string, http.Header)
	// ok is a push that succeeded (and was replaced by a later one);
	// failed one whose configuration file did not parse.
	ok, failed *demo.Pushed
	namespace  string
}

// checkOutputs checks where a succeeding and a failing push were reported
// besides the API: commit statuses and Deployments on the GitHub
// stand-in (through GitHub's REST routes), the events topic, the webhook
// and the gRPC sinks. Each is asynchronous: it waits (up to a bound) for
// the outcome, never for a time.
func checkOutputs(t *testing.T, ctx context.Context, o outputs) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	key, err := secret.ParseKey(o.st.Config.EncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	box, err := secret.NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(o.fs, box)
	if err != nil {
		t.Fatal(err)
	}
	batches := map[string][]store.EventBatch{}
	for _, id := range []string{o.ok.JobID, o.failed.JobID} {
		if batches[id], err = st.JobBatches(ctx, id); err != nil || len(batches[id]) == 0 {
			t.Fatalf("stored events of job %s: %d batches, %v", id, len(batches[id]), err)
		}
	}
	// until polls cond until it holds or ctx ends.
	until := func(t *testing.T, what string, cond func() (bool, string)) {
		t.Helper()
		for {
			ok, state := cond()
			if ok {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: still %s", what, state)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	t.Run("github", func(t *testing.T) {
		gh := github.NewClient(nil).WithAuthToken(o.st.GitHub.Token("demo"))
		gh.BaseURL, _ = url.Parse(o.st.URLs.GitHubAPI)
		// statuses returns a commit's statuses, oldest first.
		statuses := func(sha string) []*github.RepoStatus {
			list, _, err := gh.Repositories.ListStatuses(ctx, "demo", "hello", sha, nil)
			if err != nil {
				t.Fatalf("GET statuses of %s: %v", sha, err)
			}
			slices.Reverse(list)
			return list
		}
		states := func(list []*github.RepoStatus) string {
			var s []string
			for _, st := range list {
				s = append(s, st.GetState())
			}
			return strings.Join(s, " ")
		}
		for _, tt := range []struct {
			push       *demo.Pushed
			want, desc string
		}{
			{o.ok, "success", "Built, deployed and rolled out: hello"},
			{o.failed, "failure", "kube-git-deploy.toml:3"},
		} {
			var list []*github.RepoStatus
			until(t, "statuses of "+tt.push.After, func() (bool, string) {
				list = statuses(tt.push.After)
				return len(list) > 0 && list[len(list)-1].GetState() != "pending", states(list)
			})
			last := list[len(list)-1]
			// The pending may have been replaced before it was sent.
			if got := states(list); got != tt.want && got != "pending "+tt.want {
				t.Errorf("statuses of %s: %s; want [pending] %s", tt.push.After, got, tt.want)
			}
			if last.GetContext() != "kube-git-deploy" || !strings.Contains(last.GetDescription(), tt.desc) {
				t.Errorf("final status of %s: context %q, description %q; want kube-git-deploy, naming %q",
					tt.push.After, last.GetContext(), last.GetDescription(), tt.desc)
			}
			// The link is the job's events on the API service.
			link := last.GetTargetURL()
			if !strings.Contains(link, "/kgd/v1/export?") || !strings.Contains(link, "job="+tt.push.JobID) {
				t.Errorf("final status of %s links to %q, not to its job's events", tt.push.After, link)
			} else if resp, err := http.Get(link); err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s (the status's link): %v %v", link, resp, err)
			} else {
				resp.Body.Close()
			}
		}

		// The succeeding push's deployment of unit hello, replaced by the
		// next push's.
		var deps []*github.Deployment
		var sts []*github.DeploymentStatus
		until(t, "deployment of "+o.ok.After, func() (bool, string) {
			deps, _, err = gh.Repositories.ListDeployments(ctx, "demo", "hello", &github.DeploymentsListOptions{SHA: o.ok.After})
			if err != nil {
				t.Fatal(err)
			}
			if len(deps) != 1 {
				return false, fmt.Sprintf("%d deployments", len(deps))
			}
			sts, _, err = gh.Repositories.ListDeploymentStatuses(ctx, "demo", "hello", deps[0].GetID(), nil)
			if err != nil {
				t.Fatal(err)
			}
			return len(sts) > 0 && sts[0].GetState() == "inactive", fmt.Sprintf("%d statuses", len(sts))
		})
		if d := deps[0]; d.GetTask() != "deploy:hello" || d.GetEnvironment() != o.namespace {
			t.Errorf("deployment: task %q, environment %q; want deploy:hello in %s", d.GetTask(), d.GetEnvironment(), o.namespace)
		}
		var got []string
		for _, s := range slices.Backward(sts) {
			got = append(got, s.GetState())
		}
		if g := strings.Join(got, " "); g != "in_progress success inactive" && g != "success inactive" {
			t.Errorf("deployment statuses: %s; want [in_progress] success inactive", g)
		}
		if deps, _, err := gh.Repositories.ListDeployments(ctx, "demo", "hello", &github.DeploymentsListOptions{SHA: o.failed.After}); err != nil || len(deps) != 0 {
			t.Errorf("deployments of the failing push: %d, %v; want none", len(deps), err)
		}
	})

	t.Run("events-topic", func(t *testing.T) {
		want := map[string]int{o.ok.JobID: localstack.Sequences(batches[o.ok.JobID]), o.failed.JobID: localstack.Sequences(batches[o.failed.JobID])}
		got, err := localstack.ReceiveEvents(ctx, o.ps, "e2e-events", func(got map[string][]localstack.TopicEvent) bool {
			for id, n := range want {
				if len(got[id]) < n {
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("receiving the events topic: %v (got %d and %d messages, want %d and %d)",
				err, len(got[o.ok.JobID]), len(got[o.failed.JobID]), want[o.ok.JobID], want[o.failed.JobID])
		}
		for id := range want {
			if err := localstack.CheckTopicEvents(got[id], batches[id]); err != nil {
				t.Errorf("job %s: %v", id, err)
			}
		}
	})

	t.Run("webhook-sink", func(t *testing.T) {
		code, out, _ := o.api(t, http.MethodGet, "kgd/v1/export?repository=demo/hello&job="+o.ok.JobID, "")
		if code != http.StatusOK {
			t.Fatalf("export: %d %s", code, out)
		}
		var want []int64
		for _, line := range strings.Split(out, "\n") {
			var e struct {
				Event struct{ Sequence int64 } `json:"event"`
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("export line %q: %v", line, err)
			}
			want = append(want, e.Event.Sequence)
		}
		until(t, "webhook sink", func() (bool, string) {
			got := o.hooks.job(o.ok.JobID)
			return len(got) >= len(want), fmt.Sprintf("%d of %d envelopes", len(got), len(want))
		})
		if diff := cmp.Diff(want, o.hooks.job(o.ok.JobID)); diff != "" {
			t.Errorf("envelopes the webhook sink got, by sequence (-export +sink):\n%s", diff)
		}
		if got := o.hooks.job(o.failed.JobID); len(got) != 0 {
			t.Errorf("the failing push (no build, no deploy) sent envelopes %v", got)
		}
		o.hooks.mu.Lock()
		defer o.hooks.mu.Unlock()
		for id, n := range o.hooks.deliveries {
			if n != 1 {
				t.Errorf("delivery %s received %d times", id, n)
			}
		}
		if len(o.hooks.bad) > 0 {
			t.Errorf("the webhook sink got bad requests: %q", o.hooks.bad)
		}
	})

	t.Run("grpc-sink", func(t *testing.T) {
		for _, id := range []string{o.ok.JobID, o.failed.JobID} {
			var want []int64
			for _, b := range batches[id] {
				want = append(want, b.V2Seq...)
			}
			until(t, "gRPC sink", func() (bool, string) {
				got := o.streams.job(id)
				return len(got) >= len(want), fmt.Sprintf("%d of %d events", len(got), len(want))
			})
			if diff := cmp.Diff(want, o.streams.job(id)); diff != "" {
				t.Errorf("v2 events of job %s the gRPC sink got, by sequence (-stored +sink):\n%s", id, diff)
			}
		}
		o.streams.mu.Lock()
		defer o.streams.mu.Unlock()
		if len(o.streams.bad) > 0 {
			t.Errorf("the gRPC sink got bad streams: %q", o.streams.bad)
		}
	})
}
