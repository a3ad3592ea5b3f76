package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"golang.org/x/oauth2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeTarget says how the runner reaches the cluster it deploys to; at
// most one of its ways is set (loadConfig checks).
type kubeTarget struct {
	// endpoint and caData name a GKE control plane (KGD_KUBE_ENDPOINT,
	// KGD_KUBE_CA_DATA as terraform reads them from the cluster); the
	// runner authenticates with its own Google identity.
	endpoint string
	caData   []byte
	// secret is a Secret Manager secret version holding a kubeconfig
	// (KGD_KUBECONFIG_SECRET), for any other cluster.
	secret string
	// kubeconfig is a kubeconfig file (KUBECONFIG); with nothing set the
	// in-cluster configuration or ~/.kube/config is used.
	kubeconfig string
}

// String says which way is used, for the start-up log.
func (t kubeTarget) String() string {
	switch {
	case t.endpoint != "":
		return "GKE endpoint " + t.endpoint + " with the runner's Google identity"
	case t.secret != "":
		return "kubeconfig from " + t.secret
	case t.kubeconfig != "":
		return "kubeconfig " + t.kubeconfig
	}
	return "in-cluster configuration or ~/.kube/config"
}

// restConfig builds the client configuration of t. googleToken is only
// called for a GKE endpoint, readSecret only for a kubeconfig secret.
func (t kubeTarget) restConfig(ctx context.Context, googleToken func(context.Context) (oauth2.TokenSource, error),
	readSecret func(context.Context, string) ([]byte, error)) (*rest.Config, error) {
	switch {
	case t.endpoint != "":
		ts, err := googleToken(ctx)
		if err != nil {
			return nil, fmt.Errorf("KGD_KUBE_ENDPOINT: google credentials: %w", err)
		}
		return &rest.Config{
			Host:            t.endpoint,
			TLSClientConfig: rest.TLSClientConfig{CAData: t.caData},
			// Every request carries a fresh access token of the runner's
			// service account; GKE maps it to the account's IAM and RBAC.
			WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
				return &oauth2.Transport{Source: ts, Base: rt}
			},
		}, nil
	case t.secret != "":
		b, err := readSecret(ctx, t.secret)
		if err != nil {
			return nil, fmt.Errorf("KGD_KUBECONFIG_SECRET: %w", err)
		}
		return kubeconfigBytes(b)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = t.kubeconfig
	c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("KUBECONFIG: %w", err)
	}
	return c, nil
}

// kubeconfigBytes parses a kubeconfig kept in Secret Manager. Credential
// plugins are refused: the runner's image has no programs to run
// (gke-gcloud-auth-plugin and the like), and running one named by a
// stored file is not something the runner should do anyway.
func kubeconfigBytes(b []byte) (*rest.Config, error) {
	c, err := clientcmd.RESTConfigFromKubeConfig(b)
	if err != nil {
		return nil, fmt.Errorf("KGD_KUBECONFIG_SECRET: not a usable kubeconfig: %w", err)
	}
	if c.ExecProvider != nil || c.AuthProvider != nil {
		return nil, errors.New("KGD_KUBECONFIG_SECRET: the kubeconfig uses a credential plugin (exec or auth-provider), which the runner cannot run: use a token or client certificate (for GKE, set KGD_KUBE_ENDPOINT and KGD_KUBE_CA_DATA instead)")
	}
	return c, nil
}

// decodeCA accepts the cluster CA as GKE's API returns it (base64 of the
// PEM) or as PEM.
func decodeCA(s string) ([]byte, error) {
	if len(s) > 0 && s[0] == '-' {
		return []byte(s), nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64 of a PEM certificate")
	}
	return b, nil
}
