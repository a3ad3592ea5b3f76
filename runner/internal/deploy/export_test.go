package deploy

import (
	"helm.sh/helm/v4/pkg/action"
	"k8s.io/client-go/rest"
)

// HelmConfig returns a Helm configuration for namespace ns as Deploy builds
// one, for tests that create releases with the Helm SDK directly, as a
// user of the cluster other than kube-git-deploy would.
func HelmConfig(config *rest.Config, ns string) (*action.Configuration, error) {
	dc, err := newDiscovery(config)
	if err != nil {
		return nil, err
	}
	cfg := action.NewConfiguration()
	if err := cfg.Init(&restGetter{config: config, namespace: ns, discovery: dc}, ns, "secret"); err != nil {
		return nil, err
	}
	return cfg, nil
}
