package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/postrenderer"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// helmSourceAnnotation is the annotation Helm puts on each object it hands
// a post-renderer to find the object's template file again (pkg/action).
const helmSourceAnnotation = "postrenderer.helm.sh/postrender-filename"

// policyRenderer is the Helm post-renderer that enforces a repository's
// Policy on every rendered object, hooks included, and stamps each with
// RepositoryAnnotation. Helm stores and applies what it returns, so the
// objects checked are exactly the objects applied: they are re-serialized
// from the parsed form, never passed through as text.
//
// A policyRenderer serves one Deploy; it is not safe for concurrent use.
type policyRenderer struct {
	owner     string // "owner/name"
	release   string
	namespace string // the release namespace
	policy    Policy
	mapper    meta.ResettableRESTMapper
	// beforeApply, if set, runs once, after the objects passed and before
	// Helm records or applies anything (it creates the namespace).
	beforeApply func() error
	// refreshed is set once the mapper's discovery was refreshed after an
	// unknown kind.
	refreshed bool
}

var _ postrenderer.PostRenderer = (*policyRenderer)(nil)

// Run checks and stamps the rendered manifests. It fails with one *Error
// listing every object the policy refuses.
func (r *policyRenderer) Run(rendered *bytes.Buffer) (*bytes.Buffer, error) {
	out, violations, err := r.enforce(rendered.Bytes())
	if err != nil {
		return nil, err
	}
	if len(violations) > 0 {
		return nil, r.violationError("the chart", violations)
	}
	if r.beforeApply != nil {
		f := r.beforeApply
		r.beforeApply = nil
		if err := f(); err != nil {
			return nil, err
		}
	}
	return bytes.NewBuffer(out), nil
}

// violationError is the refusal of a list of violations.
func (r *policyRenderer) violationError(what string, violations []string) *Error {
	return userError(fmt.Sprintf("%s of release %s breaks the deploy policy of %s: %s", what, r.release, r.owner, strings.Join(violations, "; ")))
}

// enforce checks every object of a multi-document manifest, sets the
// release namespace on namespaced objects that have none and stamps them
// all. It returns the re-serialized objects and the violations found; err
// is for manifests that cannot be read and clusters that cannot be asked.
func (r *policyRenderer) enforce(manifest []byte) (out []byte, violations []string, err error) {
	objs, err := decodeObjects(manifest)
	if err != nil {
		return nil, nil, userError("read the rendered manifest: " + err.Error())
	}
	var b bytes.Buffer
	for _, obj := range objs {
		v, err := r.check(obj)
		if err != nil {
			return nil, nil, err
		}
		violations = append(violations, v...)
		j, err := json.Marshal(obj)
		if err != nil {
			return nil, nil, fmt.Errorf("encode %s: %w", obj.id(), err)
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return nil, nil, fmt.Errorf("encode %s: %w", obj.id(), err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), violations, nil
}

// check checks one object against the policy and, if it is namespaced and
// has no namespace, sets the release namespace; it stamps the repository
// annotation whatever the outcome.
func (r *policyRenderer) check(obj object) (violations []string, err error) {
	refuse := func(format string, args ...any) {
		violations = append(violations, obj.id()+": "+fmt.Sprintf(format, args...))
	}
	md, err := obj.metadata()
	if err != nil {
		refuse("%v", err)
		return violations, nil
	}
	if _, ok := obj["items"]; ok {
		// Helm's resource builder flattens anything with items into its
		// items, which would then escape these checks.
		refuse("lists are not allowed; put each object in a YAML document of its own")
		return violations, nil
	}
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	if apiVersion == "" || kind == "" {
		refuse("apiVersion and kind are required")
		return violations, nil
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		refuse("apiVersion %q: %v", apiVersion, err)
		return violations, nil
	}
	ns, hasNS := md["namespace"].(string)
	if v, ok := md["namespace"]; ok && v != nil && !hasNS {
		refuse("metadata.namespace is not a string")
		return violations, nil
	}
	if err := obj.annotate(RepositoryAnnotation, r.owner); err != nil {
		refuse("%v", err)
		return violations, nil
	}

	namespaced, known, err := r.scope(gv.WithKind(kind))
	if err != nil {
		return nil, err
	}
	switch {
	case !known && !r.policy.ClusterScoped:
		refuse("kind %s of %s is not served by the cluster (a custom resource whose CRD is in the chart?); it could be cluster-scoped, which the policy does not allow", kind, apiVersion)
		return violations, nil
	case known && !namespaced:
		if !r.policy.ClusterScoped {
			refuse("cluster-scoped objects are not allowed (set clusterScoped in the deploy policy)")
		}
		return violations, nil
	case known && ns == "":
		ns = r.namespace
		md["namespace"] = ns
	}
	if ns != "" && !r.policy.allowsNamespace(ns) {
		refuse("namespace %s is not allowed (allowed: %s)", ns, r.policy.namespaceList())
	}
	if !r.policy.allowsKind(gv.Group, kind) {
		refuse("kind %s is denied by default (add it to allowKinds in the deploy policy)", qualifiedKind(gv.Group, kind))
	}
	return violations, nil
}

// scope reports whether the cluster serves gvk, and if so whether it is
// namespaced. The first unknown kind refreshes the shared discovery cache,
// which may predate a CRD.
func (r *policyRenderer) scope(gvk schema.GroupVersionKind) (namespaced, known bool, err error) {
	m, err := r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) && !r.refreshed {
		r.refreshed = true
		r.mapper.Reset()
		m, err = r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	switch {
	case meta.IsNoMatchError(err):
		return false, false, nil
	case err != nil:
		return false, false, fmt.Errorf("look up kind %s: %w", gvk, err)
	}
	return m.Scope.Name() == meta.RESTScopeNameNamespace, true, nil
}

// lookupFunc is the signature of Helm's lookup template function.
type lookupFunc = func(apiVersion, kind, namespace, name string) (map[string]any, error)

// restrictLookup bounds Helm's lookup template function, which reads the
// cluster while rendering, to what the policy allows: namespaced kinds in
// its namespaces (a lookup without namespace lists every namespace) and
// cluster-scoped kinds only with ClusterScoped. Otherwise a chart could
// copy another tenant's Secret into an object of its own.
func (r *policyRenderer) restrictLookup(lookup lookupFunc) lookupFunc {
	return func(apiVersion, kind, namespace, name string) (map[string]any, error) {
		gv, err := schema.ParseGroupVersion(apiVersion)
		if err != nil {
			return nil, fmt.Errorf("lookup: apiVersion %q: %w", apiVersion, err)
		}
		namespaced, known, err := r.scope(gv.WithKind(kind))
		switch {
		case err != nil:
			return nil, err
		case !known:
			return nil, fmt.Errorf("lookup: kind %s of %s is not served by the cluster", kind, apiVersion)
		case !namespaced && !r.policy.ClusterScoped:
			return nil, fmt.Errorf("lookup of cluster-scoped %s is not allowed for %s", kind, r.owner)
		case namespaced && namespace == "":
			return nil, fmt.Errorf("lookup of %s in all namespaces is not allowed for %s; name a namespace", kind, r.owner)
		case namespaced && !r.policy.allowsNamespace(namespace):
			return nil, fmt.Errorf("lookup of %s in namespace %s is not allowed (allowed: %s)", kind, namespace, r.policy.namespaceList())
		}
		return lookup(apiVersion, kind, namespace, name)
	}
}

// checkStored checks the objects of a stored release that an upgrade may
// change or delete: they must be in allowed namespaces, and cluster-scoped
// ones need ClusterScoped. Kinds the cluster no longer serves are skipped,
// as Helm cannot touch them either.
func (r *policyRenderer) checkStored(manifest string) error {
	var violations []string
	for _, obj := range parseObjects(manifest) {
		apiVersion, _ := obj["apiVersion"].(string)
		kind, _ := obj["kind"].(string)
		gv, err := schema.ParseGroupVersion(apiVersion)
		if err != nil || kind == "" {
			continue
		}
		namespaced, known, err := r.scope(gv.WithKind(kind))
		if err != nil {
			return err
		}
		switch {
		case !known:
		case !namespaced && !r.policy.ClusterScoped:
			violations = append(violations, obj.id()+": cluster-scoped objects are not allowed")
		case namespaced:
			ns := obj.namespace()
			if ns == "" {
				ns = r.namespace
			}
			if !r.policy.allowsNamespace(ns) {
				violations = append(violations, fmt.Sprintf("%s: namespace %s is not allowed", obj.id(), ns))
			}
		}
	}
	if len(violations) > 0 {
		return userError(fmt.Sprintf("release %s in namespace %s has objects outside the deploy policy of %s, which upgrading it could change or delete: %s",
			r.release, r.namespace, r.owner, strings.Join(violations, "; ")))
	}
	return nil
}

// enforceCRDs runs the checks on the files of the chart's (and its
// subcharts') crds/ directories, which Helm applies as they are, without
// templating or post-rendering, and replaces each with its stamped form. It
// modifies ch, as Helm itself does when it processes dependencies.
func (r *policyRenderer) enforceCRDs(ch *chart.Chart) error {
	var violations []string
	var walk func(c *chart.Chart) error
	walk = func(c *chart.Chart) error {
		for i, f := range c.Files {
			if !isCRDFile(f.Name) {
				continue
			}
			out, v, err := r.enforce(f.Data)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", c.ChartFullPath(), f.Name, err)
			}
			for _, s := range v {
				violations = append(violations, c.ChartFullPath()+"/"+f.Name+": "+s)
			}
			c.Files[i] = &common.File{Name: f.Name, ModTime: f.ModTime, Data: out}
		}
		for _, dep := range c.Dependencies() {
			if err := walk(dep); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(ch); err != nil {
		return err
	}
	if len(violations) > 0 {
		return r.violationError("the crds/ directory", violations)
	}
	return nil
}

// isCRDFile matches the files Chart.CRDObjects returns.
func isCRDFile(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return strings.HasPrefix(name, "crds/")
	}
	return false
}

func qualifiedKind(group, kind string) string {
	if group == "" {
		return kind
	}
	return group + "/" + kind
}

// object is one decoded Kubernetes object. Numbers are json.Number, so
// that re-encoding keeps them exact.
type object map[string]any

// decodeObjects splits a multi-document YAML manifest and decodes each
// non-empty document, which must be a mapping.
func decodeObjects(manifest []byte) ([]object, error) {
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	var objs []object
	for n := 1; ; n++ {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if t := bytes.TrimSpace(j); len(t) == 0 || bytes.Equal(t, []byte("null")) {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.UseNumber()
		var obj object
		if err := dec.Decode(&obj); err != nil {
			return nil, fmt.Errorf("document %d is not a mapping: %w", n, err)
		}
		objs = append(objs, obj)
	}
}

// parseObjects decodes what it can of a stored manifest.
func parseObjects(manifest string) []object {
	var objs []object
	for _, doc := range docSep.Split(manifest, -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		if o, err := decodeObjects([]byte(doc)); err == nil {
			objs = append(objs, o...)
		}
	}
	return objs
}

// metadata returns the object's metadata, creating it if missing.
func (o object) metadata() (map[string]any, error) {
	switch md := o["metadata"].(type) {
	case map[string]any:
		return md, nil
	case nil:
		m := map[string]any{}
		o["metadata"] = m
		return m, nil
	default:
		return nil, errors.New("metadata is not a mapping")
	}
}

func (o object) field(key string) string {
	md, _ := o["metadata"].(map[string]any)
	s, _ := md[key].(string)
	return s
}

func (o object) namespace() string { return o.field("namespace") }

// annotation returns the value of annotation key, or "".
func (o object) annotation(key string) string {
	md, _ := o["metadata"].(map[string]any)
	anns, _ := md["annotations"].(map[string]any)
	s, _ := anns[key].(string)
	return s
}

// annotate sets annotation key to value.
func (o object) annotate(key, value string) error {
	md, err := o.metadata()
	if err != nil {
		return err
	}
	switch anns := md["annotations"].(type) {
	case map[string]any:
		anns[key] = value
	case nil:
		md["annotations"] = map[string]any{key: value}
	default:
		return errors.New("metadata.annotations is not a mapping")
	}
	return nil
}

// id names the object in messages: "Kind/name", and its template file
// when Helm gave it.
func (o object) id() string {
	kind, _ := o["kind"].(string)
	if kind == "" {
		kind = "object"
	}
	id := kind + "/" + o.field("name")
	if src := o.annotation(helmSourceAnnotation); src != "" {
		id += " (" + src + ")"
	}
	return id
}
