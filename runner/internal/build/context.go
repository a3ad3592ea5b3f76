package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/workspace"
)

// maxDockerignore bounds the .dockerignore file read from the context.
const maxDockerignore = 1 << 20

// errContextTooLarge reports a build context over Request.MaxContextBytes.
var errContextTooLarge = errors.New("build context is too large")

// ignorePattern is one line of a .dockerignore file.
type ignorePattern struct {
	pattern string // slash-separated, cleaned, without leading "/" or "!"
	negate  bool   // the line started with "!"
}

// readIgnore reads and parses the context's .dockerignore (at most
// maxDockerignore bytes, read safely). A missing file means no patterns.
func readIgnore(ctx context.Context, tree *workspace.Tree) ([]ignorePattern, error) {
	data, err := tree.ReadFile(ctx, ".dockerignore", maxDockerignore)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseIgnore(string(data)), nil
}

// parseIgnore parses the lines of a .dockerignore file.
//
// Supported subset of Docker's syntax: blank lines and "#" comments are
// skipped; each pattern is matched with path.Match against a path relative
// to the context root and against each of its parent directories (so "dir"
// excludes everything below dir); "!" re-includes; the last matching line
// wins. "**" is not supported (it matches like "*" within one path element).
func parseIgnore(data string) []ignorePattern {
	var pats []ignorePattern
	for _, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
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
	return pats
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

// contextWriter writes a build context read through an os.Root as a tar.
type contextWriter struct {
	ctx         context.Context
	root        *os.Root
	tree        *workspace.Tree
	tw          *tar.Writer
	pats        []ignorePattern
	hasNegation bool
	dockerfile  string // slash-separated, relative to the root
	max, total  int64  // bytes of file content allowed and written
}

// writeContext writes the directory of root as an uncompressed tar build
// context to w, leaving out paths excluded by its .dockerignore. The
// Dockerfile and .dockerignore are always included, as the docker CLI
// does.
//
// Nothing is read outside root: directories are walked without following
// symbolic links, a symbolic link is archived as a link with its target
// as written (the daemon resolves links inside the context), and regular
// files are read with workspace's rules. A FIFO, socket or device is an
// error rather than skipped: git cannot check one out, so it means the
// checkout was tampered with, and building without it would silently
// produce a different image. The file content written may total at most
// max bytes; ctx is checked between files and while copying.
func writeContext(ctx context.Context, w io.Writer, root *os.Root, dockerfile string, max int64) error {
	tree := workspace.NewTree(root, "the build context")
	pats, err := readIgnore(ctx, tree)
	if err != nil {
		return err
	}
	c := &contextWriter{ctx: ctx, root: root, tree: tree, tw: tar.NewWriter(w), pats: pats, dockerfile: dockerfile, max: max}
	for _, p := range pats {
		c.hasNegation = c.hasNegation || p.negate
	}
	if err := c.walk("."); err != nil {
		return err
	}
	return c.tw.Close()
}

// walk archives the entries of dir, a directory reached without symbolic
// links.
func (c *contextWriter) walk(dir string) error {
	entries, err := fs.ReadDir(c.root.FS(), dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		rel := path.Join(dir, e.Name())
		skip := false
		if rel != c.dockerfile && rel != ".dockerignore" && ignored(c.pats, rel) {
			// A directory is still walked if a "!" pattern may
			// re-include something below it, or if it holds the
			// Dockerfile; its own entry is left out.
			if !e.IsDir() || (!c.hasNegation && !strings.HasPrefix(c.dockerfile, rel+"/")) {
				continue
			}
			skip = true
		}
		info, err := c.root.Lstat(rel)
		if err != nil {
			return err
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
			if !skip {
				if err := c.header(rel+"/", info, ""); err != nil {
					return err
				}
			}
			if err := c.walk(rel); err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			target, err := c.root.Readlink(rel)
			if err != nil {
				return err
			}
			if err := c.header(rel, info, target); err != nil {
				return err
			}
		default:
			// Regular files; anything else is refused by OpenFile
			// before it is opened.
			if err := c.file(rel); err != nil {
				return err
			}
		}
	}
	return nil
}

// header writes the tar header of the entry name.
func (c *contextWriter) header(name string, info fs.FileInfo, link string) error {
	hdr, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	return c.tw.WriteHeader(hdr)
}

// file archives the regular file rel.
func (c *contextWriter) file(rel string) error {
	f, info, err := c.tree.OpenFile(c.ctx, rel)
	if err != nil {
		return err
	}
	defer f.Close()
	if c.total += info.Size(); c.total > c.max {
		return fmt.Errorf("%w: its files hold more than %d bytes (at %q)", errContextTooLarge, c.max, rel)
	}
	if err := c.header(rel, info, ""); err != nil {
		return err
	}
	// Copy exactly the size in the header: a file that grew is cut, one
	// that shrank is an error.
	_, err = io.CopyN(c.tw, workspace.ContextReader(c.ctx, f), info.Size())
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%q changed while it was being read", rel)
	}
	return err
}
