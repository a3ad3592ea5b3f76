package eventtopic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/eventtopic"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.PubSub) }

// batches returns the event batches of a job of n chunks, numbered from
// seq on as the store numbers them (each event's v1, then its v2).
func batches(job store.JobRef, chunks int, seq *int64) []store.EventBatch {
	f := event.NewFactory(event.Job{ID: job.ID, Repository: job.Owner + "/" + job.Name, Iteration: 1}, event.Plan{}, nil)
	var out []store.EventBatch
	for c := range chunks {
		b := store.EventBatch{Job: job, Chunk: c}
		add := func(v1 *v1pb.LogEntry, v2 *v2pb.Event) {
			if v1 != nil {
				*seq++
				b.V1, b.V1Seq = append(b.V1, v1), append(b.V1Seq, *seq)
			}
			if v2 != nil {
				*seq++
				b.V2, b.V2Seq = append(b.V2, v2), append(b.V2Seq, *seq)
			}
		}
		if c == 0 {
			add(f.V1Meta(), f.V2Meta())
			add(f.V1DevLoop(event.InProgress, nil), f.V2Task(event.TaskDevLoop, event.V2InProgress, nil))
		}
		for i := range 3 {
			add(nil, f.V2Log(event.TaskBuild, event.SubtaskNone, 0, fmt.Sprintf("chunk %d line %d", c, i)))
		}
		if c == chunks-1 {
			add(f.V1DevLoop(event.Succeeded, nil), f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil))
		}
		out = append(out, b)
	}
	return out
}

// received is what a subscriber saw of one message.
type received struct {
	Job, Repository, Schema, Kind string
	Sequence                      int64
}

// TestPublish publishes the events of three jobs, interleaved, through
// two Publishers one after the other (a runner and the one that took over
// after it stopped), and checks that an ordered subscription receives
// every event exactly once, each job's in order, with its attributes and
// a data that is the event itself.
func TestPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	project := emulatortest.ProjectID(t)
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := eventtopic.Ensure(ctx, client, project, eventtopic.DefaultTopic, "audit"); err != nil {
		t.Fatal(err)
	}
	// Twice: Ensure is idempotent.
	if err := eventtopic.Ensure(ctx, client, project, eventtopic.DefaultTopic, "audit"); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	var seq int64
	jobs := []store.JobRef{{Owner: "acme", Name: "web", ID: "job-a"}, {Owner: "acme", Name: "web", ID: "job-b"}, {Owner: "acme", Name: "api", ID: "job-c"}}
	var all [][]store.EventBatch
	want := map[string][]received{}
	for _, j := range jobs {
		bs := batches(j, 4, &seq)
		all = append(all, bs)
		for _, b := range bs {
			for i, e := range b.V1 {
				want[j.ID] = append(want[j.ID], received{j.ID, j.Owner + "/" + j.Name, "v1", kindOfV1(e), b.V1Seq[i]})
			}
			for i, e := range b.V2 {
				want[j.ID] = append(want[j.ID], received{j.ID, j.Owner + "/" + j.Name, "v2", kindOfV2(e), b.V2Seq[i]})
			}
		}
	}
	// The store's order within a batch: by sequence number.
	for id := range want {
		sortBySeq(want[id])
	}

	// The first runner stores and publishes each job's first two chunks,
	// interleaved, and stops; the second the rest.
	first := eventtopic.New(client, eventtopic.DefaultTopic, log)
	for c := range 2 {
		for _, bs := range all {
			first.Send(bs[c])
		}
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	first.Send(all[0][2]) // after Close: dropped, not published
	second := eventtopic.New(client, eventtopic.DefaultTopic, log)
	for c := 2; c < 4; c++ {
		for _, bs := range all {
			second.Send(bs[c])
		}
	}
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, w := range want {
		total += len(w)
	}
	if got := first.Stats().Published + second.Stats().Published; got != int64(total) {
		t.Fatalf("published %d messages, want %d (stats %+v, %+v)", got, total, first.Stats(), second.Stats())
	}

	var mu sync.Mutex
	got := map[string][]received{}
	n := 0
	rctx, rcancel := context.WithCancel(ctx)
	err = client.Subscriber("audit").Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		a := m.Attributes
		seq, _ := strconv.ParseInt(a[eventtopic.AttrSequence], 10, 64)
		r := received{a[eventtopic.AttrJobID], a[eventtopic.AttrRepository], a[eventtopic.AttrSchema], a[eventtopic.AttrKind], seq}
		if m.OrderingKey != r.Job {
			t.Errorf("message of job %s has ordering key %q", r.Job, m.OrderingKey)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, m.Data); err != nil || !bytes.Equal(compact.Bytes(), m.Data) {
			t.Errorf("message data is not one compact JSON object: %s (%v)", m.Data, err)
		}
		if dataSeq := sequenceOf(t, r.Schema, m.Data); dataSeq != seq {
			t.Errorf("message data has kgdSequence %d, attribute %d", dataSeq, seq)
		}
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		got[r.Job] = append(got[r.Job], r)
		if n++; n == total {
			rcancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != total {
		t.Fatalf("received %d messages before the deadline, want %d", n, total)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages per job (-want +got):\n%s", diff)
	}
}

func sortBySeq(rs []received) {
	for i := 1; i < len(rs); i++ {
		for k := i; k > 0 && rs[k].Sequence < rs[k-1].Sequence; k-- {
			rs[k], rs[k-1] = rs[k-1], rs[k]
		}
	}
}

func kindOfV1(e *v1pb.LogEntry) string {
	switch e.GetEvent().GetEventType().(type) {
	case *v1pb.Event_MetaEvent:
		return "metaEvent"
	case *v1pb.Event_DevLoopEvent:
		return "devLoopEvent"
	}
	return fmt.Sprintf("%T", e.GetEvent().GetEventType())
}

func kindOfV2(e *v2pb.Event) string {
	switch e.GetEventType().(type) {
	case *v2pb.Event_MetaEvent:
		return "metaEvent"
	case *v2pb.Event_TaskEvent:
		return "taskEvent"
	case *v2pb.Event_SkaffoldLogEvent:
		return "skaffoldLogEvent"
	}
	return fmt.Sprintf("%T", e.GetEventType())
}

func sequenceOf(t *testing.T, schema string, data []byte) int64 {
	t.Helper()
	if schema == "v1" {
		var e v1pb.LogEntry
		if err := protojson.Unmarshal(data, &e); err != nil {
			t.Errorf("v1 data: %v", err)
		}
		return e.GetKgdSequence()
	}
	var e v2pb.Event
	if err := protojson.Unmarshal(data, &e); err != nil {
		t.Errorf("v2 data: %v", err)
	}
	return e.GetKgdSequence()
}
