package source

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
	})
	t.Run("wrong-token", func(t *testing.T) {
		err := f.Checkout(ctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", first, "wrong")
		if err == nil {
			t.Fatal("Checkout with a wrong token succeeded")
		}
		if strings.Contains(err.Error(), "wrong") && strings.Contains(err.Error(), "x-access-token") {
			t.Errorf("error leaks the token: %v", err)
		}
	})
	t.Run("unknown-commit", func(t *testing.T) {
		if err := f.Checkout(ctx, filepath.Join(t.TempDir(), "ws"), "octo", "app", strings.Repeat("a", 40), token); err == nil {
			t.Fatal("Checkout of a missing commit succeeded")
		}
	})
	t.Run("invalid-input", func(t *testing.T) {
		for _, c := range [][3]string{{"../x", "app", first}, {"octo", "..", first}, {"octo", "app", "HEAD"}, {"octo", "app", "--upload-pack=evil"}} {
			if err := f.Checkout(ctx, t.TempDir(), c[0], c[1], c[2], token); err == nil {
				t.Errorf("Checkout(%q, %q, %q) succeeded", c[0], c[1], c[2])
			}
		}
	})
}
