package repoconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testSHA = "0123456789abcdef0123456789abcdef01234567"

// masterVars are the variables of a push to master.
var masterVars = Vars{
	SHA:    testSHA,
	Branch: "master",
	Ref:    "refs/heads/master",
	Owner:  "noahhuppert",
	Name:   "example",
}

// withBranch returns masterVars for a push to branch.
func withBranch(branch string) Vars {
	v := masterVars
	v.Branch, v.Ref = branch, "refs/heads/"+branch
	return v
}

// readFixture returns testdata/name.
func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		fixture string // file in testdata, or
		src     string // the file itself
		vars    Vars
		want    []Unit
	}{
		{
			name:    "original basic example",
			fixture: "basic_example.toml",
			vars:    masterVars,
			want: []Unit{
				{
					Name:   "api",
					Docker: &Docker{Directory: "api", Dockerfile: "Dockerfile", Tag: "noahhuppert/example-api:" + testSHA, Push: true},
					Helm:   &Helm{Chart: "api/deploy", Release: "api", Wait: true, Timeout: 5 * time.Minute},
				},
				{
					Name:   "ui",
					Docker: &Docker{Directory: "ui", Dockerfile: "Dockerfile", Tag: "noahhuppert/example-ui:" + testSHA, Push: true},
					Helm:   &Helm{Chart: "ui/deploy", Release: "ui", Wait: true, Timeout: 5 * time.Minute},
				},
			},
		},
		{
			name:    "original template example fixed on master",
			fixture: "template_example_fixed.toml",
			vars:    masterVars,
			want: []Unit{{
				Name:   "api",
				Docker: &Docker{Directory: ".", Dockerfile: "Dockerfile", Tag: "noahhuppert/example-api:" + testSHA, Push: true},
				Helm:   &Helm{Chart: "deploy", Release: "api", Wait: true, Timeout: 5 * time.Minute},
			}},
		},
		{
			name:    "original template example fixed on dev",
			fixture: "template_example_fixed.toml",
			vars:    withBranch("dev"),
			want:    nil,
		},
		{
			// The unterminated string is in the part that renders to nothing.
			name:    "original template example on dev",
			fixture: "template_example.toml",
			vars:    withBranch("dev"),
			want:    nil,
		},
		{
			name:    "every field",
			fixture: "nested.toml",
			vars:    Vars{SHA: testSHA, Tag: "v1.2.3", Ref: "refs/tags/v1.2.3", Owner: "acme", Name: "shop"},
			want: []Unit{
				{
					Name:     "api",
					Paths:    []string{"api/**", "go.mod"},
					Branches: []string{"main", "release/*"},
					Docker: &Docker{
						Directory:  "api",
						Dockerfile: "build/Dockerfile",
						Tag:        "registry.example.com/acme/api:0123456",
						Args:       map[string]string{"GO_VERSION": "1.26", "DEBUG": "false", "WORKERS": "4"},
						Target:     "production",
						Push:       false,
					},
					Helm: &Helm{
						Chart:     "api/deploy",
						Release:   "api-shop",
						Namespace: "web",
						Values:    []string{"api/deploy/values.yaml", "api/deploy/production.yaml"},
						Set: map[string]string{
							"image.repository": "registry.example.com/acme/api",
							"image.tag":        "0123456",
							"ingress.host":     "api.example.com",
							"replicas":         "3",
						},
						Wait:    false,
						Timeout: 90 * time.Second,
						Atomic:  true,
					},
				},
				{
					Name:   "worker",
					Docker: &Docker{Directory: ".", Dockerfile: "Dockerfile", Tag: "registry.example.com/worker:v1.2.3", Push: true},
				},
			},
		},
		{
			name: "empty file",
			src:  "",
			want: nil,
		},
		{
			name: "comments only",
			src:  "# nothing to deploy yet\n\n",
			want: nil,
		},
		{
			name: "inline actions",
			src:  "[api]\ndocker = { tag = \"r/api:1\", directory = \"api\" }\nhelm = { chart = \"deploy\", set = { image = { tag = \"1\" } } }\n",
			want: []Unit{{
				Name:   "api",
				Docker: &Docker{Directory: "api", Dockerfile: "Dockerfile", Tag: "r/api:1", Push: true},
				Helm: &Helm{Chart: "deploy", Release: "api", Wait: true, Timeout: 5 * time.Minute,
					Set: map[string]string{"image.tag": "1"}},
			}},
		},
		{
			name: "dotted keys",
			src:  "api.docker.tag = \"r/api:1\"\napi.paths = [\"**/*.go\"]\n",
			want: []Unit{{
				Name:   "api",
				Paths:  []string{"**/*.go"},
				Docker: &Docker{Directory: ".", Dockerfile: "Dockerfile", Tag: "r/api:1", Push: true},
			}},
		},
		{
			name: "original form after canonical header",
			src:  "[api.docker]\ntag = \"r/api:1\"\n[[helm]]\nchart = \"deploy\"\n[ui]\nhelm.chart = \"ui\"\n",
			want: []Unit{
				{
					Name:   "api",
					Docker: &Docker{Directory: ".", Dockerfile: "Dockerfile", Tag: "r/api:1", Push: true},
					Helm:   &Helm{Chart: "deploy", Release: "api", Wait: true, Timeout: 5 * time.Minute},
				},
				{
					Name: "ui",
					Helm: &Helm{Chart: "ui", Release: "ui", Wait: true, Timeout: 5 * time.Minute},
				},
			},
		},
		{
			name: "original form with helm first",
			src:  "[api]\n[[helm]]\nchart = \"deploy\"\n[[docker]]\ntag = \"localhost:5000/api:1\"\n",
			want: []Unit{{
				Name:   "api",
				Docker: &Docker{Directory: ".", Dockerfile: "Dockerfile", Tag: "localhost:5000/api:1", Push: true},
				Helm:   &Helm{Chart: "deploy", Release: "api", Wait: true, Timeout: 5 * time.Minute},
			}},
		},
		{
			name: "not equal",
			src:  "{{ if .git.branch != \"master\" }}[preview.helm]\nchart = \"deploy\"\n{{ end }}",
			vars: withBranch("feature/x"),
			want: []Unit{{
				Name: "preview",
				Helm: &Helm{Chart: "deploy", Release: "preview", Wait: true, Timeout: 5 * time.Minute},
			}},
		},
		{
			name: "else if and trim markers",
			src: "{{- if .git.branch == \"main\" -}}\n[prod.helm]\nchart = \"deploy\"\n" +
				"{{- else if .git.branch==\"staging\" }}\n[staging.helm]\nchart = \"deploy\"\n{{ end -}}\n",
			vars: withBranch("staging"),
			want: []Unit{{
				Name: "staging",
				Helm: &Helm{Chart: "deploy", Release: "staging", Wait: true, Timeout: 5 * time.Minute},
			}},
		},
		{
			name: "template functions",
			src:  "[api.docker]\ntag = \"r/{{ .repo.name | printf \"%s-api\" }}:{{ slice .git.sha 0 12 }}\"\n",
			want: []Unit{{
				Name:   "api",
				Docker: &Docker{Directory: ".", Dockerfile: "Dockerfile", Tag: "r/example-api:" + testSHA[:12], Push: true},
			}},
			vars: masterVars,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := []byte(tt.src)
			if tt.fixture != "" {
				src = readFixture(t, tt.fixture)
			}
			cfg, err := Parse(src, tt.vars)
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, cfg.Units); diff != "" {
				t.Errorf("Parse() units mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		fixture string // file in testdata, or
		src     string // the file itself
		vars    Vars   // masterVars if zero
		line    int
		msg     string // part of the first problem's message
	}{
		{
			name:    "original template example on master",
			fixture: "template_example.toml",
			line:    5,
			msg:     "unterminated string",
		},
		{name: "syntax", fixture: "bad_syntax.toml", line: 3, msg: `expected value but found "api"`},
		{name: "unknown key", fixture: "bad_unknown_key.toml", line: 7, msg: "ui.docker.dockerfle: unknown key"},
		{name: "path traversal", fixture: "bad_path_traversal.toml", line: 4, msg: `api.docker.directory: "../../etc": path leaves the repository`},
		{name: "absolute path", fixture: "bad_absolute_path.toml", line: 2, msg: "api.helm.chart: \"/etc/kubernetes\": path must be relative"},
		{name: "orphan docker", fixture: "bad_orphan_docker.toml", line: 2, msg: "[[docker]] comes before any unit"},
		{name: "duplicate docker", fixture: "bad_duplicate_docker.toml", line: 5, msg: "unit api has more than one docker action (the first is on line 2)"},
		{name: "unit name", fixture: "bad_unit_name.toml", line: 1, msg: `unit name "My_API" is not valid`},
		{name: "timeout", fixture: "bad_timeout.toml", line: 3, msg: "api.helm.timeout: 2h is out of range"},
		{name: "missing tag", fixture: "bad_missing_tag.toml", line: 2, msg: "api.docker: tag is required"},
		{name: "unknown variable", fixture: "bad_unknown_var.toml", line: 5, msg: `map has no entry for key "shaa"`},
		{
			name: "unterminated string at end of file",
			src:  "[api.docker]\ntag = \"r/api:1",
			line: 2,
			msg:  "unterminated string",
		},
		{
			name: "comparison with and",
			src:  "[a.helm]\nchart = \"a\"\n{{ if .git.branch == \"main\" && .repo.name == \"x\" }}{{ end }}\n",
			line: 3,
			msg:  `use {{ if eq .git.branch "master" }} instead of ==`,
		},
		{
			name: "comparison in parentheses",
			src:  "{{ if and (.git.branch != \"main\") true }}{{ end }}",
			line: 1,
			msg:  `use {{ if ne .git.branch "master" }} instead of !=`,
		},
		{name: "template syntax", src: "\n{{ if }}{{ end }}", line: 2, msg: "template: missing value for if"},
		{name: "range", src: "\n\n{{ range 1000000000 }}{{ end }}", line: 3, msg: "range is not supported"},
		{name: "define", src: "{{ define \"x\" }}[a]{{ end }}", line: 1, msg: "define and block are not supported"},
		{name: "template call", src: "{{ template \"x\" }}", line: 1, msg: "template and block are not supported"},
		{name: "huge printf width", src: "{{ printf \"%999999999d\" 1 }}", line: 1, msg: "printf width or precision is larger than 256"},
		{
			name: "doubling string",
			src:  "{{ $x := printf \"%200s\" \"\" }}" + strings.Repeat("{{ $x = print $x $x }}", 20),
			line: 1,
			msg:  "template builds more than 1048576 bytes",
		},
		{
			// The false condition removes three lines from the rendered
			// file; the error still names the template's line.
			name: "line after a false condition",
			src:  "{{ if eq .git.branch \"main\" }}\n[a.helm]\nchart = \"a\"\n{{ end }}\n[b.helm]\nchart = \"/abs\"\n",
			line: 6,
			msg:  "b.helm.chart",
		},
		{
			name: "line after a multi-line action",
			src:  "{{ if\n  .git.branch == \"master\" }}\n[b.helm]\nchart = \"/abs\"\n{{ end }}",
			line: 4,
			msg:  "b.helm.chart",
		},
		{name: "image tag uppercase", src: "[a.docker]\ntag = \"Registry/App:1\"\n", line: 2, msg: `a.docker.tag: "Registry/App:1" is not an image reference`},
		{name: "image without tag", src: "[a.docker]\ntag = \"registry/app\"\n", line: 2, msg: "is not an image reference with a tag"},
		{name: "image with digest", src: "[a.docker]\ntag = \"app:1@sha256:abc\"\n", line: 2, msg: "is not an image reference"},
		{name: "wrong type", src: "[a.docker]\ntag = \"a:1\"\npush = \"yes\"\n", line: 3, msg: `a.docker.push: want true or false, got string "yes"`},
		{name: "unit named docker", src: "[docker]\ntag = \"a:1\"\n", line: 1, msg: "docker is an action, not a unit"},
		{name: "array of docker tables in unit", src: "[[a.docker]]\ntag = \"a:1\"\n", line: 1, msg: "a.docker: want a table such as [a.docker], got array of tables"},
		{name: "no actions", src: "[a]\npaths = [\"x\"]\n", line: 1, msg: "unit a has no actions"},
		{name: "top-level value", src: "a = 1\n", line: 1, msg: "a: want a unit table such as [a], got integer 1"},
		{name: "values directory", src: "[a.helm]\nchart = \"c\"\nvalues = [\"c/v.yaml\", \"./\"]\n", line: 3, msg: `a.helm.values: "./": path names a directory`},
		{name: "backslash", src: "[a.docker]\ntag = \"a:1\"\ndockerfile = 'build\\Dockerfile'\n", line: 3, msg: "not \\"},
		{name: "dockerfile outside directory", src: "[a.docker]\ntag = \"a:1\"\ndirectory = \"a\"\ndockerfile = \"../Dockerfile\"\n", line: 4, msg: "path leaves the repository"},
		{name: "path pattern outside", src: "[a]\npaths = [\"../x/**\"]\nhelm.chart = \"c\"\n", line: 2, msg: `pattern must not contain ".."`},
		{name: "bad branch pattern", src: "[a]\nbranches = [\"feat**\"]\nhelm.chart = \"c\"\n", line: 2, msg: "** must be a whole path segment"},
		{name: "malformed pattern", src: "[a]\nbranches = [\"[a-\"]\nhelm.chart = \"c\"\n", line: 2, msg: "pattern is malformed"},
		{name: "namespace", src: "[a.helm]\nchart = \"c\"\nnamespace = \"Prod\"\n", line: 3, msg: `"Prod" is not a valid namespace`},
		{name: "release", src: "[a.helm]\nchart = \"c\"\nrelease = \"my_release\"\n", line: 3, msg: `"my_release" is not a valid release name`},
		{name: "missing chart", src: "[a.helm]\nnamespace = \"x\"\n", line: 1, msg: "a.helm: chart is required"},
		{name: "timeout syntax", src: "[a.helm]\nchart = \"c\"\ntimeout = \"5 minutes\"\n", line: 3, msg: "is not a duration"},
		{name: "zero timeout", src: "[a.helm]\nchart = \"c\"\ntimeout = \"0s\"\n", line: 3, msg: "out of range"},
		{name: "set twice", src: "[a.helm]\nchart = \"c\"\nset = { \"x.y\" = \"1\", x = { y = \"2\" } }\n", line: 3, msg: `"x.y" is set twice`},
		{name: "set array", src: "[a.helm]\nchart = \"c\"\nset.list = [1, 2]\n", line: 3, msg: "want a string, number or boolean, got array"},
		{
			name: "unknown key in second original docker table",
			src:  "[a]\n[[docker]]\ntag = \"a:1\"\n[b]\n[[docker]]\ntag = \"b:1\"\nfoo = 1\n[[helm]]\nchart = \"c\"\n",
			line: 7,
			msg:  "b.docker.foo: unknown key",
		},
		{
			name: "deep nesting",
			src:  "a = " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n",
			line: 1,
			msg:  "nested more than 16 deep",
		},
		{
			name: "long key",
			src:  "\n" + strings.Repeat("a.", 10000) + "b = 1\n",
			line: 2,
			msg:  "has more than 16 parts",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := []byte(tt.src)
			if tt.fixture != "" {
				src = readFixture(t, tt.fixture)
			}
			vars := tt.vars
			if vars == (Vars{}) {
				vars = masterVars
			}
			_, err := Parse(src, vars)
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse() error = %v, want an *Error", err)
			}
			if perr.File != FileName || perr.Line != tt.line || !strings.Contains(perr.Msg, tt.msg) {
				t.Errorf("Parse() error = %q, want %s:%d: ...%s...", perr, FileName, tt.line, tt.msg)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	tests := []struct {
		name string
		src  string
	}{
		{"file", strings.Repeat("# padding\n", MaxFileSize/10+1)},
		{"rendered", "{{ $x := printf \"%256s\" \"\" }}" + strings.Repeat("{{ $x }}", MaxRenderedSize/256+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), masterVars)
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("Parse() error = %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	src := "[a.docker]\ntag = \"A:1\"\ndirectory = \"/x\"\n[b.helm]\nchart = \"../c\"\n"
	_, err := Parse([]byte(src), masterVars)
	if err == nil {
		t.Fatal("Parse() error = nil")
	}
	want := FileName + `:2: a.docker.tag: "A:1" is not an image reference with a tag: want [registry/]repository:tag with a lowercase repository
` + FileName + `:3: a.docker.directory: "/x": path must be relative to the repository root, not absolute
` + FileName + `:5: b.helm.chart: "../c": path leaves the repository`
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("Parse() error mismatch (-want +got):\n%s", diff)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{File: FileName, Line: 5, Msg: "unterminated string"}, "kube-git-deploy.toml:5: unterminated string"},
		{&Error{File: FileName, Msg: "too large"}, "kube-git-deploy.toml: too large"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestVarsShortSHA(t *testing.T) {
	tests := []struct{ sha, want string }{
		{testSHA, "0123456"},
		{"abc", "abc"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := (Vars{SHA: tt.sha}).ShortSHA(); got != tt.want {
			t.Errorf("Vars{SHA: %q}.ShortSHA() = %q, want %q", tt.sha, got, tt.want)
		}
	}
}
