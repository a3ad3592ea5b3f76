package deploy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// staticMapper is a RESTMapper of a few kinds that counts Resets.
type staticMapper struct {
	*meta.DefaultRESTMapper
	resets int
}

func (m *staticMapper) Reset() { m.resets++ }

func newRenderer(p Policy) (*policyRenderer, *staticMapper) {
	m := &staticMapper{DefaultRESTMapper: meta.NewDefaultRESTMapper(nil)}
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot)
	return &policyRenderer{owner: "a/one", release: "web", namespace: "app", policy: p, mapper: m}, m
}

func TestRendererKeepsValues(t *testing.T) {
	t.Parallel()
	r, _ := newRenderer(Policy{Namespaces: []string{"app"}})
	in := `---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    postrenderer.helm.sh/postrender-filename: web/templates/deployment.yaml
spec:
  replicas: 3
  big: 9007199254740993
  ratio: 0.25
  flag: "on"
  script: |
    line one
    line two
---
---
# only a comment
`
	out, err := r.Run(bytes.NewBufferString(in))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata": map[string]any{
			"name":      "web",
			"namespace": "app",
			"annotations": map[string]any{
				helmSourceAnnotation: "web/templates/deployment.yaml",
				RepositoryAnnotation: "a/one",
			},
		},
		"spec": map[string]any{
			"replicas": float64(3), "ratio": 0.25, "big": float64(9007199254740993),
			"flag": "on", "script": "line one\nline two\n",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("post-rendered (-want +got):\n%s", diff)
	}
	if !strings.Contains(out.String(), "9007199254740993") {
		t.Errorf("post-rendered:\n%s\nwant the integer 9007199254740993 exactly", out)
	}
	if n := strings.Count(out.String(), "kind:"); n != 1 {
		t.Errorf("post-rendered %d objects, want 1 (empty documents dropped):\n%s", n, out)
	}
}

func TestRendererRefreshesOnceOnUnknownKind(t *testing.T) {
	t.Parallel()
	r, m := newRenderer(Policy{Namespaces: []string{"app"}})
	in := "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: a\n---\napiVersion: example.com/v1\nkind: Gizmo\nmetadata:\n  name: b\n"
	_, err := r.Run(bytes.NewBufferString(in))
	if err == nil || strings.Count(err.Error(), "is not served by the cluster") != 2 {
		t.Errorf("err = %v, want both unknown kinds refused", err)
	}
	if m.resets != 1 {
		t.Errorf("mapper reset %d times, want once", m.resets)
	}
}

func TestRendererMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"Scalar", "just a string\n", "not a mapping"},
		{"NoKind", "apiVersion: v1\nmetadata:\n  name: x\n", "object/x: apiVersion and kind are required"},
		{"MetadataList", "apiVersion: v1\nkind: ConfigMap\nmetadata: [a]\n", "ConfigMap/: metadata is not a mapping"},
		{"AnnotationsList", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations: [a]\n", "ConfigMap/x: metadata.annotations is not a mapping"},
		{"NamespaceNumber", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: 12\n", "ConfigMap/x: metadata.namespace is not a string"},
		{"ItemsOnAnyKind", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nitems: []\n", "ConfigMap/x: lists are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _ := newRenderer(Policy{Namespaces: []string{"app"}, ClusterScoped: true})
			_, err := r.Run(bytes.NewBufferString(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRendererBeforeApply(t *testing.T) {
	t.Parallel()
	r, _ := newRenderer(Policy{Namespaces: []string{"app"}})
	calls := 0
	r.beforeApply = func() error { calls++; return nil }
	if _, err := r.Run(bytes.NewBufferString("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: x\n")); err == nil {
		t.Fatal("a ClusterRole passed without clusterScoped")
	}
	if calls != 0 {
		t.Errorf("beforeApply ran %d times after a refusal, want 0", calls)
	}
	if _, err := r.Run(bytes.NewBufferString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("beforeApply ran %d times, want 1", calls)
	}
}

// TestEnforceCRDsInSubcharts checks that the crds/ files of subcharts are
// checked and stamped too, and that templates are left alone.
func TestEnforceCRDsInSubcharts(t *testing.T) {
	t.Parallel()
	crd := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: crd\n")
	sub := &chart.Chart{Metadata: &chart.Metadata{Name: "sub"}, Files: []*common.File{{Name: "crds/x.YAML", Data: crd}, {Name: "README.md", Data: []byte("hi")}}}
	top := &chart.Chart{Metadata: &chart.Metadata{Name: "top"}, Files: []*common.File{{Name: "crds/y.json", Data: []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"y","namespace":"kube-system"}}`)}}}
	top.SetDependencies(sub)

	r, _ := newRenderer(Policy{Namespaces: []string{"app"}, ClusterScoped: true})
	err := r.enforceCRDs(top)
	if want := "top/crds/y.json: ConfigMap/y: namespace kube-system is not allowed"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
	if got := string(sub.Files[0].Data); !strings.Contains(got, RepositoryAnnotation+": a/one") || !strings.Contains(got, "namespace: app") {
		t.Errorf("subchart crds/x.YAML = %q, want it stamped and namespaced", got)
	}
	if string(sub.Files[1].Data) != "hi" {
		t.Errorf("README.md changed")
	}
	if len(top.CRDObjects()) != 2 {
		t.Errorf("CRDObjects = %d, want 2", len(top.CRDObjects()))
	}
}

func TestAllowsKind(t *testing.T) {
	t.Parallel()
	p := Policy{AllowKinds: []string{"rbac.authorization.k8s.io/Role", "core/Endpoints", "networkpolicy"}}
	tests := []struct {
		group, kind string
		want        bool
	}{
		{"apps", "Deployment", true},
		{"rbac.authorization.k8s.io", "Role", true},
		{"rbac.authorization.k8s.io", "RoleBinding", false},
		{"example.com", "Role", false},
		{"", "Endpoints", true},
		{"discovery.k8s.io", "EndpointSlice", false},
		{"networking.k8s.io", "NetworkPolicy", true},
		{"crd.projectcalico.org", "NetworkPolicy", true},
		{"", "ResourceQuota", false},
		{"", "LimitRange", false},
	}
	for _, tt := range tests {
		if got := p.allowsKind(tt.group, tt.kind); got != tt.want {
			t.Errorf("allowsKind(%q, %q) = %v, want %v", tt.group, tt.kind, got, tt.want)
		}
	}
	if (Policy{}).allowsKind("crd.projectcalico.org", "NetworkPolicy") {
		t.Error("a NetworkPolicy of another group is allowed by default")
	}
}

func TestRepositoryHash(t *testing.T) {
	t.Parallel()
	if a, b := repositoryHash("Octo/Web"), repositoryHash("octo/web"); a != b || len(a) != 16 {
		t.Errorf("repositoryHash = %q, %q; want equal, 16 hex digits", a, b)
	}
	if repositoryHash("a/one") == repositoryHash("b/two") {
		t.Error("different repositories hash alike")
	}
}
