package workspace

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	chartv2loader "helm.sh/helm/v4/pkg/chart/v2/loader"
	kubefake "helm.sh/helm/v4/pkg/kube/fake"
	ri "helm.sh/helm/v4/pkg/release"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
)

// chartFiles is a valid chart under "deploy/web".
func chartFiles() map[string]string {
	return map[string]string{
		"deploy/web/Chart.yaml":             "apiVersion: v2\nname: web\nversion: 0.1.0\n",
		"deploy/web/values.yaml":            "greeting: hello\n",
		"deploy/web/.helmignore":            "# comment\n*.bak\nscratch/\n",
		"deploy/web/templates/cm.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  greeting: {{ .Values.greeting }}\n  shared: {{ .Files.Get \"files/shared.txt\" | quote }}\n",
		"deploy/web/templates/.hidden.yaml": "ignored by Helm's default rule\n",
		"deploy/web/notes.bak":              "ignored by .helmignore\n",
		"deploy/web/scratch/x.txt":          "ignored directory\n",
		"deploy/web/.git/config":            "[core]\n",
		"deploy/web/files/shared.txt":       "->../../../shared/text.txt", // in the repository: allowed
		"deploy/web/files/linked":           "->../../../shared",          // an in-repository directory
		"shared/text.txt":                   "shared text",
		"shared/more.txt":                   "more",
	}
}

func with(files map[string]string, extra map[string]string) map[string]string {
	for k, v := range extra {
		files[k] = v
	}
	return files
}

func TestChart(t *testing.T) {
	t.Parallel()
	tree, _ := mustTree(t, chartFiles())
	c, err := tree.Chart(t.Context(), "deploy/web", ChartLimits{})
	if err != nil {
		t.Fatalf("Chart = %v", err)
	}
	chrt, ok := c.(*chartv2.Chart)
	if !ok {
		t.Fatalf("Chart returned %T, want *chartv2.Chart", c)
	}
	if chrt.Name() != "web" || chrt.Values["greeting"] != "hello" {
		t.Errorf("chart %q with values %v, want web with greeting=hello", chrt.Name(), chrt.Values)
	}
	var names []string
	for _, f := range chrt.Raw {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	want := []string{".helmignore", "Chart.yaml", "files/linked/more.txt", "files/linked/text.txt", "files/shared.txt", "templates/cm.yaml", "values.yaml"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("chart files (-want +got):\n%s", diff)
	}

	// The chart renders, in-repository link included; the result fits
	// action.Install.RunWithContext.
	cfg := action.NewConfiguration()
	cfg.Releases = storage.Init(driver.NewMemory())
	cfg.KubeClient = &kubefake.PrintingKubeClient{Out: io.Discard}
	install := action.NewInstall(cfg)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = "r"
	install.Namespace = "ns"
	install.Replace = true
	rel, err := install.RunWithContext(t.Context(), c, nil)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	acc, err := ri.NewAccessor(rel)
	if err != nil {
		t.Fatal(err)
	}
	if m := acc.Manifest(); !strings.Contains(m, `shared: "shared text"`) || !strings.Contains(m, "greeting: hello") {
		t.Errorf("manifest does not hold the chart's values and files:\n%s", m)
	}
}

func TestChartV3(t *testing.T) {
	t.Parallel()
	tree, _ := mustTree(t, map[string]string{
		"c/Chart.yaml":        "apiVersion: v3\nname: three\nversion: 0.1.0\n",
		"c/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
	})
	c, err := tree.Chart(t.Context(), "c", ChartLimits{})
	if err != nil {
		t.Fatalf("Chart = %v", err)
	}
	if _, ok := c.(*chartv2.Chart); ok {
		t.Errorf("an apiVersion v3 chart was loaded as v2")
	}
}

// gzipBomb returns a packaged subchart of a few KiB holding size zero
// bytes.
func gzipBomb(t *testing.T, size int64) string {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "bomb/Chart.yaml", Mode: 0o644, Size: 37, Typeflag: tar.TypeReg})
	tw.Write([]byte("apiVersion: v2\nname: b\nversion: 0.1.0"))
	tw.WriteHeader(&tar.Header{Name: "bomb/zeros", Mode: 0o644, Size: size, Typeflag: tar.TypeReg})
	zero := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(zero)) {
		tw.Write(zero[:min(int64(len(zero)), size-n)])
	}
	tw.Close()
	zw.Close()
	return buf.String()
}

func TestChartRefused(t *testing.T) {
	t.Parallel()
	secrets := secretLines(t)
	tests := []struct {
		name    string
		extra   map[string]string
		dir     string // default deploy/web
		fifo    string
		limits  ChartLimits
		wantErr error
		wantMsg string
	}{
		{name: "TemplateToEtcPasswd", extra: map[string]string{"deploy/web/templates/x.yaml": "->/etc/passwd"},
			wantErr: ErrEscapes, wantMsg: `"deploy/web/templates/x.yaml" is a symlink that leaves the repository`},
		{name: "FileToProcEnviron", extra: map[string]string{"deploy/web/files/secret": "->/proc/self/environ"},
			wantErr: ErrEscapes, wantMsg: `"deploy/web/files/secret"`},
		{name: "FileToDevZero", extra: map[string]string{"deploy/web/files/zero": "->/dev/zero"}, wantErr: ErrEscapes},
		{name: "RelativeEscape", extra: map[string]string{"deploy/web/files/out": "->../../../../../outside"}, wantErr: ErrEscapes},
		{name: "DirectoryToEtc", extra: map[string]string{"deploy/web/files/etc": "->/etc"}, wantErr: ErrEscapes, wantMsg: `"deploy/web/files/etc"`},
		{name: "ChartDirLinkOutside", extra: map[string]string{"deploy/evil": "->$BASE"}, dir: "deploy/evil",
			wantErr: ErrEscapes, wantMsg: `"deploy/evil" is a symlink that leaves the repository`},
		{name: "ChartDirOutside", dir: "../x", wantErr: ErrOutside},
		{name: "DirectoryLoop", extra: map[string]string{"deploy/web/templates/self": "->.."}, wantErr: ErrLoop},
		{name: "LinkLoop", extra: map[string]string{"deploy/web/a": "->b", "deploy/web/b": "->a"}, wantErr: ErrLoop},
		{name: "FIFO", fifo: "deploy/web/files/pipe", wantErr: ErrNotRegular, wantMsg: `"deploy/web/files/pipe" is not a regular file (FIFO)`},
		{name: "TooManyFiles", limits: ChartLimits{MaxFiles: 3}, wantErr: ErrTooLarge, wantMsg: `"deploy/web" has more than 3 files`},
		{name: "FileTooLarge", limits: ChartLimits{MaxFileBytes: 20}, wantErr: ErrTooLarge, wantMsg: "is larger than 20 bytes"},
		{name: "ChartTooLarge", limits: ChartLimits{MaxTotalBytes: 100}, wantErr: ErrTooLarge, wantMsg: `"deploy/web" is larger than 100 bytes in total`},
		{name: "SubchartBomb", extra: map[string]string{"deploy/web/charts/bomb.tgz": gzipBomb(t, 64<<20)}, wantErr: ErrTooLarge, wantMsg: "in total"},
		{name: "NoChart", dir: "shared", wantMsg: "Chart.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tree, repo := mustTree(t, with(chartFiles(), tt.extra))
			if tt.fifo != "" {
				if err := syscall.Mkfifo(filepath.Join(repo, tt.fifo), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dir := tt.dir
			if dir == "" {
				dir = "deploy/web"
			}
			start := time.Now()
			c, err := tree.Chart(t.Context(), dir, tt.limits)
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("Chart took %v", elapsed)
			}
			if err == nil {
				t.Fatalf("Chart(%q) loaded %v, want an error", dir, c)
			}
			t.Logf("error: %v", err)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.HasPrefix(err.Error(), `load chart "`+dir+`": `) {
				t.Errorf("error %q does not start with load chart %q and contain %q", err, dir, tt.wantMsg)
			}
			if strings.Contains(err.Error(), repo) {
				t.Errorf("error %q shows the checkout's absolute path", err)
			}
			assertNoContent(t, err, secrets)
		})
	}
}

// TestChartLoaderFollowsLinks documents why Tree.Chart exists: Helm's own
// loader reads a link to a file outside the chart.
func TestChartLoaderFollowsLinks(t *testing.T) {
	t.Parallel()
	_, repo := mustTree(t, with(chartFiles(), map[string]string{"deploy/web/files/secret": "->$BASE/outside"}))
	c, err := chartv2loader.LoadDir(filepath.Join(repo, "deploy", "web"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range c.Files {
		if f.Name == "files/secret" && string(f.Data) == outsideSecret {
			return
		}
	}
	t.Log("Helm's loader no longer reads links leaving the chart")
}
