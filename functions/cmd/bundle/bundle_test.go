package main

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// buildpackMain is what Google's Go buildpack generates for a function
// bundle: a main that imports the package at the bundle's root and starts
// the functions framework on $PORT, serving $FUNCTION_TARGET.
const buildpackMain = `package main

import (
	"log"
	"os"

	_ "github.com/kube-git-deploy/kube-git-deploy"
	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
)

func main() {
	if err := funcframework.Start(os.Getenv("PORT")); err != nil {
		log.Fatal(err)
	}
}
`

// TestBundleCompilesLikeTheBuildpack writes the bundle, unpacks it into an
// empty directory, compiles it the way the buildpack does, and serves each
// function's health check from the result.
func TestBundleCompilesLikeTheBuildpack(t *testing.T) {
	dir := t.TempDir()
	zipPath := filepath.Join(dir, "functions.zip")
	if err := run(zipPath); err != nil {
		t.Fatalf("bundle: %v", err)
	}
	src := filepath.Join(dir, "src")
	unzip(t, zipPath, src)
	for _, must := range []string{"go.mod", "go.sum", "function.go", "functions/registration/registration.go"} {
		if _, err := os.Stat(filepath.Join(src, must)); err != nil {
			t.Errorf("bundle lacks %s", must)
		}
	}
	if _, err := os.Stat(filepath.Join(src, "functions/webhook/webhook_test.go")); err == nil {
		t.Errorf("bundle contains test files")
	}

	mainDir := filepath.Join(src, "buildpack_main")
	if err := os.MkdirAll(mainDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mainDir, "main.go"), []byte(buildpackMain), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "fn")
	build := exec.Command("go", "build", "-mod=readonly", "-o", bin, "./buildpack_main")
	build.Dir = src
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the bundle does not compile as the buildpack compiles it: %v\n%s", err, out)
	}

	for _, target := range []string{"PrivateAPI", "PublicAPI"} {
		t.Run(target, func(t *testing.T) {
			port := freePort(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(os.Environ(),
				"FUNCTION_TARGET="+target, "PORT="+strconv.Itoa(port),
				"GOOGLE_CLOUD_PROJECT=bundle-test", "PUBLIC_HTTP_HOST=https://deploy.example.com",
				"GITHUB_CLIENT_ID=id", "GITHUB_CLIENT_SECRET=secret",
				"KGD_ENCRYPTION_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
				// Clients connect lazily; closed loopback ports keep every
				// library away from the network.
				"FIRESTORE_EMULATOR_HOST=127.0.0.1:1", "PUBSUB_EMULATOR_HOST=127.0.0.1:1", "GCE_METADATA_HOST=127.0.0.1:1",
			)
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); cmd.Wait() }()
			want := map[string]string{"PrivateAPI": "private", "PublicAPI": "public"}[target]
			got := waitHealth(t, ctx, port)
			if got["ok"] != true || got["server"] != want {
				t.Errorf("GET /healthz = %v, want ok and server %q", got, want)
			}
		})
	}
	// Deployed with a bad configuration, the function must not start (so
	// the deploy fails) rather than answer 500 to every request.
	t.Run("bad-configuration", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = append(os.Environ(),
			"FUNCTION_TARGET=PublicAPI", "PORT="+strconv.Itoa(freePort(t)),
			"GOOGLE_CLOUD_PROJECT=bundle-test", "PUBLIC_HTTP_HOST=https://deploy.example.com",
			"GITHUB_CLIENT_ID=id", "KGD_ENCRYPTION_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
			"FIRESTORE_EMULATOR_HOST=127.0.0.1:1", "PUBSUB_EMULATOR_HOST=127.0.0.1:1", "GCE_METADATA_HOST=127.0.0.1:1",
		)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("started without GITHUB_CLIENT_SECRET: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "GITHUB_CLIENT_SECRET") {
			t.Errorf("exit message does not name the variable:\n%s", out)
		}
	})
}

func unzip(t *testing.T, zipPath, dst string) {
	t.Helper()
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if strings.Contains(f.Name, "..") || filepath.IsAbs(f.Name) {
			t.Fatalf("unsafe path in bundle: %s", f.Name)
		}
		p := filepath.Join(dst, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHealth(t *testing.T, ctx context.Context, port int) map[string]any {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			defer resp.Body.Close()
			var got map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("healthz body: %v", err)
			}
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("function did not answer on port %d", port)
		case <-tick.C:
		}
	}
}
