package repoconfig_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/shared/repoconfig"
)

// TestREADMEExamples keeps the documented kube-git-deploy.toml examples
// (the README's and docs/config-file.md's) true: each one parses, and the
// full example sets every field it shows.
func TestREADMEExamples(t *testing.T) {
	var blocks [][][]byte
	for _, doc := range []string{"../../README.md", "../../docs/config-file.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(b, -1)...)
	}
	if len(blocks) < 3 {
		t.Fatalf("found %d toml examples in README.md and docs/config-file.md, want at least 3", len(blocks))
	}
	vars := repoconfig.Vars{SHA: "0123456789abcdef0123456789abcdef01234567", Branch: "main", Ref: "refs/heads/main", Owner: "octo", Name: "app"}
	for i, b := range blocks {
		cfg, err := repoconfig.Parse(b[1], vars)
		if err != nil {
			t.Errorf("README example %d: %v", i+1, err)
			continue
		}
		if len(cfg.Units) != 1 || cfg.Units[0].Name != "api" || cfg.Units[0].Docker == nil || cfg.Units[0].Helm == nil {
			t.Errorf("README example %d: units %+v, want api with docker and helm", i+1, cfg.Units)
		}
	}
	full, err := repoconfig.Parse(blocks[len(blocks)-1][1], vars) // docs/config-file.md's full example
	if err != nil {
		t.Fatal(err)
	}
	u := full.Units[0]
	if u.Docker.Tag != "us-docker.pkg.dev/p/r/api:0123456" || u.Docker.Target != "production" || u.Docker.Args["GO_VERSION"] != "1.26" ||
		u.Helm.Namespace != "web" || !u.Helm.Atomic || len(u.Helm.Values) != 1 || len(u.Paths) != 1 || len(u.Branches) != 2 {
		t.Errorf("full README example = %+v / %+v / %+v", u, *u.Docker, *u.Helm)
	}
}
