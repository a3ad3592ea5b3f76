package sink_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/emptypb"

	sinkpb "github.com/kube-git-deploy/kube-git-deploy/proto/sink/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/sink"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

const testToken = "operator-token"

// stream is one Send stream an EventSink server received.
type stream struct {
	job, repo, auth string
	events          []*v2pb.Event
	code            codes.Code // what the server answered: OK acknowledges the events
}

// eventSink is an EventSink server on loopback that records every stream.
// fail, when set, is asked after each event received whether to end the
// stream with an error instead of reading on (call counts streams from 0).
type eventSink struct {
	sinkpb.UnimplementedEventSinkServer
	fail func(call int, s *stream) error

	mu      sync.Mutex
	calls   int
	streams []stream
	ended   chan stream // every ended stream, as it ends
	addr    string
}

func newEventSink(t *testing.T, fail func(call int, s *stream) error) *eventSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &eventSink{fail: fail, ended: make(chan stream, 100), addr: l.Addr().String()}
	srv := grpc.NewServer()
	sinkpb.RegisterEventSinkServer(srv, s)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return s
}

func (s *eventSink) Send(ss sinkpb.EventSink_SendServer) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	st := stream{job: first(sink.MetadataJob), repo: first(sink.MetadataRepository), auth: first("authorization")}
	s.mu.Lock()
	call := s.calls
	s.calls++
	s.mu.Unlock()
	end := func(err error) error {
		st.code = status.Code(err)
		s.mu.Lock()
		s.streams = append(s.streams, st)
		s.mu.Unlock()
		s.ended <- st
		return err
	}
	for {
		e, err := ss.Recv()
		if err == io.EOF {
			return end(ss.SendAndClose(&emptypb.Empty{}))
		}
		if err != nil {
			return end(err)
		}
		st.events = append(st.events, e)
		if s.fail != nil {
			if err := s.fail(call, &st); err != nil {
				return end(err)
			}
		}
	}
}

// acknowledged returns the events of the streams answered OK, by job, in
// the order received.
func (s *eventSink) acknowledged() map[string][]*v2pb.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]*v2pb.Event{}
	for _, st := range s.streams {
		if st.code == codes.OK {
			out[st.job] = append(out[st.job], st.events...)
		}
	}
	return out
}

// wait returns the next stream to end, failing the test after a while.
func (s *eventSink) wait(t *testing.T) stream {
	t.Helper()
	select {
	case st := <-s.ended:
		return st
	case <-time.After(30 * time.Second):
		t.Fatal("no stream ended within 30 s")
		return stream{}
	}
}

func newGRPC(t *testing.T, target string, idle time.Duration) *sink.GRPC {
	t.Helper()
	g, err := sink.NewGRPC(sink.GRPCConfig{Target: target, Insecure: true, Token: testToken, IdleTimeout: idle,
		Timeout: 10 * time.Second, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}, testLogger(t))
	if err != nil {
		t.Fatalf("NewGRPC: %v", err)
	}
	t.Cleanup(func() { _ = g.Close(t.Context()) })
	return g
}

// wantEvents returns the v2 events of batches by job, with kgd_sequence.
func wantEvents(batches []store.EventBatch) map[string][]*v2pb.Event {
	out := map[string][]*v2pb.Event{}
	for _, b := range batches {
		for i, e := range b.V2 {
			e = proto.CloneOf(e)
			e.KgdSequence = proto.Int64(b.V2Seq[i])
			out[b.Job.ID] = append(out[b.Job.ID], e)
		}
	}
	return out
}

// TestGRPCStreamsPerJob sends two interleaved jobs: each gets one stream
// with its metadata and the bearer token, carrying its events in order,
// closed after its final DevLoop event.
func TestGRPCStreamsPerJob(t *testing.T) {
	t.Parallel()
	srv := newEventSink(t, nil)
	g := newGRPC(t, srv.addr, time.Hour)
	var seqA, seqB int64 = 1, 1
	a := jobBatches("job-a", "octo", "app", &seqA, event.V2Succeeded)
	b := jobBatches("job-b", "octo", "api", &seqB, event.V2Canceled)
	batches := interleave(a, b)
	for _, bt := range batches {
		g.Send(bt)
	}
	g.Send(store.EventBatch{Job: a[0].Job, Chunk: 4, V1: a[0].V1, V1Seq: a[0].V1Seq}) // no v2 events: nothing sent

	// The final DevLoop events close both streams, without Close.
	got := map[string]stream{}
	for range 2 {
		st := srv.wait(t)
		got[st.job] = st
	}
	closeSink(t, g)

	for job, repo := range map[string]string{"job-a": "octo/app", "job-b": "octo/api"} {
		st := got[job]
		if st.repo != repo || st.auth != "Bearer "+testToken || st.code != codes.OK {
			t.Errorf("stream of %s: repository %q, authorization %q, code %v; want %q, %q, OK",
				job, st.repo, st.auth, st.code, repo, "Bearer "+testToken)
		}
	}
	if diff := cmp.Diff(wantEvents(batches), srv.acknowledged(), protocmp.Transform()); diff != "" {
		t.Errorf("events acknowledged (-want +got):\n%s", diff)
	}
	if got, want := len(srv.streams), 2; got != want {
		t.Errorf("streams = %d, want %d (one per job)", got, want)
	}
	if got, want := g.Stats(), (sink.Stats{Sent: 8}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	for _, bt := range batches {
		for _, e := range bt.V2 {
			if e.KgdSequence != nil {
				t.Fatalf("Send modified the batch's events: kgd_sequence %d set", e.GetKgdSequence())
			}
		}
	}
}

// TestGRPCRetries fails streams and checks that what the server
// acknowledged is every event once, in order.
func TestGRPCRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fail func(call int, s *stream) error
		// wantStats counts the job's 4 batches.
		wantStats sink.Stats
		// wantAcked is whether the job's events are acknowledged.
		wantAcked bool
	}{{
		name: "unavailable-first-stream",
		fail: func(call int, s *stream) error {
			if call == 0 && len(s.events) == 2 {
				return status.Error(codes.Unavailable, "restarting")
			}
			return nil
		},
		wantStats: sink.Stats{Sent: 4, Retried: 1},
		wantAcked: true,
	}, {
		name: "resource-exhausted-twice",
		fail: func(call int, s *stream) error {
			if call < 2 && len(s.events) == 5 {
				return status.Error(codes.ResourceExhausted, "slow down")
			}
			return nil
		},
		wantStats: sink.Stats{Sent: 4, Retried: 2},
		wantAcked: true,
	}, {
		name: "permission-denied",
		fail: func(call int, s *stream) error {
			return status.Error(codes.PermissionDenied, "not this job")
		},
		wantStats: sink.Stats{Dropped: 4},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newEventSink(t, tc.fail)
			g := newGRPC(t, srv.addr, time.Hour)
			var seq int64 = 1
			batches := jobBatches("j", "octo", "app", &seq, event.V2Failed)
			for _, b := range batches {
				g.Send(b)
			}
			closeSink(t, g)

			want := map[string][]*v2pb.Event{}
			if tc.wantAcked {
				want = wantEvents(batches)
			}
			if diff := cmp.Diff(want, srv.acknowledged(), protocmp.Transform()); diff != "" {
				t.Errorf("events acknowledged (-want +got):\n%s", diff)
			}
			if got := g.Stats(); got != tc.wantStats {
				t.Errorf("Stats = %+v, want %+v", got, tc.wantStats)
			}
		})
	}
}

// TestGRPCRefusedJobOthersDelivered refuses one job's streams; the other
// job's events still arrive.
func TestGRPCRefusedJobOthersDelivered(t *testing.T) {
	t.Parallel()
	srv := newEventSink(t, func(_ int, s *stream) error {
		if s.job == "refused" {
			return status.Error(codes.InvalidArgument, "unknown job")
		}
		return nil
	})
	g := newGRPC(t, srv.addr, time.Hour)
	var seq int64 = 1
	refused := jobBatches("refused", "octo", "app", &seq, event.V2Succeeded)
	ok := jobBatches("ok", "octo", "app", &seq, event.V2Succeeded)
	for _, b := range interleave(refused, ok) {
		g.Send(b)
	}
	closeSink(t, g)
	if diff := cmp.Diff(wantEvents(ok), srv.acknowledged(), protocmp.Transform()); diff != "" {
		t.Errorf("events acknowledged (-want +got):\n%s", diff)
	}
	if got, want := g.Stats(), (sink.Stats{Sent: 4, Dropped: 4}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// TestGRPCIdleStreamClosed leaves a job unfinished: its stream is closed,
// and its events acknowledged, once idle; the job's next batch opens a
// new stream.
func TestGRPCIdleStreamClosed(t *testing.T) {
	t.Parallel()
	srv := newEventSink(t, nil)
	g := newGRPC(t, srv.addr, 20*time.Millisecond)
	var seq int64 = 1
	batches := jobBatches("j", "octo", "app", &seq, event.V2Succeeded)
	g.Send(batches[0])
	g.Send(batches[1])
	first := srv.wait(t) // closed when idle, without Close
	if first.code != codes.OK || len(first.events) != len(batches[0].V2)+len(batches[1].V2) {
		t.Errorf("first stream: code %v, %d events; want OK and the first two batches' %d",
			first.code, len(first.events), len(batches[0].V2)+len(batches[1].V2))
	}
	g.Send(batches[2])
	g.Send(batches[3])
	if second := srv.wait(t); second.code != codes.OK {
		t.Errorf("second stream: code %v, want OK", second.code)
	}
	closeSink(t, g)
	if diff := cmp.Diff(wantEvents(batches), srv.acknowledged(), protocmp.Transform()); diff != "" {
		t.Errorf("events acknowledged (-want +got):\n%s", diff)
	}
	if got, want := g.Stats(), (sink.Stats{Sent: 4}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// TestGRPCCloseFlushes closes the sink while a job's stream is open: Close
// ends the stream and waits for the acknowledgment.
func TestGRPCCloseFlushes(t *testing.T) {
	t.Parallel()
	srv := newEventSink(t, nil)
	g := newGRPC(t, srv.addr, time.Hour)
	var seq int64 = 1
	batches := jobBatches("j", "octo", "app", &seq, event.V2Succeeded)[:2]
	for _, b := range batches {
		g.Send(b)
	}
	closeSink(t, g)
	if diff := cmp.Diff(wantEvents(batches), srv.acknowledged(), protocmp.Transform()); diff != "" {
		t.Errorf("events acknowledged (-want +got):\n%s", diff)
	}
	if got, want := g.Stats(), (sink.Stats{Sent: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// TestGRPCCloseUnreachable closes a sink whose receiver is down: Close
// returns when its context ends and counts what is left.
func TestGRPCCloseUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	g := newGRPC(t, addr, time.Hour)
	var seq int64 = 1
	for _, b := range jobBatches("j", "octo", "app", &seq, event.V2Succeeded)[:3] {
		g.Send(b)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err = g.Close(ctx)
	var undelivered *sink.UndeliveredError
	if !errors.As(err, &undelivered) || undelivered.Batches != 3 {
		t.Fatalf("Close = %v, want an *UndeliveredError of 3 batches", err)
	}
	if got := g.Stats(); got.Sent != 0 || got.Dropped != 3 {
		t.Errorf("Stats = %+v, want 0 sent and 3 dropped", got)
	}
}

func TestNewGRPC(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     sink.GRPCConfig
		wantErr bool
	}{
		{"tls", sink.GRPCConfig{Target: "sink.example.com:443", Token: testToken}, false},
		{"insecure", sink.GRPCConfig{Target: "127.0.0.1:1", Insecure: true}, false},
		{"no-target", sink.GRPCConfig{}, true},
		{"negative-idle", sink.GRPCConfig{Target: "127.0.0.1:1", IdleTimeout: -time.Second}, true},
		{"negative-timeout", sink.GRPCConfig{Target: "127.0.0.1:1", Timeout: -time.Second}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, err := sink.NewGRPC(tc.cfg, testLogger(t))
			if (err != nil) != tc.wantErr {
				t.Fatalf("NewGRPC(%+v) error = %v, want error %t", tc.cfg, err, tc.wantErr)
			}
			if err == nil {
				closeSink(t, g) // nothing was sent: nothing contacted
			}
		})
	}
}
