package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// SignatureHeader carries GitHub's HMAC-SHA256 of the raw body.
const SignatureHeader = "X-Hub-Signature-256"

// Signature verification errors.
var (
	ErrNoSecret         = errors.New("repository has no webhook secret")
	ErrMissingSignature = errors.New("missing " + SignatureHeader + " header")
	ErrBadSignature     = errors.New("signature does not match")
)

// Verify checks header, the value of X-Hub-Signature-256
// ("sha256=<hex>"), against the HMAC-SHA256 of body keyed with secret, in
// constant time. An empty secret never verifies anything: a hook without a
// secret would accept any forged delivery.
func Verify(secret, body []byte, header string) error {
	if len(secret) == 0 {
		return ErrNoSecret
	}
	if header == "" {
		return ErrMissingSignature
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return ErrBadSignature
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return ErrBadSignature
	}
	if !hmac.Equal(got, Sign(secret, body)) {
		return ErrBadSignature
	}
	return nil
}

// Sign returns the HMAC-SHA256 of body keyed with secret, as GitHub
// computes it.
func Sign(secret, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return m.Sum(nil)
}

// SignatureValue returns the X-Hub-Signature-256 header value GitHub sends
// for body.
func SignatureValue(secret, body []byte) string {
	return "sha256=" + hex.EncodeToString(Sign(secret, body))
}
