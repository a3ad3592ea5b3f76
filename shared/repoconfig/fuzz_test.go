package repoconfig

import (
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func FuzzParse(f *testing.F) {
	fixtures, err := filepath.Glob(filepath.Join("testdata", "*.toml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range fixtures {
		src := string(readFixture(f, filepath.Base(name)))
		f.Add(src, "master")
		f.Add(src, "dev")
	}
	f.Add(checkConfig, "main")
	f.Add("{{ if .git.branch == \"main\" }}\n[a.helm]\nchart = \"a\"\n{{ else }}\n[b.helm]\nchart = \"b\"\n{{ end }}", "main")
	f.Add("a = {b = [{c = 1}], 'd'.\"e\" = \"\"\"\n[x]\"\"\"}\n[[f]]\n", "main")

	f.Fuzz(func(t *testing.T, src, branch string) {
		vars := Vars{SHA: testSHA, Branch: branch, Ref: "refs/heads/" + branch, Owner: "o", Name: "n"}
		cfg, err := Parse([]byte(src), vars)
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse() error = %#v, want an *Error", err)
			}
			if perr.Msg == "" || err.Error() == "" {
				t.Fatalf("Parse() error %#v has no message", err)
			}
			return
		}
		checkConfigInvariants(t, cfg)
		checkScanKeys(t, src, vars)
	})
}

// checkConfigInvariants checks what Parse promises of a valid file.
func checkConfigInvariants(t *testing.T, cfg *Config) {
	t.Helper()
	for _, u := range cfg.Units {
		if !unitNameRE.MatchString(u.Name) || len(u.Name) > maxUnitName {
			t.Errorf("unit name %q is not valid", u.Name)
		}
		if u.Docker == nil && u.Helm == nil {
			t.Errorf("unit %q has no action", u.Name)
		}
		var paths []string
		if d := u.Docker; d != nil {
			paths = append(paths, d.Directory, d.Dockerfile, d.DockerfilePath())
			if !imageRE.MatchString(d.Tag) {
				t.Errorf("unit %q: tag %q is not an image reference", u.Name, d.Tag)
			}
			if !strings.HasPrefix(d.DockerfilePath()+"/", d.Directory+"/") && d.Directory != "." {
				t.Errorf("unit %q: Dockerfile %q is outside %q", u.Name, d.DockerfilePath(), d.Directory)
			}
		}
		if h := u.Helm; h != nil {
			paths = append(paths, h.Chart)
			paths = append(paths, h.Values...)
			if h.Timeout <= 0 || h.Timeout > maxTimeout {
				t.Errorf("unit %q: timeout %v is out of range", u.Name, h.Timeout)
			}
			if !releaseRE.MatchString(h.Release) || (h.Namespace != "" && !namespaceRE.MatchString(h.Namespace)) {
				t.Errorf("unit %q: release %q or namespace %q is not valid", u.Name, h.Release, h.Namespace)
			}
		}
		paths = append(paths, u.Paths...)
		for _, p := range paths {
			if !isInside(p) {
				t.Errorf("unit %q: path %q is not clean, relative and inside the repository", u.Name, p)
			}
		}
		for _, p := range append(slices.Clone(u.Paths), u.Branches...) {
			if err := checkPattern(p); err != nil {
				t.Errorf("unit %q: pattern %q: %v", u.Name, p, err)
			}
		}
		u.MatchesPaths([]string{"a/b.go", ""})
		u.MatchesBranch("feature/x")
	}
}

// isInside reports whether p is a clean relative path inside the
// repository.
func isInside(p string) bool {
	return fs.ValidPath(p) && path.Clean(p) == p && !strings.Contains(p, `\`)
}

// checkScanKeys checks that scanKeys finds the keys the TOML parser does in
// the rendered file, so that errors get their lines.
func checkScanKeys(t *testing.T, src string, vars Vars) {
	t.Helper()
	text, _, err := render(src, vars)
	if err != nil {
		t.Fatalf("render() error = %v after Parse() succeeded", err)
	}
	var doc map[string]any
	md, err := toml.Decode(text, &doc)
	if err != nil {
		t.Fatalf("toml.Decode() error = %v after Parse() succeeded", err)
	}
	keys, serr := scanKeys(text)
	if serr != nil {
		t.Fatalf("scanKeys() error = %v after Parse() succeeded", serr.msg)
	}
	got := make([]string, len(keys))
	for i, k := range keys {
		got[i] = toml.Key(k.key).String()
	}
	want := make([]string, len(md.Keys()))
	for i, k := range md.Keys() {
		want[i] = k.String()
	}
	if !slices.Equal(got, want) {
		t.Errorf("scanKeys(%q) = %q, MetaData.Keys() = %q", text, got, want)
	}
}

// FuzzScanKeys checks that scanKeys lists the keys MetaData.Keys does for
// every document the TOML parser accepts, valid configuration or not.
func FuzzScanKeys(f *testing.F) {
	fixtures, err := filepath.Glob(filepath.Join("testdata", "*.toml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range fixtures {
		f.Add(string(readFixture(f, filepath.Base(name))))
	}
	f.Add("a = {b = [{c = 1, d.e = 2}], f = {g = 3}}\n[x.y]\nz.w = [\n 1, # ]\n {v = 1},\n]\n[[q]]\n'l'.\"q\\u0041\" = 2\n")
	f.Add("a = \"\"\"\n[b]\nc = 1\"\"\"\"\"\nd = '''\n[e]'''\nf = 1979-05-27 07:32:00Z\n")

	f.Fuzz(func(t *testing.T, doc string) {
		keys, serr := scanKeys(doc)
		if serr != nil {
			return // Over a limit: the TOML parser is not asked.
		}
		var v map[string]any
		md, err := toml.Decode(doc, &v)
		if err != nil {
			return
		}
		got := make([]string, len(keys))
		for i, k := range keys {
			got[i] = toml.Key(k.key).String()
		}
		want := make([]string, len(md.Keys()))
		for i, k := range md.Keys() {
			want[i] = k.String()
		}
		if !slices.Equal(got, want) {
			t.Errorf("scanKeys(%q) = %q, MetaData.Keys() = %q", doc, got, want)
		}
	})
}
