package webhook

import (
	"errors"
	"strings"
	"testing"
)

func TestVerify(t *testing.T) {
	secret, body := []byte("It's a Secret to Everybody"), []byte("Hello, World!")
	// The example from GitHub's documentation on validating deliveries.
	const githubExample = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	tests := []struct {
		name   string
		secret []byte
		header string
		want   error
	}{
		{"github-docs-example", secret, githubExample, nil},
		{"empty-secret", nil, githubExample, ErrNoSecret},
		{"missing", secret, "", ErrMissingSignature},
		{"sha1-prefix", secret, "sha1=" + githubExample[7:], ErrBadSignature},
		{"not-hex", secret, "sha256=xyz", ErrBadSignature},
		{"short", secret, githubExample[:len(githubExample)-2], ErrBadSignature},
		{"wrong", secret, "sha256=657107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", ErrBadSignature},
		{"uppercase-prefix", secret, "SHA256=" + githubExample[7:], ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(tt.secret, body, tt.header); !errors.Is(err, tt.want) {
				t.Errorf("Verify() = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte("secret"), []byte(`{"ref":"refs/heads/main"}`), "sha256=00")
	f.Add([]byte("s"), []byte{}, "")
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		err := Verify(secret, body, header)
		if len(secret) == 0 && err == nil {
			t.Fatal("an empty secret verified a delivery")
		}
		if err == nil && header != SignatureValue(secret, body) {
			t.Fatalf("header %q verified but is not the signature", header)
		}
		if len(secret) > 0 {
			if err := Verify(secret, body, SignatureValue(secret, body)); err != nil {
				t.Fatalf("a correct signature failed: %v", err)
			}
		}
	})
}

func TestParsePush(t *testing.T) {
	const sha = "fd489864e7642b48eaad6e3f155c10e46810ec72"
	tests := []struct {
		name       string
		body       string
		wantBranch string
		wantTag    string
		wantErr    bool
		wantPusher string
	}{
		{"branch", `{"ref":"refs/heads/main","after":"` + sha + `"}`, "main", "", false, ""},
		{"branch-with-slash", `{"ref":"refs/heads/feature/x","after":"` + sha + `"}`, "feature/x", "", false, ""},
		{"tag", `{"ref":"refs/tags/v1.2.3","after":"` + sha + `"}`, "", "v1.2.3", false, ""},
		{"tag-that-looks-like-a-path", `{"ref":"refs/tags/release/2026","after":"` + sha + `"}`, "", "release/2026", false, ""},
		{"short-ref", `{"ref":"main","after":"` + sha + `"}`, "", "", true, ""},
		{"uppercase-sha", `{"ref":"refs/heads/main","after":"FD489864E7642B48EAAD6E3F155C10E46810EC72"}`, "", "", true, ""},
		{"zero-after-not-deleted", `{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}`, "", "", true, ""},
		{"bad-before", `{"ref":"refs/heads/main","before":"x","after":"` + sha + `"}`, "", "", true, ""},
		{"array", `[]`, "", "", true, ""},
		{"sender", `{"ref":"refs/heads/main","after":"` + sha + `","pusher":{"name":"Alice A"},"sender":{"login":"alice"}}`, "main", "", false, "alice"},
		{"pusher-only", `{"ref":"refs/heads/main","after":"` + sha + `","pusher":{"name":"Alice A"}}`, "main", "", false, "Alice A"},
		{"long-multibyte-pusher", `{"ref":"refs/heads/main","after":"` + sha + `","pusher":{"name":"` + strings.Repeat("é", 60) + `"}}`, "main", "", false, strings.Repeat("é", 40) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePush([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParsePush() error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (p.Branch() != tt.wantBranch || p.Tag() != tt.wantTag || p.Pusher != tt.wantPusher) {
				t.Errorf("branch, tag, pusher = %q, %q, %q; want %q, %q, %q", p.Branch(), p.Tag(), p.Pusher, tt.wantBranch, tt.wantTag, tt.wantPusher)
			}
		})
	}
}

func FuzzParsePush(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","after":"fd489864e7642b48eaad6e3f155c10e46810ec72","deleted":false}`))
	f.Add([]byte(`{"ref":"refs/tags/v1","before":"0000000000000000000000000000000000000000","after":"fd489864e7642b48eaad6e3f155c10e46810ec72","created":true}`))
	f.Add([]byte(`{"ref":"refs/heads/x","after":"0000000000000000000000000000000000000000","deleted":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePush(body)
		if err != nil {
			return
		}
		if (p.Branch() == "") == (p.Tag() == "") {
			t.Fatalf("ref %q is both or neither a branch and a tag", p.Ref)
		}
		if !isSHA(p.After) {
			t.Fatalf("accepted after %q", p.After)
		}
	})
}
