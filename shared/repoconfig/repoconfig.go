package repoconfig

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"time"
)

// FileName is the name of the configuration file at the repository root.
const FileName = "kube-git-deploy.toml"

// Limits on the file and on what its template may produce. A real file is a
// few kilobytes; the limits only stop a hostile file from exhausting the
// runner's memory.
const (
	// MaxFileSize is the largest file Parse accepts, in bytes (256 KiB).
	MaxFileSize = 256 << 10
	// MaxRenderedSize is the largest rendered file, in bytes (1 MiB). It also
	// caps the total size of the strings template functions may build.
	MaxRenderedSize = 1 << 20
)

// ErrTooLarge is wrapped by the *Error that Parse returns when the file, or
// the file rendered from its template, exceeds its size limit.
var ErrTooLarge = errors.New("too large")

// Vars are the values a kube-git-deploy.toml template can use. Each field is
// named after its template key.
type Vars struct {
	// SHA is the full commit SHA: {{ .git.sha }}. Its first 7 characters are
	// {{ .git.shortSha }}.
	SHA string
	// Branch is the pushed branch, without "refs/heads/": {{ .git.branch }}.
	// It is empty for a tag push.
	Branch string
	// Tag is the pushed tag, without "refs/tags/": {{ .git.tag }}. It is
	// empty for a branch push.
	Tag string
	// Ref is the full pushed ref, e.g. "refs/heads/main": {{ .git.ref }}.
	Ref string
	// Owner is the repository owner: {{ .repo.owner }}.
	Owner string
	// Name is the repository name: {{ .repo.name }}.
	Name string
}

// ShortSHA returns the first 7 characters of the commit SHA, or all of it if
// it is shorter.
func (v Vars) ShortSHA() string {
	if len(v.SHA) > 7 {
		return v.SHA[:7]
	}
	return v.SHA
}

// data returns the template data: maps, so that the dotted keys of the
// original (.git.sha) work and a misspelt key is an error.
func (v Vars) data() map[string]map[string]string {
	return map[string]map[string]string{
		"git": {
			"sha":      v.SHA,
			"shortSha": v.ShortSHA(),
			"branch":   v.Branch,
			"tag":      v.Tag,
			"ref":      v.Ref,
		},
		"repo": {
			"owner": v.Owner,
			"name":  v.Name,
		},
	}
}

// Config is a parsed kube-git-deploy.toml. It also remembers the lines of
// the paths it names, for CheckFiles: compare Configs by their Units.
type Config struct {
	// Units are the file's units in the order they first appear. A file that
	// renders to no units at all is valid and has none.
	Units []Unit

	// lines maps "unit.action.field" to the source line the field (or, for
	// a default, its action) is on, so CheckFiles can name it.
	lines map[string]int
}

// Unit is something to build and deploy: a TOML table with an optional
// docker action and an optional helm action, at least one of them set.
// Docker runs before helm.
type Unit struct {
	// Name is the table name, a DNS label of at most 53 characters.
	Name string
	// Docker builds (and pushes) an image; nil if the unit has none.
	Docker *Docker
	// Helm deploys a chart; nil if the unit has none.
	Helm *Helm
	// Paths are glob patterns of repository files; the unit is built only
	// when a changed file matches one. Empty means always. See MatchesPaths.
	Paths []string
	// Branches are glob patterns of branch names the unit is built for.
	// Empty means every branch. See MatchesBranch.
	Branches []string
}

// Docker is a unit's image build. Paths are clean, slash-separated and
// relative to the repository root unless noted.
type Docker struct {
	// Directory is the build context; "." by default.
	Directory string
	// Dockerfile is the Dockerfile's path relative to Directory;
	// "Dockerfile" by default. It cannot leave Directory.
	Dockerfile string
	// Tag is the image reference to build and push, including its tag,
	// e.g. "registry.example.com/team/api:0123abc".
	Tag string
	// Args are build arguments (docker build --build-arg).
	Args map[string]string
	// Target is the build stage to stop at; empty means the last stage.
	Target string
	// Push reports whether to push the image after building it; true by
	// default.
	Push bool
}

// DockerfilePath returns the Dockerfile's path relative to the repository
// root.
func (d Docker) DockerfilePath() string {
	return path.Join(d.Directory, d.Dockerfile)
}

// Helm is a unit's chart deployment (helm upgrade --install).
type Helm struct {
	// Chart is the chart directory, relative to the repository root.
	Chart string
	// Release is the release name; the unit name by default.
	Release string
	// Namespace is the namespace to deploy to; empty when the file names
	// none: the repository's own namespace (the first of its deploy
	// policy's namespaces) then.
	Namespace string
	// Values are values files relative to the repository root, applied in
	// order (helm --values).
	Values []string
	// Set are values set on the command line (helm --set); nested TOML
	// tables are flattened with dots, so {image = {tag = "x"}} is
	// "image.tag".
	Set map[string]string
	// Wait reports whether to wait for the release's resources to be ready;
	// true by default.
	Wait bool
	// Timeout bounds the deployment; 5 minutes by default, at most an hour.
	Timeout time.Duration
	// Atomic reports whether to roll back a failed upgrade; false by
	// default.
	Atomic bool
}

// MatchesBranch reports whether the unit is built for branch: true if
// Branches is empty or branch matches one of its patterns.
//
// Patterns use path.Match syntax and are matched segment by segment, so "*"
// does not match a slash ("release/*" matches "release/1.0" but not
// "release/1.0/hotfix"); a "**" segment matches any number of segments
// ("feature/**"). A tag push has no branch: it matches only a unit with no
// branch patterns or a "**" pattern.
func (u Unit) MatchesBranch(branch string) bool {
	if len(u.Branches) == 0 {
		return true
	}
	for _, p := range u.Branches {
		if match(p, branch) {
			return true
		}
	}
	return false
}

// MatchesPaths reports whether the unit is built when the files changed are
// changed (slash-separated paths relative to the repository root): true if
// Paths is empty or a changed file matches one of its patterns.
//
// Patterns use the syntax of MatchesBranch: "api/*.go" matches Go files
// directly in api, "api/**" every file below api and "**/*.md" Markdown
// files anywhere. A caller that does not know which files changed (the first
// push of a branch, a forced push) should build every unit rather than pass
// an empty list, which matches no pattern.
func (u Unit) MatchesPaths(changed []string) bool {
	if len(u.Paths) == 0 {
		return true
	}
	for _, name := range changed {
		for _, p := range u.Paths {
			if match(p, name) {
				return true
			}
		}
	}
	return false
}

// Error is a problem in a kube-git-deploy.toml: its template, its TOML
// syntax, its contents or, from CheckFiles, the files it names. Parse and
// CheckFiles return an *Error, or several joined with errors.Join (use
// errors.As to get the first).
type Error struct {
	// File is the file's name, FileName.
	File string
	// Line is the line of the file the problem is on, counting from 1;
	// 0 when the problem has no line (e.g. the file is too large).
	Line int
	// Msg describes the problem.
	Msg string
	// Err is the underlying error, if any, such as ErrTooLarge or
	// fs.ErrNotExist.
	Err error
}

// Error returns the problem as "file:line: message", or "file: message"
// without a line.
func (e *Error) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.File + ": " + e.Msg
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// maxErrors is how many problems one error reports; more are summarised.
const maxErrors = 20

// errorList collects the problems found in one file.
type errorList []*Error

// add records a problem on line.
func (l *errorList) add(line int, format string, args ...any) {
	*l = append(*l, &Error{File: FileName, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil, the only problem, or the problems joined in line order.
func (l errorList) err() error {
	switch len(l) {
	case 0:
		return nil
	case 1:
		return l[0]
	}
	sorted := make([]*Error, len(l))
	copy(sorted, l)
	slices.SortStableFunc(sorted, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, 0, min(len(sorted), maxErrors)+1)
	for _, e := range sorted[:min(len(sorted), maxErrors)] {
		errs = append(errs, e)
	}
	if n := len(sorted) - maxErrors; n > 0 {
		errs = append(errs, &Error{File: FileName, Msg: fmt.Sprintf("and %d more problems", n)})
	}
	return errors.Join(errs...)
}

// Parse renders src, the contents of a kube-git-deploy.toml, as a template
// with vars, then parses and validates the result. Every problem is an
// *Error naming the line of src it is on.
func Parse(src []byte, vars Vars) (*Config, error) {
	if len(src) > MaxFileSize {
		return nil, &Error{
			File: FileName,
			Msg:  fmt.Sprintf("file is %d bytes, more than the limit of %d", len(src), MaxFileSize),
			Err:  ErrTooLarge,
		}
	}
	text, lines, err := render(string(src), vars)
	if err != nil {
		return nil, err
	}
	return decode(text, lines)
}
