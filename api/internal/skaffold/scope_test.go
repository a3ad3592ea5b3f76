package skaffold_test

import (
	"strings"
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/api/internal/skaffold"
)

func TestParseScope(t *testing.T) {
	for _, tc := range []struct {
		in          string
		owner, name string
		bad         bool
	}{
		{in: ""},
		{in: "octo/app", owner: "octo", name: "app"},
		{in: "Octo-Cat/my.app_2", owner: "Octo-Cat", name: "my.app_2"},
		{in: "octo", bad: true},
		{in: "octo/", bad: true},
		{in: "/app", bad: true},
		{in: "octo/app/x", bad: true},
		{in: "octo/..", bad: true},
		{in: "octo/.", bad: true},
		{in: "-octo/app", bad: true},
		{in: "oc to/app", bad: true},
		{in: "octo/ap p", bad: true},
		{in: strings.Repeat("o", 40) + "/app", bad: true},
		{in: "octo/" + strings.Repeat("a", 101), bad: true},
		{in: "octo/app\n", bad: true},
	} {
		owner, name, err := skaffold.ParseScope(tc.in)
		if (err != nil) != tc.bad || owner != tc.owner || name != tc.name {
			t.Errorf("ParseScope(%q) = %q, %q, %v", tc.in, owner, name, err)
		}
	}
}

// FuzzParseScope: any input is either refused or splits into a valid owner
// and name that make it up again.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"", "octo/app", "octo/..", "a/b/c", "x/" + strings.Repeat("y", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		owner, name, err := skaffold.ParseScope(in)
		if err != nil {
			if len(err.Error()) > 1000 { // %q of at most 200 bytes, and the wording
				t.Errorf("error message of %d bytes", len(err.Error()))
			}
			return
		}
		if in == "" {
			if owner != "" || name != "" {
				t.Errorf("empty scope parsed as %q/%q", owner, name)
			}
			return
		}
		if owner+"/"+name != in || len(owner) == 0 || len(owner) > 39 || len(name) == 0 || len(name) > 100 ||
			strings.ContainsAny(owner+name, "/ \\\n\x00") || name == "." || name == ".." {
			t.Errorf("ParseScope(%q) accepted %q / %q", in, owner, name)
		}
	})
}
