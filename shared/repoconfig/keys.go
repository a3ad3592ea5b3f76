package repoconfig

import (
	"fmt"
	"strconv"
	"strings"
)

// BurntSushi/toml keeps the order of keys (MetaData.Keys) but not their
// lines, and its parser slows down more than quadratically with the depth
// of a key: a 20 KB file of one dotted key with 10,000 parts takes seconds.
// scanKeys, a small scanner of the rendered text that runs before the TOML
// parser, solves both: it refuses documents nested deeper than the limits
// below, and it lists the keys in the same order as MetaData.Keys with the
// offset each starts at. decode uses the offsets only if the two lists are
// identical, so a gap in the scanner costs line numbers, never correctness.
//
// The scanner never fails on malformed input: it skips what it does not
// understand and leaves the syntax errors to the TOML parser.

// Limits on the structure of the rendered TOML document.
const (
	// maxKeyParts bounds the parts of a full key, counting its tables.
	maxKeyParts = 16
	// maxNesting bounds arrays and inline tables nested in each other.
	maxNesting = 16
	// maxKeys bounds the keys and tables of the document.
	maxKeys = 50000
)

// keyPos is a key of the document, as MetaData.Keys lists it (every table
// header and every key = value, with the full path), and its byte offset.
type keyPos struct {
	key []string
	off int
}

// scanError is a limit the document exceeds, at a byte offset.
type scanError struct {
	off int
	msg string
}

type keyScanner struct {
	s     string
	i     int
	table []string // the current [table] or [[table]]
	keys  []keyPos
	err   *scanError
}

// scanKeys lists the keys of TOML document s, see above.
func scanKeys(s string) ([]keyPos, *scanError) {
	sc := &keyScanner{s: s}
	if strings.HasPrefix(s, "\ufeff") {
		sc.i = len("\ufeff")
	}
	for sc.err == nil {
		sc.skipBlank()
		if sc.i >= len(s) {
			break
		}
		if s[sc.i] == '[' {
			sc.header()
		} else {
			sc.keyValue()
		}
	}
	return sc.keys, sc.err
}

// header scans a [table] or [[array of tables]] header.
func (sc *keyScanner) header() {
	start := sc.i
	sc.i++
	array := sc.peek('[')
	if array {
		sc.i++
	}
	key := sc.key()
	sc.skipSpace()
	if sc.peek(']') {
		sc.i++
		if array && sc.peek(']') {
			sc.i++
		}
	}
	if len(key) == 0 {
		sc.skipLine()
		return
	}
	if sc.emit(key, start) {
		sc.table = key
	}
}

// keyValue scans a key = value line.
func (sc *keyScanner) keyValue() {
	start := sc.i
	key := sc.key()
	sc.skipSpace()
	if len(key) == 0 || !sc.peek('=') {
		sc.skipLine()
		return
	}
	sc.i++
	full := join(sc.table, key)
	if sc.emit(full, start) {
		sc.value(full, 0)
	}
}

// value scans the value of key path; inline tables in it add keys.
func (sc *keyScanner) value(path []string, depth int) {
	sc.skipSpace()
	if sc.i >= len(sc.s) {
		return
	}
	switch sc.s[sc.i] {
	case '"', '\'':
		sc.skipString()
	case '[':
		if !sc.nest(depth) {
			return
		}
		for sc.i++; sc.err == nil; {
			sc.skipBlank()
			if sc.i >= len(sc.s) {
				return
			}
			switch sc.s[sc.i] {
			case ']':
				sc.i++
				return
			case ',':
				sc.i++
				continue
			}
			before := sc.i
			sc.value(path, depth+1)
			if sc.i == before {
				sc.i++
			}
		}
	case '{':
		if !sc.nest(depth) {
			return
		}
		for sc.i++; sc.err == nil; {
			sc.skipBlank() // TOML 1.1 allows newlines in inline tables.
			if sc.i >= len(sc.s) {
				return
			}
			switch sc.s[sc.i] {
			case '}':
				sc.i++
				return
			case ',':
				sc.i++
				continue
			}
			start := sc.i
			key := sc.key()
			sc.skipSpace()
			if len(key) == 0 || !sc.peek('=') {
				if sc.i == start {
					sc.i++
				}
				continue
			}
			sc.i++
			full := join(path, key)
			if !sc.emit(full, start) {
				return
			}
			sc.value(full, depth+1)
		}
	default:
		// A number, boolean or date and time, which may hold a space.
		for sc.i < len(sc.s) && !strings.ContainsRune(",]}#\n", rune(sc.s[sc.i])) {
			sc.i++
		}
	}
}

// nest checks that a value at depth may hold another level.
func (sc *keyScanner) nest(depth int) bool {
	if depth >= maxNesting {
		sc.err = &scanError{sc.i, fmt.Sprintf("arrays and inline tables are nested more than %d deep", maxNesting)}
		return false
	}
	return true
}

// emit records key at offset off, or the limit it exceeds.
func (sc *keyScanner) emit(key []string, off int) bool {
	switch {
	case len(key) > maxKeyParts:
		sc.err = &scanError{off, fmt.Sprintf("key %s has more than %d parts", strings.Join(key[:maxKeyParts], ".")+"...", maxKeyParts)}
	case len(sc.keys) >= maxKeys:
		sc.err = &scanError{off, fmt.Sprintf("file has more than %d keys", maxKeys)}
	default:
		sc.keys = append(sc.keys, keyPos{key, off})
		return true
	}
	return false
}

// key scans a possibly dotted key: bare, "quoted" or 'literal' parts.
func (sc *keyScanner) key() []string {
	var parts []string
	for {
		sc.skipSpace()
		if sc.i >= len(sc.s) {
			return parts
		}
		var part string
		switch c := sc.s[sc.i]; {
		case c == '"':
			n := basicLen(sc.s[sc.i:])
			if n < 0 {
				return parts
			}
			part = unescapeBasic(sc.s[sc.i+1 : sc.i+n-1])
			sc.i += n
		case c == '\'':
			n := strings.IndexAny(sc.s[sc.i+1:], "'\n")
			if n < 0 || sc.s[sc.i+1+n] != '\'' {
				return parts
			}
			part = sc.s[sc.i+1 : sc.i+1+n]
			sc.i += n + 2
		case isBareKeyChar(c):
			j := sc.i
			for j < len(sc.s) && isBareKeyChar(sc.s[j]) {
				j++
			}
			part = sc.s[sc.i:j]
			sc.i = j
		default:
			return parts
		}
		parts = append(parts, part)
		sc.skipSpace()
		if !sc.peek('.') {
			return parts
		}
		sc.i++
	}
}

// skipString skips the string at sc.i: basic, literal or either multi-line.
func (sc *keyScanner) skipString() {
	q := sc.s[sc.i]
	triple := strings.Repeat(string(q), 3)
	if strings.HasPrefix(sc.s[sc.i:], triple) {
		for sc.i += 3; sc.i < len(sc.s); sc.i++ {
			if q == '"' && sc.s[sc.i] == '\\' {
				sc.i++
				continue
			}
			if strings.HasPrefix(sc.s[sc.i:], triple) {
				sc.i += 3
				// Up to two more quotes end the content: """a""""" is a"".
				for k := 0; k < 2 && sc.peek(q); k++ {
					sc.i++
				}
				return
			}
		}
		return
	}
	for sc.i++; sc.i < len(sc.s); sc.i++ {
		switch sc.s[sc.i] {
		case q:
			sc.i++
			return
		case '\n':
			return // Unterminated: carry on at the next line.
		case '\\':
			if q == '"' {
				sc.i++
			}
		}
	}
}

func (sc *keyScanner) peek(c byte) bool {
	return sc.i < len(sc.s) && sc.s[sc.i] == c
}

// skipSpace skips spaces and tabs.
func (sc *keyScanner) skipSpace() {
	for sc.i < len(sc.s) && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// skipBlank skips whitespace, newlines and comments.
func (sc *keyScanner) skipBlank() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.i++
		case '#':
			sc.skipLine()
		default:
			return
		}
	}
}

// skipLine skips past the end of the line.
func (sc *keyScanner) skipLine() {
	if n := strings.IndexByte(sc.s[sc.i:], '\n'); n >= 0 {
		sc.i += n + 1
	} else {
		sc.i = len(sc.s)
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// join returns a new slice of a followed by b.
func join(a, b []string) []string {
	return append(append(make([]string, 0, len(a)+len(b)), a...), b...)
}

// basicLen returns the length of the single-line basic string at the start
// of s, including its quotes; -1 if it is not closed on its line.
func basicLen(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '\n':
			return -1
		case '"':
			return i + 1
		}
	}
	return -1
}

// unescapeBasic decodes the escapes of a TOML basic string. It returns
// malformed escapes as they are; the TOML parser rejects them.
func unescapeBasic(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case '"', '\\':
			b.WriteByte(c)
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
			if i+n < len(s) {
				if r, err := strconv.ParseUint(s[i+1:i+1+n], 16, 32); err == nil {
					b.WriteRune(rune(r))
					i += n
					continue
				}
			}
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte('\\')
			b.WriteByte(c)
		}
	}
	return b.String()
}
