package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
)

// Keys kube-git-deploy writes into the cluster.
const (
	// RepositoryAnnotation names the repository ("owner/name") that
	// deployed an object or had a namespace created. Every object of a
	// release deployed by kube-git-deploy carries it.
	RepositoryAnnotation = "kube-git-deploy.dev/repository"
	// RepositoryHashLabel is a Helm release label (on the release record,
	// not on the objects): the first 16 hex digits of the SHA-256 of the
	// lowercased "owner/name", since a label value cannot hold a slash.
	RepositoryHashLabel = "kube-git-deploy.dev/repository-hash"
	// managedByLabel marks the namespaces kube-git-deploy created.
	managedByLabel = "app.kubernetes.io/managed-by"
	managedByValue = "kube-git-deploy"
)

// Policy is a tracked repository's deploy policy. The zero Policy allows
// nothing: a release needs its namespace listed in Namespaces.
//
// The default deny-list of namespaced kinds, matched by kind in any API
// group, is Role, RoleBinding, ResourceQuota, LimitRange, NetworkPolicy,
// Endpoints and EndpointSlice. Helm's lookup template function is bounded
// the same way: namespaced kinds in Namespaces, cluster-scoped ones only
// with ClusterScoped.
type Policy struct {
	Namespaces       []string // namespaces the release's objects may live in (exact names)
	CreateNamespaces bool     // the runner may create a missing allowed namespace
	ClusterScoped    bool     // cluster-scoped objects (ClusterRole(Binding), CRDs, webhooks, Namespaces, PVs, StorageClasses, ...) are allowed
	AllowKinds       []string // namespaced kinds allowed despite the default deny-list, as "Kind" or "group/Kind" ("core/Kind" for the core group)
	Adopt            bool     // may take over an existing release that records no owner
	ServiceAccount   string   // "namespace/name": Helm runs impersonating system:serviceaccount:namespace:name (cluster RBAC is the last line); "" = the runner's own identity
}

// deniedKinds are the namespaced kinds a chart may create only when the
// policy lists them in AllowKinds: they grant rights (Role, RoleBinding),
// limit or isolate other workloads of the namespace (ResourceQuota,
// LimitRange, NetworkPolicy) or redirect traffic to arbitrary addresses
// (Endpoints, EndpointSlice: CVE-2021-25740). They are matched by kind in
// any API group, so that look-alikes such as Calico's NetworkPolicy are
// denied too.
var deniedKinds = []string{"Role", "RoleBinding", "ResourceQuota", "LimitRange", "NetworkPolicy", "Endpoints", "EndpointSlice"}

// ownerFormat is a GitHub "owner/name": GitHub's user and organization
// names, and its repository names.
var ownerFormat = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$`)

// validate checks the request's owner and policy before anything else.
func (req Request) validate() error {
	if !ownerFormat.MatchString(req.Owner) {
		return userError(fmt.Sprintf("owner %q is not a GitHub repository \"owner/name\"", req.Owner))
	}
	p := req.Policy
	if !p.allowsNamespace(req.Namespace) {
		return userError(fmt.Sprintf("namespace %s is not allowed for %s (allowed: %s)", req.Namespace, req.Owner, p.namespaceList()))
	}
	for _, ns := range p.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return userError(fmt.Sprintf("deploy policy of %s: namespace %q: %s", req.Owner, ns, strings.Join(errs, "; ")))
		}
	}
	for _, k := range p.AllowKinds {
		group, kind, ok := strings.Cut(k, "/")
		if !ok {
			group, kind = "", k
		}
		if kind == "" || strings.Contains(kind, "/") || (ok && group == "") {
			return userError(fmt.Sprintf("deploy policy of %s: allowed kind %q is not \"Kind\" or \"group/Kind\"", req.Owner, k))
		}
	}
	if p.ServiceAccount != "" {
		if _, _, err := splitServiceAccount(p.ServiceAccount); err != nil {
			return userError(fmt.Sprintf("deploy policy of %s: %v", req.Owner, err))
		}
	}
	return nil
}

// splitServiceAccount parses "namespace/name".
func splitServiceAccount(s string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", "", fmt.Errorf("service account %q is not \"namespace/name\" (a namespace and a service account name)", s)
	}
	return ns, name, nil
}

// serviceAccountUser is the Kubernetes user name of service account
// "namespace/name".
func serviceAccountUser(sa string) string {
	ns, name, _ := strings.Cut(sa, "/")
	return "system:serviceaccount:" + ns + ":" + name
}

// allowsNamespace reports whether objects may live in ns.
func (p Policy) allowsNamespace(ns string) bool { return slices.Contains(p.Namespaces, ns) }

// allowsKind reports whether a namespaced kind of group is allowed.
func (p Policy) allowsKind(group, kind string) bool {
	if !slices.ContainsFunc(deniedKinds, func(k string) bool { return strings.EqualFold(k, kind) }) {
		return true
	}
	for _, a := range p.AllowKinds {
		g, k, qualified := strings.Cut(a, "/")
		if !qualified {
			g, k = "", a
		}
		if !strings.EqualFold(k, kind) {
			continue
		}
		if !qualified || strings.EqualFold(g, group) || (group == "" && strings.EqualFold(g, "core")) {
			return true
		}
	}
	return false
}

// namespaceList is the allowed namespaces for messages.
func (p Policy) namespaceList() string {
	if len(p.Namespaces) == 0 {
		return "none"
	}
	return strings.Join(p.Namespaces, ", ")
}

// repositoryHash is the RepositoryHashLabel value of owner.
func repositoryHash(owner string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(owner)))
	return hex.EncodeToString(sum[:])[:16]
}

// checkNamespace reads the (allowed) release namespace with the runner's
// own identity: if it exists it must not have been created for another
// repository. It reports whether the namespace must be created, which
// Deploy does only once the chart passed the policy.
func (d *Deployer) checkNamespace(ctx context.Context, req Request) (create bool, err error) {
	ns, err := d.client.CoreV1().Namespaces().Get(ctx, req.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if !req.Policy.CreateNamespaces {
			return false, &Error{Code: enumspb.StatusCode_DEPLOY_HELM_CREATE_NS_NOT_AVAILABLE,
				Msg: fmt.Sprintf("namespace %s does not exist and the deploy policy of %s does not allow creating namespaces", req.Namespace, req.Owner)}
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("read namespace %s: %w", req.Namespace, err)
	}
	return false, namespaceOwner(ns, req)
}

// namespaceOwner refuses a namespace kube-git-deploy created for another
// repository.
func namespaceOwner(ns *corev1.Namespace, req Request) error {
	if owner := ns.Annotations[RepositoryAnnotation]; owner != "" && !strings.EqualFold(owner, req.Owner) {
		return userError(fmt.Sprintf("namespace %s belongs to %s, not %s", ns.Name, owner, req.Owner))
	}
	return nil
}

// createNamespace creates the release namespace with the runner's own
// identity, stamped with the repository. It does not use Helm's
// CreateNamespace, which server-side applies the namespace (so needs RBAC to
// patch any namespace) and ignores one that exists; this needs only get and
// create (docs/runner-rbac.yaml), and if another Deploy created the
// namespace meanwhile, checks its owner again.
func (d *Deployer) createNamespace(ctx context.Context, req Request, out func(string)) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        req.Namespace,
		Labels:      map[string]string{managedByLabel: managedByValue},
		Annotations: map[string]string{RepositoryAnnotation: req.Owner},
	}}
	cs := d.client.CoreV1().Namespaces()
	_, err := cs.Create(ctx, ns, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err := cs.Get(ctx, req.Namespace, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read namespace %s: %w", req.Namespace, err)
		}
		return namespaceOwner(got, req)
	}
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", req.Namespace, err)
	}
	out("Created namespace " + req.Namespace)
	return nil
}

// checkReleaseOwner refuses to touch a release recorded for another
// repository, or one that kube-git-deploy did not create unless the policy
// adopts it. The owner is read from the release label and from the
// repository annotation of the objects in the stored (post-rendered)
// manifest and hooks; names compare case-insensitively, as GitHub's do.
func checkReleaseOwner(rel *releasev1.Release, req Request, out func(string)) error {
	owners := manifestOwners(rel)
	for _, o := range owners {
		if !strings.EqualFold(o, req.Owner) {
			return userError(fmt.Sprintf("release %s in namespace %s belongs to %s", req.Release, req.Namespace, o))
		}
	}
	hash := rel.Labels[RepositoryHashLabel]
	if hash != "" && hash != repositoryHash(req.Owner) {
		return userError(fmt.Sprintf("release %s in namespace %s belongs to another repository (%s %s)", req.Release, req.Namespace, RepositoryHashLabel, hash))
	}
	if hash == "" && len(owners) == 0 {
		if !req.Policy.Adopt {
			return userError(fmt.Sprintf("release %s in namespace %s was not created by kube-git-deploy; set adopt in the repository's deploy policy to take it over", req.Release, req.Namespace))
		}
		out(fmt.Sprintf("Adopting release %s in %s, which kube-git-deploy did not create", req.Release, req.Namespace))
	}
	return nil
}

// manifestOwners lists the distinct repository annotations of a release's
// objects and hooks.
func manifestOwners(rel *releasev1.Release) []string {
	docs := []string{rel.Manifest}
	for _, h := range rel.Hooks {
		if h != nil {
			docs = append(docs, h.Manifest)
		}
	}
	var owners []string
	for _, m := range docs {
		for _, o := range parseObjects(m) {
			if v := o.annotation(RepositoryAnnotation); v != "" && !slices.ContainsFunc(owners, func(s string) bool { return strings.EqualFold(s, v) }) {
				owners = append(owners, v)
			}
		}
	}
	return owners
}

// userError is a refusal the repository's owner has to fix.
func userError(msg string) *Error {
	return &Error{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Msg: msg}
}
