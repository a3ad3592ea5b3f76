package repoconfig

import (
	"errors"
	"strings"
	"testing"
)

func TestRewriteComparisons(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"original", `{{ if .git.branch == "master" }}`, `{{ if eq .git.branch "master" }}`},
		{"not equal", `{{ if .git.branch != "master" }}`, `{{ if ne .git.branch "master" }}`},
		{"no spaces", `{{if .git.branch=="master"}}`, `{{ if eq .git.branch "master" }}`},
		{"else if", `{{ else if .git.tag != "" }}`, `{{ else if ne .git.tag "" }}`},
		{"with", `{{ with $b == .git.branch }}`, `{{ with eq $b .git.branch }}`},
		{"else with", `{{ else with .repo.name == 'x' }}`, `{{ else with eq .repo.name 'x' }}`},
		{"bare", "{{ .git.branch == `main` }}", "{{ eq .git.branch `main` }}"},
		{"number", `{{ if 1 == 2.5 }}`, `{{ if eq 1 2.5 }}`},
		{"trim markers", `a {{- if .git.branch == "m" -}} b`, `a {{- if eq .git.branch "m" -}} b`},
		{"newlines kept", "{{ if\n.git.branch\n==\n\"m\" }}\nx", "{{ if eq .git.branch \"m\"\n\n\n }}\nx"},
		{"operator in string", `{{ if eq .git.branch "a == b" }}`, `{{ if eq .git.branch "a == b" }}`},
		{"operator in comment", `{{/* a == b */}}`, `{{/* a == b */}}`},
		{"braces in string", `{{ if .git.branch == "}}" }}x`, `{{ if eq .git.branch "}}" }}x`},
		{"text untouched", `a == b {{ .git.sha }} c != d`, `a == b {{ .git.sha }} c != d`},
		{"unterminated action", `{{ if .a == "b"`, `{{ if .a == "b"`},
		{"assignment", `{{ $x := .git.sha }}{{ $x = "y" }}`, `{{ $x := .git.sha }}{{ $x = "y" }}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rewriteComparisons(tt.src)
			if err != nil {
				t.Fatalf("rewriteComparisons(%q) error = %v", tt.src, err)
			}
			if got != tt.want {
				t.Errorf("rewriteComparisons(%q) = %q, want %q", tt.src, got, tt.want)
			}
		})
	}
}

func TestRewriteComparisonsErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		line int
		msg  string
	}{
		{"two comparisons", "\n{{ if .a == 1 && .b == 2 }}", 2, `use {{ if eq .git.branch "master" }} instead of ==`},
		{"parentheses", `{{ if (.a != 1) }}`, 1, `use {{ if ne .git.branch "master" }} instead of !=`},
		{"pipe", `{{ if .a | len == 1 }}`, 1, "instead of =="},
		{"function operand", `{{ if len .a == 1 }}`, 1, "instead of =="},
		{"range", `{{ range .a == 1 }}`, 1, "instead of =="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rewriteComparisons(tt.src)
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("rewriteComparisons(%q) error = %v, want an *Error", tt.src, err)
			}
			if perr.Line != tt.line || !strings.Contains(perr.Msg, tt.msg) {
				t.Errorf("rewriteComparisons(%q) error = %q, want line %d and %q", tt.src, perr, tt.line, tt.msg)
			}
		})
	}
}
