// Command openapi-scope adds kube-git-deploy's repository scope to the
// OpenAPI (Swagger 2.0) files that protoc-gen-openapiv2 writes: every
// operation gets the query parameter "repository" and the header
// "X-Kgd-Repository" (both "owner/name"), which the gateway turns into the
// gRPC metadata x-kgd-repository. The protos cannot declare them without
// changing the Skaffold request messages. proto/generate.sh runs it.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

const scopeDoc = "Scope the call to one tracked repository, owner/name. Without it the call covers all repositories (Handle needs a scope)."

func main() {
	for _, path := range os.Args[1:] {
		if err := rewrite(path); err != nil {
			fmt.Fprintf(os.Stderr, "openapi-scope: %s: %v\n", path, err)
			os.Exit(1)
		}
	}
}

func rewrite(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		return fmt.Errorf("no paths")
	}
	scope := []any{
		map[string]any{"name": "repository", "in": "query", "required": false, "type": "string", "description": scopeDoc},
		map[string]any{"name": "X-Kgd-Repository", "in": "header", "required": false, "type": "string", "description": scopeDoc + " Same as the repository query parameter; gRPC clients send the metadata x-kgd-repository."},
	}
	for p, item := range paths {
		methods, ok := item.(map[string]any)
		if !ok {
			return fmt.Errorf("path %s is not an object", p)
		}
		for m, op := range methods {
			o, ok := op.(map[string]any)
			if !ok {
				return fmt.Errorf("%s %s is not an object", m, p)
			}
			params, _ := o["parameters"].([]any)
			o["parameters"] = append(params, scope...)
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}
