package eventlog_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/eventlog"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	image = "registry.example.com/octo/app"
	ref   = image + ":0123456@sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
)

// job returns the batches of one job as the pipeline emits them (one
// batch per phase), numbered from seq as the store numbers them: each
// event's v1, then its v2. failBuild makes the build fail.
func job(id string, iteration int, seq int64, failBuild bool) []store.EventBatch {
	t := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { t = t.Add(125 * time.Millisecond); return t }
	j := event.Job{ID: id, Repository: "octo/app", Commit: strings.Repeat("0123456789", 4), Ref: "refs/heads/main", Branch: "main",
		DeliveryID: "d-" + id, Trigger: "push", Iteration: iteration}
	f := event.NewFactory(j, event.Plan{Artifacts: []event.Artifact{{Name: image, Context: ".", Dockerfile: "Dockerfile"}}, Releases: 1}, now)
	type pair struct {
		v1 *v1pb.LogEntry
		v2 *v2pb.Event
	}
	log := func(task, subtask, line string) pair {
		return pair{v2: f.V2Log(task, subtask, enumspb.LogLevel_STANDARD, line)}
	}
	phases := [][]pair{{
		{f.V1Meta(), f.V2Meta()},
		{f.V1DevLoop(event.InProgress, nil), f.V2Task(event.TaskDevLoop, event.V2InProgress, nil)},
		{f.V1Build(image, event.InProgress, nil), f.V2Build(image, event.StepBuild, event.V2InProgress, nil)},
		log(event.TaskBuild, image, "#1 [internal] load build definition from Dockerfile\n"),
		log(event.TaskBuild, image, "#5 [2/2] COPY hello /hello\n"),
	}}
	if failBuild {
		info := &event.ErrorInfo{Code: enumspb.StatusCode_BUILD_USER_ERROR, Message: "COPY failed: file not found in build context: hello"}
		phases = append(phases, []pair{
			{f.V1Build(image, event.Failed, info), f.V2Build(image, event.StepBuild, event.V2Failed, info)},
			{f.V1DevLoop(event.Failed, info), f.V2Task(event.TaskDevLoop, event.V2Failed, info)},
		})
	} else {
		phases = append(phases, []pair{
			log(event.TaskBuild, image, "Built "+ref),
			{f.V1Built(image, ref), f.V2Build(image, event.StepBuild, event.V2Succeeded, nil)},
			{f.V1Deploy(event.InProgress, nil), f.V2Deploy(event.V2InProgress, nil)},
			log(event.TaskDeploy, event.SubtaskNone, "Release app revision 2 applied deployment/app"),
		}, []pair{
			{f.V1StatusCheck(event.Started, nil), f.V2Task(event.TaskStatusCheck, event.V2InProgress, nil)},
			{f.V1ResourceStatus("deployment/app", event.Succeeded, "successfully rolled out", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil),
				f.V2ResourceStatus("deployment/app", event.V2Succeeded, "successfully rolled out", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil)},
			{f.V1ResourceStatus("service/app", event.Succeeded, "ready", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil),
				f.V2ResourceStatus("service/app", event.V2Succeeded, "ready", enumspb.StatusCode_STATUSCHECK_SUCCESS, nil)},
			{f.V1StatusCheck(event.Succeeded, nil), f.V2Task(event.TaskStatusCheck, event.V2Succeeded, nil)},
			{f.V1Deploy(event.Complete, nil), f.V2Task(event.TaskDeploy, event.V2Succeeded, nil)},
			{f.V1DevLoop(event.Succeeded, nil), f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil)},
		})
	}
	ref := store.JobRef{ID: id, Owner: "octo", Name: "app", Iteration: iteration}
	var out []store.EventBatch
	for chunk, ph := range phases {
		b := store.EventBatch{Job: ref, Chunk: chunk}
		for _, p := range ph {
			if p.v1 != nil {
				b.V1, b.V1Seq = append(b.V1, p.v1), append(b.V1Seq, seq)
				seq++
			}
			if p.v2 != nil {
				b.V2, b.V2Seq = append(b.V2, p.v2), append(b.V2Seq, seq)
				seq++
			}
		}
		out = append(out, b)
	}
	return out
}

// TestFormats writes a succeeding and a failing job in every format and
// compares with the golden files (go test -update rewrites them).
func TestFormats(t *testing.T) {
	batches := append(job("job-ok", 2, 1, false), job("job-fail", 3, 100, true)...)
	for _, f := range eventlog.Formats {
		t.Run(string(f), func(t *testing.T) {
			var buf bytes.Buffer
			w := eventlog.NewWriter(&buf, f)
			for _, b := range batches {
				if err := w.WriteBatch(b); err != nil {
					t.Fatal(err)
				}
			}
			golden := filepath.Join("testdata", string(f)+".ndjson")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != string(want) {
				t.Errorf("%s output differs from %s (go test -update to accept):\n%s", f, golden, got)
			}
			// Every line is one JSON object.
			for i, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Errorf("line %d is not a JSON object: %v: %s", i+1, err, line)
				}
			}
		})
	}
}

// TestEnvelopes checks the seed-002 mapping itself, not only that it did
// not change.
func TestEnvelopes(t *testing.T) {
	var c eventlog.Converter
	var got []eventlog.Event
	for _, b := range append(job("job-ok", 2, 1, false), job("job-fail", 3, 100, true)...) {
		got = append(got, c.Envelopes(b)...)
	}
	var lastSeq int64
	var kinds []string
	for _, e := range got {
		if e.APIVersion != "skaffold.dev/v1alpha2" || e.Kind != "Event" || (e.EventID != "job-ok" && e.EventID != "job-fail") {
			t.Errorf("envelope header %q %q %q", e.APIVersion, e.Kind, e.EventID)
		}
		if e.Event.Sequence <= lastSeq {
			t.Errorf("sequence %d after %d", e.Event.Sequence, lastSeq)
		}
		lastSeq = e.Event.Sequence
		if _, err := time.Parse(time.RFC3339Nano, e.Event.Timestamp); err != nil {
			t.Errorf("timestamp %q: %v", e.Event.Timestamp, err)
		}
		switch be, de := e.Event.BuildEvent, e.Event.DeployEvent; {
		case be != nil && de == nil:
			k := "build " + be.Status
			if be.Log != "" {
				k += " log"
			}
			if be.Artifact != nil {
				k += " artifact"
				if be.Artifact.ImageName != image || be.Artifact.Tag != image+":0123456" || !strings.HasPrefix(be.Artifact.Digest, "sha256:") {
					t.Errorf("artifact %+v", *be.Artifact)
				}
			}
			kinds = append(kinds, k)
		case de != nil && be == nil:
			if de.Deployer != "helm" {
				t.Errorf("deployer %q", de.Deployer)
			}
			kinds = append(kinds, "deploy "+de.Status+" "+strings.Join(de.Manifests, ","))
		default:
			t.Errorf("envelope with %v build and %v deploy event", be, de)
		}
	}
	want := []string{
		"build IN_PROGRESS", "build IN_PROGRESS log", "build IN_PROGRESS log", "build IN_PROGRESS log", "build SUCCEEDED artifact",
		"deploy IN_PROGRESS ", "deploy SUCCEEDED deployment/app,service/app",
		"build IN_PROGRESS", "build IN_PROGRESS log", "build IN_PROGRESS log", "build FAILED log",
	}
	if strings.Join(kinds, "|") != strings.Join(want, "|") {
		t.Errorf("envelopes:\n got %q\nwant %q", kinds, want)
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want eventlog.Format
		ok   bool
	}{
		{"", eventlog.Envelope, true},
		{"envelope", eventlog.Envelope, true},
		{"skaffold", eventlog.SkaffoldV1, true},
		{"skaffold-v2", eventlog.SkaffoldV2, true},
		{"Envelope", "", false},
		{"json", "", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := eventlog.ParseFormat(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("ParseFormat(%q) = %q, %v; want %q (ok %v)", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

// TestLogTo checks the runner's log line per event: the envelope's
// fields at the top of the JSON record.
func TestLogTo(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	logEvents := eventlog.LogTo(log)
	for _, b := range job("job-ok", 2, 1, false) {
		logEvents(b)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d log lines, want 7 (one per envelope):\n%s", len(lines), buf.String())
	}
	var last struct {
		Msg        string `json:"msg"`
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		EventID    string `json:"event_id"`
		Repo       string `json:"repo"`
		Event      struct {
			Sequence    int64 `json:"sequence"`
			DeployEvent struct {
				Status    string   `json:"status"`
				Manifests []string `json:"manifests"`
			} `json:"deployEvent"`
		} `json:"event"`
	}
	if err := json.Unmarshal([]byte(lines[6]), &last); err != nil {
		t.Fatal(err)
	}
	if last.Msg != "event" || last.APIVersion != "skaffold.dev/v1alpha2" || last.Kind != "Event" || last.EventID != "job-ok" || last.Repo != "octo/app" ||
		last.Event.DeployEvent.Status != "SUCCEEDED" || len(last.Event.DeployEvent.Manifests) != 2 || last.Event.Sequence == 0 {
		t.Errorf("last log line = %s", lines[6])
	}
}
