package deploy_test

import (
	"testing"

	"helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/loader"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
)

type appsDeployment = appsv1.Deployment

// testOwner is the repository of request's deploys.
const testOwner = "kgd/test"

// mustLoad loads the chart in dir. Deploy modifies a chart: load one per
// Deploy.
func mustLoad(t *testing.T, dir string) chart.Charter {
	t.Helper()
	c, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart %s: %v", dir, err)
	}
	return c
}

// request deploys chartDir as release into ns for testOwner, whose policy
// allows exactly ns.
func request(t *testing.T, release, ns, chartDir string) deploy.Request {
	t.Helper()
	return deploy.Request{
		Release: release, Namespace: ns, Chart: mustLoad(t, chartDir),
		Owner: testOwner, Policy: deploy.Policy{Namespaces: []string{ns}},
	}
}
