package gitserve

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func clone(t *testing.T, url, token string) error {
	t.Helper()
	args := []string{"clone", "--quiet", url, filepath.Join(t.TempDir(), "c")}
	if token != "" {
		args = append([]string{"-c", "http.extraHeader=Authorization: " + BasicAuth(token)}, args...)
	}
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func TestStartOnListener(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewUnstarted(t.TempDir(), Options{Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(l)
	if s.URL != "http://"+l.Addr().String()+"/" {
		t.Errorf("URL = %q, want the listener's", s.URL)
	}
	r, err := s.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Commit("main", "one", map[string]string{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := clone(t, s.URL+"octo/app.git", "tok"); err != nil {
		t.Errorf("clone with the token: %v", err)
	}
	if err := clone(t, s.URL+"octo/app.git", "wrong"); err == nil {
		t.Errorf("clone with a wrong token succeeded")
	}
	// The working clone is temporary.
	s.Close()
	if _, err := os.Stat(r.Work); !os.IsNotExist(err) {
		t.Errorf("working clone %s left after Close: %v", r.Work, err)
	}
}

func TestMounted(t *testing.T) {
	t.Parallel()
	s, err := NewUnstarted(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mux := http.NewServeMux()
	mux.Handle("/", s)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	s.URL = srv.URL + "/"
	r, err := s.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Commit("main", "one", map[string]string{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := clone(t, s.URL+"octo/app.git", ""); err != nil {
		t.Errorf("clone without a token from a server without one: %v", err)
	}
}

func TestApplyAndCommits(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	s, err := NewUnstarted(t.TempDir(), Options{WorkDir: work})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Create("octo", "app")
	if err != nil {
		t.Fatal(err)
	}
	if r.Work != filepath.Join(work, "octo", "app") {
		t.Errorf("working clone at %s, want under WorkDir", r.Work)
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	author := Signature{Name: "Octo Cat", Email: "octo@example.invalid", When: when}
	before, first, err := r.Apply(Change{Branch: "main", Message: "first\n\nbody", Author: author,
		Files: map[string][]byte{"a.txt": []byte("a"), "dir/b.bin": {0, 1, 2}}})
	if err != nil || before != "" {
		t.Fatalf("Apply = %q, %v; want a new branch", before, err)
	}
	before, second, err := r.Apply(Change{Branch: "main", Message: "second", Files: map[string][]byte{"a.txt": []byte("A")}, Delete: []string{"dir/b.bin"}})
	if err != nil || before != first {
		t.Fatalf("Apply = %q, %v; want %s before", before, err, first)
	}
	// A new branch starts from main.
	before, feature, err := r.Apply(Change{Branch: "feature/x", Message: "feature", Files: map[string][]byte{"c.txt": []byte("c")}})
	if err != nil || before != "" {
		t.Fatalf("Apply on a new branch = %q, %v", before, err)
	}
	refs, err := r.Refs()
	if err != nil {
		t.Fatal(err)
	}
	if refs["refs/heads/main"] != second || refs["refs/heads/feature/x"] != feature || len(refs) != 2 {
		t.Errorf("Refs = %v", refs)
	}

	all, err := r.Commits(feature, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].SHA != first || all[2].SHA != feature {
		t.Fatalf("Commits = %+v", all)
	}
	c := all[0]
	if c.Message != "first\n\nbody" || c.Author.Name != "Octo Cat" || c.Author.Email != "octo@example.invalid" ||
		!c.Author.When.Equal(when) || fmt.Sprint(c.Added) != "[a.txt dir/b.bin]" || len(c.Tree) != 40 {
		t.Errorf("first commit = %+v", c)
	}
	if c := all[1]; fmt.Sprint(c.Added, c.Modified, c.Removed) != "[] [a.txt] [dir/b.bin]" || c.Author.Name != "kgd test" {
		t.Errorf("second commit = %+v", c)
	}
	onlyNew, err := r.Commits(feature, 20, second)
	if err != nil || len(onlyNew) != 1 || onlyNew[0].SHA != feature {
		t.Errorf("Commits not reachable from main = %+v, %v", onlyNew, err)
	}
	newest, err := r.Commits(feature, 1)
	if err != nil || len(newest) != 1 || newest[0].SHA != feature {
		t.Errorf("newest commit = %+v, %v", newest, err)
	}

	for _, bad := range []Change{
		{Branch: "main", Files: map[string][]byte{"../escape": []byte("x")}},
		{Branch: "main", Files: map[string][]byte{".git/config": []byte("x")}},
		{Branch: "main", Delete: []string{"/etc/passwd"}},
		{Branch: "-x"}, {Branch: "a..b"}, {Branch: "bad name"},
	} {
		if _, _, err := r.Apply(bad); err == nil {
			t.Errorf("Apply(%+v) succeeded", bad)
		}
	}
	if head, _ := r.Head("main"); head != second {
		t.Errorf("main moved to %s after refused changes", head)
	}
}

func TestSplitPath(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]string{
		"/octo/app.git/info/refs": "octo app true", "/octo/app.git": "octo app true",
		"/octo/app/info/refs": "  false", "/octo": "  false", "/octo/.git/x": "  false", "/": "  false",
	} {
		owner, name, ok := SplitPath(p)
		if got := strings.Join([]string{owner, name, fmt.Sprint(ok)}, " "); got != want {
			t.Errorf("SplitPath(%q) = %q, want %q", p, got, want)
		}
	}
}
