package skaffold_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// evStream is one event stream of any transport and version, reduced to
// what the tests compare: each event's text (v1 entry, v2 log message)
// and kgd_sequence (0 when absent).
type evStream interface {
	next() (text string, seq int64, err error)
}

// streamParams are a stream's parameters.
type streamParams struct {
	scope    string // "owner/name", or "" for all repositories
	since    string // resume position, "" for none
	sequence bool   // ask for kgd_sequence
}

// transport opens a stream with params; the stream ends with ctx.
type transport func(t *testing.T, a *api, ctx context.Context, p streamParams) evStream

// httpStreamOf opens /v<version>/events, passing since in the query or,
// with header, as X-Kgd-Since (the scope likewise).
func httpStreamOf(version int, header bool) transport {
	return func(t *testing.T, a *api, ctx context.Context, p streamParams) evStream {
		t.Helper()
		q := []string{}
		hdrs := http.Header{}
		set := func(param, hdr, v string) {
			if header {
				hdrs.Set(hdr, v)
			} else {
				q = append(q, param+"="+v)
			}
		}
		if p.scope != "" {
			set("repository", "X-Kgd-Repository", p.scope)
		}
		if p.since != "" {
			set("since", "X-Kgd-Since", p.since)
		}
		if p.sequence {
			set("sequence", "X-Kgd-Sequence", "true")
		}
		path := fmt.Sprintf("/v%d/events", version)
		if len(q) > 0 {
			path += "?" + strings.Join(q, "&")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.httpURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = hdrs
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return &httpEvents{s: &httpStream{resp: resp, r: newReader(resp)}, v2: version == 2}
	}
}

type httpEvents struct {
	s  *httpStream
	v2 bool
}

func (h *httpEvents) next() (string, int64, error) {
	line, err := h.s.r.ReadString('\n')
	if err != nil {
		return "", 0, err
	}
	var f frame
	if err := json.Unmarshal([]byte(line), &f); err != nil {
		return "", 0, fmt.Errorf("line %q: %v", line, err)
	}
	if f.Error != nil {
		return "", 0, status.Error(codes.Code(f.Error.Code), f.Error.Message)
	}
	var r struct {
		Entry            string `json:"entry"`
		SkaffoldLogEvent struct {
			Message string `json:"message"`
		} `json:"skaffoldLogEvent"`
		Seq *string `json:"kgd_sequence"`
	}
	if err := json.Unmarshal(f.Result, &r); err != nil {
		return "", 0, err
	}
	text := r.Entry
	if h.v2 {
		text = r.SkaffoldLogEvent.Message
	}
	var seq int64
	if r.Seq != nil {
		if seq, err = strconv.ParseInt(*r.Seq, 10, 64); err != nil || seq <= 0 {
			return "", 0, fmt.Errorf("kgd_sequence %q in %s", *r.Seq, line)
		}
	}
	return text, seq, nil
}

// grpcStreamOf opens Events of version over gRPC with the metadata.
func grpcStreamOf(version int) transport {
	return func(t *testing.T, a *api, ctx context.Context, p streamParams) evStream {
		t.Helper()
		var md []string
		if p.scope != "" {
			md = append(md, skaffold.ScopeKey, p.scope)
		}
		if p.since != "" {
			md = append(md, skaffold.SinceKey, p.since)
		}
		if p.sequence {
			md = append(md, skaffold.SequenceKey, "true")
		}
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
		if version == 1 {
			s, err := a.v1.Events(ctx, &emptypb.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			return grpcEvents[v1pb.LogEntry]{s: s, text: (*v1pb.LogEntry).GetEntry, seq: (*v1pb.LogEntry).GetKgdSequence}
		}
		s, err := a.v2.Events(ctx, &emptypb.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		return grpcEvents[v2pb.Event]{s: s, text: func(e *v2pb.Event) string { return e.GetSkaffoldLogEvent().GetMessage() }, seq: (*v2pb.Event).GetKgdSequence}
	}
}

type grpcEvents[E any] struct {
	s    grpc.ServerStreamingClient[E]
	text func(*E) string
	seq  func(*E) int64
}

func (g grpcEvents[E]) next() (string, int64, error) {
	e, err := g.s.Recv()
	if err != nil {
		return "", 0, err
	}
	return g.text(e), g.seq(e), nil
}

var transports = []struct {
	name string
	open transport
}{
	{"http-v1-query", httpStreamOf(1, false)},
	{"http-v2-header", httpStreamOf(2, true)},
	{"grpc-v1", grpcStreamOf(1)},
	{"grpc-v2", grpcStreamOf(2)},
}

// TestResume: a client that disconnects after every few events and
// resumes after the last sequence number it got (?since over HTTP, the
// X-Kgd-Since header, x-kgd-since over gRPC) receives exactly the events
// written, each once and in order, while they are being written: the
// resume positions fall in the replay, at its seam with the live events
// and in the live events, also in the middle of a batch.
func TestResume(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			a := b.startAPI(apiOptions{})
			b.track("octo", "app", allOn)
			const batches, per = 40, 3
			want := texts("e", 0, batches*per)
			write := func(c int) error {
				batch := store.EventBatch{Job: jobA, Chunk: c}
				for _, s := range want[c*per : (c+1)*per] {
					batch.V1 = append(batch.V1, &v1pb.LogEntry{Entry: s})
					batch.V2 = append(batch.V2, &v2pb.Event{EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{Message: s}}})
				}
				return b.store.AppendEvents(b.ctx, batch)
			}
			for c := range 10 { // history before the first stream
				if err := write(c); err != nil {
					t.Fatal(err)
				}
			}
			written := make(chan error, 1)
			go func() {
				for c := 10; c < batches; c++ {
					if err := write(c); err != nil {
						written <- err
						return
					}
				}
				written <- nil
			}()
			var got []string
			var last int64
			for conn := 0; len(got) < len(want); conn++ {
				ctx, cancel := context.WithCancel(b.ctx)
				p := streamParams{scope: "octo/app", sequence: true}
				if conn > 0 {
					p.since = strconv.FormatInt(last, 10)
				}
				s := tr.open(t, a, ctx, p)
				for range conn%7 + 1 {
					text, seq, err := s.next()
					if err != nil {
						t.Fatalf("connection %d (since %q) after %d events: %v", conn, p.since, len(got), err)
					}
					if seq <= last {
						t.Fatalf("connection %d (since %q): %q numbered %d, not after %d", conn, p.since, text, seq, last)
					}
					if len(got) >= len(want) || text != want[len(got)] {
						t.Fatalf("connection %d (since %q): event %d is %q, want the next of %d (got so far %v)", conn, p.since, len(got), text, len(want), got)
					}
					got, last = append(got, text), seq
					if len(got) == len(want) {
						break
					}
				}
				cancel()
			}
			if err := <-written; err != nil {
				t.Fatal(err)
			}
			// Nothing more after the last: a resume from the head waits.
			ctx, cancel := context.WithTimeout(b.ctx, 500*time.Millisecond)
			defer cancel()
			s := tr.open(t, a, ctx, streamParams{scope: "octo/app", since: strconv.FormatInt(last, 10)})
			if text, _, err := s.next(); err == nil {
				t.Errorf("after the last event the stream sent %q", text)
			}
		})
	}
}

// TestReplayWindow: without a resume position a stream of one repository
// replays only its last ReplayIterations iterations; since=0 asks for all
// that is kept; a stream of all repositories replays what was committed
// in the last ReplayWindow.
func TestReplayWindow(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	// The service's clock, set below to put the window's start at a
	// commit time.
	var clock atomic.Pointer[time.Time]
	now := func() time.Time {
		if t := clock.Load(); t != nil {
			return *t
		}
		return time.Now()
	}
	a := b.startAPI(apiOptions{replayIterations: 2, now: now})
	b.track("octo", "app", allOn)
	for i := range 4 {
		j := b.claimedJob("octo", "app", fmt.Sprintf("d-%d", i))
		if j.Iteration != i+1 {
			t.Fatalf("job %d has iteration %d", i, j.Iteration)
		}
		b.append(j.JobRef(), 0, fmt.Sprintf("it-%d-a", j.Iteration), fmt.Sprintf("it-%d-b", j.Iteration))
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	for _, tr := range transports {
		s := tr.open(t, a, ctx, streamParams{scope: "octo/app"})
		if got := readTexts(t, s, 4); !equal(got, []string{"it-3-a", "it-3-b", "it-4-a", "it-4-b"}) {
			t.Errorf("%s: replay = %v, want the last 2 iterations", tr.name, got)
		}
		all := tr.open(t, a, ctx, streamParams{scope: "octo/app", since: "0"})
		if got := readTexts(t, all, 8); !equal(got, []string{"it-1-a", "it-1-b", "it-2-a", "it-2-b", "it-3-a", "it-3-b", "it-4-a", "it-4-b"}) {
			t.Errorf("%s: since=0 = %v, want everything", tr.name, got)
		}
	}
	// All repositories: the window's start is a commit time (inclusive).
	// Put it at the commit time of the last batch: the stream replays
	// that batch (and any committed in the same millisecond), nothing
	// older.
	b.append(store.JobRef{ID: "job-z", Owner: "octo", Name: "other", Iteration: 1}, 0, "z")
	stored := b.stored()
	start := stored[len(stored)-1].created
	clock.Store(new(start.Add(time.Hour)))
	var want []string
	for _, e := range stored {
		if !e.created.Before(start) {
			want = append(want, e.text)
		}
	}
	s := grpcStreamOf(1)(t, a, ctx, streamParams{})
	if got := readTexts(t, s, len(want)); !equal(got, want) || !slices.Contains(got, "z") {
		t.Errorf("all repositories: replay = %v, want %v: what was committed from the window's start on", got, want)
	}
	b.append(store.JobRef{ID: "job-z", Owner: "octo", Name: "other", Iteration: 1}, 1, "live")
	if got := readTexts(t, s, 1); !equal(got, []string{"live"}) {
		t.Errorf("all repositories: after the window = %v, want the live event", got)
	}
}

// readTexts reads n events' texts from s.
func readTexts(t *testing.T, s evStream, n int) []string {
	t.Helper()
	var out []string
	for range n {
		text, _, err := s.next()
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		out = append(out, text)
	}
	return out
}

// TestSequenceOptIn: by default no event carries kgd_sequence, neither in
// gRPC's binary encoding nor in the gateway's JSON, so Skaffold's clients
// see Skaffold's messages; asked for, every event carries its number.
// MetaEvents carry theirs in metadata.additional["sequence"] either way.
func TestSequenceOptIn(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)
	// Numbered 1 (v1 meta), 2 (v1 log), 3 (v2 meta), 4 (v2 log).
	batch := store.EventBatch{Job: jobA,
		V1: []*v1pb.LogEntry{
			{Entry: "meta", Event: &v1pb.Event{EventType: &v1pb.Event_MetaEvent{MetaEvent: &v1pb.MetaEvent{Entry: "meta"}}}},
			{Entry: "log"},
		},
		V2: []*v2pb.Event{
			{EventType: &v2pb.Event_MetaEvent{MetaEvent: &v2pb.MetaEvent{Entry: "meta", Metadata: &v2pb.Metadata{Additional: map[string]string{"kept": "yes"}}}}},
			{EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{Message: "log"}}},
		},
	}
	if err := b.store.AppendEvents(b.ctx, batch); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	for _, asked := range []bool{false, true} {
		t.Run(fmt.Sprintf("sequence=%t", asked), func(t *testing.T) {
			gctx := scoped(ctx, "octo/app")
			path := "?repository=octo/app"
			if asked {
				gctx = metadata.AppendToOutgoingContext(gctx, skaffold.SequenceKey, "true")
				path += "&sequence=true"
			}
			g1, err := a.v1.Events(gctx, &emptypb.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			g2, err := a.v2.Events(gctx, &emptypb.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range []int64{1, 2} {
				e, err := g1.Recv()
				if err != nil {
					t.Fatal(err)
				}
				checkBinary(t, "v1", e.KgdSequence, e.ProtoReflect().GetUnknown(), asked, want)
				if i == 0 {
					if got := e.GetEvent().GetMetaEvent().GetMetadata().GetAdditional()[skaffold.MetaSequenceKey]; got != "1" {
						t.Errorf("v1 MetaEvent additional[sequence] = %q, want 1", got)
					}
				}
			}
			for i, want := range []int64{3, 4} {
				e, err := g2.Recv()
				if err != nil {
					t.Fatal(err)
				}
				checkBinary(t, "v2", e.KgdSequence, e.ProtoReflect().GetUnknown(), asked, want)
				if i == 0 {
					add := e.GetMetaEvent().GetMetadata().GetAdditional()
					if add[skaffold.MetaSequenceKey] != "3" || add["kept"] != "yes" {
						t.Errorf("v2 MetaEvent additional = %v, want sequence 3 next to the stored kept=yes", add)
					}
				}
			}
			for _, v := range []string{"v1", "v2"} {
				s := a.openStream(t, ctx, "/"+v+"/events"+path)
				for i := range 2 {
					_, line := s.next(t)
					if has := strings.Contains(line, `"kgd_sequence"`); has != asked {
						t.Errorf("%s JSON frame %d %s: kgd_sequence present = %t, want %t", v, i, line, has, asked)
					}
					if i == 0 && !strings.Contains(line, `"additional":{`) || i == 0 && !strings.Contains(line, `"sequence":"`) {
						t.Errorf("%s JSON MetaEvent %s has no additional sequence", v, line)
					}
				}
			}
		})
	}
}

func checkBinary(t *testing.T, v string, seq *int64, unknown []byte, asked bool, want int64) {
	t.Helper()
	if len(unknown) > 0 {
		t.Errorf("%s event has unknown fields %x", v, unknown)
	}
	switch {
	case !asked && seq != nil:
		t.Errorf("%s event carries kgd_sequence %d unasked", v, *seq)
	case asked && (seq == nil || *seq != want):
		t.Errorf("%s event kgd_sequence = %v, want %d", v, seq, want)
	}
}

// TestStreamErrors: what a stream refuses, with the gRPC code and the HTTP
// status the gateway gives it.
func TestStreamErrors(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)
	b.append(jobA, 0, "a-0", "a-1") // numbered 1..4
	for _, tc := range []struct {
		name   string
		params streamParams
		code   codes.Code
		msg    string
	}{
		{"untracked", streamParams{scope: "octo/none"}, codes.NotFound, "octo/none is not tracked"},
		{"since-unscoped", streamParams{since: "3"}, codes.InvalidArgument, "since needs a repository scope"},
		{"since-not-a-number", streamParams{scope: "octo/app", since: "three"}, codes.InvalidArgument, "is not a sequence number"},
		{"since-negative", streamParams{scope: "octo/app", since: "-1"}, codes.InvalidArgument, "is not a sequence number"},
		{"since-beyond-head", streamParams{scope: "octo/app", since: "5"}, codes.OutOfRange, "since 5 is beyond the latest sequence number of octo/app, 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, tr := range transports {
				ctx, cancel := context.WithCancel(b.ctx)
				_, _, err := tr.open(t, a, ctx, tc.params).next()
				cancel()
				if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
					t.Errorf("%s: %v, want %v with %q", tr.name, err, tc.code, tc.msg)
				}
			}
			q := "?repository=" + tc.params.scope + "&since=" + tc.params.since
			code, body, _ := a.do(t, http.MethodGet, "/v1/events"+q, "")
			if want := map[codes.Code]int{codes.NotFound: 404, codes.InvalidArgument: 400, codes.OutOfRange: 400}[tc.code]; code != want || !strings.Contains(body, tc.msg) {
				t.Errorf("HTTP %s: %d %s, want %d", q, code, body, want)
			}
		})
	}
	t.Run("sequence-not-bool", func(t *testing.T) {
		code, body, _ := a.do(t, http.MethodGet, "/v2/events?sequence=maybe", "")
		if code != 400 || !strings.Contains(body, "is not true or false") {
			t.Errorf("?sequence=maybe: %d %s, want 400", code, body)
		}
	})
}

// TestResumeExpired: a resume position whose next events have expired
// (deleted as the TTL policy does) ends the stream with OutOfRange,
// naming the oldest kept; since=0 replays what is kept.
func TestResumeExpired(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)
	for c := range 3 {
		b.append(jobA, c, fmt.Sprintf("a-%d", c)) // numbered 2c+1 (v1), 2c+2 (v2)
	}
	if _, err := b.fs.Collection(store.EventsCollection).Doc("job-a-00000000").Delete(b.ctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	for _, tr := range transports {
		_, _, err := tr.open(t, a, ctx, streamParams{scope: "octo/app", since: "1"}).next()
		if st, _ := status.FromError(err); st.Code() != codes.OutOfRange || !strings.Contains(st.Message(), "oldest kept is 3") {
			t.Errorf("%s: resume after an expired event: %v, want OutOfRange naming 3", tr.name, err)
		}
		if got := readTexts(t, tr.open(t, a, ctx, streamParams{scope: "octo/app", since: "2"}), 2); !equal(got, []string{"a-1", "a-2"}) {
			t.Errorf("%s: resume after the expired batch = %v", tr.name, got)
		}
		if got := readTexts(t, tr.open(t, a, ctx, streamParams{scope: "octo/app", since: "0"}), 2); !equal(got, []string{"a-1", "a-2"}) {
			t.Errorf("%s: since=0 = %v, want what is kept", tr.name, got)
		}
	}
}

// TestMaxStreams: an instance serves at most MaxStreams streams; one more
// is refused with ResourceExhausted (HTTP 429) naming the setting, and a
// stream that ends makes room.
func TestMaxStreams(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{maxStreams: 2})
	b.track("octo", "app", allOn)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	first, cancelFirst := context.WithCancel(ctx)
	grpcStreamOf(1)(t, a, first, streamParams{})
	a.openStream(t, ctx, "/v2/events?repository=octo/app")
	waitFor(t, "two open streams", func() bool { return a.svc.Streams() == 2 })

	const msg = "too many streams: this API instance already serves 2, its limit (KGD_STREAM_MAX)"
	_, _, err := grpcStreamOf(2)(t, a, ctx, streamParams{scope: "octo/app"}).next()
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), msg) {
		t.Errorf("gRPC stream over the limit: %v, want ResourceExhausted %q", err, msg)
	}
	code, body, _ := a.do(t, http.MethodGet, "/v1/events", "")
	if code != http.StatusTooManyRequests || !strings.Contains(body, msg) || !strings.Contains(body, `"code":8`) {
		t.Errorf("HTTP stream over the limit: %d %s, want 429 with code 8", code, body)
	}
	code, _, _ = a.do(t, http.MethodGet, "/v2/applicationLogs", "")
	if code != http.StatusTooManyRequests {
		t.Errorf("ApplicationLogs over the limit: %d, want 429 (it counts too)", code)
	}
	cancelFirst()
	waitFor(t, "the first stream to end", func() bool { return a.svc.Streams() == 1 })
	b.append(jobA, 0, "a-0")
	if got := readTexts(t, grpcStreamOf(1)(t, a, ctx, streamParams{scope: "octo/app"}), 1); !equal(got, []string{"a-0"}) {
		t.Errorf("stream after one ended = %v", got)
	}
}

// TestUntrackedWhileStreaming: a repository untracked while streamed ends
// its streams with NotFound (an error frame over HTTP, whose 200 was sent).
func TestUntrackedWhileStreaming(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{trackCheck: 100 * time.Millisecond})
	b.track("octo", "app", allOn)
	b.append(jobA, 0, "a-0")
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	var streams []evStream
	for _, tr := range transports {
		s := tr.open(t, a, ctx, streamParams{scope: "octo/app"})
		if got := readTexts(t, s, 1); !equal(got, []string{"a-0"}) {
			t.Fatalf("%s: %v", tr.name, got)
		}
		streams = append(streams, s)
	}
	if err := b.store.UntrackRepository(b.ctx, "octo", "app"); err != nil {
		t.Fatal(err)
	}
	for i, s := range streams {
		_, _, err := s.next()
		if st, _ := status.FromError(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "octo/app is no longer tracked") {
			t.Errorf("%s: %v, want NotFound: no longer tracked", transports[i].name, err)
		}
	}
	waitFor(t, "the streams to be counted out", func() bool { return a.svc.Streams() == 0 })
}
