package skaffold_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

var (
	jobA = store.JobRef{ID: "job-a", Owner: "octo", Name: "app", Iteration: 1}
	jobB = store.JobRef{ID: "job-b", Owner: "octo", Name: "other", Iteration: 1}
)

// TestEventsReplayThenLive: a stream gets the stored history, then live
// events, each exactly once and in order, over gRPC and HTTP, v1 and v2.
func TestEventsReplayThenLive(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.append(jobA, 0, texts("a", 0, 3)...)
	b.append(jobA, 1, texts("a", 3, 5)...)

	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	g, err := a.v1.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := a.v2.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	h := a.openStream(t, ctx, "/v1/events")
	h2 := a.openStream(t, ctx, "/v2/events")

	if got := v1Entries(t, g, 5); !equal(got, texts("a", 0, 5)) {
		t.Errorf("gRPC v1 replay = %v", got)
	}
	if got := h.entries(t, 5); !equal(got, texts("a", 0, 5)) {
		t.Errorf("HTTP v1 replay = %v", got)
	}
	// Live, written while the streams are open, including a write that
	// races the replay of a stream that connects now.
	b.append(jobA, 2, texts("a", 5, 8)...)
	late := a.openStream(t, ctx, "/v1/events")
	b.append(jobA, 3, texts("a", 8, 10)...)
	if got := v1Entries(t, g, 5); !equal(got, texts("a", 5, 10)) {
		t.Errorf("gRPC v1 live = %v", got)
	}
	if got := h.entries(t, 5); !equal(got, texts("a", 5, 10)) {
		t.Errorf("HTTP v1 live = %v", got)
	}
	if got := late.entries(t, 10); !equal(got, texts("a", 0, 10)) {
		t.Errorf("late HTTP v1 stream = %v", got)
	}
	for i, want := range texts("a", 0, 10) {
		e, err := g2.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := e.GetSkaffoldLogEvent().GetMessage(); got != want {
			t.Errorf("gRPC v2 event %d = %q, want %q", i, got, want)
		}
		f, line := h2.next(t)
		var ev struct {
			SkaffoldLogEvent struct {
				TaskID  *string `json:"task_id"`
				Message string  `json:"message"`
				Level   string  `json:"level"`
			} `json:"skaffoldLogEvent"`
		}
		if err := json.Unmarshal(f.Result, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.SkaffoldLogEvent.Message != want || ev.SkaffoldLogEvent.TaskID == nil || ev.SkaffoldLogEvent.Level != "DEBUG" {
			t.Errorf("HTTP v2 frame %d = %s (want message %q, task_id emitted, level DEBUG)", i, line, want)
		}
	}
	// One listener served all five streams.
	if n := a.feed.Listeners(); n != 1 {
		t.Errorf("listeners = %d, want 1", n)
	}
}

// TestHTTPFraming checks grpc-gateway's stream framing and the JSON of a
// real pipeline event, v1 and v2.
func TestHTTPFraming(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	f := event.NewFactory(event.Job{ID: "job-a", Repository: "octo/app", Commit: strings.Repeat("a", 40), Ref: "refs/heads/main", Branch: "main", Iteration: 1},
		event.Plan{Artifacts: []event.Artifact{{Name: "img"}}}, time.Now)
	info := &event.ErrorInfo{Code: 104, Message: "docker build failed"}
	batch := store.EventBatch{Job: jobA, V1: []*v1pb.LogEntry{f.V1Build("img", event.Failed, info)}}
	batch.V2 = append(batch.V2, f.V2Build("img", event.StepBuild, event.V2Failed, info))
	if err := b.store.AppendEvents(b.ctx, batch); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()

	s := a.openStream(t, ctx, "/v1/events")
	if ct := s.resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if te := s.resp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
		t.Errorf("Transfer-Encoding = %v, want chunked", te)
	}
	_, line := s.next(t)
	if !strings.HasPrefix(line, `{"result":{`) || !strings.HasSuffix(line, "}}\n") {
		t.Errorf("v1 frame %q is not {\"result\":...}\\n", line)
	}
	be := object(t, line, "result", "event", "buildEvent")
	for k, want := range map[string]any{"artifact": "img", "status": "Failed", "errCode": "BUILD_USER_ERROR", "err": "docker build failed"} {
		if be[k] != want {
			t.Errorf("v1 buildEvent.%s = %#v, want %#v (frame %s)", k, be[k], want, line)
		}
	}

	s2 := a.openStream(t, ctx, "/v2/events")
	_, line = s2.next(t)
	bs := object(t, line, "result", "buildSubtaskEvent")
	if !strings.Contains(line, `"suggestions":[]`) {
		t.Errorf("unpopulated fields are not emitted: %s", line)
	}
	for k, want := range map[string]any{"id": "img", "task_id": "Build-1", "step": "Build", "status": "Failed"} {
		if bs[k] != want {
			t.Errorf("v2 buildSubtaskEvent.%s = %#v, want %#v (frame %s)", k, bs[k], want, line)
		}
	}
	ae, _ := bs["actionableErr"].(map[string]any)
	if ae["errCode"] != "BUILD_USER_ERROR" || ae["message"] != "docker build failed" {
		t.Errorf("v2 actionableErr = %#v", ae)
	}
}

// TestEventsScope: metadata, query parameter and header scope a stream to
// one repository; bad scopes are errors.
func TestEventsScope(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)
	b.track("octo", "other", allOn)
	b.append(jobA, 0, "a-0")
	b.append(jobB, 0, "b-0")
	b.append(jobA, 1, "a-1")
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()

	g, err := a.v1.Events(scoped(ctx, "Octo/App"), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v1Entries(t, g, 2); !equal(got, []string{"a-0", "a-1"}) {
		t.Errorf("gRPC scoped = %v", got)
	}
	if got := a.openStream(t, ctx, "/v1/events?repository=octo/other").entries(t, 1); !equal(got, []string{"b-0"}) {
		t.Errorf("HTTP ?repository = %v", got)
	}
	all := a.openStream(t, ctx, "/v1/events")
	if got, want := all.entries(t, 3), b.storeOrder(); !equal(got, want) {
		t.Errorf("HTTP all = %v, want %v (by commit time)", got, want)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.httpURL+"/v1/events", nil)
	req.Header.Set("X-Kgd-Repository", "octo/other")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hs := &httpStream{resp: resp, r: newReader(resp)}
	if got := hs.entries(t, 1); !equal(got, []string{"b-0"}) {
		t.Errorf("HTTP header scope = %v", got)
	}
	resp.Body.Close()
	// Live events reach only the matching scopes.
	b.append(jobB, 1, "b-1")
	b.append(jobA, 2, "a-2")
	if got := v1Entries(t, g, 1); !equal(got, []string{"a-2"}) {
		t.Errorf("gRPC scoped live = %v", got)
	}
	if got, want := all.entries(t, 2), b.storeOrder()[3:]; !equal(got, want) {
		t.Errorf("HTTP all live = %v, want %v (by commit time)", got, want)
	}

	for _, tc := range []struct {
		name, query string
	}{
		{"no-name", "?repository=octo"},
		{"traversal", "?repository=octo/.."},
		{"bad-owner", "?repository=-octo/app"},
		{"conflict", "?repository=octo/app&repository=octo/other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(a.httpURL + "/v1/events" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			f, line := (&httpStream{resp: resp, r: newReader(resp)}).next(t)
			if resp.StatusCode != http.StatusBadRequest || f.Error == nil || f.Error.Code != int(codes.InvalidArgument) {
				t.Errorf("status %d, frame %s; want 400 with an InvalidArgument error", resp.StatusCode, line)
			}
		})
	}
	_, err = a.v1.GetState(scoped(ctx, "not a repo"), &emptypb.Empty{})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC bad scope: %v, want InvalidArgument", err)
	}
}

// TestManyStreams: many concurrent streams of one scope share one
// listener and all get every event.
func TestManyStreams(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)
	b.append(jobA, 0, texts("a", 0, 10)...)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	const n = 40
	streams := make([]*httpStream, n)
	for i := range streams {
		path := "/v1/events"
		if i%2 == 1 {
			path += "?repository=octo/app"
		}
		streams[i] = a.openStream(t, ctx, path)
	}
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Go(func() {
			if got := s.entries(t, 10); !equal(got, texts("a", 0, 10)) {
				t.Errorf("stream %d replay = %v", i, got)
			}
			if got := s.entries(t, 20); !equal(got, texts("a", 10, 30)) {
				t.Errorf("stream %d live = %v", i, got)
			}
		})
	}
	for c := 1; c <= 4; c++ {
		b.append(jobA, c, texts("a", 10+(c-1)*5, 10+c*5)...)
	}
	wg.Wait()
	if got := a.feed.Listeners(); got != 2 {
		t.Errorf("listeners = %d, want 2 (all, octo/app)", got)
	}
}

// TestSlowStream: a client that stops reading neither holds up another
// stream nor grows memory; once it has fallen MaxLag events behind it is
// disconnected with RESOURCE_EXHAUSTED, and a reconnect replays.
func TestSlowStream(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{maxLag: 50})
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	// A small flow-control window makes the server's sends block soon
	// after the slow client stops reading.
	cc, err := grpc.NewClient(strings.TrimPrefix(a.conn.Target(), "passthrough:///"), grpc.WithTransportCredentials(insecureCreds()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	slow, err := v1pb.NewSkaffoldServiceClient(cc).Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := a.v1.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	b.append(jobA, 0, "first")
	v1Entries(t, slow, 1) // caught up; then it stops reading
	v1Entries(t, fast, 1)
	big := strings.Repeat("x", 4<<10)
	const chunks, per = 10, 20
	for c := 1; c <= chunks; c++ {
		var batch []string
		for i := range per {
			batch = append(batch, big+texts("e", c*per+i, c*per+i+1)[0])
		}
		b.append(jobA, c, batch...)
		// The fast stream keeps up while the slow one does not read.
		for _, e := range v1Entries(t, fast, per) {
			if !strings.HasPrefix(e, big) {
				t.Fatalf("fast stream got %q", e[:20])
			}
		}
	}
	var read int
	for {
		_, err := slow.Recv()
		if err != nil {
			st, _ := status.FromError(err)
			if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "reconnect") {
				t.Fatalf("slow stream ended with %v, want ResourceExhausted asking to reconnect", err)
			}
			break
		}
		read++
		if read > chunks*per {
			t.Fatal("the slow stream was never disconnected")
		}
	}
	if read == chunks*per {
		t.Errorf("slow stream read all %d events before being cut off", read)
	}
	// Reconnecting replays everything.
	again, err := a.v1.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v1Entries(t, again, 1+chunks*per); got[0] != "first" {
		t.Errorf("replay after reconnect starts with %q", got[0])
	}
}

// TestReconnect: a client that disconnects and reconnects without a resume
// position gets the replay window again (here the whole history: the
// repository has fewer iterations than the window), then live events.
func TestReconnect(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{})
	b.track("octo", "app", allOn)
	b.append(jobA, 0, texts("a", 0, 3)...)
	for round := range 3 {
		ctx, cancel := context.WithCancel(b.ctx)
		s := a.openStream(t, ctx, "/v1/events?repository=octo/app")
		if got := s.entries(t, 3+round); !equal(got, texts("a", 0, 3+round)) {
			t.Errorf("round %d replay = %v", round, got)
		}
		b.append(jobA, round+1, texts("a", 3+round, 4+round)...)
		if got := s.entries(t, 1); !equal(got, texts("a", 3+round, 4+round)) {
			t.Errorf("round %d live = %v", round, got)
		}
		cancel()
	}
}

// TestTwoInstances: two API instances over the same Firestore stream the
// same history in the same order: with all repositories in scope, by
// commit time, ties broken by the batch's document id.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	one, two := b.startAPI(apiOptions{}), b.startAPI(apiOptions{})
	b.append(jobA, 0, "a-0")
	b.append(jobB, 0, "b-0")
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	s1, s2 := one.openStream(t, ctx, "/v1/events"), two.openStream(t, ctx, "/v1/events")
	b.append(jobA, 1, "a-1")
	b.append(jobB, 1, "b-1")
	// The documented order of all repositories, by commit time, which
	// is the order written here unless two writes fall in the same
	// millisecond; each repository's own order always holds.
	want := b.storeOrder()
	if a, b := slices.Index(want, "a-0"), slices.Index(want, "a-1"); a > b {
		t.Errorf("stored order %v puts a-1 before a-0", want)
	}
	if got := s1.entries(t, 4); !equal(got, want) {
		t.Errorf("instance 1 = %v", got)
	}
	if got := s2.entries(t, 4); !equal(got, want) {
		t.Errorf("instance 2 = %v", got)
	}
}

// TestRestartMidJob: the API stops while a runner is writing a job; the
// stream ends with UNAVAILABLE; a new instance replays the whole job,
// including what was written while no API ran, exactly once.
func TestRestartMidJob(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	first := b.startAPI(apiOptions{})
	w, err := store.NewJobWriter(b.store, jobA, 0, store.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	emit := func(from, to int) {
		for _, s := range texts("e", from, to) {
			if err := w.Emit(&v1pb.LogEntry{Entry: s}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	emit(0, 5)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	s, err := first.v1.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v1Entries(t, s, 5); !equal(got, texts("e", 0, 5)) {
		t.Errorf("before restart = %v", got)
	}
	first.stop()
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream at shutdown ended with %v, want Unavailable", err)
	}
	emit(5, 8) // while no API runs
	second := b.startAPI(apiOptions{})
	s2, err := second.v1.Events(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v1Entries(t, s2, 8); !equal(got, texts("e", 0, 8)) {
		t.Errorf("after restart = %v", got)
	}
	emit(8, 10)
	if err := w.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
	if got := v1Entries(t, s2, 2); !equal(got, texts("e", 8, 10)) {
		t.Errorf("live after restart = %v", got)
	}
}

// object returns the JSON object at path in line.
func object(t *testing.T, line string, path ...string) map[string]any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatal(err)
	}
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no %q in %s", k, line)
		}
		v = m[k]
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v is not an object in %s", path, line)
	}
	return m
}

// TestStalledHTTPClient: an HTTP client that stops reading is disconnected
// after the write timeout, which ends its gRPC stream and frees the
// scope's listener.
func TestStalledHTTPClient(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	a := b.startAPI(apiOptions{writeTimeout: 300 * time.Millisecond})
	b.track("octo", "app", allOn)
	// A small receive buffer, set before connecting so that the window
	// stays small: the server's writes block after a few hundred KiB.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(a.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /v1/events?repository=octo/app HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream's listener", func() bool { return a.feed.Listeners() > 0 })
	// Far more than the loopback socket buffers hold, never read.
	big := strings.Repeat("x", 100<<10)
	deadline := time.Now().Add(60 * time.Second)
	for chunk := 0; a.feed.Listeners() > 0; chunk++ {
		if time.Now().After(deadline) {
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("the stalled stream still holds its listener after %d chunks", chunk)
		}
		if chunk < 60 {
			b.append(jobA, chunk, big)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The connection was closed by the server: reading drains what the
	// buffers held and then ends.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if err != nil {
		t.Errorf("after %d bytes: %v, want the server to have closed the connection", n, err)
	}
	if n >= 60*int64(len(big)) {
		t.Errorf("the stalled client could read all %d bytes", n)
	}
}
