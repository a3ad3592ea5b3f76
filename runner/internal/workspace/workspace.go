// Package workspace reads a job's checkout of a tracked repository safely.
//
// A repository is untrusted input: it may hold symbolic links to
// /etc/passwd, /proc/self/environ or /dev/zero, chains of links that climb
// out of the checkout, or (if something else wrote into the workspace)
// FIFOs, sockets and device files. Every read goes through an os.Root, so
// no path (absolute, "..", or a symbolic link) can leave the checkout, and
// through the same checks:
//
//   - Symbolic links are resolved one element at a time inside the tree;
//     a link that is absolute or climbs above the tree's root is refused
//     with ErrEscapes, more than 40 links with ErrLoop.
//   - Only regular files are read: anything else (directory, FIFO, socket,
//     device) is refused with ErrNotRegular before it is opened. The file is
//     opened non-blocking and its descriptor must still be the regular file
//     that was checked (os.SameFile), which closes the gap between the check
//     and the open.
//   - Reads are capped: a file over the caller's limit is refused with
//     ErrTooLarge, after reading at most limit+1 bytes.
//   - Reads honour the context between chunks.
//
// Errors are *Error values naming the path relative to the tree and the
// reason; they never contain any of the file's (or a link target's)
// content.
package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// maxLinks bounds the symbolic links followed to resolve one path, as
// Linux does.
const maxLinks = 40

// DefaultMaxFile is the size limit, in bytes, of a file read through the
// fs.FS returned by Tree.FS.
const DefaultMaxFile = 16 << 20

// Reasons a read is refused; test for them with errors.Is.
var (
	ErrEscapes    = errors.New("is a symlink that leaves")
	ErrOutside    = errors.New("is outside")
	ErrLoop       = errors.New("has too many levels of symbolic links")
	ErrNotRegular = errors.New("is not a regular file")
	ErrTooLarge   = errors.New("is too large")
)

// Error is a refused or failed read of one path of a tree.
type Error struct {
	// Path is the path that was asked for, slash-separated and relative to
	// the tree's root.
	Path string
	// Err is the reason: ErrEscapes, ErrOutside, ErrLoop, ErrNotRegular,
	// ErrTooLarge, fs.ErrNotExist, a context error, or an I/O error.
	Err error
	msg string
}

// Error returns the quoted path followed by the reason, e.g. `"a/b" is a
// symlink that leaves the repository`.
func (e *Error) Error() string { return fmt.Sprintf("%q %s", e.Path, e.msg) }

// Unwrap returns the reason.
func (e *Error) Unwrap() error { return e.Err }

// Tree is a checked-out repository (or a directory of one), read only
// through an os.Root. Its methods are safe for concurrent use.
type Tree struct {
	root  *os.Root
	scope string // names the tree in errors: "the repository"
	owned bool   // Close closes root
}

// Open opens the checkout at dir. Errors name its paths relative to dir
// and call it "the repository".
func Open(dir string) (*Tree, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open checkout: %w", err)
	}
	return &Tree{root: root, scope: "the repository", owned: true}, nil
}

// NewTree returns a Tree reading through root, which the caller keeps
// owning (Tree.Close does not close it). scope names the tree in errors,
// e.g. "the build context".
func NewTree(root *os.Root, scope string) *Tree {
	return &Tree{root: root, scope: scope}
}

// Close releases the tree's root, if Open created it.
func (t *Tree) Close() error {
	if !t.owned {
		return nil
	}
	return t.root.Close()
}

// ReadFile returns the content of the regular file name (slash-separated,
// relative to the tree), following symbolic links only inside the tree. It
// fails with an *Error if name leaves the tree, is not a regular file, or
// holds more than max bytes (then at most max+1 bytes are read), and
// stops early if ctx ends.
func (t *Tree) ReadFile(ctx context.Context, name string, max int64) ([]byte, error) {
	f, info, err := t.OpenFile(ctx, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.Size() > max {
		return nil, t.tooLarge(name, max)
	}
	var buf bytes.Buffer
	buf.Grow(int(info.Size()) + 1)
	// Read one byte past max to see a file that grew since Stat.
	n, err := io.Copy(&buf, io.LimitReader(ContextReader(ctx, f), min(max, math.MaxInt64-1)+1))
	if err != nil {
		return nil, t.fail(name, err)
	}
	if n > max {
		return nil, t.tooLarge(name, max)
	}
	return buf.Bytes(), nil
}

// OpenFile opens the regular file name for reading, with the rules of
// ReadFile but no size limit, and returns it with its information (taken
// from the open descriptor). The caller closes the file and should bound
// what it reads: the file may still grow.
func (t *Tree) OpenFile(ctx context.Context, name string) (*os.File, fs.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, t.fail(name, err)
	}
	resolved, err := t.resolve(name)
	if err != nil {
		return nil, nil, err
	}
	before, err := t.root.Lstat(resolved)
	if err != nil {
		return nil, nil, t.fail(name, err)
	}
	if !before.Mode().IsRegular() {
		return nil, nil, t.notRegular(name, before.Mode())
	}
	// O_NONBLOCK: if a FIFO was swapped in after the Lstat, opening it
	// must not wait for a writer.
	f, err := t.root.OpenFile(resolved, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, t.fail(name, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, t.fail(name, err)
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, t.notRegular(name, info.Mode())
	}
	if !os.SameFile(before, info) {
		f.Close()
		return nil, nil, &Error{Path: name, Err: fs.ErrInvalid, msg: "changed while it was being opened"}
	}
	return f, info, nil
}

// Stat returns the information of the file name leads to, following
// symbolic links only inside the tree. Unlike ReadFile it accepts any
// kind of file.
func (t *Tree) Stat(name string) (fs.FileInfo, error) {
	resolved, err := t.resolve(name)
	if err != nil {
		return nil, err
	}
	info, err := t.root.Lstat(resolved)
	if err != nil {
		return nil, t.fail(name, err)
	}
	return info, nil
}

// Sub opens the directory dir of the tree (following symbolic links only
// inside the tree) as a root of its own, e.g. a build context: symbolic
// links under it may not leave it either. The caller closes it.
func (t *Tree) Sub(dir string) (*os.Root, error) {
	resolved, err := t.resolve(dir)
	if err != nil {
		return nil, err
	}
	info, err := t.root.Lstat(resolved)
	if err != nil {
		return nil, t.fail(dir, err)
	}
	if !info.IsDir() {
		return nil, &Error{Path: dir, Err: fs.ErrInvalid, msg: "is not a directory"}
	}
	sub, err := t.root.OpenRoot(resolved)
	if err != nil {
		return nil, t.fail(dir, err)
	}
	return sub, nil
}

// Resolve returns name with its symbolic links resolved inside the tree:
// a clean slash-separated path relative to the tree's root, with no
// symbolic link in it. It fails with an *Error if name or a link on the
// way leaves the tree, or an element does not exist.
func (t *Tree) Resolve(name string) (string, error) { return t.resolve(name) }

func (t *Tree) resolve(name string) (string, error) {
	clean := path.Clean(filepath.ToSlash(name))
	if name == "" || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", &Error{Path: name, Err: ErrOutside, msg: "is outside " + t.scope}
	}
	resolved := "."
	rest := splitPath(clean)
	for links := 0; len(rest) > 0; {
		next := path.Join(resolved, rest[0])
		rest = rest[1:]
		info, err := t.root.Lstat(next)
		if err != nil {
			return "", t.fail(name, err)
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxLinks {
			return "", &Error{Path: name, Err: ErrLoop, msg: ErrLoop.Error()}
		}
		target, err := t.root.Readlink(next)
		if err != nil {
			return "", t.fail(name, err)
		}
		target = filepath.ToSlash(target)
		if path.IsAbs(target) {
			return "", t.escapes(name)
		}
		target = path.Join(resolved, target)
		if target == ".." || strings.HasPrefix(target, "../") {
			return "", t.escapes(name)
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

func (t *Tree) escapes(name string) error {
	return &Error{Path: name, Err: ErrEscapes, msg: "is a symlink that leaves " + t.scope}
}

func (t *Tree) tooLarge(name string, max int64) error {
	return &Error{Path: name, Err: ErrTooLarge, msg: fmt.Sprintf("is larger than %d bytes", max)}
}

func (t *Tree) notRegular(name string, mode fs.FileMode) error {
	return &Error{Path: name, Err: ErrNotRegular, msg: "is not a regular file (" + kind(mode) + ")"}
}

// fail wraps a file system or context error for name. The messages of
// *fs.PathError are reduced to their cause, so the root's absolute path
// never shows.
func (t *Tree) fail(name string, err error) error {
	var perr *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return &Error{Path: name, Err: fs.ErrNotExist, msg: "does not exist in " + t.scope}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Path: name, Err: err, msg: "was not read: " + err.Error()}
	case errors.Is(err, syscall.ELOOP):
		return &Error{Path: name, Err: ErrLoop, msg: ErrLoop.Error()}
	case errors.As(err, &perr):
		// os.Root reports an escape it caught (say, a link swapped in
		// after resolve) as a *PathError; its text names no content.
		return &Error{Path: name, Err: err, msg: "cannot be read: " + perr.Err.Error()}
	default:
		return &Error{Path: name, Err: err, msg: "cannot be read: " + err.Error()}
	}
}

// kind names the type of a file that is not regular.
func kind(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "directory"
	case mode&fs.ModeSymlink != 0:
		return "symbolic link"
	case mode&fs.ModeNamedPipe != 0:
		return "FIFO"
	case mode&fs.ModeSocket != 0:
		return "socket"
	case mode&fs.ModeCharDevice != 0:
		return "character device"
	case mode&fs.ModeDevice != 0:
		return "block device"
	default:
		return "irregular file " + mode.Type().String()
	}
}

// ContextReader returns a reader of r that fails with ctx's error once ctx
// ends (checked before each Read).
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return &ctxReader{ctx: ctx, r: r}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
