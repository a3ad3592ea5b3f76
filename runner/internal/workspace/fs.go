package workspace

import (
	"context"
	"io"
	"io/fs"
	"os"
)

// FS returns the tree as an fs.FS (with ReadFile, Stat, ReadDir, Lstat and
// ReadLink, as repoconfig.Config.CheckFiles wants) that applies the rules
// of ReadFile: Open and ReadFile accept directories (Open only) and
// regular files reached without leaving the tree; ReadFile and reads of
// an opened file fail past DefaultMaxFile bytes. fs.FS has no context, so
// its reads are bounded by size only.
func (t *Tree) FS() fs.FS { return treeFS{t} }

type treeFS struct{ t *Tree }

var (
	_ fs.StatFS     = treeFS{}
	_ fs.ReadFileFS = treeFS{}
	_ fs.ReadDirFS  = treeFS{}
	_ fs.ReadLinkFS = treeFS{}
)

func invalid(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
}

func (f treeFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("open", name)
	}
	info, err := f.t.Stat(name)
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		resolved, err := f.t.resolve(name)
		if err != nil {
			return nil, err
		}
		d, err := f.t.root.Open(resolved)
		if err != nil {
			return nil, f.t.fail(name, err)
		}
		return d, nil
	}
	file, _, err := f.t.OpenFile(context.Background(), name)
	if err != nil {
		return nil, err
	}
	return &limitedFile{f: file, r: io.LimitReader(file, DefaultMaxFile+1), name: name, t: f.t}, nil
}

func (f treeFS) ReadFile(name string) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("readfile", name)
	}
	return f.t.ReadFile(context.Background(), name, DefaultMaxFile)
}

func (f treeFS) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("stat", name)
	}
	return f.t.Stat(name)
}

func (f treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("readdir", name)
	}
	resolved, err := f.t.resolve(name)
	if err != nil {
		return nil, err
	}
	entries, err := fs.ReadDir(f.t.root.FS(), resolved)
	if err != nil {
		return nil, f.t.fail(name, err)
	}
	return entries, nil
}

func (f treeFS) Lstat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, invalid("lstat", name)
	}
	info, err := f.t.root.Lstat(name)
	if err != nil {
		return nil, f.t.fail(name, err)
	}
	return info, nil
}

func (f treeFS) ReadLink(name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", invalid("readlink", name)
	}
	target, err := f.t.root.Readlink(name)
	if err != nil {
		return "", f.t.fail(name, err)
	}
	return target, nil
}

// limitedFile is a regular file opened through treeFS: reads fail once
// more than DefaultMaxFile bytes were read. It has only the fs.File
// methods, so io.Copy cannot go around the limit through os.File.WriteTo.
type limitedFile struct {
	f    *os.File
	r    io.Reader
	n    int64
	name string
	t    *Tree
}

func (l *limitedFile) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > DefaultMaxFile {
		return 0, l.t.tooLarge(l.name, DefaultMaxFile)
	}
	return n, err
}

func (l *limitedFile) Stat() (fs.FileInfo, error) { return l.f.Stat() }

func (l *limitedFile) Close() error { return l.f.Close() }
