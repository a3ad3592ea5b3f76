package job_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kube-git-deploy/kube-git-deploy/shared/job"
)

const (
	sha    = "0123456789abcdef0123456789abcdef01234567"
	before = "fedcba9876543210fedcba9876543210fedcba98"
)

// valid returns a valid push job; tests change one field at a time.
func valid() job.Message {
	return job.Message{
		Version:     job.Version,
		JobID:       "job_01-ABC",
		Repository:  "octo-org/hello.world",
		Ref:         "refs/heads/main",
		SHA:         sha,
		Before:      before,
		DeliveryID:  "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		Trigger:     job.TriggerPush,
		PublishedAt: time.Date(2026, 10, 20, 12, 30, 45, 123456789, time.UTC),
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(m *job.Message)
		wantField string // "" means valid
	}{
		{"valid push", func(m *job.Message) {}, ""},
		{"valid execute without delivery", func(m *job.Message) { m.Trigger = job.TriggerExecute; m.DeliveryID = "" }, ""},
		{"valid tag", func(m *job.Message) { m.Ref = "refs/tags/v1.2.0" }, ""},
		{"valid nested branch", func(m *job.Message) { m.Ref = "refs/heads/feature/x-1_y.z" }, ""},
		{"valid unicode branch", func(m *job.Message) { m.Ref = "refs/heads/fix/ünïcode" }, ""},
		{"valid empty before", func(m *job.Message) { m.Before = "" }, ""},
		{"valid zero before", func(m *job.Message) { m.Before = strings.Repeat("0", 40) }, ""},
		{"valid owner 39", func(m *job.Message) { m.Repository = strings.Repeat("a", 39) + "/r" }, ""},
		{"valid name 100", func(m *job.Message) { m.Repository = "o/" + strings.Repeat("n", 100) }, ""},
		{"valid name with dots", func(m *job.Message) { m.Repository = "o/.github" }, ""},
		{"valid job id 128", func(m *job.Message) { m.JobID = strings.Repeat("j", 128) }, ""},
		{"valid delivery 100 runes", func(m *job.Message) { m.DeliveryID = strings.Repeat("é", 100) }, ""},
		{"valid offset zone", func(m *job.Message) { m.PublishedAt = m.PublishedAt.In(time.FixedZone("x", -7*3600)) }, ""},

		{"version zero", func(m *job.Message) { m.Version = 0 }, "version"},
		{"version two", func(m *job.Message) { m.Version = 2 }, "version"},

		{"job id empty", func(m *job.Message) { m.JobID = "" }, "job_id"},
		{"job id too long", func(m *job.Message) { m.JobID = strings.Repeat("j", 129) }, "job_id"},
		{"job id slash", func(m *job.Message) { m.JobID = "a/b" }, "job_id"},
		{"job id space", func(m *job.Message) { m.JobID = "a b" }, "job_id"},
		{"job id dot", func(m *job.Message) { m.JobID = "a.b" }, "job_id"},
		{"job id non ascii", func(m *job.Message) { m.JobID = "jöb" }, "job_id"},

		{"repository empty", func(m *job.Message) { m.Repository = "" }, "repository"},
		{"repository no slash", func(m *job.Message) { m.Repository = "octo" }, "repository"},
		{"repository two slashes", func(m *job.Message) { m.Repository = "o/r/x" }, "repository"},
		{"repository empty owner", func(m *job.Message) { m.Repository = "/r" }, "repository"},
		{"repository empty name", func(m *job.Message) { m.Repository = "o/" }, "repository"},
		{"owner too long", func(m *job.Message) { m.Repository = strings.Repeat("a", 40) + "/r" }, "repository"},
		{"owner leading hyphen", func(m *job.Message) { m.Repository = "-o/r" }, "repository"},
		{"owner trailing hyphen", func(m *job.Message) { m.Repository = "o-/r" }, "repository"},
		{"owner double hyphen", func(m *job.Message) { m.Repository = "o--x/r" }, "repository"},
		{"owner underscore", func(m *job.Message) { m.Repository = "o_x/r" }, "repository"},
		{"owner dot", func(m *job.Message) { m.Repository = "o.x/r" }, "repository"},
		{"name too long", func(m *job.Message) { m.Repository = "o/" + strings.Repeat("n", 101) }, "repository"},
		{"name dot", func(m *job.Message) { m.Repository = "o/." }, "repository"},
		{"name dotdot", func(m *job.Message) { m.Repository = "o/.." }, "repository"},
		{"name space", func(m *job.Message) { m.Repository = "o/a b" }, "repository"},
		{"name percent", func(m *job.Message) { m.Repository = "o/a%2e" }, "repository"},

		{"ref empty", func(m *job.Message) { m.Ref = "" }, "ref"},
		{"ref bare branch", func(m *job.Message) { m.Ref = "main" }, "ref"},
		{"ref other namespace", func(m *job.Message) { m.Ref = "refs/pull/1/head" }, "ref"},
		{"ref empty branch", func(m *job.Message) { m.Ref = "refs/heads/" }, "ref"},
		{"ref empty tag", func(m *job.Message) { m.Ref = "refs/tags/" }, "ref"},
		{"ref dotdot", func(m *job.Message) { m.Ref = "refs/heads/a..b" }, "ref"},
		{"ref traversal", func(m *job.Message) { m.Ref = "refs/heads/../../etc" }, "ref"},
		{"ref space", func(m *job.Message) { m.Ref = "refs/heads/a b" }, "ref"},
		{"ref newline", func(m *job.Message) { m.Ref = "refs/heads/a\nb" }, "ref"},
		{"ref nul", func(m *job.Message) { m.Ref = "refs/heads/a\x00" }, "ref"},
		{"ref del", func(m *job.Message) { m.Ref = "refs/heads/a\x7f" }, "ref"},
		{"ref trailing slash", func(m *job.Message) { m.Ref = "refs/heads/a/" }, "ref"},
		{"ref double slash", func(m *job.Message) { m.Ref = "refs/heads/a//b" }, "ref"},
		{"ref trailing dot", func(m *job.Message) { m.Ref = "refs/heads/a." }, "ref"},
		{"ref dot component", func(m *job.Message) { m.Ref = "refs/heads/.hidden" }, "ref"},
		{"ref lock component", func(m *job.Message) { m.Ref = "refs/heads/a.lock/b" }, "ref"},
		{"ref at brace", func(m *job.Message) { m.Ref = "refs/heads/a@{1}" }, "ref"},
		{"ref tilde", func(m *job.Message) { m.Ref = "refs/heads/a~1" }, "ref"},
		{"ref caret", func(m *job.Message) { m.Ref = "refs/heads/a^" }, "ref"},
		{"ref colon", func(m *job.Message) { m.Ref = "refs/heads/a:b" }, "ref"},
		{"ref glob", func(m *job.Message) { m.Ref = "refs/heads/a*" }, "ref"},
		{"ref bracket", func(m *job.Message) { m.Ref = "refs/heads/a[" }, "ref"},
		{"ref backslash", func(m *job.Message) { m.Ref = `refs/heads/a\b` }, "ref"},
		{"ref line separator", func(m *job.Message) { m.Ref = "refs/heads/a\u2028b" }, "ref"},
		{"ref bidi override", func(m *job.Message) { m.Ref = "refs/heads/a\u202eb" }, "ref"},
		{"ref zero width space", func(m *job.Message) { m.Ref = "refs/heads/a\u200bb" }, "ref"},
		{"ref invalid utf8", func(m *job.Message) { m.Ref = "refs/heads/\xff" }, "ref"},
		{"ref too long", func(m *job.Message) { m.Ref = "refs/heads/" + strings.Repeat("a", 1014) }, "ref"},

		{"sha empty", func(m *job.Message) { m.SHA = "" }, "sha"},
		{"sha short", func(m *job.Message) { m.SHA = sha[:39] }, "sha"},
		{"sha long", func(m *job.Message) { m.SHA = sha + "0" }, "sha"},
		{"sha uppercase", func(m *job.Message) { m.SHA = strings.ToUpper(sha) }, "sha"},
		{"sha not hex", func(m *job.Message) { m.SHA = "g" + sha[1:] }, "sha"},
		{"sha256 object name", func(m *job.Message) { m.SHA = strings.Repeat("a", 64) }, "sha"},

		{"before short", func(m *job.Message) { m.Before = "abc" }, "before"},
		{"before uppercase", func(m *job.Message) { m.Before = strings.ToUpper(before) }, "before"},

		{"trigger empty", func(m *job.Message) { m.Trigger = "" }, "trigger"},
		{"trigger unknown", func(m *job.Message) { m.Trigger = "pull_request" }, "trigger"},
		{"trigger case", func(m *job.Message) { m.Trigger = "Push" }, "trigger"},

		{"delivery missing on push", func(m *job.Message) { m.DeliveryID = "" }, "delivery_id"},
		{"delivery too long", func(m *job.Message) { m.DeliveryID = strings.Repeat("d", 101) }, "delivery_id"},
		{"delivery control", func(m *job.Message) { m.DeliveryID = "a\tb" }, "delivery_id"},
		{"delivery invalid utf8", func(m *job.Message) { m.DeliveryID = "\xc3" }, "delivery_id"},
		{"delivery bad on execute", func(m *job.Message) { m.Trigger = job.TriggerExecute; m.DeliveryID = "a\nb" }, "delivery_id"},

		{"published zero", func(m *job.Message) { m.PublishedAt = time.Time{} }, "published_at"},
		{"published year 10000", func(m *job.Message) { m.PublishedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "published_at"},
		{"published offset seconds", func(m *job.Message) {
			m.PublishedAt = m.PublishedAt.In(time.FixedZone("lmt", 3600+30))
		}, "published_at"},
		{"published offset 24h", func(m *job.Message) {
			m.PublishedAt = m.PublishedAt.In(time.FixedZone("x", 24*3600))
		}, "published_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid()
			tt.edit(&m)
			err := m.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalid", err)
			}
			var fe *job.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %T %v, want a *FieldError", err, err)
			}
			if fe.Field != tt.wantField {
				t.Errorf("Validate() field = %q, want %q (error: %v)", fe.Field, tt.wantField, err)
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("Validate() = %q, want the message to name %q", err, tt.wantField)
			}
		})
	}
}

func TestValidateNamesUnknownVersion(t *testing.T) {
	m := valid()
	m.Version = 99
	err := m.Validate()
	if err == nil || !strings.Contains(err.Error(), "99") {
		t.Errorf("Validate() = %v, want an error naming version 99", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	execute := valid()
	execute.Trigger = job.TriggerExecute
	execute.DeliveryID = ""
	execute.Before = ""
	execute.Ref = "refs/tags/v1.0.0"
	zoned := valid()
	zoned.PublishedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 5*3600+30*60))
	html := valid()
	html.DeliveryID = `<script>&"x"</script>`

	for name, m := range map[string]job.Message{"push": valid(), "execute": execute, "zoned": zoned, "html": html} {
		t.Run(name, func(t *testing.T) {
			data, attrs, err := job.Encode(m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			wantAttrs := map[string]string{"version": "1", "repository": m.Repository, "job_id": m.JobID, "trigger": string(m.Trigger)}
			if diff := cmp.Diff(wantAttrs, attrs); diff != "" {
				t.Errorf("Encode attributes (-want +got):\n%s", diff)
			}
			got, err := job.Decode(data)
			if err != nil {
				t.Fatalf("Decode(%s): %v", data, err)
			}
			if diff := cmp.Diff(m, got); diff != "" {
				t.Errorf("Decode(Encode(m)) (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEncodeWireFormat pins the JSON field names and shapes: other
// components (and older runners) depend on them.
func TestEncodeWireFormat(t *testing.T) {
	data, _, err := job.Encode(valid())
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("Encode produced invalid JSON %s: %v", data, err)
	}
	want := map[string]any{
		"version":      1.0,
		"job_id":       "job_01-ABC",
		"repository":   "octo-org/hello.world",
		"ref":          "refs/heads/main",
		"sha":          sha,
		"before":       before,
		"delivery_id":  "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		"trigger":      "push",
		"published_at": "2026-10-20T12:30:45.123456789Z",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Encode body (-want +got):\n%s", diff)
	}
}

func TestEncodeInvalid(t *testing.T) {
	m := valid()
	m.SHA = "nope"
	data, attrs, err := job.Encode(m)
	if !errors.Is(err, job.ErrInvalid) {
		t.Errorf("Encode error = %v, want ErrInvalid", err)
	}
	if data != nil || attrs != nil {
		t.Errorf("Encode returned data %q and attributes %v with an error", data, attrs)
	}
}

func TestDecode(t *testing.T) {
	good := `{"version":1,"job_id":"j1","repository":"o/r","ref":"refs/heads/main","sha":"` + sha +
		`","before":"","delivery_id":"d1","trigger":"push","published_at":"2026-10-20T12:30:45Z"}`
	want := job.Message{
		Version: 1, JobID: "j1", Repository: "o/r", Ref: "refs/heads/main", SHA: sha,
		DeliveryID: "d1", Trigger: job.TriggerPush, PublishedAt: time.Date(2026, 10, 20, 12, 30, 45, 0, time.UTC),
	}
	withField := func(extra string) string { return strings.Replace(good, `{"version":1,`, `{"version":1,`+extra+`,`, 1) }

	tests := []struct {
		name    string
		data    string
		want    job.Message
		wantErr string // substring of the error; "" means success
	}{
		{"valid", good, want, ""},
		{"unknown field ignored", withField(`"priority":"high","nested":{"a":[1,2]}`), want, ""},
		{"missing before", strings.Replace(good, `"before":"",`, "", 1), want, ""},
		{"whitespace around", " \n" + good + "\n ", want, ""},

		{"empty", "", job.Message{}, "unexpected end of JSON"},
		{"not json", "not json", job.Message{}, "invalid character"},
		{"null", "null", job.Message{}, "version is required"},
		{"array", "[]", job.Message{}, "cannot unmarshal array"},
		{"missing version", strings.Replace(good, `"version":1,`, "", 1), job.Message{}, "version is required"},
		{"unknown version", `{"version":99}`, job.Message{}, "version 99 is not supported"},
		{"unknown version with other shapes", `{"version":2,"sha":{"algo":"sha256"}}`, job.Message{}, "version 2 is not supported"},
		{"version as string", `{"version":"1"}`, job.Message{}, "version must be a JSON integer"},
		{"version as float", `{"version":1.5}`, job.Message{}, "version must be a JSON integer"},
		{"trailing data", good + `{}`, job.Message{}, "invalid character"},
		{"wrong type", strings.Replace(good, `"job_id":"j1"`, `"job_id":7`, 1), job.Message{}, "job_id must be a JSON string"},
		{"wrong type for trigger", strings.Replace(good, `"trigger":"push"`, `"trigger":["push"]`, 1), job.Message{}, "trigger must be a JSON string"},
		{"time not a string", strings.Replace(good, `"2026-10-20T12:30:45Z"`, `1760963445`, 1), job.Message{}, "published_at must be a JSON string"},
		{"null time", strings.Replace(good, `"2026-10-20T12:30:45Z"`, `null`, 1), job.Message{}, "published_at is required"},
		{"time without zone", strings.Replace(good, `2026-10-20T12:30:45Z`, `2026-10-20T12:30:45`, 1), job.Message{}, "published_at must be an RFC 3339 time"},
		{"bad time", strings.Replace(good, `2026-10-20T12:30:45Z`, `yesterday`, 1), job.Message{}, "published_at must be an RFC 3339 time"},
		{"invalid field", strings.Replace(good, sha, strings.ToUpper(sha), 1), job.Message{}, "sha must be"},
		{"oversize", withField(`"pad":"` + strings.Repeat("x", job.MaxSize) + `"`), job.Message{}, "more than 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := job.Decode([]byte(tt.data))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Decode (-want +got):\n%s", diff)
				}
				return
			}
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("Decode error = %v, want one wrapping ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Decode error = %q, want it to contain %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(job.Message{}, got); diff != "" {
				t.Errorf("Decode returned a message with an error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRefHelpers(t *testing.T) {
	tests := []struct {
		ref, branch, tag string
	}{
		{"refs/heads/main", "main", ""},
		{"refs/heads/feature/x", "feature/x", ""},
		{"refs/heads/refs/tags/v1", "refs/tags/v1", ""},
		{"refs/tags/v1.2.0", "", "v1.2.0"},
		{"refs/tags/release/2026", "", "release/2026"},
		{"refs/pull/1/head", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			m := job.Message{Ref: tt.ref}
			if got := m.Branch(); got != tt.branch {
				t.Errorf("Branch() = %q, want %q", got, tt.branch)
			}
			if got := m.Tag(); got != tt.tag {
				t.Errorf("Tag() = %q, want %q", got, tt.tag)
			}
		})
	}
}

func TestShortSHA(t *testing.T) {
	for _, tt := range []struct{ sha, want string }{{sha, "0123456"}, {"abc", "abc"}, {"", ""}} {
		if got := (job.Message{SHA: tt.sha}).ShortSHA(); got != tt.want {
			t.Errorf("Message{SHA: %q}.ShortSHA() = %q, want %q", tt.sha, got, tt.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	seed, _, err := job.Encode(valid())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"version":1,"job_id":"j","repository":"o/r","ref":"refs/tags/v1","sha":"` + sha +
		`","trigger":"execute","published_at":"2026-01-02T03:04:05.999999999+05:30"}`))
	f.Add([]byte(`{"version":99}`))
	f.Add([]byte(`not json`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"VERSION":1,"Job_ID":"x","version":1}`))
	f.Add([]byte(`{"version":1,"job_id":"j","repository":"o/r","ref":"refs/heads/f\u00fcr/\u65e5x","sha":"` + sha +
		`","before":"` + before + `","delivery_id":"\u003cd\u003e \ud83d\ude00","trigger":"push","published_at":"0001-01-01T00:00:00.5-23:59","x":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := job.Decode(data)
		if err != nil {
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("Decode error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Decode returned a message that fails Validate: %v", err)
		}
		enc, _, err := job.Encode(m)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)): %v", data, err)
		}
		back, err := job.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(%q))) = %v (encoded %q)", data, err, enc)
		}
		if diff := cmp.Diff(m, back); diff != "" {
			t.Fatalf("round trip of %q changed the message (-want +got):\n%s", data, diff)
		}
	})
}
