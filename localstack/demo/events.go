package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
)

// Events reads the API's HTTP event stream of repository
// (GET /v1/events?repository=owner/name: every event from the start, then
// live, one {"result": LogEntry} JSON line each) and calls fn with each
// event until fn returns false, the stream ends or ctx ends.
func (d *Demo) Events(ctx context.Context, repository string, fn func(*v1pb.LogEntry) bool) error {
	return d.stream(ctx, "v1/events", repository, func(raw json.RawMessage) (bool, error) {
		var e v1pb.LogEntry
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &e); err != nil {
			return false, err
		}
		return fn(&e), nil
	})
}

// EventsV2 is Events for the v2 stream (GET /v2/events).
func (d *Demo) EventsV2(ctx context.Context, repository string, fn func(*v2pb.Event) bool) error {
	return d.stream(ctx, "v2/events", repository, func(raw json.RawMessage) (bool, error) {
		var e v2pb.Event
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &e); err != nil {
			return false, err
		}
		return fn(&e), nil
	})
}

// stream reads one of the API's HTTP event streams, calling fn with each
// message's result until fn returns false or fails, the stream ends or
// ctx ends.
func (d *Demo) stream(ctx context.Context, path, repository string, fn func(json.RawMessage) (bool, error)) error {
	u := d.URLs.APIHTTP + path + "?repository=" + url.QueryEscape(repository)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	// The stream outlives any client timeout; ctx ends it.
	client := *d.Client
	client.Timeout = 0
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("events of %s: %w", repository, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("events of %s: GET %s: %s", repository, u, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var chunk struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &chunk); err != nil {
			return fmt.Errorf("events of %s: %w: %.200s", repository, err, sc.Bytes())
		}
		if chunk.Error != nil {
			return fmt.Errorf("events of %s: the stream ended with an error: %s", repository, chunk.Error)
		}
		more, err := fn(chunk.Result)
		if err != nil {
			return fmt.Errorf("events of %s: %w", repository, err)
		}
		if !more {
			return nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("events of %s: %w", repository, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("events of " + repository + ": the stream ended")
}

// Iteration is one job's part of a repository's event stream.
type Iteration struct {
	// Number is the dev-loop iteration (1 for a repository's first job).
	Number int
	// JobID is the job's id.
	JobID string
	// Status is the final DevLoopEvent status: "Succeeded" or "Failed".
	Status string
	// Err is the DevLoopEvent's error when it failed.
	Err *v1pb.ActionableErr
	// Events are the iteration's v1 events, from its MetaEvent to its
	// final DevLoopEvent.
	Events []*v1pb.LogEntry
}

// String describes the outcome in one line.
func (it *Iteration) String() string {
	if it.Err != nil {
		return fmt.Sprintf("iteration %d %s: %s: %s", it.Number, it.Status, it.Err.GetErrCode(), it.Err.GetMessage())
	}
	return fmt.Sprintf("iteration %d %s", it.Number, it.Status)
}

// WaitForCommit follows the events of repository until the iteration of
// commit (the first one whose MetaEvent names it) ends, calling progress
// (if not nil) with each of its events' text.
func (d *Demo) WaitForCommit(ctx context.Context, repository, commit string, progress func(string)) (*Iteration, error) {
	return d.waitFor(ctx, repository, "commit "+short(commit), func(add map[string]string) bool { return add[event.KeyCommit] == commit }, progress)
}

// WaitForJob is WaitForCommit for the iteration of job jobID (an Execute
// deploy runs a second job of the same commit).
func (d *Demo) WaitForJob(ctx context.Context, repository, jobID string, progress func(string)) (*Iteration, error) {
	return d.waitFor(ctx, repository, "job "+jobID, func(add map[string]string) bool { return add[event.KeyJobID] == jobID }, progress)
}

// ended reports whether a dev loop status is final.
func ended(status string) bool {
	return status == event.Succeeded || status == event.Failed || status == event.Canceled
}

func (d *Demo) waitFor(ctx context.Context, repository, what string, match func(map[string]string) bool, progress func(string)) (*Iteration, error) {
	var it *Iteration
	err := d.Events(ctx, repository, func(e *v1pb.LogEntry) bool {
		ev := e.GetEvent()
		if meta := ev.GetMetaEvent(); meta != nil && it == nil {
			if add := meta.GetMetadata().GetAdditional(); match(add) {
				n, _ := strconv.Atoi(add[event.KeyIteration])
				it = &Iteration{Number: n, JobID: add[event.KeyJobID]}
			}
		}
		if it == nil {
			return true
		}
		if meta := ev.GetMetaEvent(); meta != nil && meta.GetMetadata().GetAdditional()[event.KeyJobID] != it.JobID {
			return true // another job's
		}
		it.Events = append(it.Events, e)
		if progress != nil && e.GetEntry() != "" {
			progress(e.GetEntry())
		}
		if dl := ev.GetDevLoopEvent(); dl != nil && int(dl.GetIteration()) == it.Number-1 && ended(dl.GetStatus()) {
			it.Status, it.Err = dl.GetStatus(), dl.GetErr()
			return false
		}
		return true
	})
	if err != nil {
		if it != nil {
			return nil, fmt.Errorf("wait for %s of %s (iteration %d): %w", what, repository, it.Number, err)
		}
		return nil, fmt.Errorf("wait for %s of %s (no event names it yet): %w", what, repository, err)
	}
	return it, nil
}

// JobEventsV2 reads the v2 events of repository until the DevLoop task of
// job jobID ends, and returns that job's events, from its MetaEvent (v2
// metadata.runID is the job id; its task ids end in the iteration).
func (d *Demo) JobEventsV2(ctx context.Context, repository, jobID string) ([]*v2pb.Event, error) {
	var out []*v2pb.Event
	suffix := ""
	err := d.EventsV2(ctx, repository, func(e *v2pb.Event) bool {
		if meta := e.GetMetaEvent(); meta != nil && suffix == "" && meta.GetMetadata().GetRunID() == jobID {
			suffix = "-" + meta.GetMetadata().GetAdditional()[event.KeyIteration]
		}
		if suffix == "" {
			return true
		}
		if meta := e.GetMetaEvent(); meta != nil && meta.GetMetadata().GetRunID() != jobID {
			return true
		}
		out = append(out, e)
		task := e.GetTaskEvent()
		// v2's final statuses are spelled as v1's.
		return task == nil || task.GetId() != event.TaskDevLoop+suffix || !ended(task.GetStatus())
	})
	if err != nil {
		return nil, fmt.Errorf("v2 events of job %s: %w", jobID, err)
	}
	return out, nil
}
