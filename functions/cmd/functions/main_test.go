package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testEnv(t *testing.T, private, public int) func(string) string {
	vars := map[string]string{
		"GOOGLE_CLOUD_PROJECT": emulatortest.ProjectID(t), "PUBLIC_HTTP_HOST": "http://localhost:" + strconv.Itoa(public),
		"PRIVATE_HTTP_PORT": strconv.Itoa(private), "PUBLIC_HTTP_PORT": strconv.Itoa(public),
		"GITHUB_CLIENT_ID": "id", "GITHUB_CLIENT_SECRET": "secret",
		"KGD_ENCRYPTION_KEY":      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"PUBSUB_EMULATOR_HOST":    os.Getenv("PUBSUB_EMULATOR_HOST"),
		"FIRESTORE_EMULATOR_HOST": os.Getenv("FIRESTORE_EMULATOR_HOST"),
	}
	return func(k string) string { return vars[k] }
}

func TestServesBothFunctionsAndStops(t *testing.T) {
	private, public := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, testEnv(t, private, public)) }()

	for port, want := range map[int]string{private: "private", public: "public"} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/healthz")
			if err == nil {
				var body map[string]any
				json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				if body["server"] != want {
					t.Errorf("port %d healthz = %v, want server %s", port, body, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nothing answers on port %d: %v", port, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop after its context ended")
	}
}

func TestStartupErrorsNameTheVariable(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name     string
		override map[string]string
		want     string
	}{
		{"port-taken", map[string]string{"PRIVATE_HTTP_PORT": strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)}, "PRIVATE_HTTP_PORT"},
		{"missing-secret", map[string]string{"GITHUB_CLIENT_SECRET": ""}, "GITHUB_CLIENT_SECRET"},
		{"bad-target", map[string]string{"FUNCTION_TARGET": "Nope"}, "FUNCTION_TARGET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := testEnv(t, freePort(t), freePort(t))
			getenv := func(k string) string {
				if v, ok := tt.override[k]; ok {
					return v
				}
				return base(k)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := run(ctx, getenv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
