// Package repoconfig reads kube-git-deploy.toml, the file at the root of a
// tracked repository that says what to build and deploy on a push.
//
// # Units and actions
//
// The file is a TOML document whose tables are units: things to build and
// deploy. A unit has a docker action, which builds and pushes an image, a
// helm action, which deploys a chart, or both; docker runs first.
//
//	[api]
//	paths = ["api/**"]            # build only when a file under api/ changed
//	branches = ["main", "release/*"]
//
//	[api.docker]
//	directory = "api"             # build context; default "."
//	dockerfile = "Dockerfile"     # relative to directory; default "Dockerfile"
//	tag = "registry.example.com/api:{{ .git.sha }}"   # required
//	target = "production"         # build stage; default the last one
//	push = true                   # default true
//
//	[api.docker.args]             # build arguments
//	GO_VERSION = "1.26"
//
//	[api.helm]
//	chart = "api/deploy"          # chart directory; required
//	release = "api"               # default the unit name
//	namespace = "web"             # default: the repository's own (its deploy policy's first)
//	values = ["api/deploy/production.yaml"]
//	wait = true                   # default true
//	timeout = "10m"               # default "5m", at most "1h"
//	atomic = true                 # roll back a failed upgrade; default false
//
//	[api.helm.set]                # helm --set; nested tables join with dots
//	image.tag = "{{ .git.sha }}"
//
// An action can also be an inline table: docker = { tag = "..." }.
//
// Unit names are DNS labels of at most 53 characters (lowercase letters,
// digits and '-'), because a unit name is the default Helm release name.
// Units keep the order of the file. Unknown keys are errors.
//
// All paths are relative to the repository root (the Dockerfile to the
// build directory), use forward slashes and must stay inside the
// repository: absolute paths, backslashes and paths that leave through
// ".." are errors. Paths are stored cleaned: "./api/" is "api".
//
// # The original form
//
// The original kube-git-deploy documented units as a table followed by
// [[docker]] and [[helm]]:
//
//	[api]
//	[[docker]]
//	directory = "./api"
//	tag = "noahhuppert/example-api:{{ .git.sha }}"
//	[[helm]]
//	chart = "./api/deploy"
//
// In TOML these are top-level arrays of tables named docker and helm, not
// part of api. They are accepted all the same: each [[docker]] or [[helm]]
// belongs to the unit of the table header (or key) above it, found from
// the key order the TOML parser keeps. One before any unit is an error, as
// is a second docker or helm action for a unit, in either form. Keys after
// a [[docker]] belong to that action, so the unit's own keys (paths,
// branches) go above it.
//
// # Filters
//
// paths and branches are glob patterns with the syntax of path.Match,
// matched one slash-separated segment at a time: "*" does not cross a
// slash, and a "**" segment matches any number of segments ("api/**",
// "**/*.go", "feature/**"). A unit with no paths is built whatever changed;
// one with no branches is built for every branch. See Unit.MatchesPaths and
// Unit.MatchesBranch.
//
// # Templates
//
// Before it is parsed as TOML the whole file is rendered as a Go
// text/template with this data:
//
//	.git.sha       the full commit SHA
//	.git.shortSha  its first 7 characters
//	.git.branch    the branch pushed ("" for a tag)
//	.git.tag       the tag pushed ("" for a branch)
//	.git.ref       the full ref, e.g. refs/heads/main
//	.repo.owner    the repository owner
//	.repo.name     the repository name
//
// A misspelt name such as .git.shaa is an error. Sections can be
// conditional:
//
//	{{ if eq .git.branch "main" }}
//	[api]
//	...
//	{{ end }}
//
// A unit whose section renders to nothing does not exist, and a file that
// renders to no units at all is valid: there is nothing to do.
//
// The original documentation's {{ if .git.branch == "master" }} is not Go
// template syntax, but a single comparison with == or != after if, else if
// or with (or alone) is rewritten to eq or ne; anything more complex is an
// error that shows the form to use, such as
// {{ if and (eq .git.branch "main") (ne .repo.name "test") }}.
//
// The template may use if, else, with, variables and the builtin functions.
// range, define, template and block are not allowed, so that a file cannot
// make the runner loop.
//
// # Limits and errors
//
// The file may be at most 256 KiB and render to at most 1 MiB (ErrTooLarge);
// keys may have at most 16 parts, arrays and inline tables may be nested at
// most 16 deep and the file may have at most 50,000 keys.
//
// Parse and Config.CheckFiles report problems as *Error values that name
// the file, the line of the template the problem is on and the cause:
//
//	kube-git-deploy.toml:5: unterminated string: the closing quote is missing (...)
//	kube-git-deploy.toml:3: api.docker.directory: "../../etc": path leaves the repository
package repoconfig
