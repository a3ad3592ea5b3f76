package build

import (
	"archive/tar"
	"bufio"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ignorePattern is one line of a .dockerignore file.
type ignorePattern struct {
	pattern string // slash-separated, cleaned, without leading "/" or "!"
	negate  bool   // the line started with "!"
}

// readIgnore parses dir/.dockerignore. A missing file means no patterns.
//
// Supported subset of Docker's syntax: blank lines and "#" comments are
// skipped; each pattern is matched with path.Match against a path relative
// to the context root and against each of its parent directories (so "dir"
// excludes everything below dir); "!" re-includes; the last matching line
// wins. "**" is not supported (it matches like "*" within one path element).
func readIgnore(dir string) ([]ignorePattern, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pats []ignorePattern
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var p ignorePattern
		if strings.HasPrefix(line, "!") {
			p.negate = true
			line = strings.TrimSpace(line[1:])
		}
		p.pattern = strings.TrimPrefix(path.Clean("/"+filepath.ToSlash(line)), "/")
		if p.pattern == "" {
			continue
		}
		pats = append(pats, p)
	}
	return pats, sc.Err()
}

// ignored reports whether the slash-separated relative path rel is
// excluded by pats.
func ignored(pats []ignorePattern, rel string) bool {
	excluded := false
	for _, p := range pats {
		if matchPathOrParent(p.pattern, rel) {
			excluded = !p.negate
		}
	}
	return excluded
}

func matchPathOrParent(pattern, rel string) bool {
	for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
		if ok, _ := path.Match(pattern, p); ok {
			return true
		}
	}
	return false
}

// writeContext writes dir as an uncompressed tar build context to w,
// leaving out paths excluded by dir/.dockerignore. The Dockerfile and
// .dockerignore are always included, as the docker CLI does. Symlinks are
// archived as links, never followed; sockets and devices are skipped.
func writeContext(w io.Writer, dir, dockerfile string) error {
	pats, err := readIgnore(dir)
	if err != nil {
		return err
	}
	hasNegation := false
	for _, p := range pats {
		hasNegation = hasNegation || p.negate
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if rel != dockerfile && rel != ".dockerignore" && ignored(pats, rel) {
			if d.IsDir() && !hasNegation {
				return filepath.SkipDir
			}
			return nil
		}
		return addFile(tw, p, rel)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// addFile writes one tar entry for the file at p, named rel.
func addFile(tw *tar.Writer, p, rel string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	var link string
	switch mode := fi.Mode(); {
	case mode.IsRegular(), mode.IsDir():
	case mode&fs.ModeSymlink != 0:
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	default:
		return nil
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = rel
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}
