package repoconfig

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// checkConfig is the file the CheckFiles tests check.
const checkConfig = `[api]
[[docker]]
directory = "./api"
tag = "r/api:1"
[[helm]]
chart = "./api/deploy"
values = ["values/prod.yaml"]
[ui.docker]
tag = "r/ui:1"
dockerfile = "build/Dockerfile"
`

// repoFiles returns a checkout in which every file of checkConfig exists.
func repoFiles() fstest.MapFS {
	return fstest.MapFS{
		"api/Dockerfile":              {Data: []byte("FROM scratch\n")},
		"api/deploy/Chart.yaml":       {Data: []byte("name: api\n")},
		"api/deploy/templates/a.yaml": {Data: []byte("kind: ConfigMap\n")},
		"values/prod.yaml":            {Data: []byte("replicas: 2\n")},
		"build/Dockerfile":            {Data: []byte("FROM scratch\n")},
	}
}

func symlink(target string) *fstest.MapFile {
	return &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink}
}

func TestCheckFiles(t *testing.T) {
	tests := []struct {
		name   string
		change func(fstest.MapFS)
		want   []string // the problems, in order
	}{
		{
			name:   "all present",
			change: func(fstest.MapFS) {},
		},
		{
			name:   "missing Dockerfile",
			change: func(m fstest.MapFS) { delete(m, "api/Dockerfile") },
			want:   []string{`kube-git-deploy.toml:2: api.docker.dockerfile: "api/Dockerfile" does not exist`},
		},
		{
			name: "missing chart",
			change: func(m fstest.MapFS) {
				delete(m, "api/deploy/Chart.yaml")
				delete(m, "api/deploy/templates/a.yaml")
			},
			want: []string{`kube-git-deploy.toml:6: api.helm.chart: "api/deploy" does not exist`},
		},
		{
			name:   "chart without Chart.yaml",
			change: func(m fstest.MapFS) { delete(m, "api/deploy/Chart.yaml") },
			want:   []string{`kube-git-deploy.toml:6: api.helm.chart: "api/deploy" is not a chart: it has no Chart.yaml`},
		},
		{
			name:   "missing values file",
			change: func(m fstest.MapFS) { delete(m, "values/prod.yaml") },
			want:   []string{`kube-git-deploy.toml:7: api.helm.values: "values/prod.yaml" does not exist`},
		},
		{
			name: "missing build directory of default Dockerfile",
			change: func(m fstest.MapFS) {
				delete(m, "build/Dockerfile")
			},
			want: []string{`kube-git-deploy.toml:10: ui.docker.dockerfile: "build/Dockerfile" does not exist`},
		},
		{
			name: "Dockerfile is a directory",
			change: func(m fstest.MapFS) {
				delete(m, "api/Dockerfile")
				m["api/Dockerfile/x"] = &fstest.MapFile{}
			},
			want: []string{`kube-git-deploy.toml:2: api.docker.dockerfile: "api/Dockerfile" is not a regular file`},
		},
		{
			name:   "symlink inside the repository",
			change: func(m fstest.MapFS) { m["values/prod.yaml"] = symlink("../api/deploy/Chart.yaml") },
		},
		{
			name:   "symlinked directory inside the repository",
			change: func(m fstest.MapFS) { m["api/deploy/templates/shared"] = symlink("../../../values") },
		},
		{
			name:   "symlinked Dockerfile leaving the repository",
			change: func(m fstest.MapFS) { m["api/Dockerfile"] = symlink("../../etc/passwd") },
			want: []string{`kube-git-deploy.toml:2: api.docker.dockerfile: "api/Dockerfile" ` +
				`leads outside the repository through a symbolic link`},
		},
		{
			name:   "absolute symlink",
			change: func(m fstest.MapFS) { m["values"] = symlink("/etc") },
			want: []string{`kube-git-deploy.toml:7: api.helm.values: "values/prod.yaml" ` +
				`leads outside the repository through a symbolic link`},
		},
		{
			name: "symlink in chart leaving the repository",
			change: func(m fstest.MapFS) {
				m["api/deploy/templates/secret.yaml"] = symlink("../../../../home/runner/.kube/config")
			},
			want: []string{`kube-git-deploy.toml:6: api.helm.chart: "api/deploy/templates/secret.yaml" in the chart ` +
				`leads outside the repository through a symbolic link`},
		},
		{
			name: "symlink in a linked directory leaving the repository",
			change: func(m fstest.MapFS) {
				m["api/deploy/templates/shared"] = symlink("../../../values")
				m["values/x"] = symlink("/etc/passwd")
			},
			want: []string{`kube-git-deploy.toml:6: api.helm.chart: "values/x" in the chart ` +
				`leads outside the repository through a symbolic link`},
		},
		{
			name:   "symlink loop in chart",
			change: func(m fstest.MapFS) { m["api/deploy/templates/loop"] = symlink("loop") },
			want: []string{`kube-git-deploy.toml:6: api.helm.chart: "api/deploy/templates/loop" in the chart ` +
				`has too many levels of symbolic links`},
		},
		{
			name:   "directory cycle in chart",
			change: func(m fstest.MapFS) { m["api/deploy/templates/up"] = symlink("..") },
		},
	}
	cfg, err := Parse([]byte(checkConfig), masterVars)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := repoFiles()
			tt.change(fsys)
			var got []string
			if err := cfg.CheckFiles(fsys); err != nil {
				for _, e := range unwrapAll(err) {
					got = append(got, e.Error())
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CheckFiles() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// unwrapAll returns the errors joined in err, or err itself.
func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestCheckFilesErrorType(t *testing.T) {
	cfg, err := Parse([]byte(checkConfig), masterVars)
	if err != nil {
		t.Fatal(err)
	}
	fsys := repoFiles()
	delete(fsys, "api/Dockerfile")
	err = cfg.CheckFiles(fsys)
	var perr *Error
	if !errors.As(err, &perr) || perr.Line != 2 {
		t.Errorf("CheckFiles() error = %v, want an *Error on line 2", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CheckFiles() error = %v, want it to wrap fs.ErrNotExist", err)
	}
}

// TestCheckFilesDirFS checks symbolic links in a real directory.
func TestCheckFilesDirFS(t *testing.T) {
	outside := t.TempDir()
	repo := t.TempDir()
	for name, f := range repoFiles() {
		p := filepath.Join(repo, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Parse([]byte(checkConfig), masterVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckFiles(os.DirFS(repo)); err != nil {
		t.Fatalf("CheckFiles() error = %v", err)
	}
	if err := os.Symlink(outside, filepath.Join(repo, "api", "deploy", "templates", "out")); err != nil {
		t.Fatalf("cannot create symbolic links: %v", err)
	}
	var perr *Error
	if err := cfg.CheckFiles(os.DirFS(repo)); !errors.As(err, &perr) || !errors.Is(err, errEscapes) {
		t.Errorf("CheckFiles() error = %v, want an *Error for a link leaving the repository", err)
	}
}
