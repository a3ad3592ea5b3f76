// Package deploy installs or upgrades a Helm chart in a cluster, as
// `helm upgrade --install` does, with the Helm v4 SDK.
package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	loaderv2 "helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/kube"
	ri "helm.sh/helm/v4/pkg/release"
	"helm.sh/helm/v4/pkg/release/common"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	"helm.sh/helm/v4/pkg/strvals"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
)

// DefaultTimeout bounds one Deploy when Request.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// staleGrace is added to the request's timeout to decide that a release
// left pending by another process is abandoned (the process crashed). It
// is shorter than the minute the pipeline's release lock is held beyond
// the timeout: the revision of a runner that crashed is created a moment
// after it took the lock, so with equal margins the runner that gets the
// expired lock found the revision a few seconds short of stale and failed
// "another deploy is in progress" (found by localstack/faults).
const staleGrace = 30 * time.Second

// Deployer runs Helm releases against one cluster. It is safe for
// concurrent use; Deploys of the same namespace/release are serialized.
type Deployer struct {
	config    *rest.Config
	client    kubernetes.Interface
	discovery discovery.CachedDiscoveryInterface
	log       *slog.Logger
	locks     keyedMutex
	now       func() time.Time
}

// New returns a Deployer for the cluster config connects to. It does no
// network I/O; the discovery cache it keeps is shared by every Deploy.
func New(config *rest.Config, log *slog.Logger) (*Deployer, error) {
	if config == nil || log == nil {
		return nil, errors.New("deploy: kubernetes configuration and logger are required")
	}
	dc, err := newDiscovery(config)
	if err != nil {
		return nil, fmt.Errorf("deploy: discovery client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("deploy: kubernetes client: %w", err)
	}
	return &Deployer{config: config, client: cs, discovery: dc, log: log, now: time.Now}, nil
}

// Request describes one `helm upgrade --install` on behalf of a
// repository, bounded by its deploy policy.
type Request struct {
	Release   string
	Namespace string
	// Owner is the repository deploying, "owner/name" (required).
	Owner string
	// Policy bounds what it may deploy (required; the zero Policy allows nothing).
	Policy Policy
	// Chart is a loaded chart (helm's loader.Load or loader.LoadFiles); only
	// chart API v2 (*chart.Chart of helm.sh/helm/v4/pkg/chart/v2) is
	// supported. Deploy modifies it, as Helm does: load it for each Deploy.
	Chart chart.Charter
	// Values holds the contents of values files, merged in order, then Set
	// is applied.
	Values [][]byte
	// Set holds --set style assignments: key path → value, parsed with
	// Helm's strvals (so "a.b[0]" paths and commas behave as with --set).
	Set map[string]string
	// Wait makes Helm wait for the resources to be ready; otherwise only
	// hooks are waited for and the caller checks the rollout.
	Wait bool
	// Timeout bounds the Helm operation; zero means DefaultTimeout.
	Timeout time.Duration
	// Atomic rolls back (or uninstalls a first install) on failure.
	Atomic bool
}

// Result is the outcome of a successful Deploy.
type Result struct {
	Release   string
	Namespace string
	Revision  int
	Resources []Resource
}

// Resource is one object of a release manifest.
type Resource struct {
	Kind, Namespace, Name string
}

// String returns "deployment/web": the lowercase kind, a slash and the name.
func (r Resource) String() string { return strings.ToLower(r.Kind) + "/" + r.Name }

// Error is a failed Deploy with a status code for the user.
type Error struct {
	Code enumspb.StatusCode
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Deploy installs the release if it does not exist (or was uninstalled) and
// upgrades it otherwise, within req.Policy: the namespace, the release's
// owner and every rendered object, hooks included, are checked before
// anything is created in the cluster (the one exception: with
// ClusterScoped, the chart's crds/ files, checked on their own, are applied
// before the templates are rendered, as Helm does). out receives a few
// human-readable progress lines; it may be nil. Errors are *Error.
func (d *Deployer) Deploy(ctx context.Context, req Request, out func(line string)) (Result, error) {
	if out == nil {
		out = func(string) {}
	}
	if req.Release == "" || req.Namespace == "" || req.Chart == nil {
		return Result{}, userError("release, namespace and chart are required")
	}
	if err := req.validate(); err != nil {
		return Result{}, err
	}
	if req.Timeout <= 0 {
		req.Timeout = DefaultTimeout
	}
	unlock, err := d.locks.lock(ctx, req.Namespace+"/"+req.Release)
	if err != nil {
		return Result{}, &Error{Code: enumspb.StatusCode_DEPLOY_CANCELLED, Msg: "deploy cancelled while waiting for another deploy of " + req.Release, Err: err}
	}
	defer unlock()

	res, err := d.deploy(ctx, req, out)
	if err != nil {
		return Result{}, classify(ctx, err, req.Policy.ServiceAccount)
	}
	return res, nil
}

func (d *Deployer) deploy(ctx context.Context, req Request, out func(string)) (Result, error) {
	var chrt *chartv2.Chart
	switch c := req.Chart.(type) {
	case *chartv2.Chart:
		chrt = c
	case chartv2.Chart:
		chrt = &c
	}
	if chrt == nil || chrt.Metadata == nil {
		return Result{}, userError(fmt.Sprintf("unsupported chart %T: only Helm chart API v2 is supported", req.Chart))
	}
	vals, err := mergeValues(req)
	if err != nil {
		return Result{}, err
	}

	if err := d.ping(ctx); err != nil {
		return Result{}, err
	}
	createNS, err := d.checkNamespace(ctx, req)
	if err != nil {
		return Result{}, err
	}
	pr := &policyRenderer{
		owner: req.Owner, release: req.Release, namespace: req.Namespace, policy: req.Policy,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(d.discovery),
	}
	if createNS {
		// Created only once the chart passed the policy, so that a refused
		// chart leaves nothing behind.
		pr.beforeApply = func() error { return d.createNamespace(ctx, req, out) }
	}

	// Helm acts as the policy's service account, if any; the namespace
	// above and discovery use the runner's own identity.
	config := d.config
	if sa := req.Policy.ServiceAccount; sa != "" {
		config = rest.CopyConfig(d.config)
		config.Impersonate = rest.ImpersonationConfig{UserName: serviceAccountUser(sa)}
	}
	getter := &restGetter{config: config, namespace: req.Namespace, discovery: d.discovery}
	log := d.log.With("release", req.Release, "namespace", req.Namespace, "repo", req.Owner)
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(log.Handler()))
	if err := cfg.Init(getter, req.Namespace, "secret"); err != nil {
		return Result{}, &Error{Code: enumspb.StatusCode_DEPLOY_CLUSTER_CONNECTION_ERR, Msg: "initialize helm", Err: err}
	}
	// Replaces the built-in lookup (custom functions are applied last).
	cfg.CustomTemplateFuncs = template.FuncMap{"lookup": pr.restrictLookup(engine.NewLookupFunction(config))}

	hist := action.NewHistory(cfg)
	hist.Max = 1
	versions, err := hist.Run(req.Release)
	install := false
	replace := false
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		install = true
	case err != nil:
		return Result{}, fmt.Errorf("read release history: %w", err)
	default:
		last, err := lastRelease(versions)
		if err != nil {
			return Result{}, err
		}
		if last == nil {
			install = true
			break
		}
		// Whatever its status: an uninstalled release kept in history
		// still has an owner.
		if err := checkReleaseOwner(last, req, out); err != nil {
			return Result{}, err
		}
		if last.Info != nil {
			switch {
			case last.Info.Status == common.StatusUninstalled:
				install, replace = true, true
			case last.Info.Status.IsPending():
				if err := d.recoverPending(cfg, last, req, out); err != nil {
					return Result{}, err
				}
			}
		}
		if !install {
			if err := checkUpgradable(cfg, pr, last); err != nil {
				return Result{}, err
			}
		}
	}

	labels := map[string]string{RepositoryHashLabel: repositoryHash(req.Owner)}
	wait := kube.HookOnlyStrategy
	if req.Wait {
		wait = kube.StatusWatcherStrategy
	}
	var rel ri.Releaser
	if install {
		// Helm applies the files of crds/ as they are, before rendering,
		// bypassing the post-renderer: without cluster-scoped rights they
		// are skipped; with them, they are checked and stamped first.
		crds := len(chrt.CRDObjects())
		skipCRDs := !req.Policy.ClusterScoped
		if crds > 0 && skipCRDs {
			out(fmt.Sprintf("Skipping the chart's %d crds/ files: the deploy policy does not allow cluster-scoped objects", crds))
		} else if crds > 0 {
			if err := pr.enforceCRDs(chrt); err != nil {
				return Result{}, err
			}
		}
		out(fmt.Sprintf("Installing release %s in %s", req.Release, req.Namespace))
		in := action.NewInstall(cfg)
		in.ReleaseName = req.Release
		in.Namespace = req.Namespace
		in.ServerSideApply = true
		in.WaitStrategy = wait
		in.Timeout = req.Timeout
		in.RollbackOnFailure = req.Atomic
		in.Replace = replace
		in.SkipCRDs = skipCRDs
		in.Labels = labels
		in.PostRenderer = pr
		in.PostRenderStrategy = action.PostRenderStrategyCombined
		rel, err = in.RunWithContext(ctx, chrt, vals)
	} else {
		out(fmt.Sprintf("Upgrading release %s in %s", req.Release, req.Namespace))
		up := action.NewUpgrade(cfg)
		up.Namespace = req.Namespace
		up.Install = true
		up.ServerSideApply = "auto"
		up.WaitStrategy = wait
		up.Timeout = req.Timeout
		up.RollbackOnFailure = req.Atomic
		up.CleanupOnFail = req.Atomic
		up.SkipCRDs = !req.Policy.ClusterScoped
		up.Labels = labels
		up.PostRenderer = pr
		up.PostRenderStrategy = action.PostRenderStrategyCombined
		rel, err = up.RunWithContext(ctx, req.Release, chrt, vals)
	}
	if err != nil {
		return Result{}, fmt.Errorf("helm %s: %w", map[bool]string{true: "install", false: "upgrade"}[install], err)
	}
	acc, err := ri.NewAccessor(rel)
	if err != nil {
		return Result{}, fmt.Errorf("read release: %w", err)
	}
	res := Result{
		Release:   acc.Name(),
		Namespace: acc.Namespace(),
		Revision:  acc.Version(),
		Resources: ParseManifest(acc.Manifest(), acc.Namespace()),
	}
	out(fmt.Sprintf("Release %s revision %d %s", res.Release, res.Revision, acc.Status()))
	for _, r := range res.Resources {
		out("  " + r.String())
	}
	log.Info("helm release applied", "revision", res.Revision, "resources", len(res.Resources))
	return res, nil
}

// checkUpgradable checks the objects an upgrade may change or delete: those
// of the last revision and, if that one is not deployed, of the deployed
// one (Helm diffs against it).
func checkUpgradable(cfg *action.Configuration, pr *policyRenderer, last *releasev1.Release) error {
	if err := pr.checkStored(last.Manifest); err != nil {
		return err
	}
	if last.Info != nil && last.Info.Status == common.StatusDeployed {
		return nil
	}
	dep, err := cfg.Releases.Deployed(last.Name)
	if errors.Is(err, driver.ErrNoDeployedReleases) || errors.Is(err, driver.ErrReleaseNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read deployed release: %w", err)
	}
	deployed, err := lastRelease([]ri.Releaser{dep})
	if err != nil {
		return err
	}
	return pr.checkStored(deployed.Manifest)
}

// recoverPending handles a release left in pending-install/upgrade/rollback.
// Within this process Deploys are serialized, so a pending release was
// left by another process: if its operation started more than the request
// timeout plus a grace period ago, that process is taken to have crashed and
// the revision is marked failed so that the upgrade can proceed; otherwise
// Deploy reports that another operation is in progress.
func (d *Deployer) recoverPending(cfg *action.Configuration, last *releasev1.Release, req Request, out func(string)) error {
	since := last.Info.LastDeployed
	age := d.now().Sub(since)
	if since.IsZero() || age < req.Timeout+staleGrace {
		return &Error{
			Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR,
			Msg: fmt.Sprintf("release %s in %s is %s (revision %d, started %s ago): another deploy is in progress, or a runner crashed during it; it is taken over after %s",
				req.Release, req.Namespace, last.Info.Status, last.Version, age.Round(time.Second), req.Timeout+staleGrace),
		}
	}
	out(fmt.Sprintf("Release %s revision %d was left %s %s ago; marking it failed", req.Release, last.Version, last.Info.Status, age.Round(time.Second)))
	last.SetStatus(common.StatusFailed, fmt.Sprintf("abandoned while %s; marked failed by kube-git-deploy", last.Info.Status))
	if err := cfg.Releases.Update(last); err != nil {
		return fmt.Errorf("mark abandoned release %s revision %d failed: %w", req.Release, last.Version, err)
	}
	return nil
}

func lastRelease(versions []ri.Releaser) (*releasev1.Release, error) {
	if len(versions) == 0 {
		return nil, nil
	}
	switch r := versions[len(versions)-1].(type) {
	case *releasev1.Release:
		return r, nil
	case releasev1.Release:
		return &r, nil
	default:
		return nil, fmt.Errorf("unsupported release type %T", r)
	}
}

// mergeValues merges the values files' contents in order, then the --set
// values, in sorted key order, as `helm -f … --set …` does.
func mergeValues(req Request) (map[string]any, error) {
	base := map[string]any{}
	for i, raw := range req.Values {
		m, err := loaderv2.LoadValues(bytes.NewReader(raw))
		if err != nil {
			return nil, &Error{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Msg: fmt.Sprintf("read values file %d", i), Err: err}
		}
		base = loaderv2.MergeMaps(base, m)
	}
	for _, k := range slices.Sorted(maps.Keys(req.Set)) {
		if err := strvals.ParseInto(k+"="+req.Set[k], base); err != nil {
			return nil, &Error{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Msg: "read value " + k, Err: err}
		}
	}
	return base, nil
}

// ping checks that the API server answers.
func (d *Deployer) ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := d.client.Discovery().RESTClient().Get().AbsPath("/version").Do(pctx).Error(); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &Error{Code: enumspb.StatusCode_DEPLOY_CLUSTER_CONNECTION_ERR, Msg: "reach the kubernetes API server " + d.config.Host, Err: err}
	}
	return nil
}

// classify turns any error into *Error. serviceAccount is the policy's
// ("" for the runner's own identity), for Forbidden errors.
func classify(ctx context.Context, err error, serviceAccount string) error {
	if ctx.Err() != nil {
		return &Error{Code: enumspb.StatusCode_DEPLOY_CANCELLED, Msg: "deploy cancelled", Err: err}
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if f := forbidden(err, serviceAccount); f != nil {
		return f
	}
	if isConnectionError(err) {
		return &Error{Code: enumspb.StatusCode_DEPLOY_CLUSTER_CONNECTION_ERR, Msg: "kubernetes API server unreachable", Err: err}
	}
	return &Error{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Msg: "helm deploy failed", Err: err}
}

// forbiddenMessage is the authorizer's reason in a Forbidden error.
var forbiddenMessage = regexp.MustCompile(`cannot (\S+) resource "([^"]+)" in API group "([^"]*)"(?: in the namespace "([^"]+)"| at the cluster scope)`)

// forbidden explains an API server Forbidden error, or returns nil. Helm
// does not always wrap with %w, so the message is matched too.
func forbidden(err error, serviceAccount string) *Error {
	m := forbiddenMessage.FindStringSubmatch(err.Error())
	if !apierrors.IsForbidden(err) && m == nil {
		return nil
	}
	who := "the runner's Kubernetes identity"
	hint := "grant it in the cluster's RBAC (docs/runner-rbac.yaml)"
	if serviceAccount != "" {
		ns, _, _ := strings.Cut(serviceAccount, "/")
		who = "the deploy policy's service account " + serviceAccount
		hint = "bind it to a role in the namespace, e.g. a RoleBinding in " + ns + " to the edit ClusterRole"
		if m != nil && m[4] != "" {
			hint = "bind it to a role in " + m[4] + ", e.g. a RoleBinding to the edit ClusterRole"
		}
	}
	what := "do this"
	if m != nil {
		resource := m[2]
		if m[3] != "" {
			resource += "." + m[3]
		}
		what = m[1] + " " + resource
		if m[4] != "" {
			what += " in namespace " + m[4]
		} else {
			what += " at the cluster scope"
		}
	}
	return &Error{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Msg: fmt.Sprintf("%s may not %s; %s", who, what, hint), Err: err}
}

func isConnectionError(err error) bool {
	var op *net.OpError
	var ue *url.Error
	return errors.As(err, &op) || errors.As(err, &ue) || errors.Is(err, syscall.ECONNREFUSED)
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// clusterScoped lists common kinds that have no namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"CustomResourceDefinition": true, "PersistentVolume": true, "StorageClass": true,
	"PriorityClass": true, "IngressClass": true, "APIService": true,
	"ValidatingWebhookConfiguration": true, "MutatingWebhookConfiguration": true,
}

// ParseManifest lists the objects of a rendered release manifest, in order.
// Objects without a namespace get defaultNS unless their kind is known to
// be cluster-scoped.
func ParseManifest(manifest, defaultNS string) []Resource {
	var res []Resource
	for _, doc := range docSep.Split(manifest, -1) {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if strings.TrimSpace(doc) == "" || yaml.Unmarshal([]byte(doc), &obj) != nil || obj.Kind == "" {
			continue
		}
		r := Resource{Kind: obj.Kind, Namespace: obj.Metadata.Namespace, Name: obj.Metadata.Name}
		if r.Namespace == "" && !clusterScoped[r.Kind] {
			r.Namespace = defaultNS
		}
		res = append(res, r)
	}
	return res
}

// keyedMutex is a set of context-aware mutexes by key.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{}
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
