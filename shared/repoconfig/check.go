package repoconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// maxLinks bounds the symbolic links followed to resolve one path, as
// Linux does.
const maxLinks = 40

var (
	errEscapes = errors.New("leads outside the repository through a symbolic link")
	errLoop    = errors.New("has too many levels of symbolic links")
)

// CheckFiles checks that the files the configuration names exist in fsys,
// a checkout of the repository: each docker build directory and
// Dockerfile, each chart directory with its Chart.yaml, and each values
// file. Every problem is an *Error naming the unit, the field and the path.
//
// If fsys implements fs.ReadLinkFS (os.DirFS and fstest.MapFS do), symbolic
// links in those paths, and anywhere in a chart directory (Helm follows
// them when it loads a chart), must stay inside the repository. Without
// fs.ReadLinkFS links are not checked. The check is a snapshot of fsys: to
// make sure later reads cannot leave the repository either, read the
// checkout through an os.Root.
func (c *Config) CheckFiles(fsys fs.FS) error {
	var errs errorList
	for _, u := range c.Units {
		name := quoteKey(u.Name)
		if d := u.Docker; d != nil {
			c.check(fsys, &errs, name+".docker.directory", d.Directory, true)
			c.check(fsys, &errs, name+".docker.dockerfile", d.DockerfilePath(), false)
		}
		if h := u.Helm; h != nil {
			key := name + ".helm.chart"
			if chart, ok := c.check(fsys, &errs, key, h.Chart, true); ok {
				if info, err := fs.Stat(fsys, path.Join(chart, "Chart.yaml")); err != nil || !info.Mode().IsRegular() {
					errs.add(c.lines[key], "%s: %q is not a chart: it has no Chart.yaml", key, h.Chart)
				}
				c.checkTree(fsys, &errs, key, chart)
			}
			for _, v := range h.Values {
				c.check(fsys, &errs, name+".helm.values", v, false)
			}
		}
	}
	return errs.err()
}

// check checks that name, the path of field key, is a directory (dir) or a
// regular file inside the repository, and returns it with its symbolic
// links resolved.
func (c *Config) check(fsys fs.FS, errs *errorList, key, name string, dir bool) (string, bool) {
	line := c.lines[key]
	fail := func(err error) (string, bool) {
		msg := err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			msg = "does not exist"
		}
		*errs = append(*errs, &Error{File: FileName, Line: line, Msg: fmt.Sprintf("%s: %q %s", key, name, msg), Err: err})
		return "", false
	}
	resolved, err := resolve(fsys, name)
	if err != nil {
		return fail(err)
	}
	info, err := fs.Stat(fsys, resolved)
	switch {
	case err != nil:
		return fail(err)
	case dir && !info.IsDir():
		return fail(errors.New("is not a directory"))
	case !dir && !info.Mode().IsRegular():
		return fail(errors.New("is not a regular file"))
	}
	return resolved, true
}

// checkTree checks that the symbolic links under dir, the resolved path of
// field key, and under the directories they lead to, stay inside the
// repository.
func (c *Config) checkTree(fsys fs.FS, errs *errorList, key, dir string) {
	if _, ok := fsys.(fs.ReadLinkFS); !ok {
		return
	}
	visited := make(map[string]bool)
	var walk func(dir string)
	walk = func(dir string) {
		if visited[dir] {
			return
		}
		visited[dir] = true
		_ = fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSymlink == 0 {
				return nil // Unreadable entries are for Helm to report.
			}
			target, err := resolve(fsys, p)
			if err != nil {
				*errs = append(*errs, &Error{File: FileName, Line: c.lines[key],
					Msg: fmt.Sprintf("%s: %q in the chart %v", key, p, linkProblem(err)), Err: err})
				return nil
			}
			if info, err := fs.Stat(fsys, target); err == nil && info.IsDir() {
				walk(target)
			}
			return nil
		})
	}
	walk(dir)
}

// linkProblem describes an error of resolve for a path known to be a link.
func linkProblem(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "is a broken symbolic link"
	}
	return err.Error()
}

// resolve returns name with its symbolic links resolved, one path element
// at a time, if fsys implements fs.ReadLinkFS; otherwise name. It fails if a
// link is absolute or leads outside fsys.
func resolve(fsys fs.FS, name string) (string, error) {
	rl, ok := fsys.(fs.ReadLinkFS)
	if !ok {
		return name, nil
	}
	resolved := "."
	rest := splitPath(name)
	for links := 0; len(rest) > 0; {
		next := path.Join(resolved, rest[0])
		rest = rest[1:]
		info, err := rl.Lstat(next)
		if err != nil {
			return "", err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxLinks {
			return "", errLoop
		}
		target, err := rl.ReadLink(next)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			return "", errEscapes
		}
		target = path.Join(resolved, target)
		if target == ".." || strings.HasPrefix(target, "../") {
			return "", errEscapes
		}
		rest = append(splitPath(target), rest...)
		resolved = "."
	}
	return resolved, nil
}

// splitPath splits a clean relative path into its elements.
func splitPath(p string) []string {
	if p == "." || p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
