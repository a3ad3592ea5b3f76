package rollout_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane/controlplanetest"
)

func TestWait(t *testing.T) {
	cp := controlplanetest.Start(t)
	client := kubernetes.NewForConfigOrDie(cp.Config)
	checker := rollout.New(client)

	t.Run("Succeeded", func(t *testing.T) {
		t.Parallel()
		createDeployment(t, client, "ok", nil)
		var rec recorder
		res := []deploy.Resource{{Kind: "Service", Namespace: "default", Name: "ok"}, {Kind: "Deployment", Namespace: "default", Name: "ok"}}
		if err := checker.Wait(t.Context(), res, 30*time.Second, rec.report); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		ups := rec.get()
		if len(ups) < 2 {
			t.Fatalf("updates = %+v, want at least InProgress and Succeeded", ups)
		}
		if u := ups[0]; u.Resource != "deployment/ok" || u.Status != rollout.InProgress || u.Code != enumspb.StatusCode_STATUSCHECK_DEPLOYMENT_ROLLOUT_PENDING {
			t.Errorf("first update = %+v, want deployment/ok InProgress ROLLOUT_PENDING", u)
		}
		if u := ups[len(ups)-1]; u.Status != rollout.Succeeded || u.Code != enumspb.StatusCode_STATUSCHECK_SUCCESS {
			t.Errorf("last update = %+v, want Succeeded STATUSCHECK_SUCCESS", u)
		}
		for i := 1; i < len(ups); i++ {
			if ups[i].Status == ups[i-1].Status && ups[i].Message == ups[i-1].Message {
				t.Errorf("update %d repeats the previous one: %+v", i, ups[i])
			}
		}
	})

	t.Run("DeadlineExceeded", func(t *testing.T) {
		t.Parallel()
		createDeployment(t, client, "stuck", map[string]string{"no-such-label": "x"})
		res := []deploy.Resource{{Kind: "Deployment", Namespace: "default", Name: "stuck"}}
		start := time.Now()
		err := checker.Wait(t.Context(), res, 3*time.Second, nil)
		var e *rollout.Error
		if !errors.As(err, &e) || e.Code != enumspb.StatusCode_STATUSCHECK_DEADLINE_EXCEEDED {
			t.Fatalf("Wait = %v, want STATUSCHECK_DEADLINE_EXCEEDED", err)
		}
		if !strings.Contains(e.Msg, "deployment/stuck") || e.Resource != "deployment/stuck" {
			t.Errorf("error = %+v, want it to name deployment/stuck", e)
		}
		if d := time.Since(start); d < 3*time.Second || d > 6*time.Second {
			t.Errorf("Wait took %s, want about 3s", d)
		}
	})

	t.Run("ImagePullFailsFast", func(t *testing.T) {
		t.Parallel()
		// Unschedulable, so kwok never touches the pods; the test plays
		// the kubelet and reports an image pull error.
		createDeployment(t, client, "badimage", map[string]string{"no-such-label": "y"})
		ctx := t.Context()
		go func() {
			_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
				pods, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=badimage"})
				if err != nil || len(pods.Items) == 0 {
					return false, nil
				}
				p := pods.Items[0]
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{
					Name: "app", Image: "example.invalid/app:1",
					State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
						Reason: "ImagePullBackOff", Message: `Back-off pulling image "example.invalid/app:1"`,
					}},
				}}
				_, err = client.CoreV1().Pods("default").UpdateStatus(ctx, &p, metav1.UpdateOptions{})
				return err == nil, nil
			})
		}()
		var rec recorder
		res := []deploy.Resource{{Kind: "Deployment", Namespace: "default", Name: "badimage"}}
		start := time.Now()
		err := checker.Wait(ctx, res, 30*time.Second, rec.report)
		var e *rollout.Error
		if !errors.As(err, &e) || e.Code != enumspb.StatusCode_STATUSCHECK_IMAGE_PULL_ERR {
			t.Fatalf("Wait = %v, want STATUSCHECK_IMAGE_PULL_ERR", err)
		}
		if !strings.Contains(e.Msg, "Back-off pulling image") {
			t.Errorf("message %q lacks the pod's message", e.Msg)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Wait took %s, want it to fail fast", d)
		}
		ups := rec.get()
		if u := ups[len(ups)-1]; u.Status != rollout.Failed || u.Code != enumspb.StatusCode_STATUSCHECK_IMAGE_PULL_ERR {
			t.Errorf("last update = %+v, want Failed IMAGE_PULL_ERR", u)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		createDeployment(t, client, "cancelled", map[string]string{"no-such-label": "z"})
		err := checker.Wait(ctx, []deploy.Resource{{Kind: "Deployment", Namespace: "default", Name: "cancelled"}}, time.Minute, nil)
		var e *rollout.Error
		if !errors.As(err, &e) || e.Code != enumspb.StatusCode_STATUSCHECK_USER_CANCELLED {
			t.Fatalf("Wait = %v, want STATUSCHECK_USER_CANCELLED", err)
		}
	})
}

type recorder struct {
	mu  sync.Mutex
	ups []rollout.Update
}

func (r *recorder) report(u rollout.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ups = append(r.ups, u)
}

func (r *recorder) get() []rollout.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rollout.Update(nil), r.ups...)
}

func createDeployment(t *testing.T, client kubernetes.Interface, name string, nodeSelector map[string]string) {
	t.Helper()
	replicas := int32(2)
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: nodeSelector,
					Containers:   []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
				},
			},
		},
	}
	if _, err := client.AppsV1().Deployments("default").Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment %s: %v", name, err)
	}
}
