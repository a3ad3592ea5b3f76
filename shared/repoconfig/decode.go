package repoconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Defaults and bounds of the actions' fields.
const (
	defaultDirectory  = "."
	defaultDockerfile = "Dockerfile"
	defaultTimeout    = 5 * time.Minute
	maxTimeout        = time.Hour // Also in the message of the check.
)

// The actions a unit may have, which are also the names of the original's
// [[docker]] and [[helm]] arrays of tables.
const (
	actionDocker = "docker"
	actionHelm   = "helm"
)

var (
	// unitNameRE: a unit name is a DNS label, as it is the default Helm
	// release name; maxUnitName is Helm's limit on release names.
	unitNameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	maxUnitName = 53
	// releaseRE is Helm's rule for release names (at most 53 characters).
	releaseRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// namespaceRE is Kubernetes' rule for namespaces (at most 63
	// characters).
	namespaceRE = unitNameRE
	// imageRE is an image reference with a tag, after the grammar of
	// github.com/distribution/reference: [host[:port]/]path:tag, where the
	// path is lowercase. Digests are not allowed: a build cannot produce a
	// given digest.
	imageRE = regexp.MustCompile(`^` +
		`(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?` +
		`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*` +
		`:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// decode parses the rendered TOML text and validates it into a Config.
// lines maps the text's lines to the template's, for errors.
func decode(text string, lines lineMap) (*Config, error) {
	newlines := newLineIndex(text)
	positions, serr := scanKeys(text)
	if serr != nil {
		return nil, &Error{File: FileName, Line: lines.source(newlines.line(serr.off)), Msg: serr.msg}
	}
	var doc map[string]any
	md, err := toml.Decode(text, &doc)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, &Error{File: FileName, Line: lines.source(perr.Position.Line), Msg: tomlMessage(perr.Message), Err: err}
		}
		return nil, &Error{File: FileName, Msg: err.Error(), Err: err}
	}
	d := &decoder{
		doc:  doc,
		keys: md.Keys(),
		cfg:  &Config{lines: make(map[string]int)},
	}
	d.locate(positions, newlines, lines)
	return d.config()
}

// tomlMessage rewords the TOML parser's messages where they are unclear.
func tomlMessage(msg string) string {
	switch {
	case msg == "strings cannot contain newlines":
		return `unterminated string: the closing quote is missing (a string cannot span lines; use """ for multi-line strings)`
	case strings.HasPrefix(msg, "unexpected EOF; expected '\"") || strings.HasPrefix(msg, "unexpected EOF; expected '''"):
		return "unterminated string: the file ends before the closing quote"
	}
	return msg
}

// decoder turns the decoded document into a Config, collecting problems.
type decoder struct {
	doc  map[string]any
	keys []toml.Key // in document order
	// lines[i] is the line of keys[i]; nil if unknown.
	lines []int
	// index maps the first indexDepth parts of each key, as a dotted TOML
	// key, to the (ascending) indices of the keys starting with them.
	index map[string][]int
	errs  errorList
	cfg   *Config
}

// indexDepth is the longest key prefix a line is looked up by: unit,
// action, field and one more part.
const indexDepth = 4

// locate gives the keys their lines, if the scanner found the same keys as
// the TOML parser.
func (d *decoder) locate(positions []keyPos, newlines lineIndex, lines lineMap) {
	if len(positions) != len(d.keys) {
		return
	}
	for i, k := range d.keys {
		if !slices.Equal(positions[i].key, k) {
			return
		}
	}
	d.lines = make([]int, len(d.keys))
	d.index = make(map[string][]int)
	for i, k := range d.keys {
		d.lines[i] = lines.source(newlines.line(positions[i].off))
		for n := 1; n <= min(len(k), indexDepth); n++ {
			p := k[:n].String()
			d.index[p] = append(d.index[p], i)
		}
	}
}

// scope is a table of the document: the path of its keys and the range of
// d.keys that holds them. The range matters for the original's [[docker]]
// tables, which all have the path "docker".
type scope struct {
	path     []string
	from, to int
}

// line returns the line of the first key of sc under sub, falling back to
// shorter paths (ultimately the table itself); 0 if unknown.
func (d *decoder) line(sc scope, sub ...string) int {
	if d.lines == nil {
		return 0
	}
	for n := len(sub); n >= 0; n-- {
		p := join(sc.path, sub[:n])
		if len(p) > indexDepth {
			continue
		}
		list := d.index[toml.Key(p).String()]
		if j := sort.SearchInts(list, sc.from); j < len(list) && list[j] < sc.to {
			return d.lines[list[j]]
		}
	}
	return 0
}

// action is a docker or helm table and where it is.
type action struct {
	table map[string]any
	scope scope
}

// config builds the Config: it finds the units in order, attaches the
// original's [[docker]] and [[helm]] tables to them and validates each.
func (d *decoder) config() (*Config, error) {
	// Walk the keys in document order. Every key that does not start with
	// docker or helm belongs to a unit and makes it the current one; each
	// [[docker]] or [[helm]] header belongs to the current unit.
	var names []string
	seen := make(map[string]bool)
	type header struct {
		unit  string
		index int
	}
	headers := make(map[string][]header)
	current := ""
	for i, k := range d.keys {
		switch k[0] {
		case actionDocker, actionHelm:
			if _, isArray := d.doc[k[0]].([]map[string]any); isArray && len(k) == 1 {
				headers[k[0]] = append(headers[k[0]], header{current, i})
			}
			continue
		}
		if !seen[k[0]] {
			seen[k[0]] = true
			names = append(names, k[0])
		}
		current = k[0]
	}

	attached := make(map[[2]string][]action) // {unit, kind} → tables
	for _, kind := range []string{actionDocker, actionHelm} {
		v, ok := d.doc[kind]
		if !ok {
			continue
		}
		whole := scope{path: []string{kind}, to: len(d.keys)}
		tables, isArray := v.([]map[string]any)
		if !isArray || len(tables) != len(headers[kind]) {
			d.errs.add(d.line(whole), "%s is an action, not a unit: write [api.%s] for a unit named api, or [[%s]] after [api]",
				kind, kind, kind)
			continue
		}
		for j, t := range tables {
			h := headers[kind][j]
			sc := scope{path: []string{kind}, from: h.index, to: len(d.keys)}
			if j+1 < len(headers[kind]) {
				sc.to = headers[kind][j+1].index
			}
			if h.unit == "" {
				d.errs.add(d.line(sc), "[[%s]] comes before any unit: put a unit header such as [api] above it, or write [api.%s]",
					kind, kind)
				continue
			}
			key := [2]string{h.unit, kind}
			attached[key] = append(attached[key], action{t, sc})
		}
	}

	for _, name := range names {
		if u, ok := d.unit(name, attached); ok {
			d.cfg.Units = append(d.cfg.Units, u)
		}
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	return d.cfg, nil
}

// unit validates the unit table name with the actions attached to it.
func (d *decoder) unit(name string, attached map[[2]string][]action) (Unit, bool) {
	before := len(d.errs)
	sc := scope{path: []string{name}, to: len(d.keys)}
	m, isTable := d.doc[name].(map[string]any)
	if !isTable {
		d.errs.add(d.line(sc), "%s: want a unit table such as [%s], got %s", quoteKey(name), quoteKey(name), describe(d.doc[name]))
		return Unit{}, false
	}
	if !unitNameRE.MatchString(name) || len(name) > maxUnitName {
		d.errs.add(d.line(sc), "unit name %q is not valid: use at most %d lowercase letters, digits and '-', starting and ending with a letter or digit",
			name, maxUnitName)
	}
	t := table{d: d, m: m, sc: sc, name: quoteKey(name)}
	t.known(actionDocker, actionHelm, "paths", "branches")
	u := Unit{Name: name}
	u.Paths = t.patterns("paths", true)
	u.Branches = t.patterns("branches", false)

	actions := make(map[string][]action)
	for _, kind := range []string{actionDocker, actionHelm} {
		if v, ok := m[kind]; ok {
			asc := scope{path: []string{name, kind}, to: len(d.keys)}
			if at, isTable := v.(map[string]any); isTable {
				actions[kind] = append(actions[kind], action{at, asc})
			} else {
				d.errs.add(d.line(asc), "%s.%s: want a table such as [%s.%s], got %s", t.name, kind, t.name, kind, describe(v))
			}
		}
		actions[kind] = append(actions[kind], attached[[2]string{name, kind}]...)
		if as := actions[kind]; len(as) > 1 {
			slices.SortStableFunc(as, func(a, b action) int { return d.line(a.scope) - d.line(b.scope) })
			d.errs.add(d.line(as[1].scope), "unit %s has more than one %s action (the first is on line %d)",
				t.name, kind, d.line(as[0].scope))
		}
	}
	if as := actions[actionDocker]; len(as) > 0 {
		u.Docker = d.docker(t.name, as[0])
	}
	if as := actions[actionHelm]; len(as) > 0 {
		u.Helm = d.helm(name, t.name, as[0])
	}
	if len(actions[actionDocker])+len(actions[actionHelm]) == 0 && len(d.errs) == before {
		d.errs.add(d.line(sc), "unit %s has no actions: add [%s.docker] or [%s.helm]", t.name, t.name, t.name)
	}
	return u, len(d.errs) == before
}

// docker validates a docker action of unit (quoted as a key).
func (d *decoder) docker(unit string, a action) *Docker {
	before := len(d.errs)
	t := table{d: d, m: a.table, sc: a.scope, name: unit + "." + actionDocker}
	t.known("directory", "dockerfile", "tag", "args", "target", "push")
	dk := &Docker{
		Directory:  t.localPath("directory", defaultDirectory, true),
		Dockerfile: t.localPath("dockerfile", defaultDockerfile, false),
		Args:       t.scalars("args", false),
		Target:     t.str("target", ""),
		Push:       t.boolean("push", true),
	}
	if tag, ok := t.required("tag", fmt.Sprintf(`tag = "registry.example.com/%s:{{ .git.sha }}"`, unit)); ok {
		if len(tag) > 255 || !imageRE.MatchString(tag) {
			t.errorf("tag", "%q is not an image reference with a tag: want [registry/]repository:tag with a lowercase repository",
				truncate(tag))
		}
		dk.Tag = tag
	}
	t.recordLines("directory", "dockerfile")
	if len(d.errs) > before {
		return nil
	}
	return dk
}

// helm validates a helm action of the unit called name (unit when quoted
// as a key).
func (d *decoder) helm(name, unit string, a action) *Helm {
	before := len(d.errs)
	t := table{d: d, m: a.table, sc: a.scope, name: unit + "." + actionHelm}
	t.known("chart", "release", "namespace", "values", "set", "wait", "timeout", "atomic")
	h := &Helm{
		Release:   t.str("release", name),
		Namespace: t.str("namespace", ""),
		Set:       t.scalars("set", true),
		Wait:      t.boolean("wait", true),
		Atomic:    t.boolean("atomic", false),
		Timeout:   defaultTimeout,
	}
	if chart, ok := t.required("chart", fmt.Sprintf(`chart = "%s/deploy"`, name)); ok {
		h.Chart = t.cleanPath("chart", chart, true)
	}
	if _, ok := a.table["release"]; ok && (!releaseRE.MatchString(h.Release) || len(h.Release) > 53) {
		t.errorf("release", "%q is not a valid release name: use at most 53 lowercase letters, digits, '-' and '.'",
			truncate(h.Release))
	}
	if _, ok := a.table["namespace"]; ok && (!namespaceRE.MatchString(h.Namespace) || len(h.Namespace) > 63) {
		t.errorf("namespace", "%q is not a valid namespace: use at most 63 lowercase letters, digits and '-'",
			truncate(h.Namespace))
	}
	for _, v := range t.strings("values") {
		if c := t.cleanPath("values", v, false); c != "" {
			h.Values = append(h.Values, c)
		}
	}
	if s, ok := t.lookupStr("timeout"); ok {
		switch dur, err := time.ParseDuration(s); {
		case err != nil:
			t.errorf("timeout", `%q is not a duration such as "5m" or "90s"`, truncate(s))
		case dur <= 0 || dur > maxTimeout:
			t.errorf("timeout", "%s is out of range: want more than 0s and at most 1h", s)
		default:
			h.Timeout = dur
		}
	}
	t.recordLines("chart", "values")
	if len(d.errs) > before {
		return nil
	}
	return h
}

// table reads the fields of one table of the document.
type table struct {
	d    *decoder
	m    map[string]any
	sc   scope
	name string // the table's logical key for messages, e.g. "api.docker"
}

// errorf records a problem with field key ("" for the table itself).
func (t table) errorf(key, format string, args ...any) {
	name := t.name
	var sub []string
	if key != "" {
		name += "." + quoteKey(key)
		sub = []string{key}
	}
	t.d.errs.add(t.d.line(t.sc, sub...), "%s: %s", name, fmt.Sprintf(format, args...))
}

// known records every key of the table not in keys as unknown.
func (t table) known(keys ...string) {
	for _, k := range slices.Sorted(maps.Keys(t.m)) {
		if !slices.Contains(keys, k) {
			t.errorf(k, "unknown key (%s has %s)", t.name, strings.Join(keys, ", "))
		}
	}
}

// recordLines remembers the lines of the fields CheckFiles may complain
// about.
func (t table) recordLines(keys ...string) {
	for _, k := range keys {
		t.d.cfg.lines[t.name+"."+k] = t.d.line(t.sc, k)
	}
}

// lookupStr returns the string field key; ok is false if it is absent or
// not a string, which is a problem.
func (t table) lookupStr(key string) (s string, ok bool) {
	v, present := t.m[key]
	if !present {
		return "", false
	}
	if s, ok = v.(string); !ok {
		t.errorf(key, "want a string, got %s", describe(v))
	}
	return s, ok
}

// str returns the string field key, or def if it is absent.
func (t table) str(key, def string) string {
	if s, ok := t.lookupStr(key); ok {
		return s
	}
	return def
}

// required returns the string field key, which must be present; example
// shows how to set it.
func (t table) required(key, example string) (string, bool) {
	if _, ok := t.m[key]; !ok {
		t.errorf("", "%s is required, e.g. %s", key, example)
		return "", false
	}
	return t.lookupStr(key)
}

// boolean returns the boolean field key, or def if it is absent.
func (t table) boolean(key string, def bool) bool {
	v, ok := t.m[key]
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		t.errorf(key, "want true or false, got %s", describe(v))
		return def
	}
	return b
}

// strings returns the array of strings field key, nil if absent or empty.
func (t table) strings(key string) []string {
	v, ok := t.m[key]
	if !ok {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		t.errorf(key, "want an array of strings, got %s", describe(v))
		return nil
	}
	var out []string
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			t.errorf(key, "element %d: want a string, got %s", i+1, describe(e))
			continue
		}
		out = append(out, s)
	}
	return out
}

// patterns returns the glob patterns of field key: paths of repository
// files (cleaned) or branch names.
func (t table) patterns(key string, files bool) []string {
	var out []string
	for _, p := range t.strings(key) {
		var err error
		if files {
			p, err = cleanPathPattern(p)
		} else {
			err = checkPattern(p)
		}
		if err != nil {
			t.errorf(key, "%q: %v", truncate(p), err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// scalars returns the table field key of strings, numbers and booleans as
// strings; nil if absent or empty. With flatten, nested tables add their
// keys joined by dots.
func (t table) scalars(key string, flatten bool) map[string]string {
	v, ok := t.m[key]
	if !ok {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.errorf(key, "want a table, got %s", describe(v))
		return nil
	}
	out := make(map[string]string)
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			name := prefix + k
			if k == "" || strings.Contains(k, "=") {
				t.errorf(key, "%q is not a valid name", truncate(name))
				continue
			}
			var s string
			switch v := m[k].(type) {
			case string:
				s = v
			case int64:
				s = strconv.FormatInt(v, 10)
			case float64:
				s = strconv.FormatFloat(v, 'g', -1, 64)
			case bool:
				s = strconv.FormatBool(v)
			case map[string]any:
				if flatten {
					walk(name+".", v)
					continue
				}
				t.errorf(key, "%q: want a string, number or boolean, got %s", truncate(name), describe(v))
				continue
			default:
				t.errorf(key, "%q: want a string, number or boolean, got %s", truncate(name), describe(v))
				continue
			}
			if _, dup := out[name]; dup {
				t.errorf(key, "%q is set twice", truncate(name))
				continue
			}
			out[name] = s
		}
	}
	walk("", m)
	if len(out) == 0 {
		return nil
	}
	return out
}

// localPath returns the path field key cleaned, def if it is absent. dir
// reports whether the path may name a directory, and so be ".".
func (t table) localPath(key, def string, dir bool) string {
	s, ok := t.lookupStr(key)
	if !ok {
		return def
	}
	if c := t.cleanPath(key, s, dir); c != "" {
		return c
	}
	return def
}

// cleanPath returns the path p of field key cleaned, "" if it is not a
// path inside the repository, which is a problem.
func (t table) cleanPath(key, p string, dir bool) string {
	c, err := cleanLocalPath(p, dir)
	if err != nil {
		t.errorf(key, "%q: %v", truncate(p), err)
		return ""
	}
	return c
}

// cleanLocalPath checks that p is a slash-separated path inside the
// repository and returns it cleaned. dir reports whether p may be ".".
func cleanLocalPath(p string, dir bool) (string, error) {
	switch {
	case p == "":
		return "", errors.New("path is empty")
	case strings.Contains(p, `\`):
		return "", errors.New(`path must use / as separator, not \`)
	case strings.ContainsRune(p, 0):
		return "", errors.New("path must not contain NUL")
	case path.IsAbs(p):
		return "", errors.New("path must be relative to the repository root, not absolute")
	}
	c := path.Clean(p)
	switch {
	case c == ".." || strings.HasPrefix(c, "../"):
		return "", errors.New("path leaves the repository")
	case c == "." && !dir:
		return "", errors.New("path names a directory, want a file")
	case !fs.ValidPath(c):
		return "", errors.New("path is not valid")
	}
	return c, nil
}

// describe names the TOML type of a decoded value, with the value if short.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", truncate(v))
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %t", v)
	case time.Time:
		return "date-time"
	case []any:
		return "array"
	case []map[string]any:
		return "array of tables"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// truncate shortens s for an error message.
func truncate(s string) string {
	const n = 100
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// quoteKey writes a key part as TOML would: bare if it can be.
func quoteKey(k string) string {
	return toml.Key{k}.String()
}
