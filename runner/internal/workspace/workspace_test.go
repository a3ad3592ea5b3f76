package workspace

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/repoconfig"
)

// outsideSecret is the content of a file beside the checkout that no read
// may reveal.
const outsideSecret = "OUTSIDE-SECRET-4711\nsecond line of the secret\n"

// mustTree lays out files (name → content; content "->target" makes a
// symbolic link) in dir/repo, writes outsideSecret to dir/outside, and
// opens the checkout.
func mustTree(t *testing.T, files map[string]string) (*Tree, string) {
	t.Helper()
	base := t.TempDir()
	repo := filepath.Join(base, "x", "repo")
	if err := os.WriteFile(filepath.Join(base, "outside"), []byte(outsideSecret), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(repo, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			target = strings.ReplaceAll(target, "$BASE", base)
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := Open(repo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tree.Close() })
	return tree, repo
}

// secretLines returns the lines of the files whose content no error may
// show.
func secretLines(t *testing.T) []string {
	t.Helper()
	var lines []string
	for _, f := range []string{"/etc/os-release", "/proc/self/environ", "/etc/passwd"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s for the test: %v", f, err)
		}
		for _, l := range strings.FieldsFunc(string(data), func(r rune) bool { return r == '\n' || r == 0 }) {
			if len(strings.TrimSpace(l)) >= 6 {
				lines = append(lines, l)
			}
		}
	}
	return append(lines, strings.Split(strings.TrimSpace(outsideSecret), "\n")...)
}

func assertNoContent(t *testing.T, err error, secrets []string) {
	t.Helper()
	for _, l := range secrets {
		if strings.Contains(err.Error(), l) {
			t.Errorf("error %q shows content %q", err, l)
		}
	}
}

func TestReadFile(t *testing.T) {
	t.Parallel()
	tree, repo := mustTree(t, map[string]string{
		"ok.txt":      "hello\n",
		"link-ok":     "->ok.txt",
		"dir/link-up": "->../ok.txt",
		"dir/file":    "in dir\n",
		"os-release":  "->/etc/os-release",
		"environ":     "->/proc/self/environ",
		"zero":        "->/dev/zero",
		"chain-a":     "->chain-b",
		"chain-b":     "->dir/../../../outside",
		"absolute":    "->$BASE/outside",
		"etc":         "->/etc",
		"loop-a":      "->loop-b",
		"loop-b":      "->loop-a",
		"dir/deep/up": "->../../../outside",
	})
	if err := syscall.Mkfifo(filepath.Join(repo, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("fifo", filepath.Join(repo, "fifo-link")); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(repo, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(100 << 20); err != nil { // sparse: 100 MiB
		t.Fatal(err)
	}
	big.Close()
	device := false
	if err := syscall.Mknod(filepath.Join(repo, "null"), syscall.S_IFCHR|0o666, 1<<8|3); err == nil {
		device = true
	}
	secrets := secretLines(t)

	tests := []struct {
		name    string
		path    string
		max     int64
		want    string // content; empty for an error
		wantErr error
		wantMsg string
	}{
		{name: "Regular", path: "ok.txt", want: "hello\n"},
		{name: "InRootSymlink", path: "link-ok", want: "hello\n"},
		{name: "InRootSymlinkUp", path: "dir/link-up", want: "hello\n"},
		{name: "InDirectory", path: "dir/file", want: "in dir\n"},
		{name: "ExactlyMax", path: "ok.txt", max: 6, want: "hello\n"},
		{name: "SymlinkToOSRelease", path: "os-release", wantErr: ErrEscapes, wantMsg: `"os-release" is a symlink that leaves the repository`},
		{name: "SymlinkToProcEnviron", path: "environ", wantErr: ErrEscapes},
		{name: "SymlinkToDevZero", path: "zero", wantErr: ErrEscapes},
		{name: "ChainEscaping", path: "chain-a", wantErr: ErrEscapes, wantMsg: `"chain-a" is a symlink that leaves`},
		{name: "AbsoluteSymlink", path: "absolute", wantErr: ErrEscapes},
		{name: "ThroughDirectoryLink", path: "etc/os-release", wantErr: ErrEscapes},
		{name: "DeepEscape", path: "dir/deep/up", wantErr: ErrEscapes},
		{name: "Loop", path: "loop-a", wantErr: ErrLoop},
		{name: "FIFO", path: "fifo", wantErr: ErrNotRegular, wantMsg: `"fifo" is not a regular file (FIFO)`},
		{name: "SymlinkToFIFO", path: "fifo-link", wantErr: ErrNotRegular},
		{name: "Directory", path: "dir", wantErr: ErrNotRegular, wantMsg: "(directory)"},
		{name: "DotDot", path: "../outside", wantErr: ErrOutside, wantMsg: `"../outside" is outside the repository`},
		{name: "Absolute", path: "/etc/passwd", wantErr: ErrOutside},
		{name: "Missing", path: "missing.txt", wantErr: fs.ErrNotExist, wantMsg: "does not exist"},
		{name: "MissingUnderFile", path: "ok.txt/x", wantErr: fs.ErrNotExist},
		{name: "Oversize", path: "big.bin", max: 1 << 20, wantErr: ErrTooLarge, wantMsg: `"big.bin" is larger than 1048576 bytes`},
		{name: "OverMaxByOne", path: "ok.txt", max: 5, wantErr: ErrTooLarge},
	}
	if device {
		tests = append(tests, struct {
			name    string
			path    string
			max     int64
			want    string
			wantErr error
			wantMsg string
		}{name: "CharDevice", path: "null", wantErr: ErrNotRegular, wantMsg: "character device"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			max := tt.max
			if max == 0 {
				max = 1 << 20
			}
			start := time.Now()
			got, err := tree.ReadFile(ctx, tt.path, max)
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("ReadFile took %v", elapsed)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ReadFile(%q) = %v", tt.path, err)
				}
				if string(got) != tt.want {
					t.Errorf("ReadFile(%q) = %q, want %q", tt.path, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadFile(%q) read %d bytes, want an error", tt.path, len(got))
			}
			t.Logf("error: %v", err)
			if got != nil {
				t.Errorf("ReadFile(%q) returned data with its error", tt.path)
			}
			var werr *Error
			if !errors.As(err, &werr) || werr.Path != tt.path {
				t.Errorf("error %v (%T) is not an *Error naming %q", err, err, tt.path)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), `"`+tt.path+`"`) {
				t.Errorf("error %q does not contain %q and the quoted path", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), repo) {
				t.Errorf("error %q shows the checkout's absolute path", err)
			}
			assertNoContent(t, err, secrets)
		})
	}
}

// TestReadFileOversizeMemory checks that refusing a 100 MiB file with a
// small limit reads (and allocates) next to nothing.
func TestReadFileOversizeMemory(t *testing.T) {
	tree, repo := mustTree(t, nil)
	f, err := os.Create(filepath.Join(repo, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err = tree.ReadFile(t.Context(), "big.bin", 64<<10)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadFile = %v, want ErrTooLarge", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("refused a 100 MiB file in %v, allocating %d bytes", elapsed, alloc)
	if alloc > 1<<20 {
		t.Errorf("refusing a 100 MiB file allocated %d bytes, want < 1 MiB", alloc)
	}
}

func TestReadFileContext(t *testing.T) {
	t.Parallel()
	tree, _ := mustTree(t, map[string]string{"ok.txt": "hello\n"})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := tree.ReadFile(ctx, "ok.txt", 100); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadFile with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestSub(t *testing.T) {
	t.Parallel()
	tree, repo := mustTree(t, map[string]string{
		"app/Dockerfile": "FROM scratch\n",
		"app/up":         "->../secret.txt",
		"secret.txt":     "repository file outside the context\n",
		"applink":        "->app",
		"etc":            "->/etc",
		"file":           "x",
	})
	for _, dir := range []string{"app", "applink", "./app/"} {
		sub, err := tree.Sub(dir)
		if err != nil {
			t.Fatalf("Sub(%q) = %v", dir, err)
		}
		ctxTree := NewTree(sub, "the build context")
		if got, err := ctxTree.ReadFile(t.Context(), "Dockerfile", 100); err != nil || string(got) != "FROM scratch\n" {
			t.Errorf("Sub(%q): ReadFile(Dockerfile) = %q, %v", dir, got, err)
		}
		// A link leaving the context is refused even though it stays in
		// the repository.
		_, err = ctxTree.ReadFile(t.Context(), "up", 100)
		if !errors.Is(err, ErrEscapes) || !strings.Contains(err.Error(), `"up" is a symlink that leaves the build context`) {
			t.Errorf("Sub(%q): ReadFile(up) = %v, want ErrEscapes naming the build context", dir, err)
		}
		if _, err := sub.ReadFile("up"); err == nil {
			t.Errorf("Sub(%q): the os.Root itself follows a link out of the context", dir)
		}
		sub.Close()
	}
	// A sub-tree outlives the tree it was opened from.
	other, err := Open(filepath.Dir(filepath.Join(repo, "app")))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := other.Sub("app")
	other.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := sub.ReadFile("Dockerfile"); err != nil {
		t.Errorf("reading a sub-tree after closing its tree: %v", err)
	}
	for dir, want := range map[string]error{"etc": ErrEscapes, "..": ErrOutside, "file": fs.ErrInvalid, "missing": fs.ErrNotExist} {
		if sub, err := tree.Sub(dir); !errors.Is(err, want) {
			if sub != nil {
				sub.Close()
			}
			t.Errorf("Sub(%q) = %v, want %v", dir, err, want)
		}
	}
}

func TestFS(t *testing.T) {
	t.Parallel()
	tree, repo := mustTree(t, map[string]string{
		"ok.txt":       "hello\n",
		"dir/a.txt":    "a\n",
		"dir/b/c.txt":  "c\n",
		"link-ok":      "->ok.txt",
		"dir/link-dir": "->b",
	})
	fsys := tree.FS()
	if err := fstest.TestFS(fsys, "ok.txt", "dir/a.txt", "dir/b/c.txt", "link-ok"); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"os-release": "/etc/os-release", "environ": "/proc/self/environ", "zero": "/dev/zero"} {
		if err := os.Symlink(target, filepath.Join(repo, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(repo, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(repo, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(DefaultMaxFile + 1); err != nil {
		t.Fatal(err)
	}
	big.Close()
	secrets := secretLines(t)
	for name, want := range map[string]error{"os-release": ErrEscapes, "environ": ErrEscapes, "zero": ErrEscapes, "fifo": ErrNotRegular, "big.bin": ErrTooLarge} {
		if _, err := fs.ReadFile(fsys, name); !errors.Is(err, want) {
			t.Errorf("fs.ReadFile(%q) = %v, want %v", name, err, want)
		} else {
			assertNoContent(t, err, secrets)
		}
		if name == "big.bin" {
			continue
		}
		if f, err := fsys.Open(name); !errors.Is(err, want) {
			if f != nil {
				f.Close()
			}
			t.Errorf("Open(%q) = %v, want %v", name, err, want)
		}
	}
	// Reading an opened file stops at the limit as well.
	f, err := fsys.Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var readErr error
	for readErr == nil {
		_, readErr = f.Read(buf)
	}
	if !errors.Is(readErr, ErrTooLarge) {
		t.Errorf("reading an opened file over the limit: %v, want ErrTooLarge", readErr)
	}
}

// TestCheckFiles runs repoconfig's check on the tree's file system: links
// leaving the repository are reported by the check, and the config can be
// read with ReadFile.
func TestCheckFiles(t *testing.T) {
	t.Parallel()
	config := `[api.docker]
tag = "r/api:1"
directory = "./api"
[api.helm]
chart = "./api/deploy"
values = ["values/prod.yaml"]
`
	tree, repo := mustTree(t, map[string]string{
		repoconfig.FileName:           config,
		"api/Dockerfile":              "FROM scratch\n",
		"api/deploy/Chart.yaml":       "apiVersion: v2\nname: api\nversion: 0.1.0\n",
		"api/deploy/templates/a.yaml": "kind: ConfigMap\n",
		"values/prod.yaml":            "replicas: 2\n",
	})
	src, err := tree.ReadFile(t.Context(), repoconfig.FileName, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := repoconfig.Parse(src, repoconfig.Vars{SHA: strings.Repeat("a", 40), Branch: "main", Ref: "refs/heads/main", Owner: "o", Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckFiles(tree.FS()); err != nil {
		t.Fatalf("CheckFiles = %v", err)
	}
	if err := os.Symlink("/etc", filepath.Join(repo, "api", "deploy", "templates", "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(repo, "values", "prod.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/os-release", filepath.Join(repo, "values", "prod.yaml")); err != nil {
		t.Fatal(err)
	}
	err = cfg.CheckFiles(tree.FS())
	if err == nil || !strings.Contains(err.Error(), "templates/etc") || !strings.Contains(err.Error(), "values/prod.yaml") {
		t.Errorf("CheckFiles = %v, want errors for templates/etc and values/prod.yaml", err)
	}
}
