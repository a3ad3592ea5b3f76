package repoconfig

import "testing"

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"main", "main", true},
		{"main", "mainline", false},
		{"release/*", "release/1.0", true},
		{"release/*", "release/1.0/hotfix", false},
		{"release/*", "release", false},
		{"feature/**", "feature/a/b", true},
		{"feature/**", "feature", true},
		{"**", "anything/at/all", true},
		{"**", "", true},
		{"api/**", "api/cmd/main.go", true},
		{"api/**", "apis/main.go", false},
		{"**/*.go", "main.go", true},
		{"**/*.go", "a/b/c.go", true},
		{"**/*.go", "a/b/c.md", false},
		{"api/**/*_test.go", "api/x_test.go", true},
		{"api/**/*_test.go", "api/a/b/x_test.go", true},
		{"api/**/*_test.go", "ui/x_test.go", false},
		{"a/**/b/**/c", "a/x/b/y/z/c", true},
		{"a/**/b/**/c", "a/x/y/z/c", false},
		{"go.[ms]*", "go.mod", true},
		{"go.[ms]*", "go.work", false},
		{"?", "a", true},
		{"?", "/", false},
	}
	for _, tt := range tests {
		if got := match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("match(%q, %q) = %t, want %t", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestUnitMatchesBranch(t *testing.T) {
	tests := []struct {
		name     string
		branches []string
		branch   string
		want     bool
	}{
		{"no patterns", nil, "anything", true},
		{"no patterns tag push", nil, "", true},
		{"exact", []string{"main"}, "main", true},
		{"other", []string{"main"}, "dev", false},
		{"second pattern", []string{"main", "release/*"}, "release/2", true},
		{"tag push", []string{"main"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := Unit{Name: "api", Branches: tt.branches}
			if got := u.MatchesBranch(tt.branch); got != tt.want {
				t.Errorf("Unit{Branches: %q}.MatchesBranch(%q) = %t, want %t", tt.branches, tt.branch, got, tt.want)
			}
		})
	}
}

func TestUnitMatchesPaths(t *testing.T) {
	tests := []struct {
		name    string
		paths   []string
		changed []string
		want    bool
	}{
		{"no patterns", nil, []string{"README.md"}, true},
		{"no patterns nothing changed", nil, nil, true},
		{"match", []string{"api/**"}, []string{"README.md", "api/main.go"}, true},
		{"no match", []string{"api/**", "go.mod"}, []string{"ui/index.html"}, false},
		{"nothing changed", []string{"api/**"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := Unit{Name: "api", Paths: tt.paths}
			if got := u.MatchesPaths(tt.changed); got != tt.want {
				t.Errorf("Unit{Paths: %q}.MatchesPaths(%q) = %t, want %t", tt.paths, tt.changed, got, tt.want)
			}
		})
	}
}

func TestCleanPathPattern(t *testing.T) {
	tests := []struct {
		pattern string
		want    string
		wantErr bool
	}{
		{"./api/**/", "api/**", false},
		{"api//*.go", "api/*.go", false},
		{"", "", true},
		{"/api/**", "", true},
		{"../**", "", true},
		{"api/../../x", "", true},
		{".", "", true},
		{`api\*.go`, "", true},
		{"a**", "", true},
		{"[", "", true},
	}
	for _, tt := range tests {
		got, err := cleanPathPattern(tt.pattern)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("cleanPathPattern(%q) = %q, %v; want %q, error %t", tt.pattern, got, err, tt.want, tt.wantErr)
		}
	}
}
