package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/kube-git-deploy/kube-git-deploy/shared/gitserve"
)

func TestCheckout(t *testing.T) {
	const token = "gho_secret_token_value"
	srv, err := gitserve.New(t.TempDir(), token)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	repo, err := srv.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	first, err := repo.Commit("main", "one", map[string]string{"a.txt": "1", "api/main.go": "package main"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "two", map[string]string{"a.txt": "2", "ui/x.txt": "x"})
	if err != nil {
		t.Fatal(err)
	}
	third, err := repo.Commit("main", "three", map[string]string{"a.txt": "3"})
	if err != nil {
		t.Fatal(err)
	}
	// A rename (without rename detection: a delete and an add) and a
	// deletion.
	fourth, err := repo.Commit("main", "four", map[string]string{"api/main.go": "", "api/app.go": "package main", "ui/x.txt": ""})
	if err != nil {
		t.Fatal(err)
	}
	modes := commitModes(t, repo)
	f, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("exact-commit", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "octo", "app", first, token); err != nil {
			t.Fatalf("Checkout: %v", err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "a.txt"))
		if err != nil || string(b) != "1" {
			t.Errorf("a.txt at the first commit = %q, %v; want 1", b, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "ui/x.txt")); err == nil {
			t.Errorf("ui/x.txt exists at the first commit")
		}
	})
	t.Run("older-commit", func(t *testing.T) {
		// second is neither a branch tip nor the root: it is fetched by
		// SHA alone, with depth 1, and checked out detached.
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "octo", "app", second, token); err != nil {
			t.Fatalf("Checkout: %v", err)
		}
		for p, want := range map[string]string{"a.txt": "2", "ui/x.txt": "x", "api/main.go": "package main"} {
			if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != want {
				t.Errorf("%s at the second commit = %q, %v; want %q", p, b, err, want)
			}
		}
		r, err := git.PlainOpen(dir)
		if err != nil {
			t.Fatal(err)
		}
		head, err := r.Head()
		if err != nil || head.Name() != plumbing.HEAD || head.Hash().String() != second {
			t.Errorf("HEAD = %v, %v; want detached at %s", head, err, second)
		}
		if _, err := r.CommitObject(plumbing.NewHash(first)); err == nil {
			t.Errorf("the parent commit was fetched too; want depth 1")
		}
		for _, c := range []string{third, fourth} {
			if _, err := r.CommitObject(plumbing.NewHash(c)); err == nil {
				t.Errorf("later commit %s was fetched", c[:7])
			}
		}
		shallow, err := os.ReadFile(filepath.Join(dir, ".git", "shallow"))
		if err != nil || strings.TrimSpace(string(shallow)) != second {
			t.Errorf(".git/shallow = %q, %v; want %s", shallow, err, second)
		}
	})
	t.Run("changed-files", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "octo", "app", second, token); err != nil {
			t.Fatalf("Checkout: %v", err)
		}
		got, err := f.ChangedFiles(ctx, dir, "octo", "app", first, second, token)
		if err != nil {
			t.Fatalf("ChangedFiles: %v", err)
		}
		if want := []string{"a.txt", "ui/x.txt"}; !slices.Equal(got, want) {
			t.Errorf("ChangedFiles = %v, want %v", got, want)
		}
		if got, err := f.ChangedFiles(ctx, dir, "octo", "app", strings.Repeat("0", 40), second, token); err != nil || got != nil {
			t.Errorf("ChangedFiles from a new ref = %v, %v; want nil, nil", got, err)
		}
		if got, err := f.ChangedFiles(ctx, dir, "octo", "app", second, second, token); err != nil || len(got) != 0 {
			t.Errorf("ChangedFiles from the same commit = %v, %v; want none", got, err)
		}
	})
	t.Run("changed-files-rename-delete", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "octo", "app", fourth, token); err != nil {
			t.Fatalf("Checkout: %v", err)
		}
		got, err := f.ChangedFiles(ctx, dir, "octo", "app", third, fourth, token)
		if err != nil {
			t.Fatalf("ChangedFiles: %v", err)
		}
		if want := []string{"api/app.go", "api/main.go", "ui/x.txt"}; !slices.Equal(got, want) {
			t.Errorf("ChangedFiles = %v, want %v", got, want)
		}
		// Far apart: before is fetched on its own, not through history.
		got, err = f.ChangedFiles(ctx, dir, "octo", "app", first, fourth, token)
		if err != nil {
			t.Fatalf("ChangedFiles: %v", err)
		}
		if want := []string{"a.txt", "api/app.go", "api/main.go"}; !slices.Equal(got, want) {
			t.Errorf("ChangedFiles(first, fourth) = %v, want %v", got, want)
		}
	})
	t.Run("modes-and-symlinks", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ws")
		if err := f.Checkout(ctx, dir, "octo", "app", modes, token); err != nil {
			t.Fatalf("Checkout: %v", err)
		}
		for p, exec := range map[string]bool{"bin/run.sh": true, "a.txt": false} {
			fi, err := os.Lstat(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || (fi.Mode().Perm()&0o100 != 0) != exec || fi.Mode().Perm()&0o022 != 0 {
				t.Errorf("%s mode = %v; want a regular file, executable %v, not group/other-writable", p, fi.Mode(), exec)
			}
		}
		for p, target := range map[string]string{"link.txt": "a.txt", "bin/api": "../api", "outside": "/etc"} {
			fi, err := os.Lstat(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("%s mode = %v; want a symlink", p, fi.Mode())
				continue
			}
			if got, err := os.Readlink(filepath.Join(dir, p)); err != nil || got != target {
				t.Errorf("%s → %q, %v; want %q", p, got, err, target)
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, "link.txt")); err != nil || string(b) != "3" {
			t.Errorf("link.txt reads %q, %v; want the content of a.txt", b, err)
		}
	})
	t.Run("wrong-token", func(t *testing.T) {
		err := f.Checkout(ctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", first, "wrong")
		if err == nil {
			t.Fatal("Checkout with a wrong token succeeded")
		}
		t.Logf("error: %v", err)
		if strings.Contains(err.Error(), "wrong") && strings.Contains(err.Error(), "x-access-token") {
			t.Errorf("error leaks the token: %v", err)
		}
	})
	t.Run("no-token-leak", func(t *testing.T) {
		// A server that echoes the Authorization header back in its error
		// page: the token must not reach the returned error.
		echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, pw, _ := r.BasicAuth()
			http.Error(w, "denied for "+pw+" ("+r.Header.Get("Authorization")+")", http.StatusForbidden)
		}))
		defer echo.Close()
		fe, err := New(echo.URL)
		if err != nil {
			t.Fatal(err)
		}
		err = fe.Checkout(ctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", first, token)
		if err == nil {
			t.Fatal("Checkout succeeded")
		}
		if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), gitserve.BasicAuth(token)[len("Basic "):]) {
			t.Errorf("error leaks the token: %v", err)
		}
	})
	t.Run("redirect-to-other-origin", func(t *testing.T) {
		// The repository's URL redirects to another origin (another port
		// on loopback): the credentials must not follow.
		var leaked atomic.Bool
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				leaked.Store(true)
			}
			srv.ServeHTTP(w, r)
		}))
		defer other.Close()
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusFound)
		}))
		defer front.Close()
		fr, err := New(front.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		err = fr.Checkout(ctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", first, token)
		t.Logf("error: %v", err)
		if err == nil {
			t.Error("Checkout through a cross-origin redirect succeeded without credentials")
		} else if strings.Contains(err.Error(), token) {
			t.Errorf("error leaks the token: %v", err)
		}
		if leaked.Load() {
			t.Error("the token was sent to the redirect target")
		}
	})
	t.Run("cancelled-context", func(t *testing.T) {
		// Already cancelled: nothing is fetched.
		done, cancelDone := context.WithCancel(ctx)
		cancelDone()
		if err := f.Checkout(done, filepath.Join(t.TempDir(), "ws"), "octo", "app", first, token); !errors.Is(err, context.Canceled) {
			t.Errorf("Checkout with a cancelled context = %v; want context.Canceled", err)
		}

		// Cancelled while the server holds the pack request.
		arrived := make(chan struct{}, 1)
		release := make(chan struct{})
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				select {
				case arrived <- struct{}{}:
				default:
				}
				select {
				case <-r.Context().Done():
				case <-release:
				}
				return
			}
			srv.ServeHTTP(w, r)
		}))
		defer hang.Close()
		defer close(release)
		fh, err := New(hang.URL)
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		go func() {
			select {
			case <-arrived:
				ccancel()
			case <-cctx.Done():
			}
		}()
		start := time.Now()
		err = fh.Checkout(cctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", first, token)
		t.Logf("error: %v", err)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Checkout cancelled during the fetch = %v; want context.Canceled", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Checkout took %v after cancellation", d)
		}

		// A deadline aborts it too.
		dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer dcancel()
		if err := fh.Checkout(dctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", first, token); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Checkout past its deadline = %v; want context.DeadlineExceeded", err)
		}
	})
	t.Run("unknown-commit", func(t *testing.T) {
		err := f.Checkout(ctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", strings.Repeat("a", 40), token)
		if err == nil {
			t.Fatal("Checkout of a missing commit succeeded")
		}
		t.Logf("error: %v", err)
	})
	t.Run("invalid-input", func(t *testing.T) {
		for _, c := range [][3]string{{"../x", "app", first}, {"octo", "..", first}, {"octo", "app", "HEAD"}, {"octo", "app", "--upload-pack=evil"}} {
			if err := f.Checkout(ctx, t.TempDir(), c[0], c[1], c[2], token); err == nil {
				t.Errorf("Checkout(%q, %q, %q) succeeded", c[0], c[1], c[2])
			}
		}
		dir := t.TempDir()
		for _, c := range [][4]string{{"../x", "app", first, second}, {"octo", "app", "--upload-pack=evil", second}, {"octo", "app", first, "HEAD"}} {
			if _, err := f.ChangedFiles(ctx, dir, c[0], c[1], c[2], c[3], token); err == nil {
				t.Errorf("ChangedFiles(%q, %q, %q, %q) succeeded", c[0], c[1], c[2], c[3])
			}
		}
		for _, u := range []string{"", "github.com", "file:///tmp/x", "ssh://github.com/", "https://user:pw@github.com/"} {
			if _, err := New(u); err == nil {
				t.Errorf("New(%q) succeeded", u)
			}
		}
	})
}

func TestScrub(t *testing.T) {
	const token = "s3cr3t"
	err := scrub(fmt.Errorf("fetch: %w", fmt.Errorf("bad auth %s: %w", token, context.Canceled)), token)
	if strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "***") {
		t.Errorf("scrubbed error = %q", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("scrubbed error does not match its cause")
	}
	if errors.Unwrap(err) != nil {
		t.Errorf("scrubbed error unwraps to the original")
	}
	plain := errors.New("plain")
	encoded := scrub(errors.New("echo: Basic "+gitserve.BasicAuth(token)[len("Basic "):]), token)
	if strings.Contains(encoded.Error(), gitserve.BasicAuth(token)[len("Basic "):]) {
		t.Errorf("scrubbed error = %q; want the encoded credential removed", encoded)
	}
	if scrub(plain, token) != plain || scrub(plain, "") != plain || scrub(nil, token) != nil {
		t.Errorf("scrub changed an error without the token")
	}
}

// commitModes commits, on branch modes of repo, an executable file, a
// symlink to a file, a symlink to a directory and a symlink pointing out of
// the repository, with the git command line (gitserve's Commit writes
// plain files only); it returns the commit.
func commitModes(t testing.TB, repo *gitserve.Repo) string {
	t.Helper()
	w := repo.Work
	if err := os.MkdirAll(filepath.Join(w, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w, "bin/run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(w, "bin/run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"link.txt": "a.txt", "bin/api": "../api", "outside": "/etc"} {
		if err := os.Symlink(target, filepath.Join(w, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"add", "-A"},
		{"-c", "user.name=kgd test", "-c", "user.email=test@kgd.invalid", "-c", "core.fileMode=true", "-c", "core.symlinks=true",
			"commit", "--quiet", "-m", "modes"},
		{"push", "--quiet", "origin", "HEAD:refs/heads/modes"},
	} {
		runGit(t, w, args...)
	}
	return strings.TrimSpace(runGit(t, w, "rev-parse", "HEAD"))
}

func runGit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "LANG=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

// BenchmarkCheckout measures one checkout of a small repository at an
// exact commit that is not the branch tip, over loopback smart HTTP with
// a token.
func BenchmarkCheckout(b *testing.B) {
	const token = "gho_bench_token"
	srv, err := gitserve.New(b.TempDir(), token)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	repo, err := srv.Create("octo", "bench")
	if err != nil {
		b.Fatal(err)
	}
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("dir%d/file%d.txt", i%4, i)] = strings.Repeat(fmt.Sprintf("line %d\n", i), 50)
	}
	sha, err := repo.Commit("main", "bench", files)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := repo.Commit("main", "later", map[string]string{"later.txt": "x"}); err != nil {
		b.Fatal(err)
	}
	f, err := New(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	base := b.TempDir()
	i := 0
	for b.Loop() {
		i++
		if err := f.Checkout(ctx, filepath.Join(base, strconv.Itoa(i)), "octo", "bench", sha, token); err != nil {
			b.Fatal(err)
		}
	}
}

func TestHead(t *testing.T) {
	const token = "gho_head_token"
	srv, err := gitserve.New(t.TempDir(), token)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	repo, err := srv.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	first, err := repo.Commit("main", "one", map[string]string{"a": "1"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit("main", "two", map[string]string{"a": "2"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if got, err := f.Head(ctx, "octo", "app", "refs/heads/main", token); err != nil || got != second {
		t.Errorf("Head(main) = %q, %v; want the newest commit %s (not %s)", got, err, second, first)
	}
	if _, err := f.Head(ctx, "octo", "app", "refs/heads/gone", token); !errors.Is(err, ErrRefNotFound) {
		t.Errorf("Head(missing branch) = %v, want ErrRefNotFound", err)
	}
	if _, err := f.Head(ctx, "octo", "app", "refs/heads/main", "wrong-token"); err == nil || errors.Is(err, ErrRefNotFound) || strings.Contains(err.Error(), "wrong-token") {
		t.Errorf("Head with a wrong token = %v, want an error without the token", err)
	}
	for _, ref := range []string{"main", "refs/heads/a..b", "refs/pull/1/head", "refs/heads/x y"} {
		if _, err := f.Head(ctx, "octo", "app", ref, token); err == nil || errors.Is(err, ErrRefNotFound) {
			t.Errorf("Head(%q) = %v, want an invalid-ref error", ref, err)
		}
	}
}
