package workspace

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	chartv2loader "helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/ignore"
	"sigs.k8s.io/yaml"
)

// Default chart limits.
const (
	// DefaultChartFiles is the default number of files a chart may hold.
	DefaultChartFiles = 2000
	// DefaultChartFileBytes is the default size limit of one chart file:
	// Helm's own former per-file limit (5 MiB).
	DefaultChartFileBytes = 5 << 20
	// DefaultChartBytes is the default size limit of a whole chart, the
	// decompressed content of packaged subcharts included (20 MiB; a
	// release is stored in a Kubernetes Secret of at most 1 MiB, so real
	// charts are far smaller).
	DefaultChartBytes = 20 << 20
	// maxHelmIgnore bounds a chart's .helmignore.
	maxHelmIgnore = 1 << 20
)

// ChartLimits bounds what Tree.Chart reads. Zero fields take the
// defaults.
type ChartLimits struct {
	// MaxFiles is the number of files read (ignored files not counted);
	// default DefaultChartFiles.
	MaxFiles int
	// MaxFileBytes is the size limit of each file; default
	// DefaultChartFileBytes.
	MaxFileBytes int64
	// MaxTotalBytes is the size limit of all files together, packaged
	// subcharts counted decompressed; default DefaultChartBytes.
	MaxTotalBytes int64
}

func (l ChartLimits) withDefaults() ChartLimits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultChartFiles
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultChartFileBytes
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = DefaultChartBytes
	}
	return l
}

// Chart loads the Helm chart in directory dir of the tree from memory.
//
// Helm's loader.Load walks a chart directory following every symbolic
// link, so a chart could pull /etc/passwd or /proc/self/environ into
// .Files and render it. Chart instead reads the directory itself: every
// file with the rules of ReadFile (symbolic links only inside the tree,
// regular files only), symbolically linked directories only inside the
// tree and never in a cycle, the .git directory skipped, the chart's
// .helmignore honoured as Helm does (plus Helm's default of ignoring
// dotfiles in templates/), and limits on the number and size of files.
// The files are then loaded with Helm's in-memory loader.
//
// The result is what loader.Load returns, a chart.Charter for
// action.Install.RunWithContext and action.Upgrade.RunWithContext: a
// *chartv2.Chart (helm.sh/helm/v4/pkg/chart/v2) for apiVersion v1 and v2
// charts; apiVersion v3 charts (experimental in Helm 4) are loaded by
// loader.LoadArchive from an archive built in memory.
func (t *Tree) Chart(ctx context.Context, dir string, limits ChartLimits) (chart.Charter, error) {
	files, err := t.chartFiles(ctx, dir, limits.withDefaults())
	if err != nil {
		return nil, err
	}
	var base struct {
		APIVersion string `json:"apiVersion"`
	}
	for _, f := range files {
		if f.Name == "Chart.yaml" {
			if err := yaml.Unmarshal(f.Data, &base); err != nil {
				return nil, fmt.Errorf("load chart %q: cannot load Chart.yaml: %w", dir, err)
			}
		}
	}
	var c chart.Charter
	switch base.APIVersion {
	case chartv2.APIVersionV1, chartv2.APIVersionV2, "":
		c, err = chartv2loader.LoadFiles(files)
	case "v3":
		c, err = loadArchive(files)
	default:
		return nil, fmt.Errorf("load chart %q: unsupported chart apiVersion %q", dir, base.APIVersion)
	}
	if err != nil {
		return nil, fmt.Errorf("load chart %q: %w", dir, err)
	}
	return c, nil
}

// loadArchive loads files, a chart's, through loader.LoadArchive, which
// picks the loader of the chart's apiVersion.
func loadArchive(files []*archive.BufferedFile) (chart.Charter, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, f := range files {
		hdr := &tar.Header{Name: "chart/" + f.Name, Mode: 0o644, Size: int64(len(f.Data)), ModTime: f.ModTime, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return loader.LoadArchive(&buf)
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// chartFiles reads the files of the chart in dir, named relative to dir.
func (t *Tree) chartFiles(ctx context.Context, dir string, limits ChartLimits) ([]*archive.BufferedFile, error) {
	resolved, err := t.resolve(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %q: %w", dir, err)
	}
	if info, err := t.root.Lstat(resolved); err != nil {
		return nil, fmt.Errorf("load chart %q: %w", dir, t.fail(dir, err))
	} else if !info.IsDir() {
		return nil, fmt.Errorf("load chart %q: %w", dir, &Error{Path: dir, Err: fs.ErrInvalid, msg: "is not a directory"})
	}

	rules := ignore.Empty()
	ignoreFile := path.Join(dir, ignore.HelmIgnore)
	data, err := t.ReadFile(ctx, ignoreFile, maxHelmIgnore)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("load chart %q: %w", dir, err)
	default:
		if rules, err = ignore.Parse(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("load chart %q: %s: %w", dir, ignoreFile, err)
		}
	}
	rules.AddDefaults()

	w := chartWalk{t: t, ctx: ctx, limits: limits, rules: rules, chartDir: dir, onPath: map[string]bool{}}
	if err := w.walk(dir, resolved, ""); err != nil {
		return nil, fmt.Errorf("load chart %q: %w", dir, err)
	}
	return w.files, nil
}

type chartWalk struct {
	t        *Tree
	ctx      context.Context
	limits   ChartLimits
	rules    *ignore.Rules
	chartDir string
	onPath   map[string]bool // resolved directories being walked (cycles)
	files    []*archive.BufferedFile
	total    int64
}

// walk reads directory dir (as named in the tree, resolved to resolved),
// whose path relative to the chart is rel ("" for the chart itself).
func (w *chartWalk) walk(dir, resolved, rel string) error {
	if w.onPath[resolved] {
		return &Error{Path: dir, Err: ErrLoop, msg: "is a symlink to a directory that contains it"}
	}
	w.onPath[resolved] = true
	defer delete(w.onPath, resolved)

	entries, err := fs.ReadDir(w.t.root.FS(), resolved)
	if err != nil {
		return w.t.fail(dir, err)
	}
	for _, e := range entries {
		if err := w.ctx.Err(); err != nil {
			return w.t.fail(dir, err)
		}
		name := path.Join(dir, e.Name())
		relName := path.Join(rel, e.Name())
		if e.Name() == ".git" && e.IsDir() {
			continue
		}
		target, err := w.t.resolve(name)
		if err != nil {
			return err
		}
		info, err := w.t.root.Lstat(target)
		if err != nil {
			return w.t.fail(name, err)
		}
		// Helm matches .helmignore against the information of what a
		// link leads to.
		if w.rules.Ignore(relName, info) {
			continue
		}
		if info.IsDir() {
			if err := w.walk(name, target, relName); err != nil {
				return err
			}
			continue
		}
		if !info.Mode().IsRegular() {
			return w.t.notRegular(name, info.Mode())
		}
		if len(w.files) >= w.limits.MaxFiles {
			return &Error{Path: w.chartDir, Err: ErrTooLarge, msg: fmt.Sprintf("has more than %d files", w.limits.MaxFiles)}
		}
		data, err := w.t.ReadFile(w.ctx, name, w.limits.MaxFileBytes)
		if err != nil {
			return err
		}
		size := int64(len(data))
		if isArchive(relName) {
			// Helm decompresses packaged subcharts in memory; count
			// what they expand to.
			if size, err = gunzipSize(data, w.limits.MaxTotalBytes-w.total+1); err != nil {
				size = int64(len(data)) // Helm reports the broken archive
			}
		}
		w.total += size
		if w.total > w.limits.MaxTotalBytes {
			return &Error{Path: w.chartDir, Err: ErrTooLarge, msg: fmt.Sprintf("is larger than %d bytes in total", w.limits.MaxTotalBytes)}
		}
		w.files = append(w.files, &archive.BufferedFile{Name: relName, ModTime: info.ModTime(), Data: bytes.TrimPrefix(data, utf8BOM)})
	}
	return nil
}

// isArchive reports whether a chart file is a packaged subchart, which
// Helm's loader decompresses.
func isArchive(rel string) bool {
	return (strings.HasSuffix(rel, ".tgz") || strings.HasSuffix(rel, ".tar.gz")) &&
		(strings.HasPrefix(rel, "charts/") || strings.Contains(rel, "/charts/"))
}

// gunzipSize returns the decompressed size of gzip data, reading at most
// max bytes of it.
func gunzipSize(data []byte, max int64) (int64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	defer zr.Close()
	return io.Copy(io.Discard, io.LimitReader(zr, max))
}
