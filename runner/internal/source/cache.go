package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// Option configures a Fetcher.
type Option func(*Fetcher)

// WithCache keeps each repository's git objects in a directory of its own
// under dir (OWNER/NAME, lower case) between checkouts, so that a push
// fetches only the objects it adds: the first checkout of a repository is
// a depth-1 fetch, every later one a fetch of what is new since the
// commits the cache holds (git's negotiation of "haves"). A checkout then
// writes only the working tree into the job's directory, which has no
// .git directory.
//
// The cache of a repository is used by one checkout at a time (within the
// process and, through a lock file, across processes sharing dir). It is
// bounded: once it holds more than maxPacks pack files or maxBytes bytes
// it is removed after the checkout, and the next one starts afresh. A
// cache that cannot serve a checkout (a damaged file, history it lacks)
// is fetched into again at depth 1, then removed and rebuilt: a cache can
// make a checkout slower, never fail it.
//
// Objects are content-addressed and each repository has its own cache, so
// one repository's pushes cannot change what another's checkout sees.
func WithCache(dir string, maxPacks int, maxBytes int64) Option {
	return func(f *Fetcher) {
		f.cache = &objectCache{dir: dir, maxPacks: maxPacks, maxBytes: maxBytes, held: map[string]chan struct{}{}}
	}
}

// Cache defaults (KGD_GIT_CACHE_* in the runner).
const (
	DefaultCacheMaxPacks       = 64
	DefaultCacheMaxBytes int64 = 1 << 30
)

// objectCache is the per-repository object storage of WithCache.
type objectCache struct {
	dir      string
	maxPacks int
	maxBytes int64

	mu   sync.Mutex
	held map[string]chan struct{} // repository key → token of its in-process lock
}

// cachedRefPrefix holds a ref per fetched commit: the "haves" of the next
// fetch. At most maxCachedRefs are kept.
const (
	cachedRefPrefix = "refs/kgd/cache/"
	maxCachedRefs   = 16
)

func cacheKey(owner, name string) string {
	return strings.ToLower(owner) + "/" + strings.ToLower(name)
}

// lock takes the cache of owner/name for the caller until unlock: first
// within the process, then across processes (a lock file). It gives up
// when ctx ends.
func (c *objectCache) lock(ctx context.Context, owner, name string) (unlock func(), err error) {
	key := cacheKey(owner, name)
	c.mu.Lock()
	ch, ok := c.held[key]
	if !ok {
		ch = make(chan struct{}, 1)
		c.held[key] = ch
	}
	c.mu.Unlock()
	select {
	case ch <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := os.MkdirAll(filepath.Join(c.dir, strings.ToLower(owner)), 0o700); err != nil {
		<-ch
		return nil, err
	}
	release, err := lockFile(ctx, filepath.Join(c.dir, key+".lock"))
	if err != nil {
		<-ch
		return nil, err
	}
	return func() { release(); <-ch }, nil
}

// path is the directory of owner/name's objects.
func (c *objectCache) path(owner, name string) string {
	return filepath.Join(c.dir, cacheKey(owner, name)+".git")
}

// open opens (creating if needed) the cached repository of owner/name,
// with dir as its working tree.
func (c *objectCache) open(owner, name, dir string) (*git.Repository, *filesystem.Storage, error) {
	p := c.path(owner, name)
	if err := os.MkdirAll(p, 0o700); err != nil {
		return nil, nil, err
	}
	st := filesystem.NewStorage(osfs.New(p, osfs.WithBoundOS()), cache.NewObjectLRUDefault())
	var wt = osfs.New(dir, osfs.WithBoundOS(), osfs.WithDeduplicatePath(false))
	repo, err := git.Open(st, wt)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, wt)
	}
	if err != nil {
		return nil, nil, err
	}
	return repo, st, nil
}

// has reports whether repo holds commit sha with its whole tree (every
// blob present; nothing is read but the object indexes).
func has(repo *git.Repository, sha string) bool {
	c, err := repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return false
	}
	t, err := c.Tree()
	if err != nil {
		return false
	}
	walker := object.NewTreeWalker(t, true, nil)
	defer walker.Close()
	for {
		_, e, err := walker.Next()
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false // a subtree is missing
		}
		if e.Mode == filemode.Dir || e.Mode == filemode.Submodule {
			continue
		}
		if repo.Storer.HasEncodedObject(e.Hash) != nil {
			return false
		}
	}
}

// cachedRefs returns the cache refs of repo, by name.
func cachedRefs(repo *git.Repository) ([]*plumbing.Reference, error) {
	iter, err := repo.References()
	if err != nil {
		return nil, err
	}
	var refs []*plumbing.Reference
	err = iter.ForEach(func(r *plumbing.Reference) error {
		if strings.HasPrefix(r.Name().String(), cachedRefPrefix) {
			refs = append(refs, r)
		}
		return nil
	})
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name() < refs[j].Name() })
	return refs, err
}

// checkout is Fetcher.Checkout through the cache; the cache is locked.
func (c *objectCache) checkout(ctx context.Context, f *Fetcher, dir, owner, name, sha, token string) error {
	unlock, err := c.lock(ctx, owner, name)
	if err != nil {
		return fmt.Errorf("lock the git cache: %w", err)
	}
	defer unlock()
	// Each attempt is cheaper than the next: the objects new since the
	// cached commits; the commit at depth 1 into the same cache; a new
	// cache.
	var last error
	for attempt := range 3 {
		if attempt == 2 {
			if err := os.RemoveAll(c.path(owner, name)); err != nil {
				return fmt.Errorf("reset the git cache: %w", err)
			}
		}
		repo, _, err := c.open(owner, name, dir)
		if err != nil {
			last = err
			continue
		}
		if !has(repo, sha) {
			depth := 1
			if attempt == 0 {
				if refs, err := cachedRefs(repo); err == nil && len(refs) > 0 {
					depth = 0 // everything the cached commits lack
				}
			}
			if err := f.fetchDepth(ctx, repo, owner, name, sha, cachedRefPrefix+sha, token, depth); err != nil {
				if ctx.Err() != nil {
					return err
				}
				last = err
				continue
			}
			if !has(repo, sha) {
				last = fmt.Errorf("commit %s is incomplete after the fetch", sha[:7])
				continue
			}
		} else if err := repo.Storer.SetReference(plumbing.NewHashReference(plumbing.ReferenceName(cachedRefPrefix+sha), plumbing.NewHash(sha))); err != nil {
			last = err
			continue
		}
		if err := c.writeTree(repo, dir, sha); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last = err
			continue
		}
		c.trim(repo, owner, name, sha)
		return nil
	}
	return last
}

// writeTree writes the tree of sha into dir, which is emptied first (an
// earlier attempt may have left part of a tree).
func (c *objectCache) writeTree(repo *git.Repository, dir, sha string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	w, err := repo.Worktree()
	if err != nil {
		return err
	}
	return w.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(sha), Force: true})
}

// trim bounds the cache after a checkout of keep: at most maxCachedRefs
// refs (keep's among them), and the whole cache is removed when it holds
// more than maxPacks pack files or maxBytes bytes. Failures only leave
// the cache bigger.
func (c *objectCache) trim(repo *git.Repository, owner, name, keep string) {
	if refs, err := cachedRefs(repo); err == nil && len(refs) > maxCachedRefs {
		for _, r := range refs {
			if r.Name().String() != cachedRefPrefix+keep {
				_ = repo.Storer.RemoveReference(r.Name())
			}
		}
	}
	packs, size := 0, int64(0)
	_ = filepath.WalkDir(c.path(owner, name), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if strings.HasSuffix(p, ".pack") {
			packs++
		}
		if info, err := d.Info(); err == nil {
			size += info.Size()
		}
		return nil
	})
	if (c.maxPacks > 0 && packs > c.maxPacks) || (c.maxBytes > 0 && size > c.maxBytes) {
		_ = os.RemoveAll(c.path(owner, name))
	}
}

// changedFiles is Fetcher.ChangedFiles through the cache.
func (c *objectCache) changedFiles(ctx context.Context, f *Fetcher, owner, name, before, sha, token string) ([]string, error) {
	unlock, err := c.lock(ctx, owner, name)
	if err != nil {
		return nil, fmt.Errorf("lock the git cache: %w", err)
	}
	defer unlock()
	p := c.path(owner, name)
	st := filesystem.NewStorage(osfs.New(p, osfs.WithBoundOS()), cache.NewObjectLRUDefault())
	repo, err := git.Open(st, nil)
	if err != nil {
		return nil, fmt.Errorf("open the git cache: %w", err)
	}
	return f.diff(ctx, repo, owner, name, before, sha, token)
}
