package source

import (
	"crypto/rand"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
)

// cacheBytes is the size of everything under dir.
func cacheBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantTree checks that dir holds exactly files (path → content) and no
// .git directory.
func wantTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Errorf("checkout has %d files, want %d: %v", len(got), len(files), slices.Sorted(func(yield func(string) bool) {
			for k := range got {
				if !yield(k) {
					return
				}
			}
		}))
	}
	for p, want := range files {
		if got[p] != want {
			t.Errorf("%s = %.40q, want %.40q", p, got[p], want)
		}
	}
}

func TestCachedCheckout(t *testing.T) {
	const token = "gho_cache_token"
	srv, err := gitserve.New(t.TempDir(), token)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	repo, err := srv.Create("Octo", "App")
	if err != nil {
		t.Fatal(err)
	}
	// A big blob that does not compress, like a binary, which every
	// commit keeps unchanged.
	raw := make([]byte, 2<<20)
	rand.Read(raw)
	big := string(raw)
	states := []map[string]string{
		{"bin/app": big, "a.txt": "1", "api/main.go": "package main"},
		{"bin/app": big, "a.txt": "2", "api/main.go": "package main", "ui/x.txt": "x"},
		{"bin/app": big, "a.txt": "3", "api/main.go": "package main", "ui/x.txt": "x"},
	}
	var shas []string
	for i, files := range states {
		change := map[string]string{}
		for p, c := range files {
			change[p] = c
		}
		if i == 0 {
			change["ui/x.txt"] = "" // delete: nothing to delete yet
			delete(change, "ui/x.txt")
		}
		sha, err := repo.Commit("main", "c", change)
		if err != nil {
			t.Fatal(err)
		}
		shas = append(shas, sha)
	}
	cacheDir := t.TempDir()
	f, err := New(srv.URL, WithCache(cacheDir, DefaultCacheMaxPacks, DefaultCacheMaxBytes))
	if err != nil {
		t.Fatal(err)
	}
	// Bounded by the test binary's -timeout, not by a time of its own: on
	// a busy machine (CI beside other tests) the subtests together once
	// took longer than 2 minutes and the last ones failed on the deadline.
	ctx := t.Context()
	checkout := func(t *testing.T, i int) string {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "Octo", "App", shas[i], token); err != nil {
			t.Fatalf("Checkout(commit %d): %v", i, err)
		}
		wantTree(t, dir, states[i])
		return dir
	}

	t.Run("first-then-incremental", func(t *testing.T) {
		checkout(t, 0)
		first := cacheBytes(t, cacheDir)
		if first < 2<<20 {
			t.Fatalf("cache holds %d bytes after the first checkout, want the 2 MiB blob", first)
		}
		checkout(t, 1)
		if grown := cacheBytes(t, cacheDir) - first; grown > 256<<10 {
			t.Errorf("the second checkout added %d bytes to the cache; want only the new objects (< 256 KiB), not the unchanged blob again", grown)
		}
	})
	t.Run("changed-files-without-git-dir", func(t *testing.T) {
		dir := checkout(t, 2)
		got, err := f.ChangedFiles(ctx, dir, "Octo", "App", shas[0], shas[2], token)
		if err != nil {
			t.Fatalf("ChangedFiles: %v", err)
		}
		if want := []string{"a.txt", "ui/x.txt"}; !slices.Equal(got, want) {
			t.Errorf("ChangedFiles = %v, want %v", got, want)
		}
	})
	t.Run("older-commit", func(t *testing.T) {
		// The server believes the cache has the older commit's objects
		// (it is an ancestor of the cached ones), so the incremental
		// fetch brings nothing: the checkout must fetch it again.
		checkout(t, 0)
	})
	t.Run("damaged-cache", func(t *testing.T) {
		err := filepath.WalkDir(cacheDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && (strings.HasSuffix(p, ".pack") || strings.HasSuffix(p, ".idx")) {
				return os.WriteFile(p, []byte("garbage"), 0o600)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		checkout(t, 1)
		checkout(t, 2)
	})
	t.Run("wrong-token", func(t *testing.T) {
		next, err := repo.Commit("main", "d", map[string]string{"a.txt": "4"})
		if err != nil {
			t.Fatal(err)
		}
		err = f.Checkout(ctx, filepath.Join(t.TempDir(), "ws"), "Octo", "App", next, "gho_wrong_secret")
		if err == nil || strings.Contains(err.Error(), "gho_wrong_secret") {
			t.Fatalf("Checkout with a wrong token = %v; want an error without the token", err)
		}
		// The lock was released and the cache still works.
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "Octo", "App", next, token); err != nil {
			t.Fatalf("Checkout after a failed one: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "a.txt")); err != nil || string(b) != "4" {
			t.Errorf("a.txt = %q, %v; want 4", b, err)
		}
	})
	t.Run("modes-and-symlinks", func(t *testing.T) {
		modes := commitModes(t, repo)
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "Octo", "App", modes, token); err != nil {
			t.Fatalf("Checkout: %v", err)
		}
		if fi, err := os.Lstat(filepath.Join(dir, "bin/run.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
			t.Errorf("bin/run.sh = %v, %v; want executable", fi, err)
		}
		for p, target := range map[string]string{"link.txt": "a.txt", "outside": "/etc"} {
			if got, err := os.Readlink(filepath.Join(dir, p)); err != nil || got != target {
				t.Errorf("%s → %q, %v; want a symlink to %q, written as such", p, got, err, target)
			}
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				dir := filepath.Join(t.TempDir(), "ws")
				if err := f.Checkout(ctx, dir, "Octo", "App", shas[i%3], token); err != nil {
					t.Errorf("Checkout(commit %d): %v", i%3, err)
					return
				}
				wantTree(t, dir, states[i%3])
			})
		}
		wg.Wait()
	})
	t.Run("separate-processes-share-the-lock", func(t *testing.T) {
		// A second Fetcher on the same directory stands for a second
		// runner process: the lock file orders them.
		g, err := New(srv.URL, WithCache(cacheDir, DefaultCacheMaxPacks, DefaultCacheMaxBytes))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i, fe := range []*Fetcher{f, g, f, g} {
			wg.Go(func() {
				dir := filepath.Join(t.TempDir(), "ws")
				if err := fe.Checkout(ctx, dir, "Octo", "App", shas[i%3], token); err != nil {
					t.Errorf("Checkout(commit %d): %v", i%3, err)
					return
				}
				wantTree(t, dir, states[i%3])
			})
		}
		wg.Wait()
	})
}

// TestCacheBounded: a cache over its limit is removed after the checkout
// and rebuilt by the next one.
func TestCacheBounded(t *testing.T) {
	const token = "gho_bounded"
	srv, err := gitserve.New(t.TempDir(), token)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	repo, err := srv.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	f, err := New(srv.URL, WithCache(cacheDir, 2, DefaultCacheMaxBytes))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	packs := func() int {
		n := 0
		filepath.WalkDir(cacheDir, func(p string, _ fs.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".pack") {
				n++
			}
			return err
		})
		return n
	}
	for i := range 5 {
		sha, err := repo.Commit("main", "c", map[string]string{"a.txt": strings.Repeat("x", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "octo", "app", sha, token); err != nil {
			t.Fatalf("Checkout %d: %v", i, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "a.txt")); err != nil || len(b) != i+1 {
			t.Errorf("checkout %d: a.txt = %q, %v", i, b, err)
		}
		if n := packs(); n > 2 {
			t.Errorf("after checkout %d the cache holds %d packs; want at most 2", i, n)
		}
	}
}
