package repoconfig

import (
	"errors"
	"path"
	"strings"
)

// match reports whether name matches pattern. Both are split at slashes: a
// "**" segment of pattern matches zero or more segments of name, any other
// segment matches one segment with path.Match. Patterns are checked by
// checkPattern first; a malformed segment matches nothing.
func match(pattern, name string) bool {
	segs := strings.Split(name, "/")
	// ok[j] reports whether the pattern segments so far match segs[:j].
	ok := make([]bool, len(segs)+1)
	ok[0] = true
	next := make([]bool, len(segs)+1)
	for p := range strings.SplitSeq(pattern, "/") {
		if p == "**" {
			seen := false
			for j := range next {
				seen = seen || ok[j]
				next[j] = seen
			}
		} else {
			next[0] = false
			for j := 1; j <= len(segs); j++ {
				next[j] = false
				if ok[j-1] {
					next[j], _ = path.Match(p, segs[j-1])
				}
			}
		}
		ok, next = next, ok
	}
	return ok[len(segs)]
}

// checkPattern reports whether p is a pattern match accepts: not empty,
// forward slashes only, "**" only as a whole segment, every other segment a
// valid path.Match pattern.
func checkPattern(p string) error {
	if p == "" {
		return errors.New("pattern is empty")
	}
	if strings.Contains(p, `\`) {
		return errors.New(`pattern must not contain \`)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "**" {
			continue
		}
		if strings.Contains(seg, "**") {
			return errors.New(`** must be a whole path segment, as in "api/**/*.go"`)
		}
		if _, err := path.Match(seg, ""); err != nil {
			return errors.New("pattern is malformed")
		}
	}
	return nil
}

// cleanPathPattern checks a pattern of repository files and returns it
// cleaned ("./api/**" becomes "api/**").
func cleanPathPattern(p string) (string, error) {
	if err := checkPattern(p); err != nil {
		return "", err
	}
	if path.IsAbs(p) {
		return "", errors.New("pattern must be relative to the repository root")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." {
			return "", errors.New(`pattern must not contain ".."`)
		}
	}
	c := path.Clean(p)
	if c == "." {
		return "", errors.New("pattern matches no file")
	}
	return c, nil
}
