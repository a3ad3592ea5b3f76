package repoconfig

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The original documentation's example conditions on the branch with
// {{ if .git.branch == "master" }}, which is not Go template syntax. The
// simple forms of it are rewritten to the builtins eq and ne before the
// template is parsed:
//
//	{{ if A == B }}        →  {{ if eq A B }}
//	{{ else if A != B }}   →  {{ else if ne A B }}
//	{{ with A == B }}      →  {{ with eq A B }}
//	{{ A == B }}           →  {{ eq A B }}
//
// where A and B are each a field or variable (.git.branch, $b), a quoted
// string, a number, true, false or nil. Trim markers ({{- and -}}) are kept,
// and so are newlines, so lines keep their numbers. Any other action with ==
// or != (two comparisons, parentheses, pipes) is an error that shows the
// correct form.

// operandRE matches the template operands a comparison is rewritten with.
var operandRE = regexp.MustCompile(`^(?:` +
	`\.|(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\$[A-Za-z0-9_]*` + // fields, variables
	`|"(?:[^"\\]|\\.)*"|` + "`[^`]*`" + `|'(?:[^'\\]|\\.)+'` + // strings, characters
	`|[-+]?[0-9.][0-9A-Za-z_.+-]*` + // numbers; text/template checks their syntax
	`|true|false|nil)$`)

// rewriteComparisons rewrites the comparisons of the original's syntax in
// src, see above.
func rewriteComparisons(src string) (string, error) {
	var b strings.Builder
	rest := src
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		b.WriteString(rest[:i])
		rest = rest[i:]
		n := actionLen(rest)
		if n < 0 {
			// Unterminated: text/template reports it.
			b.WriteString(rest)
			return b.String(), nil
		}
		action := rest[:n]
		if op := comparison(action); op != "" {
			rewritten, ok := rewriteAction(action)
			if !ok {
				line := strings.Count(src[:len(src)-len(rest)], "\n") + 1
				return "", &Error{File: FileName, Line: line, Msg: comparisonHint(op)}
			}
			action = rewritten
		}
		b.WriteString(action)
		rest = rest[n:]
	}
}

// comparisonHint explains how to write a comparison that cannot be
// rewritten.
func comparisonHint(op string) string {
	fn := "eq"
	if op == "!=" {
		fn = "ne"
	}
	return fmt.Sprintf(`template: %s is not Go template syntax: use {{ if %s .git.branch "master" }} instead of %s`+
		` (combine tests with and/or: {{ if and (eq .git.branch "main") (ne .repo.name "test") }})`, op, fn, op)
}

// actionLen returns the length of the action at the start of s, which
// begins with "{{", including the closing "}}"; -1 if it is not closed.
func actionLen(s string) int {
	i := 2
	if strings.HasPrefix(s[i:], "- ") || strings.HasPrefix(s[i:], "-\t") ||
		strings.HasPrefix(s[i:], "-\n") || strings.HasPrefix(s[i:], "-\r") {
		i += 2
	}
	if strings.HasPrefix(s[i:], "/*") {
		end := strings.Index(s[i+2:], "*/")
		if end < 0 {
			return -1
		}
		i += 2 + end + 2
		end = strings.Index(s[i:], "}}")
		if end < 0 {
			return -1
		}
		return i + end + 2
	}
	for i < len(s) {
		switch c := s[i]; c {
		case '"', '\'', '`':
			n := quotedLen(s[i:])
			if n < 0 {
				return -1
			}
			i += n
		case '}':
			if strings.HasPrefix(s[i:], "}}") {
				return i + 2
			}
			i++
		default:
			i++
		}
	}
	return -1
}

// quotedLen returns the length of the quoted string, raw string or
// character at the start of s, -1 if it is not closed.
func quotedLen(s string) int {
	q := s[0]
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case q:
			return i + 1
		case '\\':
			if q != '`' {
				i++
			}
		case '\n':
			if q != '`' {
				return -1
			}
		}
	}
	return -1
}

// actionTokens splits the inside of an action into operands, keywords and
// operators. Quoted strings are one token; ==, !=, :=, =, (, ), | and , are
// tokens of their own.
func actionTokens(s string) []string {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '"' || c == '\'' || c == '`':
			n := quotedLen(s[i:])
			if n < 0 {
				n = len(s) - i
			}
			toks = append(toks, s[i:i+n])
			i += n
		case strings.HasPrefix(s[i:], "==") || strings.HasPrefix(s[i:], "!=") || strings.HasPrefix(s[i:], ":="):
			toks = append(toks, s[i:i+2])
			i += 2
		case strings.ContainsRune("=()|,", rune(c)):
			toks = append(toks, s[i:i+1])
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n\"'`=()|,", rune(s[j])) &&
				!strings.HasPrefix(s[j:], "!=") && !strings.HasPrefix(s[j:], ":=") {
				j++
			}
			if j == i {
				j++ // A lone "!" or ":".
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks
}

// actionBody splits an action into its delimiters, with their trim markers,
// and its inside.
func actionBody(action string) (left, body, right string) {
	left, body, right = "{{", action[2:len(action)-2], "}}"
	if len(body) >= 2 && body[0] == '-' && isTemplateSpace(body[1]) {
		left, body = "{{- ", body[2:]
	}
	if n := len(body); n >= 2 && body[n-1] == '-' && isTemplateSpace(body[n-2]) {
		body, right = body[:n-2], " -}}"
	}
	return left, body, right
}

func isTemplateSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

// comparison returns the first == or != operator of an action, "" if it
// has none. Comments have none.
func comparison(action string) string {
	_, body, _ := actionBody(action)
	if strings.HasPrefix(body, "/*") {
		return ""
	}
	for _, t := range actionTokens(body) {
		if t == "==" || t == "!=" {
			return t
		}
	}
	return ""
}

// rewriteAction rewrites an action holding one comparison; ok is false if it
// is not one of the simple forms.
func rewriteAction(action string) (string, bool) {
	left, body, right := actionBody(action)
	toks := actionTokens(body)
	var keyword []string
	switch {
	case len(toks) >= 2 && toks[0] == "else" && (toks[1] == "if" || toks[1] == "with"):
		keyword, toks = toks[:2], toks[2:]
	case len(toks) >= 1 && (toks[0] == "if" || toks[0] == "with"):
		keyword, toks = toks[:1], toks[1:]
	}
	if len(toks) != 3 || !operandRE.MatchString(toks[0]) || !operandRE.MatchString(toks[2]) {
		return "", false
	}
	fn := "eq"
	switch toks[1] {
	case "==":
	case "!=":
		fn = "ne"
	default:
		return "", false
	}
	words := append(slices.Clone(keyword), fn, toks[0], toks[2])
	// Keep the action's newlines so that later lines keep their numbers.
	newlines := strings.Repeat("\n", strings.Count(action, "\n"))
	if left == "{{" {
		left = "{{ "
	}
	if right == "}}" {
		right = " }}"
	}
	return left + strings.Join(words, " ") + newlines + right, true
}
