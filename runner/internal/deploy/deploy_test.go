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
	_, err := d.Deploy(t.Context(), deploy.Request{Release: "web", Namespace: "default", ChartDir: "testdata/web"}, nil)
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
		res, err := d.Deploy(ctx, deploy.Request{Release: "web", Namespace: "default", ChartDir: "testdata/web"}, out)
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
		valuesFile := t.TempDir() + "/values.yaml"
		writeFile(t, valuesFile, "replicas: 3\nimage:\n  tag: \"from-file\"\n")
		res, err = d.Deploy(ctx, deploy.Request{
			Release: "web", Namespace: "default", ChartDir: "testdata/web",
			ValuesFiles: []string{valuesFile},
			Set:         map[string]string{"image.tag": "2"},
		}, out)
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
			t.Errorf("replicas = %d, want 3 from the values file", *dep.Spec.Replicas)
		}
	})

	t.Run("BadTemplate", func(t *testing.T) {
		_, err := d.Deploy(t.Context(), deploy.Request{Release: "bad", Namespace: "default", ChartDir: "testdata/bad"}, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
	})

	t.Run("MissingChart", func(t *testing.T) {
		_, err := d.Deploy(t.Context(), deploy.Request{Release: "x", Namespace: "default", ChartDir: "testdata/nope"}, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_HELM_USER_ERR)
	})

	t.Run("CreateNamespace", func(t *testing.T) {
		ctx := t.Context()
		res, err := d.Deploy(ctx, deploy.Request{Release: "web", Namespace: "fresh", ChartDir: "testdata/web", CreateNamespace: true}, nil)
		if err != nil {
			t.Fatalf("install in new namespace: %v", err)
		}
		if res.Namespace != "fresh" || res.Revision != 1 {
			t.Errorf("result = %+v, want namespace fresh revision 1", res)
		}
		if _, err := client.CoreV1().Namespaces().Get(ctx, "fresh", metav1.GetOptions{}); err != nil {
			t.Errorf("namespace fresh: %v", err)
		}
		checkImage(t, client, "fresh", "web", "example.invalid/app:1")
	})

	t.Run("Cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := d.Deploy(ctx, deploy.Request{Release: "web", Namespace: "default", ChartDir: "testdata/web"}, nil)
		wantCode(t, err, enumspb.StatusCode_DEPLOY_CANCELLED)
	})

	t.Run("ConcurrentSameRelease", func(t *testing.T) {
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		revs := make([]int, n)
		for i := range n {
			wg.Go(func() {
				res, err := d.Deploy(t.Context(), deploy.Request{
					Release: "conc", Namespace: "default", ChartDir: "testdata/web",
					Set: map[string]string{"image.tag": string(rune('a' + i))},
				}, nil)
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
// rollout check's reads, and nothing in another.
func TestDocumentedRBAC(t *testing.T) {
	t.Parallel()
	cp := controlplanetest.Start(t)
	admin := kubernetes.NewForConfigOrDie(cp.Config)
	const user = "kgd-runner@kgd-test.iam.gserviceaccount.com"
	raw, err := os.ReadFile("../../../docs/runner-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, doc := range strings.Split(strings.ReplaceAll(string(raw), "RUNNER", user), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("docs/runner-rbac.yaml: %v\n%s", err, doc)
		}
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			_, err = admin.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
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
	runner := rest.CopyConfig(cp.Config)
	runner.Impersonate = rest.ImpersonationConfig{UserName: user}
	d := newDeployer(t, runner)

	res, err := d.Deploy(ctx, deploy.Request{Release: "web", Namespace: "web", ChartDir: "testdata/web", CreateNamespace: true}, nil)
	if err != nil {
		t.Fatalf("deploy as %s into its namespace: %v", user, err)
	}
	checkImage(t, admin, "web", "web", "example.invalid/app:1")
	if err := rollout.New(kubernetes.NewForConfigOrDie(runner)).Wait(ctx, res.Resources, time.Minute, nil); err != nil {
		t.Errorf("rollout check as %s: %v", user, err)
	}
	if _, err := d.Deploy(ctx, deploy.Request{Release: "web", Namespace: "kube-system", ChartDir: "testdata/web"}, nil); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("deploy into kube-system as %s = %v, want forbidden", user, err)
	}
	if _, err := admin.AppsV1().Deployments("kube-system").Get(ctx, "web", metav1.GetOptions{}); err == nil {
		t.Error("a deployment was created in kube-system")
	}
}
