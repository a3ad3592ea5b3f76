package deploy_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane/controlplanetest"
)

func TestParseManifest(t *testing.T) {
	m := `---
# Source: web/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: web
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: other
---
apiVersion: v1
kind: Namespace
metadata:
  name: extra
`
	got := deploy.ParseManifest(m, "default")
	want := []deploy.Resource{
		{Kind: "Service", Namespace: "default", Name: "web"},
		{Kind: "Deployment", Namespace: "other", Name: "web"},
		{Kind: "Namespace", Name: "extra"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseManifest (-want +got):\n%s", diff)
	}
	if s := got[1].String(); s != "deployment/web" {
		t.Errorf("String() = %q, want deployment/web", s)
	}
}

func TestDeployClusterUnreachable(t *testing.T) {
	t.Parallel()
	d := newDeployer(t, &rest.Config{Host: "https://127.0.0.1:1", BearerToken: "x"})
	_, err := d.Deploy(t.Context(), request(t, "web", "default", "testdata/web"), nil)
	wantCode(t, err, enumspb.StatusCode_DEPLOY_CLUSTER_CONNECTION_ERR)
}

func TestDeploy(t *testing.T) {
	cp := controlplanetest.Start(t)
	client := kubernetes.NewForConfigOrDie(cp.Config)
	d := newDeployer(t, cp.Config)

	t.Run("InstallThenUpgrade", func(t *testing.T) {
		ctx := t.Context()
		var lines []string
		out := func(l string) { lines = append(lines, l) }
		res, err := d.Deploy(ctx, request(t, "web", "default", "testdata/web"), out)
		if err != nil {
			t.Fatalf("install: %v", err)
		}
		want := deploy.Result{Release: "web", Namespace: "default", Revision: 1, Resources: []deploy.Resource{
			{Kind: "Service", Namespace: "default", Name: "web"},
			{Kind: "Deployment", Namespace: "default", Name: "web"},
		}}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("install result (-want +got):\n%s", diff)
		}
		if len(lines) == 0 || lines[0] != "Installing release web in default" {
			t.Errorf("out lines = %q, want first %q", lines, "Installing release web in default")
		}
		checkImage(t, client, "default", "web", "example.invalid/app:1")

		lines = nil
		req := request(t, "web", "default", "testdata/web")
		req.Values = [][]byte{
			[]byte("replicas: 5\nimage:\n  tag: \"from-file\"\n"),
			[]byte("replicas: 3\n"),
		}
		req.Set = map[string]string{"image.tag": "2"}
		res, err = d.Deploy(ctx, req, out)
		if err != nil {
			t.Fatalf("upgrade: %v", err)
		}
		if res.Revision != 2 {
			t.Errorf("upgrade revision = %d, want 2", res.Revision)
		}
		if !contains(lines, "Release web revision 2 deployed") {
			t.Errorf("out lines = %q, want %q", lines, "Release web revision 2 deployed")
		}
		dep := checkImage(t, client, "default", "web", "example.invalid/app:2")
		if *dep.Spec.Replicas != 3 {
			t.Errorf("replicas = %d, want 3 from the second values file", *dep.Spec.Replicas)
		}
	})

	t.Run("BadTemplate", func(t *testing.T) {
		_, err := d.Deploy(t.Context(), request(t, "bad", "default", "testdata/bad"), nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
	})

	t.Run("MissingChart", func(t *testing.T) {
		req := request(t, "x", "default", "testdata/web")
		req.Chart = nil
		_, err := d.Deploy(t.Context(), req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
	})

	t.Run("BadValues", func(t *testing.T) {
		req := request(t, "x", "default", "testdata/web")
		req.Values = [][]byte{[]byte("replicas: 1\n"), []byte("replicas: [unclosed\n")}
		_, err := d.Deploy(t.Context(), req, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
		if err == nil || !strings.Contains(err.Error(), "values file 1") {
			t.Errorf("err = %v, want it to name values file 1", err)
		}
	})

	t.Run("CreateNamespace", func(t *testing.T) {
		ctx := t.Context()
		req := request(t, "web", "fresh", "testdata/web")
		req.Policy.CreateNamespaces = true
		res, err := d.Deploy(ctx, req, nil)
		if err != nil {
			t.Fatalf("install in new namespace: %v", err)
		}
		if res.Namespace != "fresh" || res.Revision != 1 {
			t.Errorf("result = %+v, want namespace fresh revision 1", res)
		}
		ns, err := client.CoreV1().Namespaces().Get(ctx, "fresh", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("namespace fresh: %v", err)
		}
		if got := ns.Labels["app.kubernetes.io/managed-by"]; got != "kube-git-deploy" {
			t.Errorf("namespace label app.kubernetes.io/managed-by = %q, want kube-git-deploy", got)
		}
		if got := ns.Annotations[deploy.RepositoryAnnotation]; got != testOwner {
			t.Errorf("namespace annotation %s = %q, want %s", deploy.RepositoryAnnotation, got, testOwner)
		}
		checkImage(t, client, "fresh", "web", "example.invalid/app:1")
	})

	t.Run("Cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := d.Deploy(ctx, request(t, "web", "default", "testdata/web"), nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_CANCELLED)
	})

	t.Run("ConcurrentSameRelease", func(t *testing.T) {
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		revs := make([]int, n)
		for i := range n {
			req := request(t, "conc", "default", "testdata/web")
			req.Set = map[string]string{"image.tag": string(rune('a' + i))}
			wg.Go(func() {
				res, err := d.Deploy(t.Context(), req, nil)
				errs[i], revs[i] = err, res.Revision
			})
		}
		wg.Wait()
		seen := map[int]bool{}
		for i := range n {
			if errs[i] != nil {
				t.Errorf("deploy %d: %v", i, errs[i])
			}
			seen[revs[i]] = true
		}
		for r := 1; r <= n; r++ {
			if !seen[r] {
				t.Errorf("revisions = %v, want each of 1..%d once", revs, n)
				break
			}
		}
	})
}

func newDeployer(t *testing.T, config *rest.Config) *deploy.Deployer {
	t.Helper()
	d, err := deploy.New(config, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantCode(t *testing.T, err error, code enumspb.StatusCode) {
	t.Helper()
	var e *deploy.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *deploy.Error with code %v", err, err, code)
	}
	if e.Code != code {
		t.Errorf("code = %v, want %v (err: %v)", e.Code, code, err)
	}
}

func checkImage(t *testing.T, client kubernetes.Interface, ns, name, want string) *appsDeployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dep, err := client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", ns, name, err)
	}
	if got := dep.Spec.Template.Spec.Containers[0].Image; got != want {
		t.Errorf("image = %q, want %q", got, want)
	}
	return dep
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) == s {
			return true
		}
	}
	return false
}

// TestDocumentedRBAC applies docs/runner-rbac.yaml, the RBAC README tells
// operators to give the runner, to a real kube-apiserver and deploys as
// that user (impersonated): enough in the bound namespace, including the
// rollout check's reads, and nothing in another, even one the deploy
// policy allows (cluster RBAC is the last line).
func TestDocumentedRBAC(t *testing.T) {
	t.Parallel()
	cp := controlplanetest.Start(t)
	admin := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := t.Context()
	// The runner signs in with a real credential of its own: a service
	// account's token (a GKE runner is a Google identity instead; RBAC
	// treats both as users by name).
	runnerSA := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kgd-runner", Namespace: "default"}}
	if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx, runnerSA, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CoreV1().ServiceAccounts("default").CreateToken(ctx, "kgd-runner",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for the runner: %v", err)
	}
	const user = "system:serviceaccount:default:kgd-runner"
	raw, err := os.ReadFile("../../../docs/runner-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(strings.ReplaceAll(string(raw), "RUNNER", user), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("docs/runner-rbac.yaml: %v\n%s", err, doc)
		}
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			_, err = admin.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = admin.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = admin.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Namespace:
			_, err = admin.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("docs/runner-rbac.yaml: unexpected %T", obj)
		}
		if err != nil {
			t.Fatalf("apply %T: %v", obj, err)
		}
	}
	runner := &rest.Config{Host: cp.Config.Host, BearerToken: tok.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.Config.CAData, CAFile: cp.Config.CAFile}}
	d := newDeployer(t, runner)

	req := request(t, "web", "web", "testdata/web")
	req.Policy = deploy.Policy{Namespaces: []string{"web", "kube-system"}, CreateNamespaces: true}
	res, err := d.Deploy(ctx, req, nil)
	if err != nil {
		t.Fatalf("deploy as %s into its namespace: %v", user, err)
	}
	checkImage(t, admin, "web", "web", "example.invalid/app:1")
	if err := rollout.New(kubernetes.NewForConfigOrDie(runner)).Wait(ctx, res.Resources, time.Minute, nil); err != nil {
		t.Errorf("rollout check as %s: %v", user, err)
	}
	req = request(t, "web", "kube-system", "testdata/web")
	req.Policy.Namespaces = []string{"web", "kube-system"}
	_, err = d.Deploy(ctx, req, nil)
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "the runner's Kubernetes identity may not") {
		t.Errorf("deploy into kube-system as %s = %v, want forbidden", user, err)
	}
	if _, err := admin.AppsV1().Deployments("kube-system").Get(ctx, "web", metav1.GetOptions{}); err == nil {
		t.Error("a deployment was created in kube-system")
	}

	// A policy's service account: admin in web lets the runner
	// impersonate web's accounts (deployer, bound to edit there), and no
	// account of a namespace it is not bound in.
	for _, sa := range [][2]string{{"web", "deployer"}, {"elsewhere", "other"}} {
		ns, name := sa[0], sa[1]
		if ns != "web" {
			if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-edit", Namespace: "web"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
		if _, err := admin.RbacV1().RoleBindings("web").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	req = request(t, "web", "web", "testdata/web")
	req.Policy = deploy.Policy{Namespaces: []string{"web"}, ServiceAccount: "web/deployer"}
	req.Set = map[string]string{"image.tag": "2"}
	if _, err := d.Deploy(ctx, req, nil); err != nil {
		t.Fatalf("deploy impersonating web/deployer: %v", err)
	}
	checkImage(t, admin, "web", "web", "example.invalid/app:2")
	req.Policy.ServiceAccount = "elsewhere/other"
	req.Set = map[string]string{"image.tag": "3"}
	if _, err := d.Deploy(ctx, req, nil); err == nil || !strings.Contains(err.Error(), "service account elsewhere/other may not") {
		t.Errorf("deploy impersonating elsewhere/other = %v, want refused (the runner is not admin there)", err)
	}
	checkImage(t, admin, "web", "web", "example.invalid/app:2")
}

func ptr[T any](v T) *T { return &v }
