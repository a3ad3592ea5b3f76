package repoconfig

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// templateVars lists the template data, for error messages.
const templateVars = ".git.sha, .git.shortSha, .git.branch, .git.tag, .git.ref, .repo.owner, .repo.name"

// errOutputTooLarge is returned by renderWriter once the output exceeds
// MaxRenderedSize; text/template returns writer errors unwrapped.
var errOutputTooLarge = errors.New("rendered output too large")

// render executes src as a text/template with vars and returns the rendered
// text and where its lines came from in src.
//
// A hostile template must not be able to make the runner loop, read files or
// exhaust memory. The template has no functions that reach outside it;
// range, define, template and block are rejected, so execution is linear in
// the size of src; the builtins that build strings are replaced by versions
// that share a budget of MaxRenderedSize bytes; and the output is capped at
// MaxRenderedSize.
func render(src string, vars Vars) (string, lineMap, error) {
	src, err := rewriteComparisons(src)
	if err != nil {
		return "", nil, err
	}
	b := &budget{left: MaxRenderedSize}
	t, err := template.New(FileName).Option("missingkey=error").Funcs(b.funcs()).Parse(src)
	if err != nil {
		return "", nil, templateError(err)
	}
	lines := newLineIndex(src)
	if err := checkTemplate(t, lines); err != nil {
		return "", nil, err
	}
	w := newRenderWriter(t, lines)
	if err := t.Execute(w, vars.data()); err != nil {
		if errors.Is(err, errOutputTooLarge) {
			return "", nil, &Error{
				File: FileName,
				Msg:  fmt.Sprintf("rendered file is larger than the limit of %d bytes", MaxRenderedSize),
				Err:  ErrTooLarge,
			}
		}
		return "", nil, templateError(err)
	}
	return w.buf.String(), w.lineMap(), nil
}

// checkTemplate rejects the actions that could loop or recurse: range,
// define, template and block.
func checkTemplate(t *template.Template, lines lineIndex) error {
	var errs errorList
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Tree.Root == nil {
			continue
		}
		if tt.Name() != FileName {
			errs.add(lines.line(int(tt.Tree.Root.Position())),
				"template: define and block are not supported (template %q)", tt.Name())
			continue
		}
		walkNodes(tt.Tree.Root, func(n parse.Node) {
			switch n := n.(type) {
			case *parse.RangeNode:
				errs.add(lines.line(int(n.Position())),
					"template: range is not supported; use if, else and with")
			case *parse.TemplateNode:
				errs.add(lines.line(int(n.Position())),
					"template: template and block are not supported (template %q)", n.Name)
			}
		})
	}
	return errs.err()
}

// walkNodes calls fn for n, which is not nil, and every node in the lists
// below it.
func walkNodes(n parse.Node, fn func(parse.Node)) {
	fn(n)
	switch n := n.(type) {
	case *parse.ListNode:
		for _, c := range n.Nodes {
			walkNodes(c, fn)
		}
	case *parse.IfNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, fn)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, fn)
	}
}

// walkBranch walks the lists of an if, with or range.
func walkBranch(n *parse.BranchNode, fn func(parse.Node)) {
	if n.List != nil {
		walkNodes(n.List, fn)
	}
	if n.ElseList != nil {
		walkNodes(n.ElseList, fn)
	}
}

// templateErrorRE splits text/template's errors, "template: NAME:LINE: msg"
// and "template: NAME:LINE:COL: executing "NAME" at <.x>: msg".
var templateErrorRE = regexp.MustCompile(`(?s)^template: [^:]*:(\d+):(?:\d+:)? (?:executing "[^"]*" at (<.*?>): )?(.*)$`)

// templateError turns a text/template error into an *Error with its line.
func templateError(err error) error {
	line, msg := 0, err.Error()
	if m := templateErrorRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[3]
		if m[2] != "" {
			msg = m[2] + ": " + msg
		}
	}
	if strings.Contains(msg, "map has no entry for key") {
		msg += " (the template can use " + templateVars + ")"
	}
	return &Error{File: FileName, Line: line, Msg: "template: " + msg, Err: err}
}

// lineIndex holds the offsets of the newlines of a text.
type lineIndex []int

func newLineIndex(s string) lineIndex {
	var idx lineIndex
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			idx = append(idx, i)
		}
	}
	return idx
}

// line returns the line, counting from 1, of byte offset off.
func (idx lineIndex) line(off int) int {
	return sort.SearchInts(idx, off) + 1
}

// lineMap maps rendered lines to template lines: lineMap[r-1] is the line of
// the template that rendered line r came from. A nil lineMap is the
// identity.
type lineMap []int

// source returns the template line of rendered line r, 0 if r is 0.
func (m lineMap) source(r int) int {
	switch {
	case r <= 0:
		return 0
	case len(m) == 0:
		return r
	case r <= len(m):
		return m[r-1]
	default:
		return m[len(m)-1] + r - len(m)
	}
}

// renderWriter collects the rendered text up to MaxRenderedSize and records
// which template line each rendered line came from.
//
// text/template writes a text node by passing the node's own byte slice to
// Write, so the writer recognises text nodes by their first byte's address
// and knows their position in the template. Output of actions is attributed
// to the template line of the text before it. Should text/template ever
// copy the text first, no node is recognised and lineMap returns nil: lines
// are then reported as rendered, which is only off where a condition removed
// lines.
type renderWriter struct {
	buf   strings.Builder
	text  map[*byte]int // first byte of a text node → its template line
	cur   int           // template line of the next byte
	start bool          // whether the next byte starts a rendered line
	known bool          // whether any text node was recognised
	lines lineMap
}

func newRenderWriter(t *template.Template, lines lineIndex) *renderWriter {
	w := &renderWriter{text: make(map[*byte]int), cur: 1, start: true}
	if t.Tree != nil && t.Tree.Root != nil {
		walkNodes(t.Tree.Root, func(n parse.Node) {
			if n, ok := n.(*parse.TextNode); ok && len(n.Text) > 0 {
				w.text[&n.Text[0]] = lines.line(int(n.Position()))
			}
		})
	}
	return w
}

// Write implements io.Writer.
func (w *renderWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if w.buf.Len()+len(p) > MaxRenderedSize {
		return 0, errOutputTooLarge
	}
	line, text := w.text[&p[0]]
	if text {
		w.cur, w.known = line, true
	}
	for _, c := range p {
		if w.start {
			w.lines = append(w.lines, w.cur)
			w.start = false
		}
		if c == '\n' {
			w.start = true
			if text {
				w.cur++
			}
		}
	}
	w.buf.Write(p)
	return len(p), nil
}

// lineMap returns the rendered-to-template line map, nil if unknown.
func (w *renderWriter) lineMap() lineMap {
	if !w.known {
		return nil
	}
	if w.start {
		// The line after a final newline, where an "unexpected EOF" is.
		return append(w.lines, w.cur)
	}
	return w.lines
}

// budget bounds the bytes that template functions may build in one
// execution. Without it a chain of {{ $x = print $x $x }} would double a
// string on every line.
type budget struct {
	left int
}

// maxPrintfWidth bounds printf widths and precisions, which would otherwise
// let "%999999999d" allocate a gigabyte before the budget sees the result.
const maxPrintfWidth = 256

// spend takes n bytes from the budget.
func (b *budget) spend(n int) error {
	if n > b.left {
		b.left = 0
		return fmt.Errorf("template builds more than %d bytes of text: %w", MaxRenderedSize, ErrTooLarge)
	}
	b.left -= n
	return nil
}

// funcs returns bounded replacements for the builtins that build strings.
// All other builtins (and, or, not, eq, ne, lt, le, gt, ge, len, index,
// slice, call) only compare or select.
func (b *budget) funcs() template.FuncMap {
	return template.FuncMap{
		"print": func(args ...any) (string, error) {
			if err := b.spend(printSize(args)); err != nil {
				return "", err
			}
			return fmt.Sprint(args...), nil
		},
		"println": func(args ...any) (string, error) {
			if err := b.spend(printSize(args) + 1); err != nil {
				return "", err
			}
			return fmt.Sprintln(args...), nil
		},
		"printf": func(format string, args ...any) (string, error) {
			n, err := printfSize(format, args)
			if err != nil {
				return "", err
			}
			if err := b.spend(n); err != nil {
				return "", err
			}
			s := fmt.Sprintf(format, args...)
			b.left += max(n-len(s), 0) // Refund the overestimate.
			return s, nil
		},
		"html":     b.escaper(template.HTMLEscaper, 6),
		"js":       b.escaper(template.JSEscaper, 6),
		"urlquery": b.escaper(template.URLQueryEscaper, 3),
	}
}

// escaper bounds an escaping builtin whose output is at most growth times
// its input.
func (b *budget) escaper(escape func(...any) string, growth int) func(...any) (string, error) {
	return func(args ...any) (string, error) {
		if err := b.spend(growth * printSize(args)); err != nil {
			return "", err
		}
		return escape(args...), nil
	}
}

// printSize is an upper bound of the length of fmt.Sprint(args...).
func printSize(args []any) int {
	n := len(args)
	for _, a := range args {
		n += argSize(a)
	}
	return n
}

// argSize is the printed length of a template value. Besides the strings
// the budgeted functions return, the template can only reach the small data
// maps, numbers and booleans.
func argSize(a any) int {
	if s, ok := a.(string); ok {
		return len(s)
	}
	return len(fmt.Sprint(a))
}

// printfSize is an upper bound of the length of fmt.Sprintf(format, args...).
// Every directive is assumed to print the longest argument, quoted (at most
// four bytes per byte), padded to its width and precision.
func printfSize(format string, args []any) (int, error) {
	longest := 0
	for _, a := range args {
		longest = max(longest, argSize(a))
	}
	n := len(format)
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		num := 0
		for i++; i < len(format); i++ {
			c := format[i]
			if c >= '0' && c <= '9' {
				num = num*10 + int(c-'0')
				if num > maxPrintfWidth {
					return 0, fmt.Errorf("printf width or precision is larger than %d", maxPrintfWidth)
				}
				continue
			}
			num = 0
			if c == '*' {
				return 0, errors.New("printf * width and precision are not supported")
			}
			if !strings.ContainsRune("+-# .[]", rune(c)) {
				break // The verb.
			}
		}
		n += 2*maxPrintfWidth + 4*longest + 64
	}
	return n, nil
}
