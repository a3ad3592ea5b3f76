package githubstandin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-github/v60/github"

	"github.com/kube-git-deploy/kube-git-deploy/functions/webhook"
	"github.com/kube-git-deploy/kube-git-deploy/localstack/githubstandin"
)

// switchable is a webhook receiver whose answer a test sets; it records
// every request.
type switchable struct {
	*httptest.Server
	code atomic.Int32
	mu   sync.Mutex
	got  []received
}

func newSwitchable(t *testing.T, code int) *switchable {
	t.Helper()
	sw := &switchable{}
	sw.code.Store(int32(code))
	sw.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sw.mu.Lock()
		sw.got = append(sw.got, received{header: r.Header.Clone(), body: b})
		sw.mu.Unlock()
		w.WriteHeader(int(sw.code.Load()))
	}))
	t.Cleanup(sw.Close)
	return sw
}

func (sw *switchable) requests() []received {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return append([]received(nil), sw.got...)
}

// closedURL is the URL of a loopback port nobody listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String() + "/hook"
	l.Close()
	return u
}

func apiClient(t *testing.T, s *githubstandin.Server, token string) *github.Client {
	t.Helper()
	u, err := url.Parse(s.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	c := github.NewClient(nil).WithAuthToken(token)
	c.BaseURL = u
	return c
}

func statusCode(err error) int {
	var e *github.ErrorResponse
	if errors.As(err, &e) && e.Response != nil {
		return e.Response.StatusCode
	}
	return 0
}

func TestHookDeliveriesAPI(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	ctx := context.Background()
	if _, _, err := s.CreateRepo("octo", "app", "octo", false); err != nil {
		t.Fatal(err)
	}
	const secret = "hook-secret"
	token := s.Token("octo")
	rc := newSwitchable(t, http.StatusAccepted)
	hookID := createHook(t, s, "octo", "app", token, rc.URL+"/hook", "json", secret)
	down := createHook(t, s, "octo", "app", token, closedURL(t), "json", secret)

	push := func(name string) *githubstandin.PushResult {
		t.Helper()
		res, err := s.Push(ctx, "octo", "app", githubstandin.Commit{Files: map[string][]byte{name: []byte(name)}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := push("a")
	rc.code.Store(http.StatusServiceUnavailable)
	second := push("b")
	rc.code.Store(http.StatusAccepted)
	third := push("c")

	for _, res := range []*githubstandin.PushResult{first, second, third} {
		for _, d := range res.Deliveries {
			if d.HookID == down && (d.Status != "failed to connect" || d.StatusCode != 0) {
				t.Errorf("delivery to a closed port = %+v, want status \"failed to connect\", code 0", d)
			}
		}
	}
	guid := func(res *githubstandin.PushResult) string {
		for _, d := range res.Deliveries {
			if d.HookID == hookID {
				return d.GUID
			}
		}
		t.Fatalf("no delivery to hook %d in %+v", hookID, res.Deliveries)
		return ""
	}

	c := apiClient(t, s, token)
	t.Run("list-pages", func(t *testing.T) {
		var got []*github.HookDelivery
		opts := &github.ListCursorOptions{PerPage: 2}
		pages := 0
		for {
			page, resp, err := c.Repositories.ListHookDeliveries(ctx, "octo", "app", hookID, opts)
			if err != nil {
				t.Fatalf("ListHookDeliveries: %v", err)
			}
			pages++
			got = append(got, page...)
			if resp.Cursor == "" {
				break
			}
			if !strings.HasPrefix(resp.Cursor, "v1_") {
				t.Errorf("cursor %q, want GitHub's v1_ form", resp.Cursor)
			}
			opts.Cursor = resp.Cursor
		}
		if pages != 2 || len(got) != 3 {
			t.Fatalf("%d deliveries in %d pages, want 3 in 2", len(got), pages)
		}
		want := []struct {
			guid   string
			status string
			code   int
		}{
			{guid(third), "OK", 202}, {guid(second), "Invalid HTTP Response: 503", 503}, {guid(first), "OK", 202},
		}
		repo, _ := s.Repo("octo", "app")
		for i, d := range got {
			if d.GetGUID() != want[i].guid || d.GetStatus() != want[i].status || d.GetStatusCode() != want[i].code ||
				d.GetEvent() != "push" || d.GetRedelivery() || d.GetRepositoryID() != repo.ID || d.GetID() == 0 ||
				d.GetDeliveredAt().IsZero() || d.Duration == nil {
				t.Errorf("delivery %d = %v, want guid %s, status %q, code %d, newest first", i, d, want[i].guid, want[i].status, want[i].code)
			}
			if i > 0 && d.GetID() >= got[i-1].GetID() {
				t.Errorf("delivery ids %d then %d: not newest first", got[i-1].GetID(), d.GetID())
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		req, _ := http.NewRequest("GET", s.APIURL+"repos/octo/app/hooks/"+strconv.FormatInt(hookID, 10)+"/deliveries?per_page=1", nil)
		req.Header.Set("Authorization", "token "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		link := regexp.MustCompile(`^<` + regexp.QuoteMeta(s.APIURL) + `repos/octo/app/hooks/\d+/deliveries\?cursor=v1_\d+&per_page=1>; rel="next"$`)
		if !link.MatchString(resp.Header.Get("Link")) {
			t.Errorf("Link = %q", resp.Header.Get("Link"))
		}
		var page []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || len(page) != 1 {
			t.Fatalf("page = %v, %v", page, err)
		}
		for _, k := range []string{"id", "guid", "delivered_at", "redelivery", "duration", "status", "status_code", "event",
			"action", "installation_id", "repository_id"} {
			if _, ok := page[0][k]; !ok {
				t.Errorf("delivery lacks %q: %v", k, page[0])
			}
		}
		if at, _ := page[0]["delivered_at"].(string); !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(at) {
			t.Errorf("delivered_at = %q, want GitHub's 2006-01-02T15:04:05Z", at)
		}
	})

	t.Run("redeliver", func(t *testing.T) {
		list, _, err := c.Repositories.ListHookDeliveries(ctx, "octo", "app", hookID, nil)
		if err != nil {
			t.Fatal(err)
		}
		failed := list[1]
		before := rc.requests()
		orig := before[1] // the 503 answered one
		_, _, err = c.Repositories.RedeliverHookDelivery(ctx, "octo", "app", hookID, failed.GetID())
		var accepted *github.AcceptedError
		if !errors.As(err, &accepted) {
			t.Fatalf("RedeliverHookDelivery = %v, want 202 (*github.AcceptedError)", err)
		}
		after := rc.requests()
		if len(after) != len(before)+1 {
			t.Fatalf("receiver got %d requests, want one more than %d", len(after), len(before))
		}
		again := after[len(after)-1]
		if !bytes.Equal(again.body, orig.body) {
			t.Error("redelivered body differs from the original")
		}
		for _, h := range []string{"X-GitHub-Delivery", "X-GitHub-Event", "X-Hub-Signature-256", "X-Hub-Signature", "X-GitHub-Hook-ID"} {
			if again.header.Get(h) != orig.header.Get(h) || again.header.Get(h) == "" {
				t.Errorf("%s = %q, want the original's %q", h, again.header.Get(h), orig.header.Get(h))
			}
		}
		if err := webhook.Verify([]byte(secret), again.body, again.header.Get(webhook.SignatureHeader)); err != nil {
			t.Errorf("redelivery does not verify: %v", err)
		}
		list, _, err = c.Repositories.ListHookDeliveries(ctx, "octo", "app", hookID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := list[0]; d.GetGUID() != failed.GetGUID() || !d.GetRedelivery() || d.GetStatus() != "OK" || d.GetID() <= failed.GetID() {
			t.Errorf("newest delivery = %v, want a successful redelivery of %s", d, failed.GetGUID())
		}
	})

	t.Run("auth", func(t *testing.T) {
		list, _, err := c.Repositories.ListHookDeliveries(ctx, "octo", "app", hookID, nil)
		if err != nil {
			t.Fatal(err)
		}
		id := list[0].GetID()
		other := apiClient(t, s, s.Token("mallory"))
		for name, tc := range map[string]struct {
			c      *github.Client
			hook   int64
			id     int64
			status int
			list   bool // listing fails too
		}{
			"bad-token":         {apiClient(t, s, "gho_unknown"), hookID, id, 401, true},
			"not-admin":         {other, hookID, id, 404, true},
			"unknown-hook":      {c, 999999, id, 404, true},
			"delivery-of-other": {c, down, id, 404, false},
			"unknown-delivery":  {c, hookID, 1, 404, false},
		} {
			if tc.list {
				if _, _, err := tc.c.Repositories.ListHookDeliveries(ctx, "octo", "app", tc.hook, nil); statusCode(err) != tc.status {
					t.Errorf("%s: list = %v, want %d", name, err, tc.status)
				}
			}
			if _, _, err := tc.c.Repositories.RedeliverHookDelivery(ctx, "octo", "app", tc.hook, tc.id); statusCode(err) != tc.status {
				t.Errorf("%s: redeliver = %v, want %d", name, err, tc.status)
			}
		}
	})
}

func TestOutage(t *testing.T) {
	t.Parallel()
	s := newStandin(t)
	ctx := context.Background()
	if _, _, err := s.CreateRepo("octo", "app", "octo", false); err != nil {
		t.Fatal(err)
	}
	rc := newSwitchable(t, http.StatusAccepted)
	createHook(t, s, "octo", "app", s.Token("octo"), rc.URL+"/hook", "json", "x")

	setOutage := func(body string) {
		t.Helper()
		req, _ := http.NewRequest("PUT", s.URL+"_standin/outage", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT /_standin/outage %s = %s", body, resp.Status)
		}
	}
	for _, tc := range []struct {
		outage string
		status string
		code   int
	}{
		{`{"down":true}`, "failed to connect", 0},
		{`{"down":true,"status_code":503}`, "Invalid HTTP Response: 503", 503},
		{`{"down":false}`, "OK", 202},
	} {
		setOutage(tc.outage)
		res, err := s.Push(ctx, "octo", "app", githubstandin.Commit{Files: map[string][]byte{"f": []byte(tc.outage)}})
		if err != nil {
			t.Fatal(err)
		}
		if d := res.Deliveries; len(d) != 1 || d[0].Status != tc.status || d[0].StatusCode != tc.code {
			t.Errorf("outage %s: deliveries %+v, want status %q code %d", tc.outage, d, tc.status, tc.code)
		}
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want only the one after the outage", n)
	}
}
