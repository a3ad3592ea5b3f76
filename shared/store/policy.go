package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Policy is a tracked repository's deploy policy: where its releases may
// go and what they may contain. The runner checks every rendered object
// of every release against it before anything is applied, and the API
// lets only its Operators (and the global ones) steer the repository.
type Policy struct {
	// Namespaces are the namespaces the repository's releases and their
	// objects may live in; the first is the default namespace of a unit
	// that names none. Never empty once stored.
	Namespaces []string
	// CreateNamespaces lets the runner create a missing namespace of
	// Namespaces.
	CreateNamespaces bool
	// ClusterScoped allows cluster-scoped objects (ClusterRoles, CRDs,
	// webhooks, Namespaces, PersistentVolumes, ...) in its charts.
	ClusterScoped bool
	// AllowKinds are namespaced kinds allowed despite the runner's default
	// deny-list (Role, RoleBinding, ResourceQuota, LimitRange,
	// NetworkPolicy, Endpoints, EndpointSlice), as "Kind" or "group/Kind".
	AllowKinds []string
	// Adopt lets the repository take over an existing release that records
	// no owner (one kube-git-deploy did not create). A release owned by
	// another repository is never taken over.
	Adopt bool
	// ServiceAccount, "namespace/name", makes the runner deploy the
	// repository's releases impersonating that Kubernetes service account,
	// so that the cluster's RBAC is the last line; empty deploys with the
	// runner's own identity.
	ServiceAccount string
	// Operators are the identities (Google accounts' emails) that may steer
	// the repository through the API (Execute, Auto*), besides the API's
	// global operators.
	Operators []string
}

// DefaultPolicy is the policy of a repository tracked without one: one
// namespace of its own (DefaultNamespace), which the runner may create,
// no cluster-scoped objects, no adoption, the runner's identity.
func DefaultPolicy(owner, name string) Policy {
	return Policy{Namespaces: []string{DefaultNamespace(owner, name)}, CreateNamespaces: true}
}

var nonDNS = regexp.MustCompile(`[^a-z0-9]+`)

// DefaultNamespace is the namespace of owner/name's own: "kgd-<owner>-<name>"
// lowercased and made DNS-safe, cut to fit, and always ended with 8 hex
// digits of a hash of the exact repository name (case-insensitive), so
// that two repositories never share it ("a-b/c" and "a/b-c", "a/b.c" and
// "a/b_c" differ).
func DefaultNamespace(owner, name string) string {
	full := strings.ToLower(owner + "/" + name)
	sum := sha256.Sum256([]byte(full))
	suffix := "-" + hex.EncodeToString(sum[:4])
	readable := strings.Trim(nonDNS.ReplaceAllString("kgd-"+full, "-"), "-")
	if max := 63 - len(suffix); len(readable) > max {
		readable = strings.TrimRight(readable[:max], "-")
	}
	return readable + suffix
}

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	kindRe   = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Z][A-Za-z0-9]{0,62}$`)
	emailRe  = regexp.MustCompile(`^[^@\s]{1,64}@[^@\s]{1,255}$`)
)

// Validate checks the policy: at least one namespace, every namespace a
// DNS label, kinds as "Kind" or "group/Kind", the service account as
// "namespace/name" and operators as emails. It returns an error wrapping
// ErrInvalid that names the field.
func (p Policy) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("deploy policy: %s: %w", fmt.Sprintf(format, args...), ErrInvalid)
	}
	if len(p.Namespaces) == 0 {
		return bad("namespaces: at least one is required")
	}
	if len(p.Namespaces) > 100 || len(p.AllowKinds) > 100 || len(p.Operators) > 100 {
		return bad("at most 100 namespaces, kinds and operators each")
	}
	for _, ns := range p.Namespaces {
		if !dnsLabel.MatchString(ns) {
			return bad("namespaces: %q is not a DNS label (lowercase letters, digits and '-', at most 63)", ns)
		}
	}
	if i := firstDuplicate(p.Namespaces); i >= 0 {
		return bad("namespaces: %q is listed twice", p.Namespaces[i])
	}
	for _, k := range p.AllowKinds {
		if !kindRe.MatchString(k) {
			return bad("allow_kinds: %q is not a Kind or group/Kind", k)
		}
	}
	if p.ServiceAccount != "" {
		ns, sa, ok := strings.Cut(p.ServiceAccount, "/")
		if !ok || !dnsLabel.MatchString(ns) || !dnsLabel.MatchString(sa) {
			return bad("service_account: %q is not namespace/name", p.ServiceAccount)
		}
	}
	for _, o := range p.Operators {
		if !emailRe.MatchString(o) {
			return bad("operators: %q is not an email address", o)
		}
	}
	return nil
}

// IsOperator reports whether identity is one of the policy's operators
// (emails compare case-insensitively).
func (p Policy) IsOperator(identity string) bool {
	return identity != "" && slices.ContainsFunc(p.Operators, func(o string) bool { return strings.EqualFold(o, identity) })
}

func firstDuplicate(s []string) int {
	seen := map[string]bool{}
	for i, v := range s {
		if seen[v] {
			return i
		}
		seen[v] = true
	}
	return -1
}

type policyDoc struct {
	Namespaces       []string `firestore:"namespaces"`
	CreateNamespaces bool     `firestore:"create_namespaces"`
	ClusterScoped    bool     `firestore:"cluster_scoped"`
	AllowKinds       []string `firestore:"allow_kinds"`
	Adopt            bool     `firestore:"adopt"`
	ServiceAccount   string   `firestore:"service_account"`
	Operators        []string `firestore:"operators"`
}

func toPolicyDoc(p Policy) *policyDoc {
	return &policyDoc{Namespaces: p.Namespaces, CreateNamespaces: p.CreateNamespaces, ClusterScoped: p.ClusterScoped,
		AllowKinds: p.AllowKinds, Adopt: p.Adopt, ServiceAccount: p.ServiceAccount, Operators: p.Operators}
}

// policy returns the stored policy; a repository tracked before policies
// existed (no field) gets DefaultPolicy.
func (d *policyDoc) policy(owner, name string) Policy {
	if d == nil || len(d.Namespaces) == 0 {
		return DefaultPolicy(owner, name)
	}
	return Policy{Namespaces: d.Namespaces, CreateNamespaces: d.CreateNamespaces, ClusterScoped: d.ClusterScoped,
		AllowKinds: d.AllowKinds, Adopt: d.Adopt, ServiceAccount: d.ServiceAccount, Operators: d.Operators}
}
