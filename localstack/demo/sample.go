package demo

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// sample is the sample repository's fixed files; app/main.go is also a
// package of this module, so it is compiled and vetted with the rest.
//
//go:embed all:sample
var sample embed.FS

// ConfigFile is the repository's kube-git-deploy.toml, in the original
// kube-git-deploy's style, building app/ into an image in the stack's
// registry (registry is host:port) tagged with the short commit SHA and
// deploying the chart in deploy/ with it.
func ConfigFile(registry, owner, name string) string {
	return fmt.Sprintf(`# What kube-git-deploy builds and deploys on every push.
# The file is a Go template: {{ .git.shortSha }} is the pushed commit.
[hello]
[[docker]]
directory = "./app"
tag = "%s/%s/%s:{{ .git.shortSha }}"
[[helm]]
chart = "./deploy"
`, registry, strings.ToLower(owner), strings.ToLower(name))
}

// Files returns the sample repository: the app's source, its statically
// linked binary (built now with the local Go toolchain, for Linux on this
// machine's architecture: images start FROM scratch because no base image
// can be pulled here), its Dockerfile, message.txt (message, which the app
// serves), the Helm chart and kube-git-deploy.toml for registry.
func Files(ctx context.Context, registry, owner, name, message string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(sample, "sample", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := sample.ReadFile(p)
		if err != nil {
			return err
		}
		files[strings.TrimPrefix(p, "sample/")] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sample files: %w", err)
	}
	files["app/go.mod"] = []byte("module example.com/hello\n\ngo 1.22\n")
	bin, err := buildApp(ctx, files["app/main.go"], files["app/go.mod"])
	if err != nil {
		return nil, err
	}
	files["app/hello"] = bin
	files["app/message.txt"] = []byte(message + "\n")
	files["kube-git-deploy.toml"] = []byte(ConfigFile(registry, owner, name))
	return files, nil
}

// buildApp compiles the app statically for Linux in a scratch module.
func buildApp(ctx context.Context, mainGo, goMod []byte) ([]byte, error) {
	dir, err := os.MkdirTemp("", "kgd-demo-build-")
	if err != nil {
		return nil, fmt.Errorf("build the sample app: %w", err)
	}
	defer os.RemoveAll(dir)
	for name, b := range map[string][]byte{"main.go": mainGo, "go.mod": goMod} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, fmt.Errorf("build the sample app: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", "hello", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH,
		"GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local", "GOPROXY=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the sample app (go build, CGO_ENABLED=0): %v: %s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "hello"))
	if err != nil {
		return nil, fmt.Errorf("build the sample app: %w", err)
	}
	return bin, nil
}
