package deploy_test

import (
	"os"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

type appsDeployment = appsv1.Deployment

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
