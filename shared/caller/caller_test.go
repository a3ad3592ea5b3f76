package caller

import (
	"encoding/base64"
	"errors"
	"net/http"
	"testing"
	"time"
)

// token makes an (unsigned) JWT with the given claims, as Cloud Run hands
// a verified one on.
func token(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return "Bearer " + enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + "." + enc([]byte("sig"))
}

func TestIdentify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	if id, err := Identify(ModeLocal, "", now); err != nil || id != Local {
		t.Errorf("local = %v, %v; want Local", id, err)
	}
	id, err := Identify(ModeIAM, token(`{"email":"Alice@Example.com","email_verified":true,"exp":1800000600}`), now)
	if err != nil || id.Email != "alice@example.com" || id.Local {
		t.Errorf("IAM = %+v, %v; want alice@example.com", id, err)
	}
	for name, auth := range map[string]string{
		"none":       "",
		"basic":      "Basic dXNlcjpwYXNz",
		"not-jwt":    "Bearer abc",
		"bad-base64": "Bearer a.!!!.c",
		"no-email":   token(`{"sub":"123","exp":1800000600}`),
		"unverified": token(`{"email":"a@example.com","email_verified":false}`),
		"expired":    token(`{"email":"a@example.com","email_verified":true,"exp":1700000000}`),
		"not-json":   "Bearer " + base64.RawURLEncoding.EncodeToString([]byte("x")) + "." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".s",
	} {
		if _, err := Identify(ModeIAM, auth, now); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated", name, err)
		}
	}
}

func TestFromHeader(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	alice := token(`{"email":"alice@example.com","email_verified":true}`)
	mallory := token(`{"email":"mallory@example.com","email_verified":true}`)
	h := http.Header{}
	h.Set(ServerlessAuthorizationHeader, alice)
	h.Set(AuthorizationHeader, mallory) // passed on unchecked by Cloud Run
	if id, err := FromHeader(ModeIAM, h, now); err != nil || id.Email != "alice@example.com" {
		t.Errorf("with both headers = %v, %v; want the X-Serverless-Authorization identity", id, err)
	}
	only := http.Header{}
	only.Set(AuthorizationHeader, alice)
	if id, err := FromHeader(ModeIAM, only, now); err != nil || id.Email != "alice@example.com" {
		t.Errorf("Authorization alone = %v, %v", id, err)
	}
	twice := http.Header{}
	twice.Add(AuthorizationHeader, alice)
	twice.Add(AuthorizationHeader, mallory)
	if _, err := FromHeader(ModeIAM, twice, now); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("two tokens = %v, want ErrUnauthenticated", err)
	}
	if _, err := FromHeader(ModeIAM, http.Header{}, now); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("no token = %v, want ErrUnauthenticated", err)
	}
	if id, err := FromHeader(ModeLocal, http.Header{}, now); err != nil || id != Local {
		t.Errorf("local = %v, %v", id, err)
	}
}

func TestModeFromEnv(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want Mode
		err  bool
	}{
		{map[string]string{}, ModeLocal, false},
		{map[string]string{"K_SERVICE": "kgd-api"}, ModeIAM, false},
		{map[string]string{"FUNCTION_TARGET": "PrivateAPI"}, ModeIAM, false},
		{map[string]string{"KGD_AUTH": "local", "K_SERVICE": "x"}, ModeLocal, false},
		{map[string]string{"KGD_AUTH": "iam"}, ModeIAM, false},
		{map[string]string{"KGD_AUTH": "none"}, "", true},
	} {
		got, err := ModeFromEnv(func(k string) string { return tt.env[k] })
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ModeFromEnv(%v) = %q, %v; want %q (error %v)", tt.env, got, err, tt.want, tt.err)
		}
	}
}

func FuzzIdentify(f *testing.F) {
	f.Add(token(`{"email":"a@example.com","email_verified":true}`))
	f.Add("Bearer a.b.c")
	f.Fuzz(func(t *testing.T, auth string) {
		id, err := Identify(ModeIAM, auth, time.Unix(0, 0))
		if err == nil && id.Email == "" {
			t.Fatalf("accepted %q without an email", auth)
		}
	})
}
