package rollout

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
)

func TestPodProblem(t *testing.T) {
	t.Parallel()
	waiting := func(reason, msg string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: "app", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg},
		}}
	}
	tests := []struct {
		name     string
		status   corev1.PodStatus
		wantCode enumspb.StatusCode
		wantMsg  string
		wantOK   bool
	}{
		{"Running", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}, 0, "", false},
		{"ContainerCreating", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("ContainerCreating", "")}}, 0, "", false},
		{"ImagePullBackOff", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("ImagePullBackOff", `Back-off pulling image "example.invalid/app:1"`)}},
			enumspb.StatusCode_STATUSCHECK_IMAGE_PULL_ERR, `Back-off pulling image "example.invalid/app:1"`, true},
		{"ErrImagePullInit", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("ErrImagePull", "not found")}},
			enumspb.StatusCode_STATUSCHECK_IMAGE_PULL_ERR, "not found", true},
		{"CrashLoopBackOff", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name:                 "app",
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 10s restarting failed container"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error"}},
		}}}, enumspb.StatusCode_STATUSCHECK_CONTAINER_RESTARTING, "last exit code 2", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1"}, Status: tt.status}
			code, msg, ok := PodProblem(pod)
			if ok != tt.wantOK || code != tt.wantCode || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("PodProblem = (%v, %q, %v), want (%v, containing %q, %v)", code, msg, ok, tt.wantCode, tt.wantMsg, tt.wantOK)
			}
		})
	}
}
