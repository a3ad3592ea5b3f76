package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Options configures Run.
type Options struct {
	// Owner and Name of the sample repository; default demo/hello. Owner
	// is also the user who signs in and administers the repository.
	Owner, Name string
	// Message is what the deployed app says; default one with the time.
	Message string
	// Wait follows the job's events on the API until its iteration ends.
	Wait bool
	// Timeout bounds that wait; default 5 minutes.
	Timeout time.Duration
}

// Result is what Run did.
type Result struct {
	CreatedRepo, AlreadyTracked bool
	Pushed                      *Pushed
	// Iteration is the job's part of the event stream, when Run waited
	// for it.
	Iteration *Iteration
}

// ErrJobFailed reports a job whose iteration ended Failed.
var ErrJobFailed = errors.New("the job failed")

// Run makes sure the sample repository exists and is tracked (signing in
// first), pushes a new commit of the sample app, and prints to out what
// happened and where to watch. With opts.Wait it follows the events until
// the job's iteration ends.
func (d *Demo) Run(ctx context.Context, out io.Writer, opts Options) (*Result, error) {
	if opts.Owner == "" {
		opts.Owner = Owner
	}
	if opts.Name == "" {
		opts.Name = Name
	}
	if opts.Message == "" {
		opts.Message = "Deployed by make demo at " + time.Now().UTC().Format(time.RFC3339) + "."
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	full := opts.Owner + "/" + opts.Name
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	res := &Result{}

	if err := d.checkUp(ctx); err != nil {
		return nil, err
	}
	created, err := d.CreateRepo(ctx, opts.Owner, opts.Name, opts.Owner)
	if err != nil {
		return nil, err
	}
	res.CreatedRepo = created
	if created {
		say("created %s in the GitHub stand-in (%s%s)", full, d.URLs.GitHub, full)
	} else {
		say("%s exists in the GitHub stand-in", full)
	}
	scopes, err := d.SignIn(ctx, opts.Owner)
	if err != nil {
		return nil, err
	}
	say("signed in to PrivateAPI as %s through the OAuth flow (scopes %s)", opts.Owner, scopes)
	if res.AlreadyTracked, err = d.Track(ctx, opts.Owner, opts.Name); err != nil {
		return nil, err
	}
	if res.AlreadyTracked {
		say("%s is tracked already", full)
	} else {
		say("tracking %s: PrivateAPI created its webhook", full)
	}

	say("building the sample app (go build, CGO_ENABLED=0) ...")
	files, err := Files(ctx, d.URLs.Registry, opts.Owner, opts.Name, opts.Message)
	if err != nil {
		return nil, err
	}
	p, err := d.Push(ctx, opts.Owner, opts.Name, "main", opts.Message, files)
	if err != nil {
		return nil, err
	}
	res.Pushed = p
	say("pushed %s to %s (main); the stand-in delivered the webhook:", short(p.After), full)
	for _, dl := range p.Deliveries {
		answer := strings.TrimSpace(dl.Response)
		if dl.Error != "" {
			answer = dl.Error
		}
		say("  POST %s -> %d %s", dl.URL, dl.StatusCode, answer)
	}
	if p.JobID == "" {
		return res, fmt.Errorf("%w: no webhook delivery of %s was accepted (see above)", ErrNotDelivered, full)
	}
	api := strings.TrimPrefix(strings.TrimSuffix(d.URLs.APIHTTP, "/"), "http://")
	say("")
	say("job %s is queued. Watch it on the Skaffold API:", p.JobID)
	say("  curl -N '%s/v1/events?repository=%s'", api, full)
	say("  curl '%s/v1/state?repository=%s'", api, full)
	say("  curl -N '%s/v2/events?repository=%s'", api, full)
	if !opts.Wait {
		return res, nil
	}
	say("")
	say("following the job's events (Ctrl-C stops watching, not the job):")
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	it, err := d.WaitForCommit(ctx, full, p.After, func(line string) { say("  %s", line) })
	if err != nil {
		return res, err
	}
	res.Iteration = it
	say("%s: %s", short(p.After), it)
	if it.Status != "Succeeded" {
		return res, fmt.Errorf("%w: %s", ErrJobFailed, it)
	}
	return res, nil
}

// checkUp fails with advice when the stack does not answer.
func (d *Demo) checkUp(ctx context.Context) error {
	for _, u := range []string{d.URLs.PrivateAPI + "healthz", d.URLs.GitHub + "_standin/"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := d.Client.Do(req)
		if err != nil {
			return fmt.Errorf("the local stack does not answer at %s (%v): start it with make run, in another terminal, with the same port settings", u, err)
		}
		resp.Body.Close()
	}
	return nil
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
