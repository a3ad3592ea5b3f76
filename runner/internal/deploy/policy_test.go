package deploy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane/controlplanetest"
)

// TestRequestValidation checks what Deploy refuses before it talks to the
// cluster (the Deployer's cluster is unreachable).
func TestRequestValidation(t *testing.T) {
	t.Parallel()
	d := newDeployer(t, &rest.Config{Host: "https://127.0.0.1:1", BearerToken: "x"})
	tests := []struct {
		name   string
		change func(*deploy.Request)
		want   string
	}{
		{"NoOwner", func(r *deploy.Request) { r.Owner = "" }, `owner "" is not`},
		{"OwnerWithoutName", func(r *deploy.Request) { r.Owner = "kgd" }, `owner "kgd" is not`},
		{"OwnerPath", func(r *deploy.Request) { r.Owner = "kgd/test/x" }, `owner "kgd/test/x" is not`},
		{"ZeroPolicy", func(r *deploy.Request) { r.Policy = deploy.Policy{} }, "namespace app is not allowed for kgd/test (allowed: none)"},
		{"OtherNamespace", func(r *deploy.Request) { r.Namespace = "kube-system" }, "namespace kube-system is not allowed for kgd/test (allowed: app)"},
		{"BadPolicyNamespace", func(r *deploy.Request) { r.Policy.Namespaces = append(r.Policy.Namespaces, "Not_A_Label") }, `namespace "Not_A_Label"`},
		{"BadAllowKind", func(r *deploy.Request) { r.Policy.AllowKinds = []string{"/Role"} }, `allowed kind "/Role"`},
		{"ServiceAccountWithoutNamespace", func(r *deploy.Request) { r.Policy.ServiceAccount = "deployer" }, `service account "deployer" is not`},
		{"ServiceAccountBadNamespace", func(r *deploy.Request) { r.Policy.ServiceAccount = "a.b/deployer" }, `service account "a.b/deployer" is not`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := request(t, "web", "app", "testdata/web")
			tt.change(&req)
			_, err := d.Deploy(t.Context(), req, nil)
			wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestPolicy runs the attacks a repository could try on the others and on
// the cluster against a real kube-apiserver with RBAC; each is refused
// before anything is created. The Deployer's own identity is cluster-admin,
// so only the policy stands in the way (except in ServiceAccount).
func TestPolicy(t *testing.T) {
	t.Parallel()
	cp := controlplanetest.Start(t)
	k := &cluster{client: kubernetes.NewForConfigOrDie(cp.Config), dyn: dynamic.NewForConfigOrDie(cp.Config)}
	d := newDeployer(t, cp.Config)
	for _, ns := range []string{"shared", "other", "hooks", "rbac", "adopt", "tenant", "crds", "lists", "lookups"} {
		k.createNamespace(t, ns, "")
	}

	t.Run("ReleaseOfAnotherRepository", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		one := request(t, "web", "shared", "testdata/web")
		one.Owner = "a/one"
		res, err := d.Deploy(ctx, one, nil)
		if err != nil {
			t.Fatalf("a/one install: %v", err)
		}
		k.checkStamped(t, res, "a/one")

		two := request(t, "web", "shared", "testdata/web")
		two.Owner = "b/two"
		two.Policy.Adopt = true // adopting is only for releases without an owner
		two.Set = map[string]string{"image.tag": "evil"}
		_, err = d.Deploy(ctx, two, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		if want := "release web in namespace shared belongs to a/one"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("b/two deploy: err = %v, want %q", err, want)
		}
		checkImage(t, k.client, "shared", "web", "example.invalid/app:1")
		k.wantReleaseRevisions(t, "shared", "web", 1)

		// GitHub names are case-insensitive.
		up := request(t, "web", "shared", "testdata/web")
		up.Owner = "A/One"
		up.Set = map[string]string{"image.tag": "2"}
		res, err = d.Deploy(ctx, up, nil)
		if err != nil {
			t.Fatalf("a/one upgrade: %v", err)
		}
		if res.Revision != 2 {
			t.Errorf("a/one upgrade revision = %d, want 2", res.Revision)
		}
		checkImage(t, k.client, "shared", "web", "example.invalid/app:2")
	})

	t.Run("NamespaceNotAllowed", func(t *testing.T) {
		t.Parallel()
		for _, ns := range []string{"kube-system", "nowhere"} {
			req := request(t, "web", ns, "testdata/web")
			req.Policy = deploy.Policy{Namespaces: []string{"tenant"}, CreateNamespaces: true, ClusterScoped: true}
			_, err := d.Deploy(t.Context(), req, nil)
			wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
			if want := "namespace " + ns + " is not allowed for kgd/test (allowed: tenant)"; err == nil || err.Error() != want {
				t.Errorf("err = %v, want %q", err, want)
			}
			k.wantNoRelease(t, ns, "web")
			k.wantAbsent(t, deploymentGVR, ns, "web")
		}
		k.wantAbsent(t, namespaceGVR, "", "nowhere")
	})

	t.Run("ClusterRoleBinding", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// A namespace to create, too: a refused chart must not leave it.
		req := request(t, "crb", "crb", "testdata/clusterrolebinding")
		req.Policy.CreateNamespaces = true
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "ClusterRoleBinding/crb-crb-admin (clusterrolebinding/templates/clusterrolebinding.yaml): cluster-scoped objects are not allowed"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to list %q", err, want)
		}
		k.wantAbsent(t, namespaceGVR, "", "crb")
		k.wantAbsent(t, clusterRoleBindingGVR, "", "crb-crb-admin")
		k.wantAbsent(t, configMapGVR, "crb", "crb-config")
		k.wantNoRelease(t, "crb", "crb")

		req = request(t, "crb", "crb", "testdata/clusterrolebinding")
		req.Policy.CreateNamespaces = true
		req.Policy.ClusterScoped = true
		res, err := d.Deploy(ctx, req, nil)
		if err != nil {
			t.Fatalf("deploy with clusterScoped: %v", err)
		}
		k.checkStamped(t, res, testOwner)
	})

	t.Run("ForeignNamespaceInTemplate", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		req := request(t, "on", "tenant", "testdata/othernamespace")
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "ConfigMap/on-elsewhere (othernamespace/templates/configmap.yaml): namespace other is not allowed (allowed: tenant)"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to list %q", err, want)
		}
		k.wantAbsent(t, configMapGVR, "other", "on-elsewhere")
		k.wantAbsent(t, configMapGVR, "tenant", "on-here")
		k.wantNoRelease(t, "tenant", "on")

		// A namespace the policy allows besides the release's own.
		req = request(t, "on", "tenant", "testdata/othernamespace")
		req.Policy.Namespaces = []string{"tenant", "other"}
		res, err := d.Deploy(ctx, req, nil)
		if err != nil {
			t.Fatalf("deploy with other allowed: %v", err)
		}
		k.checkStamped(t, res, testOwner)
		k.wantPresent(t, configMapGVR, "other", "on-elsewhere")
	})

	t.Run("HookInForeignNamespace", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		req := request(t, "hk", "hooks", "testdata/hook")
		req.Set = map[string]string{"hookNamespace": "other"}
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "ConfigMap/hk-hook (hook/templates/hook.yaml): namespace other is not allowed (allowed: hooks)"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to list %q", err, want)
		}
		k.wantAbsent(t, configMapGVR, "other", "hk-hook")
		k.wantAbsent(t, configMapGVR, "hooks", "hk")
		k.wantNoRelease(t, "hooks", "hk")

		// Hooks are post-rendered, so stamped as well.
		res, err := d.Deploy(ctx, request(t, "hk", "hooks", "testdata/hook"), nil)
		if err != nil {
			t.Fatalf("deploy with the hook at home: %v", err)
		}
		k.checkStamped(t, res, testOwner)
		k.wantAnnotated(t, configMapGVR, "hooks", "hk-hook", testOwner)

		// An upgrade is post-rendered the same way.
		req = request(t, "hk", "hooks", "testdata/hook")
		req.Set = map[string]string{"hookNamespace": "other"}
		_, err = d.Deploy(ctx, req, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("upgrade: err = %v, want it to list %q", err, want)
		}
		k.wantAbsent(t, configMapGVR, "other", "hk-hook")
		k.wantReleaseRevisions(t, "hooks", "hk", 1)
	})

	t.Run("RoleBinding", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		for _, allow := range [][]string{nil, {"example.com/RoleBinding"}, {"Role"}} {
			req := request(t, "rb", "rbac", "testdata/rolebinding")
			req.Policy.AllowKinds = allow
			_, err := d.Deploy(ctx, req, nil)
			wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
			want := "RoleBinding/rb (rolebinding/templates/rolebinding.yaml): kind rbac.authorization.k8s.io/RoleBinding is denied by default"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("allowKinds %q: err = %v, want it to list %q", allow, err, want)
			}
			k.wantAbsent(t, roleBindingGVR, "rbac", "rb")
			k.wantNoRelease(t, "rbac", "rb")
		}
		for i, allow := range []string{"rbac.authorization.k8s.io/RoleBinding", "RoleBinding"} {
			req := request(t, "rb", "rbac", "testdata/rolebinding")
			req.Policy.AllowKinds = []string{allow}
			res, err := d.Deploy(ctx, req, nil)
			if err != nil {
				t.Fatalf("allowKinds %q: %v", allow, err)
			}
			if res.Revision != i+1 {
				t.Errorf("revision = %d, want %d", res.Revision, i+1)
			}
			k.checkStamped(t, res, testOwner)
		}
	})

	t.Run("Adopt", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		helmInstall(t, cp.Config, "adopt", "legacy", "testdata/web")

		req := request(t, "legacy", "adopt", "testdata/web")
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "release legacy in namespace adopt was not created by kube-git-deploy; set adopt in the repository's deploy policy to take it over"
		if err == nil || err.Error() != want {
			t.Errorf("err = %v, want %q", err, want)
		}
		k.wantReleaseRevisions(t, "adopt", "legacy", 1)

		req = request(t, "legacy", "adopt", "testdata/web")
		req.Policy.Adopt = true
		req.Set = map[string]string{"image.tag": "adopted"}
		var lines []string
		res, err := d.Deploy(ctx, req, func(l string) { lines = append(lines, l) })
		if err != nil {
			t.Fatalf("adopt: %v", err)
		}
		if res.Revision != 2 {
			t.Errorf("revision = %d, want 2", res.Revision)
		}
		if !contains(lines, "Adopting release legacy in adopt, which kube-git-deploy did not create") {
			t.Errorf("out lines = %q, want the adoption reported", lines)
		}
		checkImage(t, k.client, "adopt", "legacy", "example.invalid/app:adopted")
		k.checkStamped(t, res, testOwner)

		// Now owned: another repository cannot adopt it.
		req = request(t, "legacy", "adopt", "testdata/web")
		req.Owner = "b/two"
		req.Policy.Adopt = true
		_, err = d.Deploy(ctx, req, nil)
		if want := "release legacy in namespace adopt belongs to " + testOwner; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("b/two adopting: err = %v, want %q", err, want)
		}
	})

	t.Run("AdoptReachingOutside", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// A release of objects in tenant and other: upgrading it could
		// change or delete the one in other.
		helmInstall(t, cp.Config, "tenant", "legacy2", "testdata/othernamespace")
		req := request(t, "legacy2", "tenant", "testdata/othernamespace")
		req.Set = map[string]string{"target": "tenant"}
		req.Policy.Adopt = true
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "release legacy2 in namespace tenant has objects outside the deploy policy of kgd/test, which upgrading it could change or delete: ConfigMap/legacy2-elsewhere: namespace other is not allowed"
		if err == nil || err.Error() != want {
			t.Errorf("err = %v, want %q", err, want)
		}
		k.wantPresent(t, configMapGVR, "other", "legacy2-elsewhere")
		k.wantReleaseRevisions(t, "tenant", "legacy2", 1)
	})

	t.Run("Namespaces", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// Missing and not to be created.
		req := request(t, "web", "absent", "testdata/web")
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_CREATE_NS_NOT_AVAILABLE)
		k.wantAbsent(t, namespaceGVR, "", "absent")

		// Created by a/one for a/one.
		req = request(t, "web", "theirs", "testdata/web")
		req.Owner, req.Policy.CreateNamespaces = "a/one", true
		if _, err := d.Deploy(ctx, req, nil); err != nil {
			t.Fatalf("a/one deploy creating its namespace: %v", err)
		}
		k.wantAnnotated(t, namespaceGVR, "", "theirs", "a/one")

		// b/two may not move in, even with its own release name.
		req = request(t, "web2", "theirs", "testdata/web")
		req.Owner, req.Policy.CreateNamespaces = "b/two", true
		_, err = d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		if want := "namespace theirs belongs to a/one, not b/two"; err == nil || err.Error() != want {
			t.Errorf("err = %v, want %q", err, want)
		}
		k.wantNoRelease(t, "theirs", "web2")

		req = request(t, "web2", "theirs", "testdata/web")
		req.Owner = "A/ONE"
		if _, err := d.Deploy(ctx, req, nil); err != nil {
			t.Errorf("A/ONE deploy into a/one's namespace: %v", err)
		}
	})

	t.Run("CRDs", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// Without clusterScoped crds/ is skipped, and the custom resource
		// of the kind it would define is refused: its scope is unknown.
		_, err := d.Deploy(ctx, request(t, "widgets", "crds", "testdata/crds"), nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "Widget/widgets (crds/templates/widget.yaml): kind Widget of kgd.example.com/v1 is not served by the cluster"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to list %q", err, want)
		}
		k.wantAbsent(t, crdGVR, "", "widgets.kgd.example.com")
		k.wantNoRelease(t, "crds", "widgets")

		req := request(t, "widgets", "crds", "testdata/crds")
		req.Policy.ClusterScoped = true
		res, err := d.Deploy(ctx, req, nil)
		if err != nil {
			t.Fatalf("deploy with clusterScoped: %v", err)
		}
		k.checkStamped(t, res, testOwner)
		k.wantAnnotated(t, crdGVR, "", "widgets.kgd.example.com", testOwner)
	})

	t.Run("CRDsDirectoryBypass", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// crds/ holds a ConfigMap in another namespace, which Helm would
		// apply without post-rendering.
		req := request(t, "cb", "crds", "testdata/crdsbypass")
		req.Policy.ClusterScoped = true
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "crdsbypass/crds/sneaky.yaml: ConfigMap/sneaky: namespace other is not allowed"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to list %q", err, want)
		}
		k.wantAbsent(t, configMapGVR, "other", "sneaky")
		k.wantNoRelease(t, "crds", "cb")

		// Without clusterScoped, crds/ is not applied at all.
		var lines []string
		res, err := d.Deploy(ctx, request(t, "cb", "crds", "testdata/crdsbypass"), func(l string) { lines = append(lines, l) })
		if err != nil {
			t.Fatalf("deploy without clusterScoped: %v", err)
		}
		if !contains(lines, "Skipping the chart's 1 crds/ files: the deploy policy does not allow cluster-scoped objects") {
			t.Errorf("out lines = %q, want the skipped crds/ reported", lines)
		}
		k.wantAbsent(t, configMapGVR, "other", "sneaky")
		k.checkStamped(t, res, testOwner)
	})

	t.Run("List", func(t *testing.T) {
		t.Parallel()
		// Helm flattens a List into its items: they would escape the checks.
		req := request(t, "ls", "lists", "testdata/list")
		req.Policy.ClusterScoped = true
		_, err := d.Deploy(t.Context(), req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		for _, want := range []string{
			// Helm unwraps a List itself before post-rendering.
			"ConfigMap/ls-listed (list/templates/list.yaml): namespace other is not allowed",
			"ConfigMapList/ (list/templates/list.yaml): lists are not allowed",
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to list %q", err, want)
			}
		}
		k.wantAbsent(t, configMapGVR, "other", "ls-listed")
		k.wantAbsent(t, configMapGVR, "other", "ls-listed2")
		k.wantNoRelease(t, "lists", "ls")
	})

	t.Run("Lookup", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token", Namespace: "other"}, StringData: map[string]string{"token": "s3cr3t"}}
		if _, err := k.client.CoreV1().Secrets("other").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name string
			set  map[string]string
			want string
		}{
			{"OtherNamespace", map[string]string{"namespace": "other", "name": "token"}, "lookup of Secret in namespace other is not allowed (allowed: lookups)"},
			{"AllNamespaces", map[string]string{"namespace": "", "name": ""}, "lookup of Secret in all namespaces is not allowed"},
			{"ClusterScoped", map[string]string{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "admin"}, "lookup of cluster-scoped ClusterRole is not allowed"},
		} {
			req := request(t, "lk", "lookups", "testdata/lookup")
			req.Set = tt.set
			_, err := d.Deploy(ctx, req, nil)
			wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: err = %v, want it to contain %q", tt.name, err, tt.want)
			}
			k.wantAbsent(t, configMapGVR, "lookups", "lk")
			k.wantNoRelease(t, "lookups", "lk")
		}

		// In its own namespace, lookup works.
		req := request(t, "lk", "lookups", "testdata/lookup")
		req.Set = map[string]string{"namespace": "lookups", "name": "absent"}
		if _, err := d.Deploy(ctx, req, nil); err != nil {
			t.Errorf("lookup in the release namespace: %v", err)
		}
	})

	t.Run("AllViolationsAtOnce", func(t *testing.T) {
		t.Parallel()
		_, err := d.Deploy(t.Context(), request(t, "many", "tenant", "testdata/violations"), nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		src := " (violations/templates/all.yaml): "
		for _, want := range []string{
			"the chart of release many breaks the deploy policy of kgd/test: ",
			"ClusterRole/many-reader" + src + "cluster-scoped objects are not allowed",
			"ConfigMap/elsewhere" + src + "namespace kube-system is not allowed",
			"ConfigMap/hook" + src + "namespace kube-public is not allowed",
			"NetworkPolicy/deny-all" + src + "kind networking.k8s.io/NetworkPolicy is denied by default",
			"Endpoints/metadata-server" + src + "kind Endpoints is denied by default",
			"Gadget/unknown" + src + "kind Gadget of example.invalid/v1 is not served by the cluster",
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to contain %q", err, want)
			}
		}
		if err != nil && strings.Contains(err.Error(), "ConfigMap/fine") {
			t.Errorf("err = %v, want ConfigMap/fine not listed", err)
		}
		k.wantAbsent(t, configMapGVR, "tenant", "fine")
		k.wantNoRelease(t, "tenant", "many")
	})
}

// TestServiceAccount deploys impersonating a deploy policy's service
// account: Helm runs with its rights only.
func TestServiceAccount(t *testing.T) {
	t.Parallel()
	cp := controlplanetest.Start(t)
	k := &cluster{client: kubernetes.NewForConfigOrDie(cp.Config), dyn: dynamic.NewForConfigOrDie(cp.Config)}
	d := newDeployer(t, cp.Config)
	ctx := t.Context()
	for _, ns := range []string{"bound", "unbound"} {
		k.createNamespace(t, ns, "")
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}}
		if _, err := k.client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "deployer-edit", Namespace: "bound"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: "bound"}},
	}
	if _, err := k.client.RbacV1().RoleBindings("bound").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("Bound", func(t *testing.T) {
		req := request(t, "web", "bound", "testdata/web")
		req.Policy.ServiceAccount = "bound/deployer"
		res, err := d.Deploy(ctx, req, nil)
		if err != nil {
			t.Fatalf("deploy as bound/deployer: %v", err)
		}
		k.checkStamped(t, res, testOwner)
		checkImage(t, k.client, "bound", "web", "example.invalid/app:1")
	})

	t.Run("Unbound", func(t *testing.T) {
		req := request(t, "web", "unbound", "testdata/web")
		req.Policy.ServiceAccount = "unbound/deployer"
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "the deploy policy's service account unbound/deployer may not list secrets in namespace unbound"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
		if !apierrors.IsForbidden(err) {
			t.Errorf("err = %v, want it to wrap the Forbidden API error", err)
		}
		k.wantAbsent(t, deploymentGVR, "unbound", "web")
		k.wantNoRelease(t, "unbound", "web")
	})

	t.Run("BeyondItsRole", func(t *testing.T) {
		// The policy allows RoleBindings, RBAC does not: the last line.
		req := request(t, "rb", "bound", "testdata/rolebinding")
		req.Policy.ServiceAccount = "bound/deployer"
		req.Policy.AllowKinds = []string{"RoleBinding"}
		_, err := d.Deploy(ctx, req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		want := "the deploy policy's service account bound/deployer may not "
		if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "rolebindings.rbac.authorization.k8s.io") {
			t.Errorf("err = %v, want %q… rolebindings", err, want)
		}
		k.wantAbsent(t, roleBindingGVR, "bound", "rb")
	})
}

var (
	namespaceGVR          = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	configMapGVR          = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	serviceGVR            = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	deploymentGVR         = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	roleBindingGVR        = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}
	clusterRoleBindingGVR = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}
	crdGVR                = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	widgetGVR             = schema.GroupVersionResource{Group: "kgd.example.com", Version: "v1", Resource: "widgets"}
)

// kindGVR maps the kinds of the test charts to their resources.
var kindGVR = map[string]schema.GroupVersionResource{
	"ConfigMap": configMapGVR, "Service": serviceGVR, "Deployment": deploymentGVR,
	"RoleBinding": roleBindingGVR, "ClusterRoleBinding": clusterRoleBindingGVR, "Widget": widgetGVR,
}

// cluster reads the test cluster as its admin.
type cluster struct {
	client kubernetes.Interface
	dyn    dynamic.Interface
}

func (k *cluster) createNamespace(t *testing.T, name, owner string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if owner != "" {
		ns.Annotations = map[string]string{deploy.RepositoryAnnotation: owner}
	}
	if _, err := k.client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

func (k *cluster) get(t *testing.T, gvr schema.GroupVersionResource, ns, name string) (map[string]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r dynamic.ResourceInterface = k.dyn.Resource(gvr)
	if ns != "" {
		r = k.dyn.Resource(gvr).Namespace(ns)
	}
	obj, err := r.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return obj.GetAnnotations(), nil
}

func (k *cluster) wantAbsent(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	if _, err := k.get(t, gvr, ns, name); !apierrors.IsNotFound(err) {
		t.Errorf("%s %s/%s: err = %v, want NotFound: nothing may be created", gvr.Resource, ns, name, err)
	}
}

func (k *cluster) wantPresent(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	if _, err := k.get(t, gvr, ns, name); err != nil {
		t.Errorf("%s %s/%s: %v", gvr.Resource, ns, name, err)
	}
}

// wantAnnotated checks the object's repository annotation.
func (k *cluster) wantAnnotated(t *testing.T, gvr schema.GroupVersionResource, ns, name, owner string) {
	t.Helper()
	anns, err := k.get(t, gvr, ns, name)
	if err != nil {
		t.Errorf("%s %s/%s: %v", gvr.Resource, ns, name, err)
		return
	}
	if got := anns[deploy.RepositoryAnnotation]; got != owner {
		t.Errorf("%s %s/%s: annotation %s = %q, want %q", gvr.Resource, ns, name, deploy.RepositoryAnnotation, got, owner)
	}
}

// checkStamped checks that every object of a release carries the
// repository annotation.
func (k *cluster) checkStamped(t *testing.T, res deploy.Result, owner string) {
	t.Helper()
	if len(res.Resources) == 0 {
		t.Errorf("release %s has no resources", res.Release)
	}
	for _, r := range res.Resources {
		gvr, ok := kindGVR[r.Kind]
		if !ok {
			t.Fatalf("kindGVR lacks %s", r.Kind)
		}
		k.wantAnnotated(t, gvr, r.Namespace, r.Name, owner)
	}
}

// releaseSecrets lists the Helm release records of release in ns.
func (k *cluster) releaseSecrets(t *testing.T, ns, release string) []corev1.Secret {
	t.Helper()
	l, err := k.client.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "owner=helm,name=" + release})
	if err != nil {
		t.Fatalf("list release secrets: %v", err)
	}
	return l.Items
}

func (k *cluster) wantNoRelease(t *testing.T, ns, release string) {
	t.Helper()
	if s := k.releaseSecrets(t, ns, release); len(s) > 0 {
		t.Errorf("release %s in %s has record %s, want none", release, ns, s[0].Name)
	}
	// No Secret of the release at all, whatever its labels.
	l, err := k.client.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list secrets: %v", err)
	}
	for _, s := range l.Items {
		if strings.HasPrefix(s.Name, "sh.helm.release.v1."+release+".") {
			t.Errorf("secret %s/%s exists, want no release record", ns, s.Name)
		}
	}
}

func (k *cluster) wantReleaseRevisions(t *testing.T, ns, release string, n int) {
	t.Helper()
	if s := k.releaseSecrets(t, ns, release); len(s) != n {
		t.Errorf("release %s in %s has %d records, want %d", release, ns, len(s), n)
	}
}

// helmInstall installs a release with the Helm SDK, as a user of the
// cluster other than kube-git-deploy would.
func helmInstall(t *testing.T, config *rest.Config, ns, release, chartDir string) {
	t.Helper()
	cfg, err := deploy.HelmConfig(config, ns)
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = release, ns
	in.WaitStrategy = kube.HookOnlyStrategy
	if _, err := in.RunWithContext(t.Context(), mustLoad(t, chartDir), nil); err != nil {
		t.Fatalf("helm install %s: %v", release, err)
	}
}
