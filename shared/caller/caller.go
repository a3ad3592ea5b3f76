// Package caller tells who calls a kube-git-deploy service: PrivateAPI and
// the API service decide with it what the caller may do.
//
// In the cloud both run behind Cloud Run IAM (roles/run.invoker for
// private_invokers and api_invokers only, never allUsers): Cloud Run
// verifies the Google identity token in the Authorization header
// (signature, issuer, expiry, audience) before a request reaches the
// container, and passes the header on. In that mode (IAM) Identify reads
// the already verified token's email claim; it does not verify the
// signature again, so the mode must never be used where requests can
// arrive without passing IAM. Locally (loopback only) every caller is the
// machine's user, Local.
package caller

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Mode is how callers are identified.
type Mode string

// Modes.
const (
	// ModeLocal: the service listens on loopback only; every caller is
	// Local, an operator of everything.
	ModeLocal Mode = "local"
	// ModeIAM: Cloud Run IAM verified the caller's Google identity token.
	ModeIAM Mode = "iam"
)

// ModeFromEnv reads KGD_AUTH ("local" or "iam"); unset means iam on Cloud
// Run and Cloud Functions (K_SERVICE or FUNCTION_TARGET set) and local
// elsewhere.
func ModeFromEnv(getenv func(string) string) (Mode, error) {
	switch m := strings.TrimSpace(getenv("KGD_AUTH")); m {
	case "":
		if getenv("K_SERVICE") != "" || getenv("FUNCTION_TARGET") != "" {
			return ModeIAM, nil
		}
		return ModeLocal, nil
	case string(ModeLocal), string(ModeIAM):
		return Mode(m), nil
	default:
		return "", fmt.Errorf("KGD_AUTH: %q is not local or iam", m)
	}
}

// Identity is a caller.
type Identity struct {
	// Email is the Google account's email (IAM mode), or "local".
	Email string
	// Local is set in local mode: the loopback user.
	Local bool
}

// Local is the identity of every caller in local mode.
var Local = Identity{Email: "local", Local: true}

// String returns the email.
func (id Identity) String() string { return id.Email }

// ErrUnauthenticated reports a request without a usable identity token
// in IAM mode (it did not come through Cloud Run IAM).
var ErrUnauthenticated = errors.New("no verified Google identity: call with Authorization: Bearer $(gcloud auth print-identity-token)")

// Header names of identity tokens. Cloud Run IAM checks
// X-Serverless-Authorization when a request has one and then passes
// Authorization on unchecked, so that header wins.
const (
	AuthorizationHeader           = "Authorization"
	ServerlessAuthorizationHeader = "X-Serverless-Authorization"
)

// FromHeader returns the caller of an HTTP request with headers h: the
// token of X-Serverless-Authorization when present, else Authorization.
// A header sent more than once is refused: which value IAM checked would
// be ambiguous.
func FromHeader(mode Mode, h http.Header, now time.Time) (Identity, error) {
	if mode == ModeLocal {
		return Local, nil
	}
	vals := h.Values(ServerlessAuthorizationHeader)
	if len(vals) == 0 {
		vals = h.Values(AuthorizationHeader)
	}
	switch len(vals) {
	case 0:
		return Identity{}, ErrUnauthenticated
	case 1:
		return Identify(mode, vals[0], now)
	default:
		return Identity{}, fmt.Errorf("%w (more than one identity token)", ErrUnauthenticated)
	}
}

// Identify returns the caller of a request whose Authorization header (or
// gRPC authorization metadata) is authorization.
func Identify(mode Mode, authorization string, now time.Time) (Identity, error) {
	if mode == ModeLocal {
		return Local, nil
	}
	token, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok {
		return Identity{}, ErrUnauthenticated
	}
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		return Identity{}, fmt.Errorf("%w (not a JWT)", ErrUnauthenticated)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Identity{}, fmt.Errorf("%w (malformed payload)", ErrUnauthenticated)
	}
	var claims struct {
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
		Exp           int64  `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return Identity{}, fmt.Errorf("%w (malformed claims)", ErrUnauthenticated)
	}
	if claims.Email == "" || !claims.EmailVerified {
		return Identity{}, fmt.Errorf("%w (the token carries no verified email; service accounts: request it with the email claim)", ErrUnauthenticated)
	}
	if claims.Exp != 0 && now.After(time.Unix(claims.Exp, 0)) {
		return Identity{}, fmt.Errorf("%w (expired)", ErrUnauthenticated)
	}
	return Identity{Email: strings.ToLower(claims.Email)}, nil
}
