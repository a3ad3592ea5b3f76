package repos

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/kube-git-deploy/kube-git-deploy/functions/internal/web"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// MaxBodyBytes caps the body of the track and policy routes: 64 KiB is
// far more than a policy of 100 namespaces, kinds and operators needs.
const MaxBodyBytes = 64 << 10

// policyJSON is a deploy policy (store.Policy) as the API shows and takes
// it. A policy object is always complete: an omitted list is empty and an
// omitted boolean false, so the same object reads back as it was written.
type policyJSON struct {
	Namespaces       []string `json:"namespaces"`
	CreateNamespaces bool     `json:"create_namespaces"`
	ClusterScoped    bool     `json:"cluster_scoped"`
	AllowKinds       []string `json:"allow_kinds"`
	Adopt            bool     `json:"adopt"`
	ServiceAccount   string   `json:"service_account"`
	Operators        []string `json:"operators"`
}

func toPolicyJSON(p store.Policy) policyJSON {
	return policyJSON{
		Namespaces: nonNil(p.Namespaces), CreateNamespaces: p.CreateNamespaces, ClusterScoped: p.ClusterScoped,
		AllowKinds: nonNil(p.AllowKinds), Adopt: p.Adopt, ServiceAccount: p.ServiceAccount, Operators: nonNil(p.Operators),
	}
}

func (p policyJSON) policy() store.Policy {
	return store.Policy{
		Namespaces: p.Namespaces, CreateNamespaces: p.CreateNamespaces, ClusterScoped: p.ClusterScoped,
		AllowKinds: p.AllowKinds, Adopt: p.Adopt, ServiceAccount: p.ServiceAccount, Operators: p.Operators,
	}
}

// trackBody is the optional body of POST /api/v0/github/repositories/{user}/{repo}.
type trackBody struct {
	Policy *policyJSON `json:"policy"`
}

// readJSON reads a bounded request body into v, refusing unknown fields,
// anything that is not one JSON value, and bodies over MaxBodyBytes (413).
// It reports whether the body held anything but white space; an empty
// body leaves v untouched.
func readJSON(r *http.Request, v any) (bool, error) {
	b, err := web.ReadBody(r, MaxBodyBytes)
	if err != nil {
		return false, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return true, web.Errorf(http.StatusBadRequest, err, "request body: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return true, web.Errorf(http.StatusBadRequest, err, "request body: more than one JSON value")
	}
	return true, nil
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "not valid JSON"
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("%s: want %s, not a JSON %s", typ.Field, typ.Type, typ.Value)
		}
		return fmt.Sprintf("want a JSON object, not %s", typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for DisallowUnknownFields.
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "not a valid JSON object"
}

// validatePolicy checks p and translates store.ErrInvalid into a 400 that
// names the field.
func validatePolicy(p store.Policy) error {
	if err := p.Validate(); err != nil {
		return invalidPolicy(err)
	}
	return nil
}

func invalidPolicy(err error) error {
	msg := strings.TrimSuffix(err.Error(), ": "+store.ErrInvalid.Error())
	if i := strings.Index(msg, "deploy policy: "); i >= 0 {
		msg = msg[i:]
	}
	return web.Errorf(http.StatusBadRequest, err, "%s", msg)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
