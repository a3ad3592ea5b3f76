// Package rollout waits for the workloads of a release to finish rolling
// out, as `kubectl rollout status` does, and fails fast when their pods
// cannot start (image pull errors, crash loops).
package rollout

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
)

// Status values of Update.
const (
	InProgress = "InProgress"
	Succeeded  = "Succeeded"
	Failed     = "Failed"
)

// Resources are checked at once, then whenever a watch of their namespaces
// sees a Deployment, StatefulSet, DaemonSet, ReplicaSet or Pod change, and
// at least every fallbackInterval (a watch can miss an event while it
// reconnects).
const fallbackInterval = 2 * time.Second

// Update is the status of one resource; Wait reports it when it changes.
type Update struct {
	Resource string // "deployment/web"
	Status   string // InProgress, Succeeded or Failed
	Message  string
	Code     enumspb.StatusCode
}

// Error is a failed Wait.
type Error struct {
	Code     enumspb.StatusCode
	Msg      string
	Resource string // the failing resource; for a deadline, the first pending one
}

func (e *Error) Error() string { return e.Msg }

// Checker checks rollouts with one Kubernetes client.
type Checker struct {
	client kubernetes.Interface
}

// New returns a Checker using client.
func New(client kubernetes.Interface) *Checker {
	return &Checker{client: client}
}

// state is the result of one check of one resource.
type state struct {
	done bool
	msg  string
	// fail is set when a pod shows a problem that will not fix itself.
	fail *Error
}

// Wait checks Deployments, StatefulSets and DaemonSets among resources
// (other kinds are ignored) until all have rolled out, one fails, deadline
// passes or ctx ends: at once, then on every change a watch of their
// namespaces sees, so a rollout is noticed the moment it finishes rather
// than at the next poll. report (may be nil) is called when a resource's
// status or message changes. Errors are *Error.
func (c *Checker) Wait(ctx context.Context, resources []deploy.Resource, deadline time.Duration, report func(Update)) error {
	if report == nil {
		report = func(Update) {}
	}
	var pending []deploy.Resource
	for _, r := range resources {
		switch r.Kind {
		case "Deployment", "StatefulSet", "DaemonSet":
			pending = append(pending, r)
		}
	}
	last := map[string]Update{}
	emit := func(u Update) {
		if p, ok := last[u.Resource]; ok && p.Status == u.Status && p.Message == u.Message {
			return
		}
		last[u.Resource] = u
		report(u)
	}
	for _, r := range pending {
		emit(Update{Resource: r.String(), Status: InProgress, Message: "Waiting for rollout", Code: enumspb.StatusCode_STATUSCHECK_DEPLOYMENT_ROLLOUT_PENDING})
	}

	timer := time.NewTimer(deadline)
	defer timer.Stop()
	ticker := time.NewTicker(fallbackInterval)
	defer ticker.Stop()
	// Watches start before the first check, so no change in between is
	// missed.
	wctx, stopWatches := context.WithCancel(ctx)
	changed, watching := c.watch(wctx, pending)
	defer watching.Wait()
	defer stopWatches()
	for {
		var still []deploy.Resource
		for _, r := range pending {
			st, err := c.check(ctx, r)
			if err != nil {
				if ctx.Err() != nil {
					return &Error{Code: enumspb.StatusCode_STATUSCHECK_USER_CANCELLED, Msg: "status check cancelled", Resource: r.String()}
				}
				// Transient API errors: keep waiting, show them.
				st = state{msg: fmt.Sprintf("cannot read %s: %v", r, err)}
			}
			switch {
			case st.fail != nil:
				emit(Update{Resource: r.String(), Status: Failed, Message: st.fail.Msg, Code: st.fail.Code})
				return st.fail
			case st.done:
				emit(Update{Resource: r.String(), Status: Succeeded, Message: st.msg, Code: enumspb.StatusCode_STATUSCHECK_SUCCESS})
			default:
				emit(Update{Resource: r.String(), Status: InProgress, Message: st.msg, Code: enumspb.StatusCode_STATUSCHECK_DEPLOYMENT_ROLLOUT_PENDING})
				still = append(still, r)
			}
		}
		pending = still
		if ctx.Err() != nil {
			return &Error{Code: enumspb.StatusCode_STATUSCHECK_USER_CANCELLED, Msg: "status check cancelled", Resource: first(pending)}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return &Error{Code: enumspb.StatusCode_STATUSCHECK_USER_CANCELLED, Msg: "status check cancelled", Resource: first(pending)}
		case <-timer.C:
			names := make([]string, len(pending))
			for i, r := range pending {
				names[i] = r.String()
				if m := last[r.String()].Message; m != "" {
					names[i] += " (" + m + ")"
				}
			}
			return &Error{
				Code:     enumspb.StatusCode_STATUSCHECK_DEADLINE_EXCEEDED,
				Msg:      fmt.Sprintf("rollout not finished after %s: %s", deadline, strings.Join(names, ", ")),
				Resource: first(pending),
			}
		case <-ticker.C:
		case <-changed:
		}
	}
}

// watch watches the kinds a rollout depends on in the namespaces of
// resources and signals changed (coalesced) on every event, until ctx
// ends; the WaitGroup is done when every watch has stopped. A watch that
// ends or fails is started again after a pause; the fallback ticker
// covers the gap.
func (c *Checker) watch(ctx context.Context, resources []deploy.Resource) (<-chan struct{}, *sync.WaitGroup) {
	changed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	namespaces := map[string]bool{}
	for _, r := range resources {
		namespaces[r.Namespace] = true
	}
	for ns := range namespaces {
		for _, start := range []func(context.Context, metav1.ListOptions) (watch.Interface, error){
			c.client.AppsV1().Deployments(ns).Watch,
			c.client.AppsV1().StatefulSets(ns).Watch,
			c.client.AppsV1().DaemonSets(ns).Watch,
			c.client.AppsV1().ReplicaSets(ns).Watch,
			c.client.CoreV1().Pods(ns).Watch,
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					w, err := start(ctx, metav1.ListOptions{})
					if err == nil {
						for range w.ResultChan() {
							select {
							case changed <- struct{}{}:
							default:
							}
						}
						w.Stop()
					}
					select {
					case <-ctx.Done():
					case <-time.After(fallbackInterval):
					}
				}
			}()
		}
	}
	return changed, &wg
}

func first(rs []deploy.Resource) string {
	if len(rs) == 0 {
		return ""
	}
	return rs[0].String()
}

func (c *Checker) check(ctx context.Context, r deploy.Resource) (state, error) {
	switch r.Kind {
	case "Deployment":
		d, err := c.client.AppsV1().Deployments(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return state{}, err
		}
		st := deploymentState(d)
		if st.done {
			return st, nil
		}
		sel, err := c.newPodsSelector(ctx, d)
		if err != nil {
			return st, err
		}
		return c.withPods(ctx, r, sel, st)
	case "StatefulSet":
		s, err := c.client.AppsV1().StatefulSets(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return state{}, err
		}
		st := statefulSetState(s)
		if st.done {
			return st, nil
		}
		sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
		if err != nil {
			return st, err
		}
		return c.withPods(ctx, r, sel, st)
	case "DaemonSet":
		ds, err := c.client.AppsV1().DaemonSets(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return state{}, err
		}
		st := daemonSetState(ds)
		if st.done {
			return st, nil
		}
		sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if err != nil {
			return st, err
		}
		return c.withPods(ctx, r, sel, st)
	}
	return state{done: true}, nil
}

// newPodsSelector selects the pods of the Deployment's newest ReplicaSet,
// so that failing pods of the old version being replaced do not fail the
// rollout. It falls back to the Deployment's selector.
func (c *Checker) newPodsSelector(ctx context.Context, d *appsv1.Deployment) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, err
	}
	rev := d.Annotations["deployment.kubernetes.io/revision"]
	if rev == "" {
		return sel, nil
	}
	rss, err := c.client.AppsV1().ReplicaSets(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	for _, rs := range rss.Items {
		if !metav1.IsControlledBy(&rs, d) || rs.Annotations["deployment.kubernetes.io/revision"] != rev {
			continue
		}
		if h := rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; h != "" {
			s := rs.Spec.Selector.DeepCopy()
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]string{}
			}
			s.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] = h
			return metav1.LabelSelectorAsSelector(s)
		}
	}
	return sel, nil
}

// withPods looks at the workload's pods for a failure.
func (c *Checker) withPods(ctx context.Context, r deploy.Resource, sel labels.Selector, st state) (state, error) {
	pods, err := c.client.CoreV1().Pods(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return st, err
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	for i := range pods.Items {
		if code, msg, ok := PodProblem(&pods.Items[i]); ok {
			st.fail = &Error{Code: code, Msg: fmt.Sprintf("%s: %s", r, msg), Resource: r.String()}
			return st, nil
		}
	}
	return st, nil
}

// PodProblem reports whether pod has a container that will not start
// without a change: an image that cannot be pulled
// (STATUSCHECK_IMAGE_PULL_ERR) or a crash loop
// (STATUSCHECK_CONTAINER_RESTARTING). msg names the pod and container and
// carries the kubelet's message.
func PodProblem(pod *corev1.Pod) (code enumspb.StatusCode, msg string, ok bool) {
	statuses := append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		switch w.Reason {
		case "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull":
			return enumspb.StatusCode_STATUSCHECK_IMAGE_PULL_ERR,
				fmt.Sprintf("pod %s container %s: %s: %s", pod.Name, cs.Name, w.Reason, w.Message), true
		case "CrashLoopBackOff":
			m := w.Message
			if t := cs.LastTerminationState.Terminated; t != nil {
				m = strings.TrimSpace(fmt.Sprintf("%s (last exit code %d, %s)", m, t.ExitCode, t.Reason))
			}
			return enumspb.StatusCode_STATUSCHECK_CONTAINER_RESTARTING,
				fmt.Sprintf("pod %s container %s: %s: %s", pod.Name, cs.Name, w.Reason, m), true
		}
	}
	return 0, "", false
}

// deploymentState is kubectl rollout status's rule for Deployments.
func deploymentState(d *appsv1.Deployment) state {
	if d.Generation > d.Status.ObservedGeneration {
		return state{msg: "Waiting for deployment spec update to be observed"}
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return state{fail: &Error{
				Code:     enumspb.StatusCode_STATUSCHECK_DEADLINE_EXCEEDED,
				Msg:      fmt.Sprintf("deployment/%s exceeded its progress deadline: %s", d.Name, c.Message),
				Resource: "deployment/" + d.Name,
			}}
		}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	switch {
	case s.UpdatedReplicas < want:
		return state{msg: fmt.Sprintf("%d out of %d new replicas have been updated", s.UpdatedReplicas, want)}
	case s.Replicas > s.UpdatedReplicas:
		return state{msg: fmt.Sprintf("%d old replicas are pending termination", s.Replicas-s.UpdatedReplicas)}
	case s.AvailableReplicas < s.UpdatedReplicas:
		return state{msg: fmt.Sprintf("%d of %d updated replicas are available", s.AvailableReplicas, s.UpdatedReplicas)}
	}
	return state{done: true, msg: fmt.Sprintf("%d/%d replicas available", s.AvailableReplicas, want)}
}

// statefulSetState is kubectl rollout status's rule for RollingUpdate
// StatefulSets.
func statefulSetState(s *appsv1.StatefulSet) state {
	if s.Status.ObservedGeneration == 0 || s.Generation > s.Status.ObservedGeneration {
		return state{msg: "Waiting for statefulset spec update to be observed"}
	}
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	if s.Status.ReadyReplicas < want {
		return state{msg: fmt.Sprintf("%d of %d pods are ready", s.Status.ReadyReplicas, want)}
	}
	if s.Spec.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType && s.Status.UpdateRevision != s.Status.CurrentRevision {
		return state{msg: fmt.Sprintf("%d out of %d new pods have been updated", s.Status.UpdatedReplicas, want)}
	}
	return state{done: true, msg: fmt.Sprintf("%d/%d pods ready", s.Status.ReadyReplicas, want)}
}

// daemonSetState is kubectl rollout status's rule for DaemonSets.
func daemonSetState(ds *appsv1.DaemonSet) state {
	if ds.Generation > ds.Status.ObservedGeneration {
		return state{msg: "Waiting for daemon set spec update to be observed"}
	}
	s := ds.Status
	if s.UpdatedNumberScheduled < s.DesiredNumberScheduled {
		return state{msg: fmt.Sprintf("%d out of %d new pods have been updated", s.UpdatedNumberScheduled, s.DesiredNumberScheduled)}
	}
	if s.NumberAvailable < s.DesiredNumberScheduled {
		return state{msg: fmt.Sprintf("%d of %d updated pods are available", s.NumberAvailable, s.DesiredNumberScheduled)}
	}
	return state{done: true, msg: fmt.Sprintf("%d/%d pods available", s.NumberAvailable, s.DesiredNumberScheduled)}
}
