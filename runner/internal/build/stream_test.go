package build

import (
	"encoding/json"
	"errors"
	"log"
	"strings"
	"testing"

	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-cmp/cmp"
)

func discardLogger() *log.Logger { return log.New(discard{}, "", 0) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestReadStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		stream    string
		wantLines []string
		wantAux   []string
		wantErr   string
	}{
		{
			name: "BuildOutput",
			stream: `{"stream":"Step 1/2 : FROM scratch\n"}{"stream":" ---\u003e \n"}` +
				`{"stream":"Step 2/2 : COPY f /\n ---\u003e abc\n"}{"aux":{"ID":"sha256:1"}}` +
				`{"stream":"Successfully"}{"stream":" built abc\n"}{"stream":"trailing"}`,
			wantLines: []string{"Step 1/2 : FROM scratch", " ---> ", "Step 2/2 : COPY f /", " ---> abc", "Successfully built abc", "trailing"},
			wantAux:   []string{`{"ID":"sha256:1"}`},
		},
		{
			name: "PushProgressIsSparse",
			stream: `{"status":"The push refers to repository [h/r]"}` +
				`{"status":"Preparing","progressDetail":{},"id":"l1"}` +
				`{"status":"Pushing","progressDetail":{"current":1,"total":9},"id":"l1"}` +
				`{"status":"Pushing","progressDetail":{"current":5,"total":9},"id":"l1"}` +
				`{"status":"Retrying in 2 seconds","id":"l1"}{"status":"Retrying in 1 second","id":"l1"}` +
				`{"status":"Retrying in 10 seconds","id":"l1"}{"status":"Retrying in 9 seconds","id":"l1"}` +
				`{"status":"Pushed","progressDetail":{},"id":"l1"}` +
				`{"status":"t: digest: sha256:d size: 1"}{"progressDetail":{},"aux":{"Tag":"t","Digest":"sha256:d","Size":1}}`,
			wantLines: []string{"The push refers to repository [h/r]", "l1: Preparing", "l1: Pushing", "l1: Retrying in 2 seconds", "l1: Retrying in 10 seconds", "l1: Pushed", "t: digest: sha256:d size: 1"},
			wantAux:   []string{`{"Tag":"t","Digest":"sha256:d","Size":1}`},
		},
		{
			name:      "ErrorDetail",
			stream:    `{"stream":"Step 1/2 : RUN x\n"}{"errorDetail":{"message":"boom"},"error":"boom"}{"stream":"never\n"}`,
			wantLines: []string{"Step 1/2 : RUN x"},
			wantErr:   "boom",
		},
		{
			name:    "LegacyError",
			stream:  `{"error":"old boom"}`,
			wantErr: "old boom",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var lines, aux []string
			err := readStream(strings.NewReader(tt.stream), DefaultMaxLineBytes, func(l string) { lines = append(lines, l) },
				func(_ string, m json.RawMessage) { aux = append(aux, string(m)) })
			if tt.wantErr == "" && err != nil {
				t.Fatalf("readStream: %v", err)
			}
			if tt.wantErr != "" {
				var jerr *jsonmessage.JSONError
				if !errors.As(err, &jerr) || jerr.Message != tt.wantErr {
					t.Fatalf("error = %v, want JSONError %q", err, tt.wantErr)
				}
			}
			if diff := cmp.Diff(tt.wantLines, lines); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAux, aux); diff != "" {
				t.Errorf("aux (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIgnored(t *testing.T) {
	t.Parallel()
	pats := []ignorePattern{
		{pattern: "*.log"},
		{pattern: "build"},
		{pattern: "docs/*.md"},
		{pattern: "docs/README.md", negate: true},
	}
	tests := []struct {
		path string
		want bool
	}{
		{"app.log", true},
		{"sub/app.log", false},
		{"build", true},
		{"build/out/x", true},
		{"builder", false},
		{"docs/a.md", true},
		{"docs/README.md", false},
		{"main.go", false},
	}
	for _, tt := range tests {
		if got := ignored(pats, tt.path); got != tt.want {
			t.Errorf("ignored(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestIsAccessDenied classifies the daemon's push errors: a registry that
// refuses access, not one that cannot be reached, whatever its port.
func TestIsAccessDenied(t *testing.T) {
	for _, tt := range []struct {
		msg  string
		code int
		want bool
	}{
		{"unauthorized: authentication required", 0, true},
		{"denied: requested access to the resource is denied", 0, true},
		{"unexpected status from PUT request to https://r.example/v2/x/blobs: 403 Forbidden", 0, true},
		{"received unexpected HTTP status: 401", 0, true},
		{"no basic auth credentials", 0, true},
		{"anything", 401, true},
		// A registry that is down, on ports whose digits hold 401 or 403
		// (a fault test failed once so, on port 35403).
		{`Get "http://localhost:35403/v2/": dial tcp 127.0.0.1:35403: connect: connection refused`, 0, false},
		{`Get "http://localhost:40140/v2/": dial tcp 10.4.0.1:40140: i/o timeout`, 0, false},
		{"dial tcp 192.168.1.403: no route to host", 0, false},
		{"received unexpected HTTP status: 500 Internal Server Error", 0, false},
	} {
		if got := isAccessDenied(&jsonmessage.JSONError{Code: tt.code, Message: tt.msg}); got != tt.want {
			t.Errorf("isAccessDenied(%d, %q) = %v, want %v", tt.code, tt.msg, got, tt.want)
		}
	}
}
